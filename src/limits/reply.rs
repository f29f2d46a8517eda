//! The client's view of the limits: the 429 of a refused request (LiteLLM's body) and the
//! OpenAI `x-ratelimit-*` headers of refused and admitted ones.
//!
//! LiteLLM (`litellm/proxy/hooks/parallel_request_limiter_v3.py`, `should_rate_limit`) raises
//! `HTTPException(429, detail="Rate limit exceeded for {descriptor_key}: {value}. Limit type:
//! {requests|tokens|max_parallel_requests}. Current limit: {n}, Remaining: {r}. Limit resets
//! at: {%Y-%m-%d %H:%M:%S} UTC")`; its endpoints turn an `HTTPException` into a `ProxyException`
//! with `type = getattr(e, "type", "None")`, `param` "None" and `code` the status as a string
//! (`litellm/proxy/proxy_server.py`, chat completion's exception handler), so the body is
//! `{"error":{"message":…,"type":"None","param":"None","code":"429"}}`. LiteLLM's `retry-after`
//! is the whole window (60); here it is the time the window really has left (at least 1 s).
//! The OpenAI SDK raises `RateLimitError` for any 429. One deviation: LiteLLM's message names the
//! key by its hash; here the key is named by its `key_alias` (or `keys[i]`), as every message of
//! this router, which never carries a key or its hash.
//!
//! Headers (OpenAI's names): `x-ratelimit-limit-requests`, `x-ratelimit-remaining-requests`,
//! `x-ratelimit-reset-requests` and the `-tokens` set, from the tightest limit of each kind
//! (least remaining: key, team and key-per-model all apply); the reset is a duration such as
//! `42s`, as OpenAI sends it.

use super::admit::{Kind, Limit, Reason, Refusal, Scope, Status};
use crate::openai::ApiError;
use crate::pipeline::request::Reply;

/// `42s`: whole seconds left until `reset_ms`, rounded up.
fn reset(reset_ms: u64, now_ms: u64) -> String {
    format!("{}s", reset_ms.saturating_sub(now_ms).div_ceil(1000))
}

fn set(kind: Kind) -> Option<[&'static str; 3]> {
    match kind {
        Kind::Requests => Some(["x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests"]),
        Kind::Tokens => Some(["x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"]),
        Kind::Parallel | Kind::Budget => None,
    }
}

/// The headers of an admitted request: per kind, the status with the least remaining.
pub fn status_headers(statuses: &[Status], now_ms: u64) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for kind in [Kind::Requests, Kind::Tokens] {
        let Some(names) = set(kind) else { continue };
        let Some(tight) = statuses.iter().filter(|s| s.kind == kind).min_by_key(|s| s.remaining) else { continue };
        let [limit, remaining, reset_name] = names;
        out.push((limit, tight.limit.to_string()));
        out.push((remaining, tight.remaining.to_string()));
        out.push((reset_name, reset(tight.reset_ms, now_ms)));
    }
    out
}

/// The USD amount of `nanos` as LiteLLM prints its float spend and budgets (`0.000123`, `1.0`):
/// [`super::cost::usd`]'s exact decimal, with `.0` on whole amounts.
pub fn usd(nanos: u64) -> String {
    let s = super::cost::usd(nanos);
    if s.contains('.') {
        s
    } else {
        s + ".0"
    }
}

/// The budget headers of an admitted request. For the key's own budget LiteLLM's
/// `x-litellm-key-max-budget` and `x-litellm-key-spend` (spend settled before this request, in
/// USD; no max header for a soft-only budget); and [`SOFT_BUDGET_HEADER`] naming each scope whose
/// spend had reached its `soft_budget` (`key`, `team`, `user`, `key_model`), comma-separated.
pub fn budget_headers(statuses: &[Status], soft_exceeded: &[usize], plan: &[Limit]) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let own = statuses.iter().find(|s| s.kind == Kind::Budget && matches!(plan.get(s.index).map(|l| &l.scope), Some(Scope::Key(_))));
    if let Some(s) = own {
        if s.limit != u64::MAX {
            out.push(("x-litellm-key-max-budget", usd(s.limit)));
        }
        out.push(("x-litellm-key-spend", usd(s.used)));
    }
    let scopes: Vec<&str> = soft_exceeded.iter().filter_map(|&i| plan.get(i)).map(|l| l.scope.tag()).collect();
    if !scopes.is_empty() {
        out.push((SOFT_BUDGET_HEADER, scopes.join(",")));
    }
    out
}

/// Names the scopes whose `soft_budget` has been reached (a warning to the client; never a refusal).
pub const SOFT_BUDGET_HEADER: &str = "x-llm-router-soft-budget-exceeded";

/// LiteLLM's `Limit resets at` time.
fn litellm_time(ms: u64) -> String {
    crate::config::iso8601::format_ms(ms).replace('T', " ").replace('Z', " UTC")
}

/// The 429 of a refused request; `key_name` stands for the key's hash in the message.
pub fn refusal_reply(refusal: &Refusal, key_name: &str, now_ms: u64) -> Reply {
    let scope = match &refusal.scope {
        Scope::Key(_) => Scope::Key(key_name.to_string()),
        Scope::KeyModel { model, .. } => Scope::KeyModel { key: key_name.to_string(), model: model.clone() },
        other => other.clone(),
    };
    let refusal = &Refusal { scope, ..refusal.clone() };
    if refusal.kind == Kind::Budget && refusal.reason == Reason::Over {
        return budget_reply(refusal, now_ms);
    }
    let retry_after = refusal.retry_after_s(now_ms);
    let resets_at = if refusal.reset_ms == u64::MAX { now_ms.saturating_add(retry_after.saturating_mul(1000)) } else { refusal.reset_ms };
    let message = format!("{} Limit resets at: {}", refusal.message(), litellm_time(resets_at));
    let error = ApiError::new(429, "None", Some("None"), Some("429"), message);
    let mut headers = vec![("retry-after", retry_after.to_string())];
    if let Some([limit, remaining, reset_name]) = set(refusal.kind) {
        headers.push((limit, refusal.limit.to_string()));
        headers.push((remaining, refusal.remaining.to_string()));
        headers.push((reset_name, reset(resets_at, now_ms)));
    }
    Reply { error, headers }
}

/// Over budget: LiteLLM's `BudgetExceededError` as its proxy answers it (`type:
/// budget_exceeded`, status 429 — `auth_exception_handler.py` uses the error's status, 429 by
/// default; older versions answered 400), `code` the status as a string. A budget with a
/// window also gets `retry-after` (its reset); one without never resets (no `retry-after`).
fn budget_reply(refusal: &Refusal, now_ms: u64) -> Reply {
    let mut message = refusal.message();
    let mut headers = Vec::new();
    if refusal.reset_ms != u64::MAX {
        message = format!("{message}. Budget resets at: {}", litellm_time(refusal.reset_ms));
        headers.push(("retry-after", refusal.retry_after_s(now_ms).to_string()));
    }
    Reply { error: ApiError::new(429, "budget_exceeded", None, Some("429"), message), headers }
}

/// A request refused because the rate limit service could not answer and limits of `kind` fail
/// closed (`rate_limit_service.failure_mode`): 503, OpenAI-shaped (the SDK's
/// `InternalServerError`, which it retries), with a short `retry-after`.
pub fn unavailable_reply(kind: Kind) -> Reply {
    let message = format!(
        "The rate limit service could not be reached to check this request's {} limit, which fails closed. Retry shortly.",
        match kind {
            Kind::Requests => "rpm",
            Kind::Tokens => "tpm",
            Kind::Parallel => "max_parallel_requests",
            Kind::Budget => "budget",
        }
    );
    let error = ApiError::new(503, "service_unavailable_error", None, Some("rate_limit_service_unavailable"), message);
    Reply { error, headers: vec![("retry-after", "1".to_string())] }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{Check, Window};

    const NOW: u64 = 1_700_000_000_000; // 2023-11-14 22:13:20 UTC

    fn st(kind: Kind, limit: u64, remaining: u64, reset_ms: u64) -> Status {
        Status { index: 0, kind, limit, remaining, used: 0, reset_ms }
    }

    #[test]
    fn tightest_limit_of_each_kind_gives_the_headers() {
        let h = status_headers(
            &[st(Kind::Parallel, 2, 1, u64::MAX), st(Kind::Requests, 10, 7, NOW + 30_000), st(Kind::Requests, 5, 2, NOW + 1_500), st(Kind::Tokens, 100, 40, NOW + 60_000)],
            NOW,
        );
        let want: Vec<(&str, String)> = vec![
            ("x-ratelimit-limit-requests", "5".into()),
            ("x-ratelimit-remaining-requests", "2".into()),
            ("x-ratelimit-reset-requests", "2s".into()),
            ("x-ratelimit-limit-tokens", "100".into()),
            ("x-ratelimit-remaining-tokens", "40".into()),
            ("x-ratelimit-reset-tokens", "60s".into()),
        ];
        assert_eq!(h, want);
        assert!(status_headers(&[st(Kind::Parallel, 1, 0, u64::MAX)], NOW).is_empty());
    }

    #[test]
    fn refusal_is_litellms_429_with_retry_after_and_headers() {
        let r = Refusal { index: 1, scope: Scope::Key("ab12".into()), kind: Kind::Requests, limit: 3, remaining: 0, used: 3, reset_ms: NOW + 12_300, reason: Reason::Over };
        let reply = refusal_reply(&r, "ab", NOW);
        assert_eq!((reply.error.status, reply.error.kind, reply.error.param, reply.error.code), (429, "None", Some("None"), Some("429")));
        assert_eq!(
            reply.error.message,
            "Rate limit exceeded for api_key: ab. Limit type: requests. Current limit: 3, Remaining: 0. Limit resets at: 2023-11-14 22:13:32 UTC"
        );
        assert_eq!(
            reply.headers,
            vec![
                ("retry-after", "13".to_string()),
                ("x-ratelimit-limit-requests", "3".into()),
                ("x-ratelimit-remaining-requests", "0".into()),
                ("x-ratelimit-reset-requests", "13s".into())
            ]
        );
        let p = Refusal { kind: Kind::Parallel, scope: Scope::Team("eng".into()), reset_ms: u64::MAX, limit: 2, ..r };
        let reply = refusal_reply(&p, "ab", NOW);
        assert_eq!(reply.headers, vec![("retry-after", "1".to_string())]);
        assert!(reply.error.message.starts_with("Rate limit exceeded for team: eng. Limit type: max_parallel_requests. Current limit: 2"), "{}", reply.error.message);
        let m = Refusal { scope: Scope::KeyModel { key: "ab12".into(), model: "gpt-4o".into() }, ..r };
        let msg = refusal_reply(&m, "app", NOW).error.message;
        assert!(msg.starts_with("Rate limit exceeded for model_per_key: app:gpt-4o."), "{msg}");
        assert!(!msg.contains("ab12"), "never the key's hash: {msg}");
    }
}
