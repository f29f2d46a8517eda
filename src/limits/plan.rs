//! The limits that apply to each virtual key, built once per config.
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
//! and the key's `model_max_parallel_requests` / `model_rpm_limit` / `model_tpm_limit` for the
//! requested model. Budgets: the key's `max_budget`, its team's — or, for a key without a team,
//! its user's (LiteLLM's docs: "if a key belongs to a team, the team budget is applied, not the
//! user's personal budget") — and the key's `model_max_budget`. Order: parallel, then rpm, tpm,
//! budgets (the most likely refusals first shortens transient false refusals; the outcome does
//! not depend on the order, `admit.rs`).
//!
//! Counters: `Limit::key` is derived from the key's hash, the team id and the user id, so a reload
//! that keeps them keeps the counters ([`Plans::record_keys`] lists them: created at configure
//! time, the ones a new config drops are emptied by `pipeline::reload`).

use super::admit::{Kind, Limit, Scope};
use super::counter::Check;
use super::window::{Window, DEFAULT_RATE_WINDOW_MS, PARALLEL_EPOCH_MS};
use crate::config::keys::{Budget, Identities, KeyEntry};
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
        Kind::Parallel => Window::Epoch { len_ms: PARALLEL_EPOCH_MS },
        _ => Window::FirstHit { len_ms: DEFAULT_RATE_WINDOW_MS },
    };
    out.push(Limit { scope: scope.clone(), kind, limit, window, check: Check::Fits, soft: None });
}

/// A budget limit: LiteLLM refuses once spend has *reached* `max_budget` (`spend >= max_budget`
/// in `auth_checks.py`), so the check is [`Check::BelowLimit`] (one request's reservation may
/// cross it, `limits` module docs, bound 2); a `soft_budget` alone counts spend against no limit.
/// No `budget_duration`: spend never resets ([`Window::None`]).
fn budget(scope: &Scope, b: &Budget, out: &mut Vec<Limit>) {
    if !b.any() {
        return;
    }
    let window = b.duration.map_or(Window::None, Window::Calendar);
    out.push(Limit { scope: scope.clone(), kind: Kind::Budget, limit: b.max_nanos.unwrap_or(u64::MAX), window, check: Check::BelowLimit, soft: b.soft_nanos });
}

/// Kind order in a list: the most likely refusals first (module docs).
pub fn rank(kind: Kind) -> u8 {
    match kind {
        Kind::Parallel => 0,
        Kind::Requests => 1,
        Kind::Tokens => 2,
        Kind::Budget => 3,
    }
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
        let keys = ids.keys.iter().map(|k| Self::key_plan(ids, k)).collect();
        Plans { keys }
    }

    fn key_plan(ids: &Identities, k: &KeyEntry) -> KeyPlan {
        let key = Scope::Key(hex(&k.hash));
        let team = k.team.and_then(|t| ids.teams.get(t));
        let mut base = Vec::new();
        rate(&key, Kind::Parallel, k.rates.parallel, &mut base);
        rate(&key, Kind::Requests, k.rates.rpm, &mut base);
        rate(&key, Kind::Tokens, k.rates.tpm, &mut base);
        budget(&key, &k.budget, &mut base);
        if let Some(t) = team {
            let scope = Scope::Team(t.team_id.clone());
            rate(&scope, Kind::Parallel, t.rates.parallel, &mut base);
            rate(&scope, Kind::Requests, t.rates.rpm, &mut base);
            rate(&scope, Kind::Tokens, t.rates.tpm, &mut base);
            budget(&scope, &t.budget, &mut base);
        } else if let Some(u) = k.user_id.as_deref().and_then(|id| ids.users.iter().find(|u| u.user_id == id)) {
            // LiteLLM: a key in a team spends the team's budget, not its user's personal one.
            budget(&Scope::User(u.user_id.clone()), &u.budget, &mut base);
        }
        // Stable: within a kind, key before team (the order LiteLLM lists its descriptors).
        base.sort_by_key(|l| rank(l.kind));
        let mut models: Vec<&str> = Vec::new();
        let counted = k.model_parallel.iter().chain(&k.model_rpm).chain(&k.model_tpm).map(|(m, _)| m);
        for m in counted.chain(k.model_budgets.iter().map(|(m, _)| m)) {
            if !models.contains(&m.as_str()) {
                models.push(m);
            }
        }
        let per_model = models
            .into_iter()
            .map(|m| {
                let scope = Scope::KeyModel { key: hex(&k.hash), model: m.to_string() };
                let find = |list: &[(String, u64)]| list.iter().find(|(name, _)| name == m).map(|(_, n)| *n);
                let mut list = base.clone();
                rate(&scope, Kind::Parallel, find(&k.model_parallel), &mut list);
                rate(&scope, Kind::Requests, find(&k.model_rpm), &mut list);
                rate(&scope, Kind::Tokens, find(&k.model_tpm), &mut list);
                if let Some((_, b)) = k.model_budgets.iter().find(|(name, _)| name == m) {
                    budget(&scope, b, &mut list);
                }
                // The model's limits after the key's and team's of the same kind.
                list.sort_by_key(|l| rank(l.kind));
                (m.to_string(), list)
            })
            .collect();
        KeyPlan { base, per_model }
    }

    /// The limits of key `key` calling `model` (empty: nothing to admit).
    pub fn for_request(&self, key: usize, model: &str) -> &[Limit] {
        let Some(plan) = self.keys.get(key) else { return &[] };
        plan.per_model.iter().find(|(m, _)| m == model).map_or(&plan.base, |(_, l)| l)
    }

    /// Whether key `key` has a limit.
    pub fn has(&self, key: usize) -> bool {
        self.keys.get(key).is_some_and(|k| !k.base.is_empty() || !k.per_model.is_empty())
    }

    /// Whether some key has a limit.
    pub fn any(&self) -> bool {
        self.keys.iter().any(|k| !k.base.is_empty() || !k.per_model.is_empty())
    }

    /// Whether some key spends against a budget (its requests then need their usage priced).
    pub fn any_budget(&self) -> bool {
        self.keys.iter().flat_map(|k| k.base.iter().chain(k.per_model.iter().flat_map(|(_, l)| l.iter()))).any(|l| l.kind == Kind::Budget)
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
    use crate::config::keys::{TeamEntry, UserEntry};

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
            model_parallel: vec![],
            budget: Budget::default(),
            model_budgets: vec![],
            user_id: None,
            tags: vec![],
            metadata: None,
        }
    }

    fn team(rates: Rates) -> TeamEntry {
        TeamEntry { team_id: "eng".into(), alias: None, models: vec![], blocked: false, rates, budget: Budget::default(), metadata: None }
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
        k.model_parallel = vec![("gpt-4o".into(), 1)];
        let ids = Identities { keys: vec![k], teams: vec![team(Rates { rpm: Some(5), tpm: None, parallel: Some(3) })], users: vec![] };
        let p = Plans::build(&ids);
        use Kind::*;
        assert_eq!(shape(p.for_request(0, "other")), vec![(Parallel, "team", 3), (Requests, "key", 10), (Requests, "team", 5), (Tokens, "key", 1000)]);
        assert_eq!(
            shape(p.for_request(0, "gpt-4o")),
            vec![
                (Parallel, "team", 3),
                (Parallel, "key_model", 1),
                (Requests, "key", 10),
                (Requests, "team", 5),
                (Requests, "key_model", 2),
                (Tokens, "key", 1000),
                (Tokens, "key_model", 50)
            ]
        );
        assert_eq!(shape(p.for_request(0, "mini")).last(), Some(&(Tokens, "key_model", 70)));
        assert!(p.for_request(1, "gpt-4o").is_empty(), "unknown key index: nothing");
        let ab = "ab".repeat(32);
        assert_eq!(p.for_request(0, "gpt-4o")[4].key(), format!("llm_router.v1.limit.rpm.key_model.{ab}/gpt-4o"));
        assert_eq!(p.for_request(0, "gpt-4o")[1].key(), format!("llm_router.v1.limit.parallel.key_model.{ab}/gpt-4o"));
        assert_eq!(p.for_request(0, "x")[0].key(), "llm_router.v1.limit.parallel.team.eng");
        assert_eq!(p.record_keys().len(), 8);
        assert!(p.any());
    }

    #[test]
    fn budgets_come_last_key_team_or_user_then_the_models() {
        use crate::limits::{parse, Window};
        let day = parse("1d").ok();
        let mut k = key(Rates { rpm: Some(10), tpm: None, parallel: None }, Some(0));
        k.budget = Budget { max_nanos: Some(5_000), soft_nanos: Some(4_000), duration: day };
        k.model_budgets = vec![("gpt-4o".into(), Budget { max_nanos: Some(700), soft_nanos: None, duration: None })];
        k.user_id = Some("ann".into());
        let mut t = team(Rates::default());
        t.budget = Budget { max_nanos: Some(9_000), soft_nanos: None, duration: None };
        let users = vec![UserEntry { user_id: "ann".into(), budget: Budget { max_nanos: Some(1), soft_nanos: None, duration: None } }];
        let mut ids = Identities { keys: vec![k.clone()], teams: vec![t], users };
        let p = Plans::build(&ids);
        // In a team: the team's budget, not the user's.
        assert_eq!(shape(p.for_request(0, "x")), vec![(Kind::Requests, "key", 10), (Kind::Budget, "key", 5_000), (Kind::Budget, "team", 9_000)]);
        let b = &p.for_request(0, "x")[1];
        assert_eq!((b.check, b.soft, b.window), (Check::BelowLimit, Some(4_000), Window::Calendar(day.unwrap_or(parse("1d").unwrap_or_else(|_| unreachable!())))));
        assert_eq!(shape(p.for_request(0, "gpt-4o")).last(), Some(&(Kind::Budget, "key_model", 700)));
        assert_eq!(p.for_request(0, "gpt-4o").last().map(|l| l.window), Some(Window::None), "no time_period: never resets");
        // Without a team: the user's budget.
        k.team = None;
        ids.keys = vec![k];
        let p = Plans::build(&ids);
        assert_eq!(shape(p.for_request(0, "x")), vec![(Kind::Requests, "key", 10), (Kind::Budget, "key", 5_000), (Kind::Budget, "user", 1)]);
        assert_eq!(p.for_request(0, "x")[2].key(), "llm_router.v1.limit.budget.user.ann");
    }

    #[test]
    fn a_soft_budget_alone_counts_spend_against_no_limit() {
        let mut k = key(Rates::default(), None);
        k.budget = Budget { max_nanos: None, soft_nanos: Some(10), duration: None };
        let p = Plans::build(&Identities { keys: vec![k], teams: vec![], users: vec![] });
        let l = &p.for_request(0, "m")[0];
        assert_eq!((l.kind, l.limit, l.soft), (Kind::Budget, u64::MAX, Some(10)));
    }

    #[test]
    fn keys_without_limits_have_empty_lists() {
        let ids = Identities { keys: vec![key(Rates::default(), Some(0))], teams: vec![team(Rates::default())], users: vec![] };
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
