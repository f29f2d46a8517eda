//! The limits that apply to each virtual key, built once per config (issue 12 phase 2a).
//!
//! Why this exists: the request path must know, for a key and the model it asked for, every
//! limit to admit against, without looking at the other keys. So the list is built at config
//! time, per key and per model the key has a per-model limit for: a request clones one prepared
//! list (its length is the key's own limits, never the number of keys).
//!
//! What applies (LiteLLM's v3 limiter, `litellm/proxy/hooks/parallel_request_limiter_v3.py`,
//! builds one descriptor each for `api_key`, `team` and `model_per_key` and refuses on the first
//! over limit; there is no precedence between a key's and its team's limits: all apply, so the
//! tightest wins): the key's `max_parallel_requests`, `rpm_limit`, `tpm_limit`, its team's,
//! and the key's `model_rpm_limit` / `model_tpm_limit` for the requested model. Order: parallel,
//! then rpm, then tpm (the most likely refusals first shortens transient false refusals; the
//! outcome does not depend on the order, `admit.rs`).
//!
//! Counters: `Limit::key` is derived from the key's hash and the team id, so a reload that keeps
//! them keeps the counters. Records of removed keys and teams are left in shared data (one small
//! record each; not deleted yet).

use super::admit::{Kind, Limit, Scope};
use super::counter::Check;
use super::window::{Window, DEFAULT_RATE_WINDOW_MS};
use crate::config::keys::Identities;
#[cfg(test)]
use crate::config::keys::Rates;

/// Output tokens reserved for a request that sets neither `max_tokens` nor
/// `max_completion_tokens` (settled to the actual usage when the response reports it).
pub const DEFAULT_OUTPUT_TOKENS: u64 = 4096;

/// The prepared lists of one key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPlan {
    /// Every limit of the key and its team.
    pub base: Vec<Limit>,
    /// Per model with a per-key-per-model limit: the whole list for a request to that model.
    pub per_model: Vec<(String, Vec<Limit>)>,
}

/// Lists per key, indexed like `access::Policy::keys`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plans {
    pub keys: Vec<KeyPlan>,
}

fn rate(scope: &Scope, kind: Kind, limit: Option<u64>, out: &mut Vec<Limit>) {
    let Some(limit) = limit else { return };
    let window = match kind {
        Kind::Parallel => Window::None,
        _ => Window::FirstHit { len_ms: DEFAULT_RATE_WINDOW_MS },
    };
    out.push(Limit { scope: scope.clone(), kind, limit, window, check: Check::Fits, soft: None });
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

impl Plans {
    pub fn build(ids: &Identities) -> Plans {
        let keys = ids
            .keys
            .iter()
            .map(|k| {
                let key = Scope::Key(hex(&k.hash));
                let team = k.team.and_then(|t| ids.teams.get(t)).map(|t| (Scope::Team(t.team_id.clone()), t.rates));
                let team_rates = team.as_ref().map(|(_, r)| *r).unwrap_or_default();
                let none = Scope::Team(String::new());
                let team_scope = team.as_ref().map_or(&none, |(s, _)| s);
                let mut base = Vec::new();
                let (own, theirs) = (k.rates, team_rates);
                for (kind, mine, team) in
                    [(Kind::Parallel, own.parallel, theirs.parallel), (Kind::Requests, own.rpm, theirs.rpm), (Kind::Tokens, own.tpm, theirs.tpm)]
                {
                    rate(&key, kind, mine, &mut base);
                    rate(team_scope, kind, team, &mut base);
                }
                let mut models: Vec<&str> = k.model_rpm.iter().chain(&k.model_tpm).map(|(m, _)| m.as_str()).collect();
                models.dedup();
                let mut per_model: Vec<(String, Vec<Limit>)> = Vec::new();
                for m in models {
                    if per_model.iter().any(|(have, _)| have == m) {
                        continue;
                    }
                    let scope = Scope::KeyModel { key: hex(&k.hash), model: m.to_string() };
                    let find = |list: &[(String, u64)]| list.iter().find(|(name, _)| name == m).map(|(_, n)| *n);
                    let mut list = base.clone();
                    // Keep kind order: the model's rpm after the other rpm limits, its tpm last.
                    let after_rpm = list.iter().rposition(|l| l.kind != Kind::Tokens).map_or(0, |i| i.saturating_add(1));
                    let mut extra_rpm = Vec::new();
                    rate(&scope, Kind::Requests, find(&k.model_rpm), &mut extra_rpm);
                    list.splice(after_rpm..after_rpm, extra_rpm);
                    rate(&scope, Kind::Tokens, find(&k.model_tpm), &mut list);
                    per_model.push((m.to_string(), list));
                }
                KeyPlan { base, per_model }
            })
            .collect();
        Plans { keys }
    }

    /// The limits of key `key` calling `model` (empty: nothing to admit).
    pub fn for_request(&self, key: usize, model: &str) -> &[Limit] {
        let Some(plan) = self.keys.get(key) else { return &[] };
        plan.per_model.iter().find(|(m, _)| m == model).map_or(&plan.base, |(_, l)| l)
    }

    /// Whether some key has a limit.
    pub fn any(&self) -> bool {
        self.keys.iter().any(|k| !k.base.is_empty() || !k.per_model.is_empty())
    }

    /// Every record key some list names (created empty at configure time).
    pub fn record_keys(&self) -> Vec<String> {
        let mut out: Vec<String> =
            self.keys.iter().flat_map(|k| k.base.iter().chain(k.per_model.iter().flat_map(|(_, l)| l.iter()))).map(Limit::key).collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// The tpm reservation: the input estimate plus the output cap (`max_completion_tokens`, else
/// `max_tokens`, else [`DEFAULT_OUTPUT_TOKENS`]), at least 1 (a zero demand would hold nothing,
/// so `tpm_limit: 0` would not refuse it). An estimate above a limit is held as the whole limit
/// (`Limit::amount`): the request then runs alone in its window.
pub fn token_demand(input_tokens: u64, max_output: Option<u64>) -> u64 {
    input_tokens.saturating_add(max_output.unwrap_or(DEFAULT_OUTPUT_TOKENS)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::keys::{KeyEntry, TeamEntry};

    fn key(rates: Rates, team: Option<usize>) -> KeyEntry {
        KeyEntry {
            hash: [0xab; 32],
            alias: None,
            team,
            models: vec![],
            aliases: vec![],
            expires_ms: None,
            blocked: false,
            identity: Default::default(),
            rates,
            model_rpm: vec![],
            model_tpm: vec![],
        }
    }

    fn team(rates: Rates) -> TeamEntry {
        TeamEntry { team_id: "eng".into(), alias: None, models: vec![], blocked: false, rates }
    }

    fn shape(l: &[Limit]) -> Vec<(Kind, &'static str, u64)> {
        l.iter()
            .map(|l| {
                let s = match l.scope {
                    Scope::Key(_) => "key",
                    Scope::Team(_) => "team",
                    Scope::User(_) => "user",
                    Scope::KeyModel { .. } => "key_model",
                };
                (l.kind, s, l.limit)
            })
            .collect()
    }

    #[test]
    fn key_and_team_limits_all_apply_in_kind_order() {
        let mut k = key(Rates { rpm: Some(10), tpm: Some(1000), parallel: None }, Some(0));
        k.model_rpm = vec![("gpt-4o".into(), 2)];
        k.model_tpm = vec![("gpt-4o".into(), 50), ("mini".into(), 70)];
        let ids = Identities { keys: vec![k], teams: vec![team(Rates { rpm: Some(5), tpm: None, parallel: Some(3) })] };
        let p = Plans::build(&ids);
        use Kind::*;
        assert_eq!(shape(p.for_request(0, "other")), vec![(Parallel, "team", 3), (Requests, "key", 10), (Requests, "team", 5), (Tokens, "key", 1000)]);
        assert_eq!(
            shape(p.for_request(0, "gpt-4o")),
            vec![(Parallel, "team", 3), (Requests, "key", 10), (Requests, "team", 5), (Requests, "key_model", 2), (Tokens, "key", 1000), (Tokens, "key_model", 50)]
        );
        assert_eq!(shape(p.for_request(0, "mini")).last(), Some(&(Tokens, "key_model", 70)));
        assert!(p.for_request(1, "gpt-4o").is_empty(), "unknown key index: nothing");
        let ab = "ab".repeat(32);
        assert_eq!(p.for_request(0, "gpt-4o")[3].key(), format!("llm_router.v1.limit.rpm.key_model.{ab}/gpt-4o"));
        assert_eq!(p.for_request(0, "x")[0].key(), "llm_router.v1.limit.parallel.team.eng");
        assert_eq!(p.record_keys().len(), 7);
        assert!(p.any());
    }

    #[test]
    fn keys_without_limits_have_empty_lists() {
        let ids = Identities { keys: vec![key(Rates::default(), Some(0))], teams: vec![team(Rates::default())] };
        let p = Plans::build(&ids);
        assert!(p.for_request(0, "m").is_empty());
        assert!(!p.any());
        assert!(p.record_keys().is_empty());
    }

    #[test]
    fn token_demand_adds_the_output_cap_or_the_default() {
        assert_eq!(token_demand(10, Some(5)), 15);
        assert_eq!(token_demand(10, None), 10 + DEFAULT_OUTPUT_TOKENS);
        assert_eq!(token_demand(u64::MAX, Some(1)), u64::MAX);
        assert_eq!(token_demand(0, Some(0)), 1);
    }
}
