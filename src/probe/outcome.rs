//! A probe's answer → the deployment's health, under the same LiteLLM rules as live traffic:
//! a failure goes through [`crate::pipeline::outcome::record`] (failure window, `allowed_fails`,
//! cooldown); a success records nothing in the failure window. Either way the last result is
//! written to [`keys::probe`] as `<finished_ms> <http_status> <result>` (`result` is `ok` or the
//! [`FailureClass`] name; `http_status` is 0 when no response came back), which the
//! `/llm-router/health` endpoint reads.

use crate::config::RouterConfig;
use crate::health::{self, classify, keys, FailureClass, Store};
use crate::pipeline::outcome;

/// What came back for one dispatched probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// A response with this `:status` (and the upstream's Retry-After, if any). `details` is
    /// Envoy's `response.code_details` equivalent when the response is Envoy's own local reply
    /// (see [`local_reply_details`]), else `None`.
    Status { status: u16, retry_after_ms: Option<u64>, details: Option<&'static str> },
    /// No response: Envoy reported a failure (timeout, reset, refused connection) after
    /// `elapsed_ms` of a `timeout_ms` budget.
    None { elapsed_ms: u64, timeout_ms: u64 },
    /// The dispatch itself was refused: measured on Envoy 1.40, an unknown cluster gives
    /// `BadArgument`, a cluster without a healthy endpoint `InternalFailure`. Counted as a
    /// connect failure, as the live request would fail to connect too.
    NotSent,
}

/// Local replies are short; only bodies up to this size are read (and only for 5xx).
pub const MAX_LOCAL_REPLY_BYTES: usize = 512;

/// A callout gets no `response.code_details`. Measured on Envoy 1.40: a refused connection
/// answers the callout with a local 503, body `upstream connect error or disconnect/reset before
/// headers. reset reason: remote connection failure`; the callout timeout with a 504 `upstream
/// request timeout`. This maps such bodies onto the details strings [`classify`] knows, so a
/// probe classifies like the live request would. Any other body is the upstream's own.
pub fn local_reply_details(body: &[u8]) -> Option<&'static str> {
    let text = std::str::from_utf8(body).ok()?.trim();
    if let Some(reason) = text.strip_prefix("upstream connect error or disconnect/reset before headers.") {
        return Some(if reason.contains("timeout") {
            "upstream_reset_before_response_started{connection_timeout}"
        } else if reason.contains("connection failure") || reason.contains("connection_failure") {
            "upstream_reset_before_response_started{remote_connection_failure}"
        } else {
            "upstream_reset_before_response_started{connection_termination}"
        });
    }
    match text {
        "no healthy upstream" => Some("no_healthy_upstream"),
        "upstream request timeout" => Some("upstream_response_timeout"),
        _ => None,
    }
}

/// How an answer classifies: `None` means healthy (nothing counted).
pub fn class_of(answer: Answer) -> Option<FailureClass> {
    match answer {
        Answer::Status { status, details, .. } => classify(status, details),
        // Envoy gives the callout no details; like the redirector path, elapsed time tells a
        // timeout from a refused or reset connection.
        Answer::None { elapsed_ms, timeout_ms } => Some(health::timeout_or_connect_failure(elapsed_ms, Some(timeout_ms))),
        Answer::NotSent => Some(FailureClass::ConnectFailure),
    }
}

/// Records the answer for deployment `index` at `now_ms`; returns the value written to the
/// probe key. Store errors are returned to the shell to log; the probe result is best effort.
pub fn finish<S: Store + ?Sized>(
    store: &S,
    cfg: &RouterConfig,
    index: usize,
    answer: Answer,
    now_ms: u64,
) -> Result<String, health::StoreError> {
    let dep = cfg.table.deployments.get(index).ok_or(health::StoreError)?;
    let class = class_of(answer);
    let status = match answer {
        Answer::Status { status, .. } => status,
        Answer::None { .. } | Answer::NotSent => 0,
    };
    let value = health::ProbeResult { at_ms: now_ms, status, failure: class }.encode();
    let written = health::update(store, &keys::probe(&dep.id), |_| Some(value.clone().into_bytes()));
    if let Some(class) = class {
        let retry_after_ms = match answer {
            Answer::Status { retry_after_ms, .. } => retry_after_ms,
            _ => None,
        };
        outcome::record(store, cfg, index, class, retry_after_ms, now_ms)?;
    }
    written.map(|_| value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::health::{Cooldowns, MemStore};
    use serde_json::json;

    fn cfg(allowed_fails: u64) -> RouterConfig {
        let raw = json!({"model_list": [
            {"model_name": "g", "litellm_params": {"model": "openai/a", "api_base": "http://h/v1"}, "model_info": {"id": "a"}},
            {"model_name": "g", "litellm_params": {"model": "openai/b", "api_base": "http://h/v1"}, "model_info": {"id": "b"}}],
            "router_settings": {"allowed_fails": allowed_fails, "cooldown_time": 30}})
        .to_string();
        match config::load(raw.as_bytes(), &|_| None).config {
            Some(c) => c,
            None => panic!("config refused"),
        }
    }

    fn get(s: &MemStore, key: &str) -> String {
        String::from_utf8(s.get(key).ok().and_then(|(v, _)| v).unwrap_or_default()).unwrap_or_default()
    }

    fn cooling(s: &MemStore, id: &str, now: u64) -> bool {
        let record = Cooldowns::decode(get(s, keys::COOLDOWNS).as_bytes());
        record.entries.iter().any(|(i, e)| i == id && e.until_ms > now)
    }

    #[test]
    fn success_writes_only_the_probe_key() {
        let s = MemStore::default();
        let c = cfg(0);
        assert_eq!(finish(&s, &c, 0, Answer::Status { status: 200, retry_after_ms: None, details: None }, 1_000), Ok("1000 200 ok".to_string()));
        assert_eq!(get(&s, "llm_router.v1.probe.a"), "1000 200 ok");
        assert_eq!(*s.writes.borrow(), 1);
        assert_eq!(get(&s, &keys::fails("a")), "");
    }

    #[test]
    fn failure_counts_like_live_traffic_and_cools() {
        let s = MemStore::default();
        let c = cfg(0);
        assert_eq!(finish(&s, &c, 1, Answer::Status { status: 500, retry_after_ms: None, details: None }, 2_000), Ok("2000 500 server_error".into()));
        assert!(cooling(&s, "b", 2_001));
        assert!(!cooling(&s, "a", 2_001));
        // allowed_fails 1: the first failure alone does not cool.
        let s = MemStore::default();
        let _ = finish(&s, &cfg(1), 0, Answer::Status { status: 503, retry_after_ms: None, details: None }, 2_000);
        assert!(!cooling(&s, "a", 2_001));
        let _ = finish(&s, &cfg(1), 0, Answer::Status { status: 503, retry_after_ms: None, details: None }, 3_000);
        assert!(cooling(&s, "a", 3_001));
    }

    #[test]
    fn client_errors_count_nothing() {
        let s = MemStore::default();
        assert_eq!(finish(&s, &cfg(0), 0, Answer::Status { status: 400, retry_after_ms: None, details: None }, 5), Ok("5 400 ok".into()));
        assert!(!cooling(&s, "a", 6));
    }

    #[test]
    fn no_response_is_a_timeout_or_a_connect_failure() {
        let s = MemStore::default();
        let c = cfg(5);
        let timed_out = Answer::None { elapsed_ms: 9_950, timeout_ms: 10_000 };
        assert_eq!(finish(&s, &c, 0, timed_out, 10), Ok("10 0 timeout".into()));
        let refused = Answer::None { elapsed_ms: 3, timeout_ms: 10_000 };
        assert_eq!(finish(&s, &c, 0, refused, 20), Ok("20 0 connect_failure".into()));
        assert_eq!(finish(&s, &c, 1, Answer::NotSent, 30), Ok("30 0 connect_failure".into()));
        assert_eq!(class_of(Answer::Status { status: 429, retry_after_ms: Some(1), details: None }), Some(FailureClass::RateLimit));
    }

    #[test]
    fn envoy_local_replies_classify_like_live_traffic() {
        let refused = b"upstream connect error or disconnect/reset before headers. reset reason: remote connection failure";
        let d = local_reply_details(refused);
        assert_eq!(class_of(Answer::Status { status: 503, retry_after_ms: None, details: d }), Some(FailureClass::ConnectFailure));
        let reset = b"upstream connect error or disconnect/reset before headers. reset reason: connection termination";
        assert_eq!(classify(503, local_reply_details(reset)), Some(FailureClass::Reset));
        let slow = b"upstream connect error or disconnect/reset before headers. reset reason: connection timeout";
        assert_eq!(classify(503, local_reply_details(slow)), Some(FailureClass::Timeout));
        assert_eq!(classify(504, local_reply_details(b"upstream request timeout")), Some(FailureClass::Timeout));
        assert_eq!(classify(503, local_reply_details(b"no healthy upstream")), Some(FailureClass::ConnectFailure));
        assert_eq!(local_reply_details(br#"{"error": {"message": "overloaded"}}"#), None);
        let s = MemStore::default();
        let answer = Answer::Status { status: 503, retry_after_ms: None, details: d };
        assert_eq!(finish(&s, &cfg(3), 0, answer, 7), Ok("7 503 connect_failure".into()));
    }

    #[test]
    fn retry_after_from_a_probe_sets_the_cooldown() {
        let s = MemStore::default();
        let _ = finish(&s, &cfg(0), 0, Answer::Status { status: 429, retry_after_ms: Some(120_000), details: None }, 1_000);
        assert!(cooling(&s, "a", 100_000));
    }
}
