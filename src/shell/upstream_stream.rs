//! The filter's second role: an *upstream* HTTP filter on each deployment cluster
//! (`root_id: llm_router_upstream`). It takes the router's attempt state off the request (so no
//! provider sees it) and, when the deployment fails and another attempt is possible, turns the
//! response into the 307 that makes Envoy replay the request through the router.
//!
//! It acts only on state it can trust: in a VM that also runs the router it verifies the
//! signature and deadline with the router's key; in a VM of its own (the probe setup gives it
//! its own `vm_id`) it cannot, and relies on the router, which removes every client-sent
//! `x-llm-router-*` header and refuses any replayed pass it did not sign (ARCHITECTURE.md).
//!
//! Host calls: on the request, `x-request-id` and the state header (removed when present) and the
//! clock; on the response, `:status`, and only for a 3xx or worse the redirector marker, the
//! retry-after headers and the clock, plus the header writes of a redirect.

use super::host::{Flow, Host};
use crate::failover::{siphash24, AttemptState, PendingAttempts, REDIRECTOR_HEADER, STATE_HEADER};
use crate::health::parse_retry_after;
use crate::pipeline::upstream::{rejection_verdict, verdict, Verdict, MAX_INSPECTED_BODY};
use std::cell::RefCell;

/// What the upstream role needs from its VM.
pub struct UpstreamEnv<'a> {
    /// This VM's state-signing key (also keys the request-id hash).
    pub key: (u64, u64),
    /// The router runs in this VM, so the state's signature can be (and is) verified.
    pub verify: bool,
    /// Attempts that may be retried onto the redirector (per VM).
    pub pending: &'a RefCell<PendingAttempts>,
}

impl UpstreamEnv<'_> {
    /// The state in `encoded`, when this role may act on it.
    fn trusted(&self, encoded: &str, now_ms: u64) -> Option<AttemptState> {
        let state = if self.verify { AttemptState::decode(encoded, self.key)? } else { AttemptState::decode_unverified(encoded)? };
        state.is_live(now_ms).then_some(state)
    }
}

#[derive(Default)]
pub struct UpstreamStream {
    /// The decoded state and its encoded form (passed on in the redirect location).
    state: Option<(AttemptState, String)>,
    /// The keyed hash of `x-request-id`.
    request_id: Option<u64>,
    /// Response headers are held while a 400 body is read for a context-window or content-policy error.
    inspecting: bool,
}

fn set<H: Host>(host: &H, name: &str, value: Option<&str>) {
    if let Err(status) = host.set_response_header(name, value) {
        log::warn!("llm-router upstream: setting response header {name} failed: {status:?}");
    }
}

fn response_header<H: Host>(host: &H, name: &str) -> Option<String> {
    host.response_header(name).ok().flatten()
}

impl UpstreamStream {
    pub fn on_request_headers<H: Host>(&mut self, host: &H, env: &UpstreamEnv<'_>) -> Flow {
        let key = env.key;
        self.request_id = host.request_header("x-request-id").ok().flatten().map(|id| siphash24(key.0, key.1, id.as_bytes()));
        let now = host.now_ms();
        match host.request_header(STATE_HEADER).ok().flatten() {
            Some(value) => {
                if let Err(status) = host.remove_request_header(STATE_HEADER) {
                    log::warn!("llm-router upstream: removing the state header failed: {status:?}");
                }
                self.state = env.trusted(&value, now).map(|s| (s, value));
                if let (Some(id), Some((state, encoded))) = (self.request_id, &self.state) {
                    match env.pending.try_borrow_mut() {
                        Ok(mut p) => p.remember(id, state.nonce, encoded, now),
                        Err(_) => log::warn!("llm-router upstream: the pending attempts are busy; a retry of this attempt gets no state"),
                    }
                }
            }
            // A retry of an attempt that got no response (its state header is already gone).
            None => {
                let recalled = self.request_id.and_then(|id| env.pending.try_borrow().ok().and_then(|p| p.recall(id).map(str::to_string)));
                self.state = recalled.and_then(|e| env.trusted(&e, now).map(|s| (s, e)));
            }
        }
        Flow::Continue
    }

    pub fn on_response_headers<H: Host>(&mut self, host: &H, env: &UpstreamEnv<'_>, end_of_stream: bool) -> Flow {
        // A response arrived: Envoy will not retry this attempt any more.
        if let (Some(id), Some((state, _))) = (self.request_id, &self.state) {
            if let Ok(mut p) = env.pending.try_borrow_mut() {
                p.forget(id, state.nonce);
            }
        }
        let status = response_header(host, ":status").and_then(|s| s.parse::<u16>().ok()).unwrap_or(0);
        if status < 300 {
            return Flow::Continue;
        }
        let redirector = response_header(host, REDIRECTOR_HEADER).is_some();
        let retry_after = parse_retry_after(
            response_header(host, "retry-after").as_deref(),
            response_header(host, "retry-after-ms").as_deref(),
            host.now_ms(),
        );
        let state = self.state.as_ref().map(|(s, e)| (s, e.as_str()));
        match verdict(state, status, redirector, retry_after) {
            Verdict::Pass => {}
            Verdict::Redirect(location) => {
                log::debug!("llm-router upstream: got {status}{}; failing over", if redirector { " (no response)" } else { "" });
                set(host, ":status", Some("307"));
                // Overwrite (not add): Envoy's own redirector sets a location too, and a
                // comma-joined value is not followed.
                set(host, "location", Some(&location));
            }
            Verdict::Unavailable => {
                set(host, ":status", Some("503"));
                set(host, "location", None);
            }
            Verdict::Inspect if !end_of_stream => {
                self.inspecting = true;
                return Flow::Pause;
            }
            Verdict::Inspect => {}
        }
        Flow::Continue
    }

    pub fn on_response_body<H: Host>(&mut self, host: &H, body_size: usize, end_of_stream: bool) -> Flow {
        if !self.inspecting {
            return Flow::Continue;
        }
        if body_size > MAX_INSPECTED_BODY {
            self.inspecting = false;
            return Flow::Continue;
        }
        if !end_of_stream {
            return Flow::Pause;
        }
        self.inspecting = false;
        let Some((state, encoded)) = &self.state else { return Flow::Continue };
        let body = host.response_body(body_size).ok().flatten().unwrap_or_default();
        if let Verdict::Redirect(location) = rejection_verdict(state, encoded, &body) {
            log::debug!("llm-router upstream: the deployment rejected the request (context window or content policy); rejection fallback");
            set(host, ":status", Some("307"));
            set(host, "location", Some(&location));
        }
        Flow::Continue
    }
}
