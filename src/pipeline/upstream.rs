//! The upstream side of failover: what the filter instance running as an upstream HTTP filter
//! of a deployment cluster does with that deployment's response.

use crate::failover::{failover_location, AttemptState, FailureReport};

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
    /// A 400 that may say "context too long" while a context-window fallback remains: hold the
    /// headers, read the (small) body, then decide with [`context_verdict`].
    Inspect,
}

/// Largest error body inspected for a context-window error; longer ones pass through.
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

/// The decision on an inspected 400 body.
pub fn context_verdict(state: &AttemptState, encoded: &str, body: &[u8]) -> Verdict {
    if state.can_context_failover && is_context_window_error(body) {
        let report = FailureReport { status: 400, retry_after_ms: None, context_window: true };
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
    if status == 400 && !redirector && state.can_context_failover {
        return Verdict::Inspect;
    }
    let failed = redirector || is_failover_status(status);
    match (failed, state.can_failover) {
        (false, _) => Verdict::Pass,
        (true, true) => {
            let report = FailureReport { status: if redirector { 0 } else { status }, retry_after_ms, context_window: false };
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
                context_verdict(&s, "S", body),
                Verdict::Redirect("http://gw/__llm_router/failover?status=400&cw=1&state=S".into())
            );
        }
        assert_eq!(context_verdict(&s, "S", br#"{"error":{"message":"bad temperature"}}"#), Verdict::Pass);
        let no_chain = AttemptState { can_context_failover: false, ..s.clone() };
        assert_eq!(verdict(Some((&no_chain, "S")), 400, false, None), Verdict::Pass);
        assert_eq!(context_verdict(&no_chain, "S", openai), Verdict::Pass);
    }
}
