//! What a plugin-config reload does to the shared state.
//!
//! Shared data outlives configs (it belongs to the Envoy process and `vm_id`), and all state is
//! keyed by deployment id: a reload therefore keeps cooldowns, failure windows and live stats of
//! every deployment whose id is unchanged, with nothing to do. Deployments that left the table
//! must not keep theirs: a re-added id would start out cooling or with stale counters, and the
//! keys would pile up over many reloads. So each plugin keeps a registry of the ids it last
//! configured; the configure that replaces it clears the keys of the ids that went away.
//!
//! Every VM configures the same new config at about the same time: the registry is swapped with
//! CAS, so exactly one of them sees the old list and does the clearing; the others find the
//! registry already current and do nothing.

use crate::config::RouterConfig;
use crate::health::{self, keys, Cooldowns, Store, StoreError};
use std::collections::HashSet;

/// Registry of the ids one plugin configured last, one per line.
pub const IDS_PREFIX: &str = "llm_router.v1.ids.";

pub fn registry_key(plugin: &str) -> String {
    format!("{IDS_PREFIX}{plugin}")
}

/// Every per-deployment key that holds state for `id`.
pub fn state_keys(id: &str) -> [String; 3] {
    [keys::fails(id), crate::stats::keys::stats(id), keys::probe(id)]
}

/// Records `cfg`'s ids as plugin `plugin`'s and forgets the state of ids it no longer has.
/// Returns the ids forgotten (empty when the registry was already current, e.g. another VM did
/// it).
pub fn forget_removed<S: Store + ?Sized>(store: &S, plugin: &str, cfg: &RouterConfig, now_ms: u64) -> Result<Vec<String>, StoreError> {
    let current: Vec<&str> = cfg.table.deployments.iter().map(|d| d.id.as_str()).collect();
    let removed = swap_registry(store, &registry_key(plugin), &current)?;
    if removed.is_empty() {
        return Ok(removed);
    }
    for id in &removed {
        for key in state_keys(id) {
            clear(store, &key)?;
        }
    }
    health::update(store, keys::COOLDOWNS, |record| {
        let record = Cooldowns::decode(record?);
        let holds_removed = removed.iter().any(|id| record.get(id).is_some());
        holds_removed.then(|| record.encode(now_ms, |id| !removed.iter().any(|r| r == id)))
    })?;
    Ok(removed)
}

/// Registry of the limit records (`crate::limits`) one plugin configured last.
pub const LIMITS_PREFIX: &str = "llm_router.v1.limit_records.";

/// Records `cfg`'s limit records as plugin `plugin`'s and empties those it no longer has (a
/// removed key, team or user, or a limit taken off one): a key added back later starts from
/// zero, as a new LiteLLM key does. Records of unchanged keys (same hash) are kept. Returns how
/// many were emptied.
pub fn forget_removed_limits<S: Store + ?Sized>(store: &S, plugin: &str, cfg: &RouterConfig) -> Result<usize, StoreError> {
    let records = cfg.limits.record_keys();
    let current: Vec<&str> = records.iter().map(String::as_str).collect();
    let removed = swap_registry(store, &format!("{LIMITS_PREFIX}{plugin}"), &current)?;
    for key in &removed {
        clear(store, key)?;
    }
    Ok(removed.len())
}

/// Swaps the registry at `key` for `current` (one entry per line) with CAS; returns the entries
/// that left it — empty when it was already current (another VM swapped it first).
fn swap_registry<S: Store + ?Sized>(store: &S, key: &str, current: &[&str]) -> Result<Vec<String>, StoreError> {
    let registry = current.join("\n").into_bytes();
    let now: HashSet<&str> = current.iter().copied().collect();
    let mut removed: Vec<String> = Vec::new();
    health::update(store, key, |old| {
        let old = old.unwrap_or_default();
        if old == registry.as_slice() {
            removed.clear();
            return None;
        }
        removed = String::from_utf8_lossy(old).lines().filter(|e| !e.is_empty() && !now.contains(e)).map(str::to_string).collect();
        Some(registry.clone())
    })?;
    Ok(removed)
}

/// Empties `key` if it holds anything (shared data has no delete; empty reads as absent).
fn clear<S: Store + ?Sized>(store: &S, key: &str) -> Result<(), StoreError> {
    health::update(store, key, |v| v.filter(|v| !v.is_empty()).map(|_| Vec::new())).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::health::{FailureClass, MemStore};
    use serde_json::{json, Value};

    fn cfg(ids: &[&str]) -> RouterConfig {
        let list: Vec<_> = ids.iter().map(|id| json!({"model_name": "g", "litellm_params": {"model": "openai/m"}, "model_info": {"id": id}})).collect();
        match config::load(json!({"model_list": list}).to_string().as_bytes(), &|_| None).config {
            Some(c) => c,
            None => panic!("refused"),
        }
    }

    fn value(s: &MemStore, key: &str) -> Vec<u8> {
        s.get(key).ok().and_then(|(v, _)| v).unwrap_or_default()
    }

    fn seed(s: &MemStore, id: &str, until: u64) {
        for key in state_keys(id) {
            let _ = s.set(&key, b"1000 2", None);
        }
        let mut record = s.get(keys::COOLDOWNS).ok().and_then(|(v, _)| v).map(|v| Cooldowns::decode(&v)).unwrap_or_default();
        record.extend(id, until, FailureClass::RateLimit);
        let cas = s.get(keys::COOLDOWNS).ok().and_then(|(_, c)| c);
        let _ = s.set(keys::COOLDOWNS, &record.encode(0, |_| true), cas);
    }

    #[test]
    fn unchanged_ids_keep_their_state_removed_ones_lose_it() {
        let s = MemStore::default();
        assert_eq!(forget_removed(&s, "p", &cfg(&["a", "b"]), 0), Ok(vec![]), "first configure: nothing to forget");
        seed(&s, "a", 60_000);
        seed(&s, "b", 60_000);
        assert_eq!(forget_removed(&s, "p", &cfg(&["a", "c"]), 1_000), Ok(vec!["b".to_string()]));
        for key in state_keys("a") {
            assert_eq!(value(&s, &key), b"1000 2", "{key} of a kept");
        }
        for key in state_keys("b") {
            assert!(value(&s, &key).is_empty(), "{key} of b cleared");
        }
        let record = Cooldowns::decode(&value(&s, keys::COOLDOWNS));
        assert!(record.get("a").is_some() && record.get("b").is_none());
        assert_eq!(String::from_utf8_lossy(&value(&s, &registry_key("p"))), "a\nc");
    }

    #[test]
    fn the_second_vm_configuring_the_same_config_does_nothing() {
        let s = MemStore::default();
        let _ = forget_removed(&s, "p", &cfg(&["a", "b"]), 0);
        seed(&s, "b", 60_000);
        let new = cfg(&["a"]);
        assert_eq!(forget_removed(&s, "p", &new, 1_000), Ok(vec!["b".to_string()]));
        seed(&s, "b", 60_000); // e.g. an old-config request finishing late
        assert_eq!(forget_removed(&s, "p", &new, 1_000), Ok(vec![]));
        assert_eq!(value(&s, &keys::fails("b")), b"1000 2", "only the registry swap clears");
    }

    #[test]
    fn limit_records_of_removed_keys_are_emptied_unchanged_ones_kept() {
        let with_keys = |keys: Value| match config::load(json!({"model_list": [{"model_name": "g", "litellm_params": {"model": "openai/m"}}], "keys": keys}).to_string().as_bytes(), &|_| None).config {
            Some(c) => c,
            None => panic!("refused"),
        };
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        let s = MemStore::default();
        let first = with_keys(json!([{"token": a, "rpm_limit": 5}, {"token": b, "rpm_limit": 5, "max_budget": 1}]));
        assert_eq!(forget_removed_limits(&s, "p", &first), Ok(0));
        for k in first.limits.record_keys() {
            let _ = s.set(&k, b"1 0 60000 3 0", None);
        }
        // b leaves, a loses nothing: b's two records are emptied, a's kept.
        let second = with_keys(json!([{"token": a, "rpm_limit": 7}]));
        assert_eq!(forget_removed_limits(&s, "p", &second), Ok(2));
        assert_eq!(value(&s, &format!("llm_router.v1.limit.rpm.key.{a}")), b"1 0 60000 3 0");
        assert!(value(&s, &format!("llm_router.v1.limit.rpm.key.{b}")).is_empty());
        assert!(value(&s, &format!("llm_router.v1.limit.budget.key.{b}")).is_empty());
        assert_eq!(forget_removed_limits(&s, "p", &second), Ok(0), "the second VM finds the registry current");
    }

    #[test]
    fn plugins_keep_separate_registries() {
        let s = MemStore::default();
        let _ = forget_removed(&s, "one", &cfg(&["a"]), 0);
        seed(&s, "a", 60_000);
        assert_eq!(forget_removed(&s, "two", &cfg(&["b"]), 0), Ok(vec![]), "another plugin's first configure");
        assert_eq!(value(&s, &keys::fails("a")), b"1000 2");
    }
}
