//! Where the next attempt goes after a failure: LiteLLM's order — retries within the model
//! group (`num_retries`, or the per-class `retry_policy`, replaced for a group by its
//! `model_group_retry_policy` entry), then the group's `fallbacks` in order (else the `"*"`
//! entry, else `default_fallbacks`), at most `max_fallbacks` of them. A prompt the upstream
//! rejects as too long, or for a content-policy violation, is no failure of the deployment: it
//! goes, without a retry, to `context_window_fallbacks` / `content_policy_fallbacks` (LiteLLM's
//! `should_retry_this_error` raises those errors straight to their fallback list; a 400 is never
//! retried). Without `content_policy_fallbacks` / `context_window_fallbacks` such a rejection
//! continues `fallbacks`, as LiteLLM's does.

use super::state::AttemptState;
use crate::config::{PerClass, RouterConfig, RouterSettings};
use crate::health::FailureClass;

/// A model group to try next, with the counters the attempt will carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub group: usize,
    /// Position in the fallback chain (0 = the origin group).
    pub fallback: u32,
    /// Retries used within `group`, this attempt included.
    pub retries: u32,
    /// The fallback list `fallback` is a position in (what the attempt's state carries on).
    pub chain: Chain,
}

/// The retry policy of `group`: its `model_group_retry_policy` entry when it has one (LiteLLM
/// takes that entry instead of `retry_policy`, not merged with it), else `retry_policy`.
pub fn retry_policy<'r>(router: &'r RouterSettings, group: &str) -> &'r PerClass {
    router.model_group_retry_policy.iter().find(|(g, _)| g == group).map_or(&router.retry_policy, |(_, p)| p)
}

/// Retries allowed within `group` after a failure of `class`.
pub fn retry_budget(router: &RouterSettings, group: &str, class: FailureClass) -> u32 {
    let p = retry_policy(router, group);
    let n = match class {
        FailureClass::RateLimit => p.rate_limit.or(router.num_retries),
        FailureClass::Timeout | FailureClass::ConnectFailure => p.timeout.or(router.num_retries),
        FailureClass::ServerError | FailureClass::Reset => p.internal_server.or(router.num_retries),
        FailureClass::Authentication => p.authentication,
        FailureClass::NotFound => None,
    };
    u32::try_from(n.unwrap_or(0)).unwrap_or(u32::MAX)
}

/// The most retries any error class may get in `group` (decides whether a retry is possible at all).
fn max_retry_budget(router: &RouterSettings, group: &str) -> u32 {
    [
        FailureClass::RateLimit,
        FailureClass::Timeout,
        FailureClass::ServerError,
        FailureClass::Authentication,
    ]
    .into_iter()
    .map(|c| retry_budget(router, group, c))
    .max()
    .unwrap_or(0)
}

/// Which fallback list applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Chain {
    /// `fallbacks` (else `default_fallbacks`): for failures and unavailable groups.
    #[default]
    Regular,
    /// `context_window_fallbacks`: for prompts too long for the group.
    ContextWindow,
    /// `content_policy_fallbacks`: for requests a provider refused on content policy.
    ContentPolicy,
}

/// The fallback groups of `origin` (table indices), in order, without `origin` itself.
#[cfg(test)]
pub fn fallback_chain(cfg: &RouterConfig, origin: &str) -> Vec<usize> {
    chain(cfg, origin, Chain::Regular)
}

/// The groups of one fallback list for `origin`, in order, without `origin` itself.
pub fn chain(cfg: &RouterConfig, origin: &str, which: Chain) -> Vec<usize> {
    let r = &cfg.router;
    let lists = match which {
        Chain::Regular => &r.fallbacks,
        Chain::ContextWindow => &r.context_window_fallbacks,
        Chain::ContentPolicy => &r.content_policy_fallbacks,
    };
    let default: &[String] = match which {
        Chain::Regular => r.default_fallbacks.as_slice(),
        Chain::ContextWindow | Chain::ContentPolicy => &[],
    };
    let names: &[String] = lists
        .iter()
        .find(|(g, _)| g == origin)
        .or_else(|| lists.iter().find(|(g, _)| g == "*"))
        .map(|(_, list)| list.as_slice())
        .unwrap_or(default);
    let mut out = Vec::new();
    for name in names {
        if let Some(resolved) = cfg.table.resolve(name) {
            let is_origin = cfg.table.groups.get(resolved.group).is_some_and(|g| g.name == origin);
            if !is_origin && !out.contains(&resolved.group) {
                out.push(resolved.group);
            }
        }
    }
    out.truncate(usize::try_from(r.max_fallbacks).unwrap_or(usize::MAX));
    out
}

/// Targets to try, in order, after `state`'s attempt failed with `class`.
pub fn next_targets(cfg: &RouterConfig, state: &AttemptState, class: FailureClass) -> Vec<Target> {
    let mut out = Vec::new();
    if state.retries < retry_budget(&cfg.router, &state.group, class) {
        if let Some(g) = cfg.table.group_index(&state.group) {
            out.push(Target { group: g, fallback: state.fallback, retries: state.retries + 1, chain: state.chain });
        }
    }
    for (i, &g) in chain(cfg, &state.origin_group, state.chain).iter().enumerate() {
        let position = u32::try_from(i + 1).unwrap_or(u32::MAX);
        if position > state.fallback {
            out.push(Target { group: g, fallback: position, retries: 0, chain: state.chain });
        }
    }
    out
}

/// Targets after the upstream rejected the request itself (`which`: too long for the context
/// window, or a content-policy violation): the rest of the origin's list of that kind. No
/// retry: every member of a group shares its context window, and LiteLLM does not retry either
/// error when its fallback list is set.
pub fn rejection_targets(cfg: &RouterConfig, state: &AttemptState, which: Chain) -> Vec<Target> {
    let done = if state.chain == which { state.fallback } else { 0 };
    chain(cfg, &state.origin_group, which)
        .into_iter()
        .enumerate()
        .filter_map(|(i, g)| {
            let position = u32::try_from(i + 1).unwrap_or(u32::MAX);
            (position > done).then_some(Target { group: g, fallback: position, retries: 0, chain: which })
        })
        .collect()
}

/// The list a content-policy rejection continues: `content_policy_fallbacks` when the config
/// has one, else `fallbacks` (LiteLLM's `async_function_with_fallbacks`: "No content_policy_fallback
/// set. Defaulting to fallbacks, if available"; an empty list counts as none there too, since the
/// router takes `content_policy_fallbacks or litellm.content_policy_fallbacks`).
pub fn policy_chain(cfg: &RouterConfig) -> Chain {
    if cfg.router.content_policy_fallbacks.is_empty() {
        Chain::Regular
    } else {
        Chain::ContentPolicy
    }
}

/// The list a context-window rejection continues: `context_window_fallbacks` when the config
/// has one, else `fallbacks` (LiteLLM: "No context_window_fallback set. Defaulting to
/// fallbacks, if available").
pub fn context_chain(cfg: &RouterConfig) -> Chain {
    if cfg.router.context_window_fallbacks.is_empty() {
        Chain::Regular
    } else {
        Chain::ContextWindow
    }
}

/// Retries within `group` after a content-policy rejection: the group's policy's
/// `ContentPolicyViolationErrorRetries`, else its `BadRequestErrorRetries` (the error is a
/// `BadRequestError` subclass; LiteLLM's `get_num_retries_from_retry_policy` checks it first).
/// `num_retries` never applies: LiteLLM does not retry a 400 unless a retry policy says so.
pub fn policy_retry_budget(router: &RouterSettings, group: &str) -> u32 {
    let p = retry_policy(router, group);
    u32::try_from(p.content_policy.or(p.bad_request).unwrap_or(0)).unwrap_or(u32::MAX)
}

/// Targets after a content-policy rejection: a retry in the group while its retry policy grants
/// one (LiteLLM then retries before falling back, skipping the deployment that refused), then
/// the rest of [`policy_chain`].
pub fn policy_targets(cfg: &RouterConfig, state: &AttemptState) -> Vec<Target> {
    let mut out = Vec::new();
    if state.retries < policy_retry_budget(&cfg.router, &state.group) {
        if let Some(g) = cfg.table.group_index(&state.group) {
            out.push(Target { group: g, fallback: state.fallback, retries: state.retries + 1, chain: state.chain });
        }
    }
    out.extend(rejection_targets(cfg, state, policy_chain(cfg)));
    out
}

/// Whether a content-policy rejection of the attempt `state` describes could be followed by
/// another attempt (`untried_in_group` as for [`can_failover`]).
pub fn can_policy_failover(cfg: &RouterConfig, state: &AttemptState, untried_in_group: bool) -> bool {
    (untried_in_group && state.retries < policy_retry_budget(&cfg.router, &state.group))
        || can_rejection_failover(cfg, state, policy_chain(cfg))
}

/// Whether a fallback of kind `which` could follow the attempt `state` describes.
pub fn can_rejection_failover(cfg: &RouterConfig, state: &AttemptState, which: Chain) -> bool {
    !rejection_targets(cfg, state, which).is_empty()
}

/// Whether another attempt could follow the one `state` describes (`untried_in_group`: its
/// group still has a member this request has not tried). Lets the upstream side pass a failure
/// through untouched when nothing is left to try.
pub fn can_failover(cfg: &RouterConfig, state: &AttemptState, untried_in_group: bool) -> bool {
    let retry = state.retries < max_retry_budget(&cfg.router, &state.group) && untried_in_group;
    let fallback = u32::try_from(chain(cfg, &state.origin_group, state.chain).len()).unwrap_or(u32::MAX) > state.fallback;
    retry || fallback
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use serde_json::json;

    fn cfg(router: serde_json::Value) -> RouterConfig {
        let v = json!({
            "model_list": [
                {"model_name": "a", "litellm_params": {"model": "openai/a"}},
                {"model_name": "a", "litellm_params": {"model": "openai/a2"}},
                {"model_name": "b", "litellm_params": {"model": "openai/b"}},
                {"model_name": "c", "litellm_params": {"model": "openai/c"}},
            ],
            "router_settings": router,
        });
        match config::load(v.to_string().as_bytes(), &|_| None).config {
            Some(c) => c,
            None => panic!("refused"),
        }
    }

    fn state(group: &str, fallback: u32, retries: u32, tried: &[&str]) -> AttemptState {
        AttemptState {
            origin_group: "a".into(),
            group: group.into(),
            fallback,
            retries,
            tried: tried.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn content_policy_retries_come_from_the_retry_policy_only() {
        let c = cfg(json!({
            "num_retries": 3,
            "retry_policy": {"BadRequestErrorRetries": 1},
            "model_group_retry_policy": {"b": {"ContentPolicyViolationErrorRetries": 2, "BadRequestErrorRetries": 0}},
            "content_policy_fallbacks": [{"a": ["c"]}],
        }));
        assert_eq!(policy_retry_budget(&c.router, "a"), 1, "BadRequestErrorRetries covers its subclass");
        assert_eq!(policy_retry_budget(&c.router, "b"), 2, "the subclass's own entry first");
        let none = cfg(json!({"num_retries": 3}));
        assert_eq!(policy_retry_budget(&none.router, "a"), 0, "num_retries never retries a 400");
        let first = state("a", 0, 0, &["x"]);
        let t = policy_targets(&c, &first);
        assert_eq!(names(&c, &t), [("a".into(), 0, 1), ("c".into(), 1, 0)]);
        assert_eq!(t.iter().map(|t| t.chain).collect::<Vec<_>>(), [Chain::Regular, Chain::ContentPolicy]);
        let retried = state("a", 0, 1, &["x", "y"]);
        assert_eq!(names(&c, &policy_targets(&c, &retried)), [("c".into(), 1, 0)]);
        assert!(can_policy_failover(&c, &first, false), "the fallback remains");
        let only_retry = cfg(json!({"retry_policy": {"ContentPolicyViolationErrorRetries": 1}}));
        assert!(can_policy_failover(&only_retry, &first, true));
        assert!(!can_policy_failover(&only_retry, &first, false), "no untried member, no list");
        assert!(!can_policy_failover(&none, &first, true));
    }

    fn names(c: &RouterConfig, t: &[Target]) -> Vec<(String, u32, u32)> {
        t.iter().map(|t| (c.table.groups[t.group].name.clone(), t.fallback, t.retries)).collect()
    }

    #[test]
    fn retries_then_fallbacks_in_order() {
        let c = cfg(json!({"num_retries": 1, "fallbacks": [{"a": ["b", "c"]}]}));
        let t = next_targets(&c, &state("a", 0, 0, &["x"]), FailureClass::ServerError);
        assert_eq!(names(&c, &t), [("a".into(), 0, 1), ("b".into(), 1, 0), ("c".into(), 2, 0)]);
        // Retry used up: straight to the fallbacks.
        let t = next_targets(&c, &state("a", 0, 1, &["x", "y"]), FailureClass::ServerError);
        assert_eq!(names(&c, &t), [("b".into(), 1, 0), ("c".into(), 2, 0)]);
        // Serving from the first fallback: only the later one remains (plus its own retry).
        let t = next_targets(&c, &state("b", 1, 0, &["x", "y", "z"]), FailureClass::ServerError);
        assert_eq!(names(&c, &t), [("b".into(), 1, 1), ("c".into(), 2, 0)]);
    }

    #[test]
    fn per_class_policy_and_no_retry_on_auth_by_default() {
        let c = cfg(json!({"num_retries": 2, "retry_policy": {"RateLimitErrorRetries": 0}}));
        assert_eq!(retry_budget(&c.router, "a", FailureClass::RateLimit), 0);
        assert_eq!(retry_budget(&c.router, "a", FailureClass::ServerError), 2);
        assert_eq!(retry_budget(&c.router, "a", FailureClass::Authentication), 0);
        assert_eq!(retry_budget(&c.router, "a", FailureClass::NotFound), 0);
        assert!(next_targets(&c, &state("a", 0, 0, &["x"]), FailureClass::RateLimit).is_empty());
    }

    #[test]
    fn wildcard_and_default_fallbacks_and_max() {
        let c = cfg(json!({"fallbacks": [{"*": ["b"]}]}));
        assert_eq!(fallback_chain(&c, "a"), vec![1]);
        let c = cfg(json!({"default_fallbacks": ["c", "b"], "max_fallbacks": 1}));
        assert_eq!(fallback_chain(&c, "a").len(), 1);
        let c = cfg(json!({"fallbacks": [{"a": ["a", "nope", "b", "b"]}]}));
        assert_eq!(fallback_chain(&c, "a"), vec![1]);
    }

    #[test]
    fn can_failover_reflects_what_is_left() {
        let none = cfg(json!({}));
        assert!(!can_failover(&none, &state("a", 0, 0, &["x"]), true));
        let retry = cfg(json!({"num_retries": 1}));
        assert!(can_failover(&retry, &state("a", 0, 0, &["x"]), true));
        assert!(!can_failover(&retry, &state("a", 0, 0, &["x", "y"]), false));
        assert!(!can_failover(&retry, &state("a", 0, 1, &["x"]), true));
        let fb = cfg(json!({"fallbacks": [{"a": ["b"]}]}));
        assert!(can_failover(&fb, &state("a", 0, 0, &["x"]), false));
        assert!(!can_failover(&fb, &state("b", 1, 0, &["x", "z"]), false));
    }

    #[test]
    fn model_group_retry_policy_replaces_retry_policy_for_its_group() {
        let c = cfg(json!({
            "num_retries": 1,
            "retry_policy": {"RateLimitErrorRetries": 3, "TimeoutErrorRetries": 2},
            "model_group_retry_policy": {"a": {"RateLimitErrorRetries": 0}},
        }));
        // `a`'s own entry replaces the whole policy (not merged): no rate-limit retry, and the
        // classes it does not name fall back to num_retries, not to retry_policy.
        assert_eq!(retry_budget(&c.router, "a", FailureClass::RateLimit), 0);
        assert_eq!(retry_budget(&c.router, "a", FailureClass::Timeout), 1);
        assert_eq!(retry_budget(&c.router, "b", FailureClass::RateLimit), 3);
        assert_eq!(retry_budget(&c.router, "b", FailureClass::Timeout), 2);
        assert!(next_targets(&c, &state("a", 0, 0, &["x"]), FailureClass::RateLimit).is_empty());
        // The group being tried decides, not the origin.
        let t = next_targets(&c, &state("b", 1, 0, &["x", "z"]), FailureClass::RateLimit);
        assert_eq!(names(&c, &t), [("b".into(), 1, 1)]);
        let none = cfg(json!({"model_group_retry_policy": {"a": {"TimeoutErrorRetries": 1}}}));
        assert!(can_failover(&none, &state("a", 0, 0, &["x"]), true));
        assert!(!can_failover(&none, &state("b", 0, 0, &["x"]), true));
    }

    #[test]
    fn rejection_lists_are_separate_and_never_retried() {
        let c = cfg(json!({
            "num_retries": 3,
            "fallbacks": [{"a": ["c"]}],
            "context_window_fallbacks": [{"a": ["b"]}],
            "content_policy_fallbacks": [{"a": ["c", "b"]}],
        }));
        let first = state("a", 0, 0, &["x"]);
        assert_eq!(names(&c, &rejection_targets(&c, &first, Chain::ContentPolicy)), [("c".into(), 1, 0), ("b".into(), 2, 0)]);
        assert_eq!(names(&c, &rejection_targets(&c, &first, Chain::ContextWindow)), [("b".into(), 1, 0)]);
        // Serving from the first content-policy fallback: only the second is left; a regular
        // failure continues that list.
        let on_c = AttemptState { chain: Chain::ContentPolicy, ..state("c", 1, 0, &["x", "z"]) };
        assert_eq!(names(&c, &rejection_targets(&c, &on_c, Chain::ContentPolicy)), [("b".into(), 2, 0)]);
        assert!(can_rejection_failover(&c, &on_c, Chain::ContentPolicy));
        assert_eq!(names(&c, &next_targets(&c, &on_c, FailureClass::ServerError)), [("c".into(), 1, 1), ("b".into(), 2, 0)]);
        let on_b = AttemptState { chain: Chain::ContentPolicy, ..state("b", 2, 0, &["x", "z", "y"]) };
        assert!(!can_rejection_failover(&c, &on_b, Chain::ContentPolicy));
        assert_eq!(policy_chain(&c), Chain::ContentPolicy);
        // No content-policy list: the rejection continues `fallbacks` (still without a retry).
        let bare = cfg(json!({"num_retries": 2, "fallbacks": [{"a": ["b"]}], "content_policy_fallbacks": []}));
        assert_eq!(policy_chain(&bare), Chain::Regular);
        assert!(!can_rejection_failover(&bare, &first, Chain::ContentPolicy));
        assert_eq!(names(&bare, &rejection_targets(&bare, &first, policy_chain(&bare))), [("b".into(), 1, 0)]);
        let on_b = state("b", 1, 0, &["x", "z"]);
        assert!(!can_rejection_failover(&bare, &on_b, policy_chain(&bare)));
    }
}
