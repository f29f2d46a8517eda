//! The upstream side of failover: what the filter instance running as an upstream HTTP filter
//! of a deployment cluster does with that deployment's response.
//!
//! A 400 is the client's (no retry, no fallback), except two rejections LiteLLM gives fallback
//! lists of their own: a prompt too long for the context window (`context_window_fallbacks`)
//! and a content-policy violation (`content_policy_fallbacks`). Telling them apart needs the
//! error body, so a 400 is read only while such a fallback remains, and matched the way
//! LiteLLM's exception mapping (`litellm/litellm_core_utils/exception_mapping_utils.py`) maps
//! that provider family's errors to `ContextWindowExceededError` / `ContentPolicyViolationError`.

use crate::failover::{failover_location, AttemptState, FailureReport};
use crate::provider::Wire;

/// Statuses that send the request on to its next attempt (when one is possible). 400 and other
/// client errors never do.
pub fn is_failover_status(status: u16) -> bool {
    matches!(status, 401 | 404 | 408 | 429 | 500..=599)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Leave the response alone.
    Pass,
    /// Turn it into `307` with this `location`: Envoy replays the request through the router.
    Redirect(String),
    /// The redirector answered (no upstream response: connect failure or timeout) but nothing
    /// is left to try: answer 503 instead of a bare 307.
    Unavailable,
    /// A 400 that may say "context too long" or "content policy" while such a fallback remains:
    /// hold the headers, read the (small) body, then decide with [`rejection_verdict`].
    Inspect,
}

/// Largest error body inspected for a context-window or content-policy error; longer ones pass through.
pub const MAX_INSPECTED_BODY: usize = 64 * 1024;

/// Phrases providers use for a prompt longer than the model's context window.
const CONTEXT_ERRORS: &[&str] = &[
    "context_length_exceeded",
    "maximum context length",
    "context window",
    "prompt is too long",
    "too many tokens",
    "input is too long",
];

/// Whether an error body says the prompt exceeds the context window.
pub fn is_context_window_error(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body).to_ascii_lowercase();
    CONTEXT_ERRORS.iter().any(|p| text.contains(p))
}

/// Azure's content-policy shapes (LiteLLM `ExceptionCheckers.is_azure_content_policy_violation_error`,
/// lowercase; `responsibleaipolicyviolation` also covers the structured `innererror.code` check).
const AZURE_POLICY_ERRORS: &[&str] = &[
    "content_policy_violation",
    "responsibleaipolicyviolation",
    "the response was filtered due to the prompt triggering azure openai's content management",
    "your task failed as a result of our safety system",
    "the model produced invalid content",
    "content_filter_policy",
    "your request was rejected as a result of our safety system",
];

/// LiteLLM's `is_error_str_rate_limit` phrase branch (`rate[\s_\-]*limit`, Mistral's capacity
/// message): checked before the content-policy shapes for OpenAI-compatible providers.
fn mentions_rate_limit(lower: &str) -> bool {
    if lower.contains("service tier capacity exceeded") {
        return true;
    }
    lower.match_indices("rate").any(|(i, m)| {
        let rest = lower.get(i + m.len()..).unwrap_or("");
        rest.trim_start_matches(|c: char| c.is_whitespace() || c == '_' || c == '-').starts_with("limit")
    })
}

/// Whether an error body is a content-policy rejection by a provider of family `wire`: OpenAI and
/// the OpenAI-compatible providers (LiteLLM `_map_openai_exception`), Azure (`_map_azure_exception`),
/// Anthropic (`_map_anthropic_exception`). Each mapping checks context-window (and, for some,
/// rate-limit or overload) shapes first; those are not content-policy errors here either.
pub fn is_content_policy_error(wire: Wire, body: &[u8]) -> bool {
    if is_context_window_error(body) {
        return false;
    }
    let text = String::from_utf8_lossy(body);
    let lower = text.to_ascii_lowercase();
    match wire {
        Wire::OpenAi => {
            !mentions_rate_limit(&lower)
                && ((text.contains("invalid_request_error") && text.contains("content_policy_violation"))
                    || (text.contains("Invalid prompt") && text.contains("violating our usage policy"))
                    || lower.contains("request was rejected as a result of the safety system"))
        }
        Wire::Azure => AZURE_POLICY_ERRORS.iter().any(|p| lower.contains(p)),
        Wire::Anthropic => {
            !text.contains("overloaded_error")
                && !text.contains("Overloaded")
                && !text.contains("Invalid API Key")
                && text.contains("content filtering policy")
        }
    }
}

/// The decision on an inspected 400 body: a context-window fallback for "prompt too long", a
/// content-policy fallback for a content-policy violation, else the 400 goes to the client.
pub fn rejection_verdict(state: &AttemptState, encoded: &str, body: &[u8]) -> Verdict {
    let context_window = is_context_window_error(body);
    let content_policy = !context_window && state.policy_failover.is_some_and(|wire| is_content_policy_error(wire, body));
    if (context_window && state.can_context_failover) || content_policy {
        let report = FailureReport { status: 400, retry_after_ms: None, context_window, content_policy };
        Verdict::Redirect(failover_location(&state.authority, encoded, &report))
    } else {
        Verdict::Pass
    }
}

/// Decides for one response. `state` is the attempt state the router attached to the request
/// (None when the request did not come through the router); `redirector` says the response is
/// the local redirector's (the real upstream never answered).
/// `encoded` is the state exactly as received (it is passed on, signature included).
pub fn verdict(state: Option<(&AttemptState, &str)>, status: u16, redirector: bool, retry_after_ms: Option<u64>) -> Verdict {
    let Some((state, encoded)) = state else {
        // Without state the redirector's own 307 (to the original URL) must never be followed.
        return if redirector { Verdict::Unavailable } else { Verdict::Pass };
    };
    if status == 400 && !redirector && (state.can_context_failover || state.policy_failover.is_some()) {
        return Verdict::Inspect;
    }
    let failed = redirector || is_failover_status(status);
    match (failed, state.can_failover) {
        (false, _) => Verdict::Pass,
        (true, true) => {
            let report = FailureReport { status: if redirector { 0 } else { status }, retry_after_ms, context_window: false, content_policy: false };
            Verdict::Redirect(failover_location(&state.authority, encoded, &report))
        }
        (true, false) if redirector => Verdict::Unavailable,
        (true, false) => Verdict::Pass,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(can_failover: bool) -> AttemptState {
        AttemptState { can_failover, authority: "gw".into(), ..Default::default() }
    }

    #[test]
    fn failures_redirect_only_when_something_is_left() {
        let s = state(true);
        let s = Some((&s, "S"));
        assert_eq!(verdict(s, 200, false, None), Verdict::Pass);
        assert_eq!(verdict(s, 400, false, None), Verdict::Pass);
        assert_eq!(verdict(s, 422, false, None), Verdict::Pass);
        assert_eq!(
            verdict(s, 429, false, Some(7_000)),
            Verdict::Redirect("http://gw/__llm_router/failover?status=429&ra=7000&state=S".into())
        );
        assert_eq!(verdict(s, 307, true, None), Verdict::Redirect("http://gw/__llm_router/failover?status=0&state=S".into()));
        let last = state(false);
        let last = Some((&last, "S"));
        assert_eq!(verdict(last, 500, false, None), Verdict::Pass);
        assert_eq!(verdict(last, 307, true, None), Verdict::Unavailable);
        assert_eq!(verdict(None, 500, false, None), Verdict::Pass);
        assert_eq!(verdict(None, 307, true, None), Verdict::Unavailable);
    }

    #[test]
    fn context_window_errors_go_to_the_context_fallback() {
        let s = AttemptState { can_context_failover: true, authority: "gw".into(), ..Default::default() };
        assert_eq!(verdict(Some((&s, "S")), 400, false, None), Verdict::Inspect);
        let openai = br#"{"error":{"message":"This model's maximum context length is 8192 tokens.","code":"context_length_exceeded"}}"#;
        let anthropic = br#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#;
        for body in [openai.as_slice(), anthropic.as_slice()] {
            assert_eq!(
                rejection_verdict(&s, "S", body),
                Verdict::Redirect("http://gw/__llm_router/failover?status=400&cw=1&state=S".into())
            );
        }
        assert_eq!(rejection_verdict(&s, "S", br#"{"error":{"message":"bad temperature"}}"#), Verdict::Pass);
        let no_chain = AttemptState { can_context_failover: false, ..s.clone() };
        assert_eq!(verdict(Some((&no_chain, "S")), 400, false, None), Verdict::Pass);
        assert_eq!(rejection_verdict(&no_chain, "S", openai), Verdict::Pass);
    }

    #[test]
    fn content_policy_errors_go_to_the_content_policy_fallback() {
        let openai = br#"{"error":{"message":"Your request was rejected as a result of our safety system.","type":"invalid_request_error","param":null,"code":"content_policy_violation"}}"#;
        let openai_prompt = br#"{"error":{"message":"Invalid prompt: your prompt was flagged as potentially violating our usage policy.","type":"invalid_request_error","code":"invalid_prompt"}}"#;
        let azure = br#"{"error":{"message":"The response was filtered due to the prompt triggering Azure OpenAI's content management policy.","type":null,"param":"prompt","code":"content_filter","status":400,"innererror":{"code":"ResponsibleAIPolicyViolation","content_filter_result":{"hate":{"filtered":true,"severity":"high"}}}}}"#;
        let azure_inner_only = br#"{"error":{"message":"blocked","code":"invalid_request_error","innererror":{"code":"ResponsibleAIPolicyViolation"}}}"#;
        let anthropic = br#"{"type":"error","error":{"type":"invalid_request_error","message":"Output blocked by content filtering policy"}}"#;
        let bad_param = br#"{"error":{"message":"Invalid 'temperature': decimal above maximum value.","type":"invalid_request_error","code":"decimal_above_max_value"}}"#;
        assert!(is_content_policy_error(Wire::OpenAi, openai));
        assert!(is_content_policy_error(Wire::OpenAi, openai_prompt));
        assert!(is_content_policy_error(Wire::Azure, azure));
        assert!(is_content_policy_error(Wire::Azure, azure_inner_only));
        assert!(is_content_policy_error(Wire::Azure, openai), "Azure also answers OpenAI's code");
        assert!(is_content_policy_error(Wire::Anthropic, anthropic));
        for wire in [Wire::OpenAi, Wire::Azure, Wire::Anthropic] {
            assert!(!is_content_policy_error(wire, bad_param), "{wire:?}");
        }
        // Each family's shapes only, as LiteLLM maps them per provider.
        assert!(!is_content_policy_error(Wire::OpenAi, azure));
        assert!(!is_content_policy_error(Wire::Anthropic, openai));
        assert!(!is_content_policy_error(Wire::OpenAi, anthropic));
        // Checked before content policy by LiteLLM: rate limits (OpenAI family), overload (Anthropic),
        // and context-window errors (all).
        let rate = br#"{"error":{"message":"Rate limit reached; request was rejected as a result of the safety system","type":"invalid_request_error","code":"content_policy_violation"}}"#;
        assert!(!is_content_policy_error(Wire::OpenAi, rate));
        assert!(!is_content_policy_error(Wire::Anthropic, br#"{"error":{"type":"overloaded_error","message":"Overloaded; content filtering policy"}}"#));
        let long = br#"{"error":{"message":"This model's maximum context length is 8192 tokens; content_policy_violation","type":"invalid_request_error"}}"#;
        assert!(!is_content_policy_error(Wire::OpenAi, long));

        let s = AttemptState { policy_failover: Some(Wire::Azure), authority: "gw".into(), ..Default::default() };
        assert_eq!(verdict(Some((&s, "S")), 400, false, None), Verdict::Inspect);
        assert_eq!(
            rejection_verdict(&s, "S", azure),
            Verdict::Redirect("http://gw/__llm_router/failover?status=400&cp=1&state=S".into())
        );
        assert_eq!(rejection_verdict(&s, "S", bad_param), Verdict::Pass);
        // A context-window error with only a content-policy fallback left is passed through.
        assert_eq!(rejection_verdict(&s, "S", long), Verdict::Pass);
        let none = AttemptState { policy_failover: None, ..s.clone() };
        assert_eq!(verdict(Some((&none, "S")), 400, false, None), Verdict::Pass);
        assert_eq!(rejection_verdict(&none, "S", azure), Verdict::Pass);
        // Other statuses are never read.
        assert_eq!(verdict(Some((&s, "S")), 403, false, None), Verdict::Pass);
    }
}
