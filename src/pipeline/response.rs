//! The router's reading of an attempt's response headers (the downstream side): what the
//! client is shown, whether the attempt succeeded, and what — if anything — counts against
//! the deployment. The shell reads the facts (`:status`, `location`, the redirector marker,
//! `response.code_details` for 5xx) and applies the verdict.

use crate::failover::{FailureReport, FAILOVER_PATH};
use crate::health::{classify, counts_against_deployment, timeout_or_connect_failure, FailureClass};
use crate::stats::Outcome;

/// What the shell read from the response headers.
#[derive(Debug, Clone, Copy, Default)]
pub struct ResponseFacts<'a> {
    pub status: u16,
    /// `location` (read only for a 307).
    pub location: Option<&'a str>,
    /// The local redirector answered: the deployment itself never did.
    pub redirector: bool,
    /// `response.code_details` (read only for 5xx): `via_upstream` or Envoy's local reason.
    pub details: Option<&'a str>,
    /// Since the attempt was sent, and its time budget: tells a timeout from a refused connection.
    pub elapsed_ms: u64,
    pub try_budget_ms: Option<u64>,
    /// The attempt served a wildcard group (the model name is the client's).
    pub wildcard_group: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Replace `:status` with this and remove `location`: the 307 was one of the upstream role's
    /// failover redirects that Envoy did not follow (`max_internal_redirects`), so the client
    /// gets the failure it stands for instead of a redirect to an internal path.
    pub unwrap_failover: Option<u16>,
    /// For the attempt's statistics; None for a response that is neither (a provider's own 3xx).
    pub outcome: Option<Outcome>,
    /// A provider's own redirect: answer 502 `upstream_redirect_refused` instead. Passing it on
    /// would send the client — with its gateway key — to a host the provider chose; following it
    /// (Envoy, with an internal-redirect policy) would send the provider key there.
    /// The failure to record against the deployment.
    pub record: Option<FailureClass>,
    pub refuse_redirect: bool,
}

/// Whether the shell must read `location` (a redirect: the failover's own, or a provider's).
pub fn needs_location(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

/// Whether the shell must read `response.code_details` for this status (only failures that
/// may count: the details tell the deployment's own answer from Envoy's local reply).
pub fn needs_details(status: u16) -> bool {
    crate::health::may_count(status)
}

pub fn judge(facts: &ResponseFacts<'_>) -> Verdict {
    let mut status = facts.status;
    let mut unwrap_failover = None;
    let redirect = matches!(status, 301 | 302 | 303 | 307 | 308);
    if status < 400 && !redirect {
        return Verdict { unwrap_failover, outcome: Some(Outcome::Success), record: None, refuse_redirect: false };
    }
    if redirect {
        let Some(report) = facts.location.and_then(failover_report).filter(|_| status == 307) else {
            return Verdict { unwrap_failover, outcome: None, record: None, refuse_redirect: true };
        };
        status = if report.status == 0 { 503 } else { report.status };
        unwrap_failover = Some(status);
    }
    let class = if facts.redirector {
        Some(timeout_or_connect_failure(facts.elapsed_ms, facts.try_budget_ms))
    } else {
        // An unwrapped report's status is the upstream's own answer.
        classify(status, if unwrap_failover.is_some() { Some("via_upstream") } else { facts.details })
    };
    let Some(class) = class else {
        // A client error (400, 413, ...): not a success for the statistics, not the deployment's failure.
        return Verdict { unwrap_failover, outcome: Some(Outcome::Failed), record: None, refuse_redirect: false };
    };
    let outcome = Some(if class == FailureClass::Timeout { Outcome::Timeout } else { Outcome::Failed });
    let record = counts_against_deployment(class, facts.wildcard_group).then_some(class);
    Verdict { unwrap_failover, outcome, record, refuse_redirect: false }
}

/// The failure report inside one of the upstream role's failover `location`s.
fn failover_report(location: &str) -> Option<FailureReport> {
    let (_, rest) = location.split_once(FAILOVER_PATH)?;
    FailureReport::from_query(rest.trim_start_matches('?')).map(|(r, _)| r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(status: u16) -> ResponseFacts<'static> {
        ResponseFacts { status, ..Default::default() }
    }

    #[test]
    fn successes_and_client_errors_record_nothing() {
        for s in [200, 201, 204, 304, 400, 403, 413, 422] {
            let v = judge(&facts(s));
            assert_eq!((v.record, v.unwrap_failover), (None, None), "{s}");
        }
        assert_eq!(judge(&facts(200)).outcome, Some(Outcome::Success));
    }

    #[test]
    fn upstream_failures_count_unless_the_client_made_them() {
        assert_eq!(judge(&ResponseFacts { details: Some("via_upstream"), ..facts(500) }).record, Some(FailureClass::ServerError));
        assert_eq!(judge(&facts(429)).record, Some(FailureClass::RateLimit));
        assert_eq!(judge(&facts(404)).record, Some(FailureClass::NotFound));
        let wild = judge(&ResponseFacts { wildcard_group: true, ..facts(404) });
        assert_eq!((wild.record, wild.outcome), (None, Some(Outcome::Failed)), "an invented name under a wildcard");
        // Envoy's own circuit breaker / a header Envoy refused: not the deployment's.
        let overflow = ResponseFacts { details: Some("upstream_reset_before_response_started{overflow}"), ..facts(503) };
        assert_eq!(judge(&overflow).record, None);
        let refused = ResponseFacts { details: Some("upstream_reset_before_response_started{remote_connection_failure}"), ..facts(503) };
        assert_eq!(judge(&refused).record, Some(FailureClass::ConnectFailure));
    }

    #[test]
    fn redirector_answers_are_timeouts_or_connect_failures() {
        let r = |elapsed| judge(&ResponseFacts { redirector: true, elapsed_ms: elapsed, try_budget_ms: Some(1_000), ..facts(503) });
        assert_eq!(r(10).record, Some(FailureClass::ConnectFailure));
        assert_eq!(r(950).record, Some(FailureClass::Timeout));
        assert_eq!(r(950).outcome, Some(Outcome::Timeout));
    }

    #[test]
    fn an_unfollowed_failover_redirect_becomes_the_failure_it_reports() {
        let loc = "http://gw/__llm_router/failover?status=429&ra=5000&state=x";
        let v = judge(&ResponseFacts { location: Some(loc), ..facts(307) });
        assert_eq!((v.unwrap_failover, v.record), (Some(429), Some(FailureClass::RateLimit)));
        let loc = "http://gw/__llm_router/failover?status=0&state=x";
        let v = judge(&ResponseFacts { location: Some(loc), redirector: true, ..facts(307) });
        assert_eq!((v.unwrap_failover, v.record), (Some(503), Some(FailureClass::ConnectFailure)));
        // A provider's own redirect is refused (never passed on, never followed).
        for status in [301, 302, 303, 307, 308] {
            let v = judge(&ResponseFacts { location: Some("http://internal.example/steal"), ..facts(status) });
            assert_eq!(v, Verdict { unwrap_failover: None, outcome: None, record: None, refuse_redirect: true }, "{status}");
        }
        assert!(!judge(&facts(304)).refuse_redirect);
    }
}
