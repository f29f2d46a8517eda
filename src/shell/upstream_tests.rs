//! The upstream role's streams driven through the fake host: the state header taken off the
//! request and remembered, retries onto the redirector, the verdict turned into 307 / 503.

use super::fake::{FakeHost, Op};
use super::host::Flow;
use super::upstream_stream::{UpstreamEnv, UpstreamStream};
use crate::failover::{failover_location, siphash24, AttemptState, FailureReport, PendingAttempts, REDIRECTOR_HEADER, STATE_HEADER};
use std::cell::RefCell;

const KEY: (u64, u64) = (0xabc, 0xdef);

/// A state the router would attach: signed with `KEY`, live until 100 s, a retry possible.
fn state(nonce: u64) -> String {
    AttemptState {
        nonce,
        expires_ms: 100_000,
        can_failover: true,
        authority: "gw.local".into(),
        path: "/v1/chat/completions".into(),
        model: "gpt-4o".into(),
        ..Default::default()
    }
    .encode(KEY)
}

/// An upstream request (as the router rewrote it) with `x-request-id: rid` and the state.
fn attempt(rid: &str, state: Option<&str>) -> FakeHost {
    let mut headers = vec![(":method", "POST"), (":path", "/v1/chat/completions"), (":authority", "api.example"), ("x-request-id", rid)];
    if let Some(s) = state {
        headers.push((STATE_HEADER, s));
    }
    let host = FakeHost::request(&headers, "{}");
    host.clock.set(1_000);
    host
}

fn env(pending: &RefCell<PendingAttempts>) -> UpstreamEnv<'_> {
    UpstreamEnv { key: KEY, verify: true, pending }
}

fn id(rid: &str) -> u64 {
    siphash24(KEY.0, KEY.1, rid.as_bytes())
}

/// The failover location for `state` reporting `status` (0: no response).
fn location(state: &str, status: u16, retry_after_ms: Option<u64>, context_window: bool) -> Option<String> {
    Some(failover_location("gw.local", state, &FailureReport { status, retry_after_ms, context_window, content_policy: false }))
}

const REDIRECTOR: [(&str, &str); 3] = [(":status", "307"), ("location", "http://gw.local/v1/chat/completions"), (REDIRECTOR_HEADER, "1")];

#[test]
fn the_state_header_is_removed_and_remembered() {
    let pending = RefCell::new(PendingAttempts::default());
    let s = state(1);
    let host = attempt("rid-1", Some(&s));
    let mut u = UpstreamStream::default();
    assert_eq!(u.on_request_headers(&host, &env(&pending)), Flow::Continue);
    assert_eq!(host.args(Op::RemoveRequestHeader), [STATE_HEADER]);
    assert_eq!(host.request_header_value(STATE_HEADER), None, "no provider sees it");
    assert_eq!(host.request_header_names(), [":method", ":path", ":authority", "x-request-id"], "nothing else touched");
    assert_eq!(pending.borrow().recall(id("rid-1")), Some(s.as_str()));
    // Its response arrived: Envoy will not retry it any more.
    host.respond(&[(":status", "200")]);
    assert_eq!(u.on_response_headers(&host, &env(&pending), false), Flow::Continue);
    assert_eq!(pending.borrow().recall(id("rid-1")), None);
    assert_eq!((host.count(Op::SetResponseHeader), host.args(Op::ResponseHeader)), (0, vec![":status".to_string()]), "success: one status read");
}

#[test]
fn a_redirector_answer_on_the_retry_becomes_a_failover_redirect() {
    let pending = RefCell::new(PendingAttempts::default());
    let s = state(2);
    let first = attempt("rid-2", Some(&s));
    let mut u1 = UpstreamStream::default();
    u1.on_request_headers(&first, &env(&pending));
    // No response (connect failure): Envoy retries onto the redirector, with the edited map.
    let retry = attempt("rid-2", None);
    let mut u2 = UpstreamStream::default();
    assert_eq!(u2.on_request_headers(&retry, &env(&pending)), Flow::Continue);
    assert_eq!(retry.count(Op::RemoveRequestHeader), 0);
    retry.respond(&REDIRECTOR);
    assert_eq!(u2.on_response_headers(&retry, &env(&pending), false), Flow::Continue);
    assert_eq!(retry.response_header_value(":status").as_deref(), Some("307"));
    assert_eq!(retry.response_header_value("location"), location(&s, 0, None, false));
    assert_eq!(retry.args(Op::SetResponseHeader), [":status", "location"], "the location is replaced, not added");
}

#[test]
fn two_attempts_under_one_request_id_get_no_state() {
    let pending = RefCell::new(PendingAttempts::default());
    let (a, b) = (state(3), state(4));
    UpstreamStream::default().on_request_headers(&attempt("shared-id", Some(&a)), &env(&pending));
    UpstreamStream::default().on_request_headers(&attempt("shared-id", Some(&b)), &env(&pending));
    let retry = attempt("shared-id", None);
    let mut u = UpstreamStream::default();
    u.on_request_headers(&retry, &env(&pending));
    retry.respond(&REDIRECTOR);
    u.on_response_headers(&retry, &env(&pending), false);
    assert_eq!(retry.response_header_value(":status").as_deref(), Some("503"), "never answered with the other request's state");
    assert_eq!(retry.response_header_value("location"), None);
}

#[test]
fn a_provider_failure_redirects_with_its_status_and_retry_after() {
    let pending = RefCell::new(PendingAttempts::default());
    let s = state(5);
    let host = attempt("rid-5", Some(&s));
    let mut u = UpstreamStream::default();
    u.on_request_headers(&host, &env(&pending));
    host.respond(&[(":status", "429"), ("retry-after", "7")]);
    assert_eq!(u.on_response_headers(&host, &env(&pending), false), Flow::Continue);
    assert_eq!(host.response_header_value(":status").as_deref(), Some("307"));
    assert_eq!(host.response_header_value("location"), location(&s, 429, Some(7_000), false));
    // A client error is the client's: passed on.
    let host = attempt("rid-6", Some(&s));
    let mut u = UpstreamStream::default();
    u.on_request_headers(&host, &env(&pending));
    host.respond(&[(":status", "422")]);
    u.on_response_headers(&host, &env(&pending), false);
    assert_eq!((host.count(Op::SetResponseHeader), host.response_header_value(":status").as_deref()), (0, Some("422")));
}

#[test]
fn without_state_failures_pass_and_the_redirector_is_never_followed() {
    let pending = RefCell::new(PendingAttempts::default());
    let host = attempt("rid-7", None);
    let mut u = UpstreamStream::default();
    u.on_request_headers(&host, &env(&pending));
    host.respond(&[(":status", "500")]);
    u.on_response_headers(&host, &env(&pending), false);
    assert_eq!(host.count(Op::SetResponseHeader), 0, "the provider's own error reaches the client");
    let host = attempt("rid-8", None);
    let mut u = UpstreamStream::default();
    u.on_request_headers(&host, &env(&pending));
    host.respond(&REDIRECTOR);
    u.on_response_headers(&host, &env(&pending), false);
    assert_eq!(host.response_header_value(":status").as_deref(), Some("503"));
}

#[test]
fn untrusted_states_are_not_acted_on() {
    let pending = RefCell::new(PendingAttempts::default());
    let forged = state(9).replace("gpt-4o", "gpt-5");
    let expired = AttemptState { nonce: 10, expires_ms: 10, can_failover: true, ..Default::default() }.encode(KEY);
    let other_key = AttemptState { nonce: 11, expires_ms: 100_000, can_failover: true, ..Default::default() }.encode((1, 2));
    for s in [forged, expired, other_key] {
        let host = attempt("rid-9", Some(&s));
        let mut u = UpstreamStream::default();
        u.on_request_headers(&host, &env(&pending));
        assert_eq!(host.request_header_value(STATE_HEADER), None, "removed all the same");
        host.respond(&[(":status", "500")]);
        u.on_response_headers(&host, &env(&pending), false);
        assert_eq!(host.count(Op::SetResponseHeader), 0, "{s}");
    }
    assert_eq!(pending.borrow().recall(id("rid-9")), None, "nothing remembered");
    // In a VM of its own (no router key), the role trusts the router's removal of client states.
    let unverified = UpstreamEnv { key: (0, 0), verify: false, pending: &pending };
    let s = state(12);
    let host = attempt("rid-10", Some(&s));
    let mut u = UpstreamStream::default();
    u.on_request_headers(&host, &unverified);
    host.respond(&[(":status", "503")]);
    u.on_response_headers(&host, &unverified, false);
    assert_eq!(host.response_header_value(":status").as_deref(), Some("307"));
}

#[test]
fn a_context_window_400_is_read_then_redirected() {
    let pending = RefCell::new(PendingAttempts::default());
    let s = AttemptState { nonce: 13, expires_ms: 100_000, can_context_failover: true, authority: "gw.local".into(), ..Default::default() }.encode(KEY);
    let host = attempt("rid-13", Some(&s));
    let mut u = UpstreamStream::default();
    u.on_request_headers(&host, &env(&pending));
    host.respond(&[(":status", "400")]);
    assert_eq!(u.on_response_headers(&host, &env(&pending), false), Flow::Pause, "held while the body is read");
    assert_eq!(u.on_response_body(&host, 10, false), Flow::Pause);
    assert_eq!(host.count(Op::ResponseBody), 0);
    *host.response_body.borrow_mut() = br#"{"error":{"code":"context_length_exceeded"}}"#.to_vec();
    let size = host.response_body.borrow().len();
    assert_eq!(u.on_response_body(&host, size, true), Flow::Continue);
    assert_eq!(host.response_header_value(":status").as_deref(), Some("307"));
    assert_eq!(host.response_header_value("location"), location(&s, 400, None, true));
    // Another 400 body passes through untouched; an oversized one is not read.
    let host = attempt("rid-14", Some(&s));
    let mut u = UpstreamStream::default();
    u.on_request_headers(&host, &env(&pending));
    host.respond(&[(":status", "400")]);
    u.on_response_headers(&host, &env(&pending), false);
    assert_eq!(u.on_response_body(&host, 1 << 20, false), Flow::Continue);
    assert_eq!((host.count(Op::ResponseBody), host.count(Op::SetResponseHeader)), (0, 0));
}

#[test]
fn a_content_policy_400_is_read_then_redirected() {
    let pending = RefCell::new(PendingAttempts::default());
    let s = AttemptState {
        nonce: 16,
        expires_ms: 100_000,
        policy_failover: Some(crate::provider::Wire::Anthropic),
        authority: "gw.local".into(),
        ..Default::default()
    }
    .encode(KEY);
    let host = attempt("rid-16", Some(&s));
    let mut u = UpstreamStream::default();
    u.on_request_headers(&host, &env(&pending));
    host.respond(&[(":status", "400")]);
    assert_eq!(u.on_response_headers(&host, &env(&pending), false), Flow::Pause);
    *host.response_body.borrow_mut() = br#"{"type":"error","error":{"type":"invalid_request_error","message":"Output blocked by content filtering policy"}}"#.to_vec();
    let size = host.response_body.borrow().len();
    assert_eq!(u.on_response_body(&host, size, true), Flow::Continue);
    assert_eq!(host.response_header_value(":status").as_deref(), Some("307"));
    let expected = failover_location("gw.local", &s, &FailureReport { status: 400, retry_after_ms: None, context_window: false, content_policy: true });
    assert_eq!(host.response_header_value("location"), Some(expected));
}

#[test]
fn failing_host_calls_degrade_the_attempt_never_panic() {
    let pending = RefCell::new(PendingAttempts::default());
    let s = state(15);
    let host = attempt("rid-15", Some(&s));
    host.fail(Op::RemoveRequestHeader);
    host.fail(Op::SetResponseHeader);
    let mut u = UpstreamStream::default();
    assert_eq!(u.on_request_headers(&host, &env(&pending)), Flow::Continue);
    host.respond(&[(":status", "500")]);
    assert_eq!(u.on_response_headers(&host, &env(&pending), false), Flow::Continue);
    // Unreadable request headers: no id, no state: the attempt is a plain pass-through.
    let host = attempt("rid-16", Some(&s));
    host.fail(Op::RequestHeader);
    let mut u = UpstreamStream::default();
    u.on_request_headers(&host, &env(&pending));
    assert_eq!(pending.borrow().recall(id("rid-16")), None);
    // The pending map busy (re-entered): no state remembered, no panic.
    let busy = pending.borrow_mut();
    let host = attempt("rid-17", Some(&s));
    let mut u = UpstreamStream::default();
    assert_eq!(u.on_request_headers(&host, &env(&pending)), Flow::Continue);
    host.respond(&REDIRECTOR);
    assert_eq!(u.on_response_headers(&host, &env(&pending), false), Flow::Continue);
    drop(busy);
}
