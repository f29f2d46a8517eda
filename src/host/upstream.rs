//! The filter's second role: an *upstream* HTTP filter on each deployment cluster
//! (`root_id: llm_router_upstream`). It takes the router's attempt state off the request (so no
//! provider sees it) and, when the deployment fails and another attempt is possible, turns the
//! response into the 307 that makes Envoy replay the request through the router.
//!
//! It acts only on state it can trust: in a VM that also runs the router it verifies the
//! signature and deadline with the router's key; in a VM of its own (the probe setup gives it
//! its own `vm_id`) it cannot, and relies on the router, which removes every client-sent
//! `x-llm-router-*` header and refuses any replayed pass it did not sign (ARCHITECTURE.md).

use super::root::{router_in_vm, vm_key};
use crate::failover::{siphash24, AttemptState, PendingAttempts, REDIRECTOR_HEADER, STATE_HEADER};
use crate::health::parse_retry_after;
use crate::pipeline::upstream::{context_verdict, verdict, Verdict, MAX_INSPECTED_BODY};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, MapType};
use std::cell::RefCell;

thread_local! {
    /// Attempts that may be retried onto the redirector, by hashed request id (see
    /// `failover::pending`). Same worker thread, same VM.
    static PENDING: RefCell<PendingAttempts> = RefCell::new(PendingAttempts::default());
}

#[derive(Default)]
pub struct Upstream {
    /// The decoded state and its encoded form (passed on in the redirect location).
    state: Option<(AttemptState, String)>,
    /// The keyed hash of `x-request-id`.
    request_id: Option<u64>,
    /// Response headers are held while a 400 body is read for a context-window error.
    inspecting: bool,
}

impl Context for Upstream {}

fn header(map: MapType, name: &str) -> Option<String> {
    hostcalls::get_map_value(map, name).ok().flatten()
}

fn set(name: &str, value: Option<&str>) {
    if let Err(status) = hostcalls::set_map_value(MapType::HttpResponseHeaders, name, value) {
        log::warn!("llm-router upstream: setting response header {name} failed: {status:?}");
    }
}

/// The state in `encoded`, when this role may act on it.
fn trusted(encoded: &str, now_ms: u64) -> Option<AttemptState> {
    let state = if router_in_vm() { AttemptState::decode(encoded, vm_key())? } else { AttemptState::decode_unverified(encoded)? };
    state.is_live(now_ms).then_some(state)
}

impl HttpContext for Upstream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let key = vm_key();
        self.request_id = header(MapType::HttpRequestHeaders, "x-request-id").map(|id| siphash24(key.0, key.1, id.as_bytes()));
        let now = super::now_ms();
        match header(MapType::HttpRequestHeaders, STATE_HEADER) {
            Some(value) => {
                if let Err(status) = hostcalls::remove_map_value(MapType::HttpRequestHeaders, STATE_HEADER) {
                    log::warn!("llm-router upstream: removing the state header failed: {status:?}");
                }
                self.state = trusted(&value, now).map(|s| (s, value));
                if let (Some(id), Some((state, encoded))) = (self.request_id, &self.state) {
                    PENDING.with(|p| p.borrow_mut().remember(id, state.nonce, encoded, now));
                }
            }
            // A retry of an attempt that got no response (its state header is already gone).
            None => {
                let recalled = self.request_id.and_then(|id| PENDING.with(|p| p.borrow().recall(id).map(str::to_string)));
                self.state = recalled.and_then(|e| trusted(&e, now).map(|s| (s, e)));
            }
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        // A response arrived: Envoy will not retry this attempt any more.
        if let (Some(id), Some((state, _))) = (self.request_id, &self.state) {
            PENDING.with(|p| p.borrow_mut().forget(id, state.nonce));
        }
        let status = header(MapType::HttpResponseHeaders, ":status").and_then(|s| s.parse::<u16>().ok()).unwrap_or(0);
        if status < 300 {
            return Action::Continue;
        }
        let redirector = header(MapType::HttpResponseHeaders, REDIRECTOR_HEADER).is_some();
        let retry_after = parse_retry_after(
            header(MapType::HttpResponseHeaders, "retry-after").as_deref(),
            header(MapType::HttpResponseHeaders, "retry-after-ms").as_deref(),
            super::now_ms(),
        );
        let state = self.state.as_ref().map(|(s, e)| (s, e.as_str()));
        match verdict(state, status, redirector, retry_after) {
            Verdict::Pass => {}
            Verdict::Redirect(location) => {
                log::debug!("llm-router upstream: got {status}{}; failing over", if redirector { " (no response)" } else { "" });
                set(":status", Some("307"));
                // Overwrite (not add): Envoy's own redirector sets a location too, and a
                // comma-joined value is not followed.
                set("location", Some(&location));
            }
            Verdict::Unavailable => {
                set(":status", Some("503"));
                set("location", None);
            }
            Verdict::Inspect if !end_of_stream => {
                self.inspecting = true;
                return Action::Pause;
            }
            Verdict::Inspect => {}
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !self.inspecting {
            return Action::Continue;
        }
        if body_size > MAX_INSPECTED_BODY {
            self.inspecting = false;
            return Action::Continue;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        self.inspecting = false;
        let Some((state, encoded)) = &self.state else { return Action::Continue };
        let body = hostcalls::get_buffer(BufferType::HttpResponseBody, 0, body_size).ok().flatten().unwrap_or_default();
        if let Verdict::Redirect(location) = context_verdict(state, encoded, &body) {
            log::debug!("llm-router upstream: prompt too long for this deployment; context-window fallback");
            set(":status", Some("307"));
            set("location", Some(&location));
        }
        Action::Continue
    }
}
