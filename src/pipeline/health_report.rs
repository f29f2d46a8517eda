//! `GET /llm-router/health`: each deployment's state as this Envoy's shared data sees it —
//! healthy or cooling (until when, why), failures in the current window, the last error class,
//! and the active probe's last result when a probe writes one.
//!
//! It reports; it is not the gateway's liveness probe: the answer is 200 even when deployments
//! are cooling (the gateway itself is up and routes to the others; a whole cooling group already
//! answers 429 on its own requests). Monitoring reads `unhealthy_count` or the per-deployment
//! `state`. Only non-secret fields are shown: ids, group names, provider, the provider's model
//! id and the Envoy cluster name — never api keys, auth headers or `api_base` (whose query could
//! carry a key). Built per request from 1 + 2N shared-data reads; never on the routed path.

use super::json_out::{array, Obj};
use crate::config::{RouterConfig, FAILURE_WINDOW_SECS};
use crate::health::{keys, Cooldowns, FailureClass, FailureWindow, ProbeResult, Store};

/// What the store holds about one deployment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeploymentHealth {
    pub cooling_until_ms: Option<u64>,
    pub cooling_class: Option<FailureClass>,
    pub window: Option<FailureWindow>,
    pub probe: Option<ProbeResult>,
}

/// Reads the cooldown record, then each deployment's failure window and probe result. A read
/// error reads as "nothing recorded" (the report is best-effort; routing does the same).
pub fn read<S: Store + ?Sized>(cfg: &RouterConfig, store: &S) -> Vec<DeploymentHealth> {
    let value = |key: &str| store.get(key).ok().and_then(|(v, _)| v);
    let cooldowns = value(keys::COOLDOWNS).map(|v| Cooldowns::decode(&v)).unwrap_or_default();
    cfg.table
        .deployments
        .iter()
        .map(|d| {
            let entry = cooldowns.get(&d.id);
            DeploymentHealth {
                cooling_until_ms: entry.map(|e| e.until_ms),
                cooling_class: entry.map(|e| e.class),
                window: value(&keys::fails(&d.id)).and_then(|v| FailureWindow::decode(&v)),
                probe: value(&keys::probe(&d.id)).and_then(|v| ProbeResult::decode(&v)),
            }
        })
        .collect()
}

/// The JSON body for `states` (one per deployment, table order) at `now_ms`.
pub fn body(cfg: &RouterConfig, states: &[DeploymentHealth], now_ms: u64) -> Vec<u8> {
    let window_ms = (FAILURE_WINDOW_SECS * 1000.0) as u64;
    let mut healthy = 0u64;
    let mut deployments = Vec::with_capacity(states.len());
    for (d, h) in cfg.table.deployments.iter().zip(states) {
        let until = h.cooling_until_ms.filter(|&u| u > now_ms);
        if until.is_none() {
            healthy += 1;
        }
        // The most recent failure's class: the window records every failure, the cooldown
        // record only the one that set the deadline.
        let last_error = h.window.and_then(|w| w.last_class).or(h.cooling_class);
        let probe = h.probe.map(|p| {
            let mut out = Vec::with_capacity(48);
            let mut o = Obj::begin(&mut out);
            o.num("at_ms", p.at_ms).num("status", u64::from(p.status)).str("result", p.result());
            o.end();
            out
        });
        let mut out = Vec::with_capacity(320);
        let mut o = Obj::begin(&mut out);
        o.str("id", &d.id)
            .str("model_group", &d.group)
            .str("provider", d.provider.name)
            .str("model", &d.model)
            .str("cluster", &d.upstream.cluster)
            .str("state", if until.is_some() { "cooling" } else { "healthy" })
            .opt_num("cooling_until_ms", until)
            .opt_num("cooldown_remaining_ms", until.map(|u| u - now_ms))
            .num("failures_in_window", h.window.map_or(0, |w| w.count_at(now_ms, window_ms)))
            .opt_str("last_error_class", last_error.map(FailureClass::as_str))
            .raw("last_probe", probe.as_deref().unwrap_or(b"null"));
        o.end();
        deployments.push(out);
    }
    let unhealthy = states.len() as u64 - healthy.min(states.len() as u64);
    let list = array(&deployments);
    let mut out = Vec::with_capacity(48 + list.len());
    let mut o = Obj::begin(&mut out);
    o.num("healthy_count", healthy).num("unhealthy_count", unhealthy).raw("deployments", &list);
    o.end();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use serde_json::{json, Value};
    use crate::health::{record_failure, Failure, MemStore, Policy};

    fn cfg() -> RouterConfig {
        let v = json!({
            "model_list": [
                {"model_name": "a", "litellm_params": {"model": "openai/a-one", "api_base": "http://h1:8000/v1?key=sk-in-query",
                    "api_key": "os.environ/KEY_A"}, "model_info": {"id": "a1"}},
                {"model_name": "a", "litellm_params": {"model": "openai/a-two", "api_base": "http://h2/v1", "api_key": "sk-literal"},
                    "model_info": {"id": "a2"}},
                {"model_name": "b", "litellm_params": {"model": "azure/b-one", "api_base": "http://h3", "api_key": "sk-az"},
                    "model_info": {"id": "b1"}},
            ],
        });
        let env = |n: &str| (n == "KEY_A").then(|| "sk-from-env".to_string());
        match config::load(v.to_string().as_bytes(), &env).config {
            Some(c) => c,
            None => panic!("config refused"),
        }
    }

    #[test]
    fn reports_cooling_and_healthy_deployments_without_secrets() {
        let c = cfg();
        let store = MemStore::default();
        let policy = Policy { allowed_fails: 0, cooldown_ms: 30_000, max_cooldown_ms: 300_000, window_ms: 60_000, disabled: false };
        let fail = |now, id, class| record_failure(&store, now, Failure { id, class, group_size: 2, retry_after_ms: None }, &policy, |_| true);
        assert!(fail(1_000, "a1", FailureClass::ServerError).is_ok());
        assert!(fail(2_000, "a1", FailureClass::Timeout).is_ok());
        assert!(store.set(&keys::probe("a2"), b"1500 200 ok", None).is_ok());
        assert!(store.set(&keys::probe("b1"), b"garbage", None).is_ok());
        let text = String::from_utf8(body(&c, &read(&c, &store), 10_000)).unwrap_or_default();
        for secret in ["sk-from-env", "sk-literal", "sk-az", "sk-in-query", "KEY_A"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        let doc: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert_eq!((doc["healthy_count"].as_u64(), doc["unhealthy_count"].as_u64()), (Some(2), Some(1)));
        assert_eq!(
            doc["deployments"][0],
            json!({"id": "a1", "model_group": "a", "provider": "openai", "model": "a-one", "cluster": "outbound|8000||h1",
                   "state": "cooling", "cooling_until_ms": 32_000, "cooldown_remaining_ms": 22_000, "failures_in_window": 2,
                   "last_error_class": "timeout", "last_probe": null})
        );
        let a2 = &doc["deployments"][1];
        assert_eq!((a2["state"].as_str(), a2["cooling_until_ms"].is_null(), a2["last_error_class"].is_null()), (Some("healthy"), true, true));
        assert_eq!(a2["last_probe"], json!({"at_ms": 1500, "status": 200, "result": "ok"}));
        assert!(doc["deployments"][2]["last_probe"].is_null(), "a malformed probe value reads as none");
    }

    #[test]
    fn expired_cooldowns_and_windows_read_as_healthy() {
        let c = cfg();
        let mut record = Cooldowns::default();
        record.extend("b1", 5_000, FailureClass::RateLimit);
        let store = MemStore::default();
        assert!(store.set(keys::COOLDOWNS, &record.encode(0, |_| true), None).is_ok());
        assert!(store.set(&keys::fails("b1"), b"1000 4", None).is_ok()); // the old two-field form
        let doc: Value = serde_json::from_slice(&body(&c, &read(&c, &store), 61_000)).unwrap_or(Value::Null);
        let b1 = &doc["deployments"][2];
        assert_eq!(b1["state"], "healthy");
        assert_eq!(b1["failures_in_window"], 0);
        assert_eq!(b1["last_error_class"], "rate_limit", "the cooldown's class when the window has none");
        assert_eq!(doc["unhealthy_count"], 0);
    }
}
