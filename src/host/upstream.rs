//! The filter's second role: an *upstream* HTTP filter on each deployment cluster
//! (`root_id: llm_router_upstream`). It takes the router's attempt state off the request (so no
//! provider sees it) and, when the deployment fails and another attempt is possible, turns the
//! response into the 307 that makes Envoy replay the request through the router.

use crate::failover::{AttemptState, REDIRECTOR_HEADER, STATE_HEADER};
use crate::health::parse_retry_after;
use crate::pipeline::upstream::{verdict, Verdict};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, MapType};

#[derive(Default)]
pub struct Upstream {
    state: Option<AttemptState>,
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
        if let Some(value) = header(MapType::HttpRequestHeaders, STATE_HEADER) {
            self.state = AttemptState::decode_unverified(&value);
            if let Err(status) = hostcalls::remove_map_value(MapType::HttpRequestHeaders, STATE_HEADER) {
                log::warn!("llm-router upstream: removing the state header failed: {status:?}");
            }
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(state) = &self.state else { return Action::Continue };
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
        match verdict(Some(state), status, redirector, retry_after) {
            Verdict::Pass => {}
            Verdict::Redirect(location) => {
                log::debug!("llm-router upstream: attempt {} got {status}; failing over", state.hop + 1);
                set(":status", Some("307"));
                // Overwrite (not add): Envoy's own redirector sets a location too, and a
                // comma-joined value is not followed.
                set("location", Some(&location));
            }
            Verdict::Unavailable => {
                set(":status", Some("503"));
                set("location", None);
            }
        }
        Action::Continue
    }
}
