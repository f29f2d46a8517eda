//! The filter's second role: an *upstream* HTTP filter on each deployment cluster
//! (`root_id: llm_router_upstream`). It takes the router's attempt state off the request (so no
//! provider sees it) and, when the deployment fails and another attempt is possible, turns the
//! response into the 307 that makes Envoy replay the request through the router.

use crate::failover::{AttemptState, REDIRECTOR_HEADER, STATE_HEADER};
use crate::health::parse_retry_after;
use crate::pipeline::upstream::{context_verdict, verdict, Verdict, MAX_INSPECTED_BODY};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, MapType};
use std::cell::RefCell;
use std::collections::VecDeque;

/// Attempts still waiting for response headers, by `x-request-id`. Envoy's retry onto the
/// redirector replays the request header map this filter already edited (the state header is
/// gone by then), so the retried attempt finds its state here. Same worker thread, same VM.
/// Bounded: an attempt whose client vanished never reaches its response and ages out.
const MAX_PENDING: usize = 1024;

thread_local! {
    static PENDING: RefCell<VecDeque<(String, AttemptState, String)>> = const { RefCell::new(VecDeque::new()) };
}

fn remember(request_id: &str, state: &AttemptState, encoded: &str) {
    PENDING.with(|p| {
        let mut p = p.borrow_mut();
        p.retain(|(id, _, _)| id != request_id);
        if p.len() >= MAX_PENDING {
            p.pop_front();
        }
        p.push_back((request_id.to_string(), state.clone(), encoded.to_string()));
    });
}

fn recall(request_id: &str) -> Option<(AttemptState, String)> {
    PENDING.with(|p| p.borrow().iter().find(|(id, _, _)| id == request_id).map(|(_, s, e)| (s.clone(), e.clone())))
}

fn forget(request_id: &str) {
    PENDING.with(|p| p.borrow_mut().retain(|(id, _, _)| id != request_id));
}

#[derive(Default)]
pub struct Upstream {
    /// The decoded state and its encoded form (passed on in the redirect location).
    state: Option<(AttemptState, String)>,
    request_id: Option<String>,
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

impl HttpContext for Upstream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.request_id = header(MapType::HttpRequestHeaders, "x-request-id");
        match header(MapType::HttpRequestHeaders, STATE_HEADER) {
            Some(value) => {
                self.state = AttemptState::decode_unverified(&value).map(|s| (s, value));
                if let Err(status) = hostcalls::remove_map_value(MapType::HttpRequestHeaders, STATE_HEADER) {
                    log::warn!("llm-router upstream: removing the state header failed: {status:?}");
                }
                if let (Some(id), Some((state, encoded))) = (&self.request_id, &self.state) {
                    remember(id, state, encoded);
                }
            }
            // A retry of an attempt that got no response (its state header is already gone).
            None => self.state = self.request_id.as_deref().and_then(recall),
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        // A response arrived: Envoy will not retry this attempt any more.
        if let Some(id) = &self.request_id {
            forget(id);
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
