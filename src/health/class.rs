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


/// Classifies a response status. `details` is Envoy's `response.code_details`
/// (`via_upstream` for real upstream responses); pass it for 5xx statuses.
pub fn classify(status: u16, details: Option<&str>) -> Option<FailureClass> {
    match status {
        429 => Some(FailureClass::RateLimit),
        401 => Some(FailureClass::Authentication),
        404 => Some(FailureClass::NotFound),
        408 => Some(FailureClass::Timeout),
        500..=599 => Some(match details {
            None | Some("via_upstream") => {
                if status == 504 {
                    FailureClass::Timeout
                } else {
                    FailureClass::ServerError
                }
            }
            Some(d) if d.contains("timeout") => FailureClass::Timeout,
            Some(d) if d.contains("connection_failure") || d.contains("no_healthy_upstream") || d.contains("overflow") => {
                FailureClass::ConnectFailure
            }
            Some(d) if d.contains("reset") || d.contains("connection_termination") => FailureClass::Reset,
            Some(_) => FailureClass::ServerError,
        }),
        _ => None,
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
        assert_eq!(c("cluster_not_found"), Some(FailureClass::ServerError));
    }

    #[test]
    fn names_round_trip() {
        for c in [FailureClass::RateLimit, FailureClass::Reset, FailureClass::ConnectFailure] {
            assert_eq!(FailureClass::parse(c.as_str()), Some(c));
        }
    }
}
