//! Which outcomes count against a deployment (LiteLLM's cooldown-worthy errors).
//!
//! Upstream 429, 401, 404, 408 and any 5xx count; other 4xx are the client's fault and do not.
//! Envoy's own local replies for a failed connection, a reset or a timeout arrive as 503/504
//! with `response.code_details` telling them apart; they count as the class they describe.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    RateLimit,
    Authentication,
    NotFound,
    Timeout,
    ServerError,
    ConnectFailure,
    Reset,
}

impl FailureClass {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::RateLimit => "rate_limit",
            FailureClass::Authentication => "authentication",
            FailureClass::NotFound => "not_found",
            FailureClass::Timeout => "timeout",
            FailureClass::ServerError => "server_error",
            FailureClass::ConnectFailure => "connect_failure",
            FailureClass::Reset => "reset",
        }
    }

    pub fn parse(s: &str) -> Option<FailureClass> {
        [
            FailureClass::RateLimit,
            FailureClass::Authentication,
            FailureClass::NotFound,
            FailureClass::Timeout,
            FailureClass::ServerError,
            FailureClass::ConnectFailure,
            FailureClass::Reset,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}


/// Classifies a response status. `details` is Envoy's `response.code_details` (`via_upstream`
/// for real upstream responses; `None` when unknown, e.g. a status an upstream filter reported).
/// A 4xx that Envoy produced itself (a local rate limit's 429, a stream idle timeout's 408, an
/// authz filter's 401/403, no route's 404) is never the deployment's.
pub fn classify(status: u16, details: Option<&str>) -> Option<FailureClass> {
    let upstream = matches!(details, None | Some("via_upstream"));
    match status {
        429 if upstream => Some(FailureClass::RateLimit),
        401 if upstream => Some(FailureClass::Authentication),
        404 if upstream => Some(FailureClass::NotFound),
        408 if upstream => Some(FailureClass::Timeout),
        500..=599 => match details {
            None | Some("via_upstream") => Some(if status == 504 { FailureClass::Timeout } else { FailureClass::ServerError }),
            Some(d) => local_reply_class(d),
        },
        _ => None,
    }
}

/// The statuses [`classify`] may count: the shell reads `response.code_details` only for these.
pub fn may_count(status: u16) -> bool {
    matches!(status, 401 | 404 | 408 | 429 | 500..=599)
}

/// An Envoy local reply (`response.code_details` other than `via_upstream`) counts only when it
/// says the deployment failed: its connection was refused or reset, it did not answer in time,
/// or its cluster has nothing to connect to. Everything else — Envoy's own circuit breaker
/// (`overflow`), a local reset, a header value Envoy refused to send, a body over the buffer
/// limit, a protocol error that the request may have caused — is not the deployment's doing.
fn local_reply_class(details: &str) -> Option<FailureClass> {
    if let Some(reason) = details.strip_prefix("upstream_reset_before_response_started") {
        return if reason.contains("overflow") || reason.contains("local_reset") || reason.contains("protocol_error") {
            None
        } else if reason.contains("timeout") {
            Some(FailureClass::Timeout)
        } else if reason.contains("connection_failure") {
            Some(FailureClass::ConnectFailure)
        } else {
            Some(FailureClass::Reset)
        };
    }
    match details {
        // Envoy 1.40 says `response_timeout` for the route timeout (measured); older releases
        // and the per-try variants use the `upstream_` names.
        "response_timeout"
        | "upstream_response_timeout"
        | "upstream_per_try_timeout"
        | "upstream_per_try_idle_timeout"
        | "upstream_max_stream_duration_reached" => Some(FailureClass::Timeout),
        "no_healthy_upstream" | "cluster_not_found" => Some(FailureClass::ConnectFailure),
        _ => None,
    }
}

/// Whether a failure counts against the deployment (failure window, cooldown, failure metrics).
/// A 404 from a wildcard group is the client's made-up name; everything else that
/// [`classify`] returns is the deployment's (the router strips the client headers that could
/// make a provider refuse the gateway's account: `pipeline::headers`).
pub fn counts_against_deployment(class: FailureClass, wildcard_group: bool) -> bool {
    !(class == FailureClass::NotFound && wildcard_group)
}

/// The redirector answered for an attempt that got no response: a timeout when the attempt used
/// (≥ 90 % of) its time budget, else a connection that failed.
pub fn timeout_or_connect_failure(elapsed_ms: u64, try_budget_ms: Option<u64>) -> FailureClass {
    match try_budget_ms {
        Some(budget) if elapsed_ms.saturating_mul(10) >= budget.saturating_mul(9) => FailureClass::Timeout,
        _ => FailureClass::ConnectFailure,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_statuses() {
        assert_eq!(classify(429, None), Some(FailureClass::RateLimit));
        assert_eq!(classify(401, None), Some(FailureClass::Authentication));
        assert_eq!(classify(404, None), Some(FailureClass::NotFound));
        assert_eq!(classify(408, None), Some(FailureClass::Timeout));
        assert_eq!(classify(500, Some("via_upstream")), Some(FailureClass::ServerError));
        assert_eq!(classify(503, Some("via_upstream")), Some(FailureClass::ServerError));
        for ok in [200, 201, 204, 301, 400, 403, 409, 413, 422] {
            assert_eq!(classify(ok, None), None, "{ok}");
        }
    }

    #[test]
    fn envoy_local_replies() {
        let c = |d| classify(503, Some(d));
        assert_eq!(
            c("upstream_reset_before_response_started{remote_connection_failure|delayed_connect_error:_Connection_refused}"),
            Some(FailureClass::ConnectFailure)
        );
        assert_eq!(c("upstream_reset_before_response_started{connection_termination}"), Some(FailureClass::Reset));
        assert_eq!(c("no_healthy_upstream"), Some(FailureClass::ConnectFailure));
        assert_eq!(classify(504, Some("upstream_response_timeout")), Some(FailureClass::Timeout));
        assert_eq!(classify(504, Some("upstream_per_try_timeout")), Some(FailureClass::Timeout));
        assert_eq!(classify(504, Some("response_timeout")), Some(FailureClass::Timeout));
        assert_eq!(classify(408, Some("stream_idle_timeout")), None, "the client was slow");
        assert_eq!(classify(429, Some("local_rate_limited")), None, "Envoy's own rate limit");
        assert_eq!(classify(404, Some("route_not_found")), None);
        assert_eq!(classify(403, Some("rbac_access_denied_matched_policy[none]")), None);
        assert_eq!(c("cluster_not_found"), Some(FailureClass::ConnectFailure));
        assert_eq!(c("upstream_reset_before_response_started{remote_reset}"), Some(FailureClass::Reset));
    }

    #[test]
    fn local_replies_the_request_caused_do_not_count() {
        let c = |d| classify(503, Some(d));
        assert_eq!(c("upstream_reset_before_response_started{overflow}"), None, "Envoy's own circuit breaker");
        assert_eq!(c("upstream_reset_before_response_started{local_reset}"), None);
        assert_eq!(c("upstream_reset_before_response_started{protocol_error}"), None);
        assert_eq!(c("request_payload_too_large"), None);
        assert_eq!(c("filter_removed_required_request_headers"), None);
        assert_eq!(c("missing_host_header"), None);
        assert_eq!(c("wasm_fail_stream"), None);
        assert_eq!(classify(500, Some("direct_response")), None);
    }

    #[test]
    fn wildcard_404s_are_the_clients() {
        assert!(!counts_against_deployment(FailureClass::NotFound, true));
        assert!(counts_against_deployment(FailureClass::NotFound, false));
        assert!(counts_against_deployment(FailureClass::RateLimit, true));
    }

    #[test]
    fn redirector_answers_are_timeouts_only_near_the_budget() {
        assert_eq!(timeout_or_connect_failure(50, Some(2_000)), FailureClass::ConnectFailure);
        assert_eq!(timeout_or_connect_failure(1_900, Some(2_000)), FailureClass::Timeout);
        assert_eq!(timeout_or_connect_failure(60_000, None), FailureClass::ConnectFailure);
    }

    #[test]
    fn names_round_trip() {
        for c in [FailureClass::RateLimit, FailureClass::Reset, FailureClass::ConnectFailure] {
            assert_eq!(FailureClass::parse(c.as_str()), Some(c));
        }
    }
}
