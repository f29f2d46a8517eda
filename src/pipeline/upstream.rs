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
    let failed = redirector || is_failover_status(status);
    match (failed, state.can_failover) {
        (false, _) => Verdict::Pass,
        (true, true) => {
            let report = FailureReport { status: if redirector { 0 } else { status }, retry_after_ms };
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
}
