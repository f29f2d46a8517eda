//! How the upstream side tells the next pass what failed: the redirect `location` points at
//! [`FAILOVER_PATH`] with the failed status, the provider's retry hint, whether a 400 was a
//! context-window or content-policy rejection, and the signed attempt state in the query. (The state cannot ride in a request header: the request header map the
//! redirect replays is the one the upstream filter edits, and it removes the state header so
//! no provider sees it.)

use super::state::percent_decode;

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
    /// The upstream rejected the prompt as too long for its context window.
    pub context_window: bool,
    /// The upstream rejected the request for a content-policy violation (LiteLLM's
    /// `ContentPolicyViolationError`).
    pub content_policy: bool,
}

impl FailureReport {
    /// Parses `status=..&ra=..&state=..` from the query of a failover path: the report and the
    /// (still unverified) encoded state.
    pub fn from_query(query: &str) -> Option<(FailureReport, String)> {
        let mut status = None;
        let mut retry_after_ms = None;
        let mut state = None;
        let mut context_window = false;
        let mut content_policy = false;
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("status", v)) => status = v.parse().ok(),
                Some(("ra", v)) => retry_after_ms = v.parse().ok(),
                Some(("cw", v)) => context_window = v == "1",
                Some(("cp", v)) => content_policy = v == "1",
                Some(("state", v)) => state = percent_decode(v),
                _ => {}
            }
        }
        Some((FailureReport { status: status?, retry_after_ms, context_window, content_policy }, state.unwrap_or_default()))
    }
}

/// `http://<client authority>/__llm_router/failover?status=..[&ra=..]&state=..`.
pub fn failover_location(authority: &str, encoded_state: &str, report: &FailureReport) -> String {
    let mut out = String::with_capacity(64 + authority.len() + encoded_state.len() * 3 / 2);
    out.push_str("http://");
    if authority.is_empty() {
        out.push_str("llm-router.internal");
    } else {
        // Host syntax only (`host`, `host:port`, `[v6]:port`): a `/`, `?`, `#` or `@` the client
        // put in its Host header must not move the failover path.
        crate::percent::encode_into(authority, b"-._~:[]", &mut out);
    }
    out.push_str(FAILOVER_PATH);
    out.push_str("?status=");
    out.push_str(&report.status.to_string());
    if let Some(ra) = report.retry_after_ms {
        out.push_str("&ra=");
        out.push_str(&ra.to_string());
    }
    if report.context_window {
        out.push_str("&cw=1");
    }
    if report.content_policy {
        out.push_str("&cp=1");
    }
    out.push_str("&state=");
    // A query value: `/` and `:` (kept by the header-value encoder) are escaped too.
    crate::percent::encode_into(encoded_state, crate::percent::UNRESERVED, &mut out);
    out
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_round_trips_through_the_query() {
        let r = FailureReport { status: 429, retry_after_ms: Some(7_000), context_window: false, content_policy: false };
        let state = "v=1;p=/v1/chat/completions%3Fa%3D1&b;mac=00ff";
        let loc = failover_location("gw:8080", state, &r);
        assert!(loc.starts_with("http://gw:8080/__llm_router/failover?status=429&ra=7000&state=v%3D1%3Bp%3D%2Fv1"), "{loc}");
        let query = loc.split_once('?').map(|(_, q)| q).unwrap_or("");
        assert_eq!(FailureReport::from_query(query), Some((r, state.to_string())));
        assert_eq!(FailureReport::from_query("ra=5"), None);
        let r0 = FailureReport { status: 0, retry_after_ms: None, context_window: false, content_policy: false };
        let cp = FailureReport { status: 400, retry_after_ms: None, context_window: false, content_policy: true };
        let loc = failover_location("gw", "S", &cp);
        assert_eq!(loc, "http://gw/__llm_router/failover?status=400&cp=1&state=S");
        assert_eq!(FailureReport::from_query(loc.split_once('?').map_or("", |(_, q)| q)), Some((cp, "S".to_string())));
        assert_eq!(FailureReport::from_query("status=0"), Some((r0, String::new())));
    }
}
