//! How the upstream side tells the next pass what failed: the redirect `location` points at
//! [`FAILOVER_PATH`] with the failed status and the provider's retry hint in the query.

use super::state::{percent_encode, AttemptState};

/// The path failover redirects go to (never forwarded anywhere: the router rewrites it).
pub const FAILOVER_PATH: &str = "/__llm_router/failover";

/// Response header the local redirector endpoint marks its 307 with.
pub const REDIRECTOR_HEADER: &str = "x-llm-router-redirector";

/// What failed, as carried in the failover location's query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureReport {
    /// The upstream status; 0 when the attempt got no response (connect failure or timeout,
    /// answered by the redirector).
    pub status: u16,
    pub retry_after_ms: Option<u64>,
}

impl FailureReport {
    /// Parses `status=..&ra=..` from the query of a failover path.
    pub fn from_query(query: &str) -> Option<FailureReport> {
        let mut status = None;
        let mut retry_after_ms = None;
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("status", v)) => status = v.parse().ok(),
                Some(("ra", v)) => retry_after_ms = v.parse().ok(),
                _ => {}
            }
        }
        Some(FailureReport { status: status?, retry_after_ms })
    }
}

/// `http://<client authority>/__llm_router/failover?status=..[&ra=..]`.
pub fn failover_location(state: &AttemptState, report: &FailureReport) -> String {
    let mut out = String::with_capacity(64 + state.authority.len());
    out.push_str("http://");
    if state.authority.is_empty() {
        out.push_str("llm-router.internal");
    } else {
        percent_encode(&state.authority, &mut out);
    }
    out.push_str(FAILOVER_PATH);
    out.push_str("?status=");
    out.push_str(&report.status.to_string());
    if let Some(ra) = report.retry_after_ms {
        out.push_str("&ra=");
        out.push_str(&ra.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_round_trips_through_the_query() {
        let state = AttemptState { authority: "gw:8080".into(), ..Default::default() };
        let r = FailureReport { status: 429, retry_after_ms: Some(7_000) };
        let loc = failover_location(&state, &r);
        assert_eq!(loc, "http://gw:8080/__llm_router/failover?status=429&ra=7000");
        let query = loc.split_once('?').map(|(_, q)| q).unwrap_or("");
        assert_eq!(FailureReport::from_query(query), Some(r));
        assert_eq!(FailureReport::from_query("ra=5"), None);
        let r0 = FailureReport { status: 0, retry_after_ms: None };
        assert_eq!(FailureReport::from_query("status=0"), Some(r0));
    }
}
