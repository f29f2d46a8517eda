//! One HTTP stream: read headers → (pause) → buffered body → apply the plan → observe the
//! response. Host calls per routed request: 1 header read, 1 body read, 1 shared-data read,
//! a few header writes, 1 body write when the body changes, and on the response 3 header
//! reads/writes — shared-data writes happen only when an attempt failed.

use super::root::Vm;
use super::shared::SharedData;
use crate::config::RouterConfig;
use crate::health::{classify, parse_retry_after};
use crate::pipeline::auth::ClientCredentials;
use crate::pipeline::outcome;
use crate::pipeline::request::{self, HeadDecision, Pending, Reply, RequestHead, CLIENT_AUTH_HEADERS};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, MapType};
use std::rc::Rc;

pub const DEPLOYMENT_HEADER: &str = "x-llm-router-deployment";
pub const GROUP_HEADER: &str = "x-llm-router-model-group";

/// Where the stream is.
enum Phase {
    /// Not ours (or no config): everything passes through.
    Idle,
    /// Waiting for the whole body; `present` lists the client's credential headers to strip.
    Buffering { pending: Pending, strip: Vec<&'static str> },
    /// Forwarded to deployment `index` of the config.
    Forwarded { index: usize },
    /// A local reply was sent.
    Replied,
}

pub struct Http {
    config: Option<Rc<RouterConfig>>,
    vm: Rc<Vm>,
    phase: Phase,
}

impl Http {
    pub fn new(config: Option<Rc<RouterConfig>>, vm: Rc<Vm>) -> Http {
        Http { config, vm, phase: Phase::Idle }
    }

    fn reply(&mut self, reply: &Reply) -> Action {
        let body = reply.error.body();
        let mut headers: Vec<(&str, &str)> = vec![("content-type", "application/json")];
        headers.extend(reply.headers.iter().map(|(k, v)| (*k, v.as_str())));
        if let Err(status) = hostcalls::send_http_response(u32::from(reply.error.status), headers, Some(&body)) {
            log::error!("llm-router: sending a {} reply failed: {status:?}", reply.error.status);
        }
        self.phase = Phase::Replied;
        Action::Pause
    }

    fn set_header(name: &str, value: &str) {
        if let Err(status) = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value)) {
            log::warn!("llm-router: setting request header {name} failed: {status:?}");
        }
    }
}

impl Context for Http {}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(cfg) = self.config.clone() else { return Action::Continue };
        let headers = match hostcalls::get_map(MapType::HttpRequestHeaders) {
            Ok(h) => h,
            Err(status) => {
                log::warn!("llm-router: reading request headers failed: {status:?}");
                return Action::Continue;
            }
        };
        let mut head = RequestHead::default();
        let mut creds = ClientCredentials::default();
        let mut strip = Vec::new();
        for (name, value) in &headers {
            match name.as_str() {
                ":method" => head.method = value,
                ":path" => head.path = value,
                "content-type" => head.content_type = Some(value),
                "content-length" => head.content_length = Some(value),
                "anthropic-version" => head.has_anthropic_version = true,
                "authorization" => creds.authorization = Some(value),
                "api-key" => creds.api_key = Some(value),
                "x-api-key" => creds.x_api_key = Some(value),
                _ => {}
            }
            if let Some(h) = CLIENT_AUTH_HEADERS.iter().find(|h| **h == name.as_str()) {
                strip.push(*h);
            }
        }
        head.credentials = creds;
        match request::on_head(&cfg, &head) {
            HeadDecision::PassThrough => Action::Continue,
            HeadDecision::Reject(reply) => self.reply(&reply),
            HeadDecision::ReadBody(pending) => {
                self.phase = Phase::Buffering { pending, strip };
                if end_of_stream {
                    // No body at all: answer now, there will be no body callback.
                    return self.on_http_request_body(0, true);
                }
                Action::Pause
            }
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Phase::Buffering { pending, strip } = &self.phase else { return Action::Continue };
        if !end_of_stream {
            return Action::Pause;
        }
        let Some(cfg) = self.config.clone() else { return Action::Continue };
        let body = match hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size) {
            Ok(b) => b.unwrap_or_default(),
            Err(status) => {
                log::warn!("llm-router: reading the request body failed: {status:?}");
                Vec::new()
            }
        };
        let now = super::now_ms();
        let plan = {
            let mut cache = self.vm.cooldowns.borrow_mut();
            let view = cache.refresh(&cfg);
            let mut rng = self.vm.rng.borrow_mut();
            request::on_body(&cfg, pending, &body, view, now, &mut rng)
        };
        let fwd = match plan {
            Ok(f) => f,
            Err(reply) => return self.reply(&reply),
        };
        for name in strip {
            if let Err(status) = hostcalls::remove_map_value(MapType::HttpRequestHeaders, name) {
                log::warn!("llm-router: removing request header {name} failed: {status:?}");
            }
        }
        Self::set_header(fwd.cluster_header, fwd.cluster);
        Self::set_header(":authority", fwd.authority);
        Self::set_header(":path", &fwd.path);
        if let Some(auth) = fwd.auth {
            Self::set_header(&auth.name, &auth.value);
        }
        if let Some(v) = fwd.anthropic_version {
            Self::set_header("anthropic-version", v);
        }
        if let Some(new_body) = &fwd.body {
            if let Err(status) = hostcalls::set_buffer(BufferType::HttpRequestBody, 0, body_size, new_body) {
                log::error!("llm-router: replacing the request body failed: {status:?}");
                let reply = Reply::from(crate::openai::ApiError::new(
                    500,
                    crate::openai::error::API_ERROR,
                    None,
                    Some("internal_error"),
                    "llm-router could not rewrite the request body",
                ));
                return self.reply(&reply);
            }
            // Envoy does not fix content-length after a body rewrite; a stale one corrupts
            // the pooled upstream connection.
            Self::set_header("content-length", &new_body.len().to_string());
        }
        log::debug!(
            "llm-router: {} → deployment {} ({}) via {}",
            fwd.group,
            fwd.deployment.id,
            fwd.deployment.provider.name,
            fwd.cluster
        );
        self.phase = Phase::Forwarded { index: fwd.deployment_index };
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Phase::Forwarded { index } = self.phase else { return Action::Continue };
        let Some(cfg) = self.config.clone() else { return Action::Continue };
        let Some(dep) = cfg.table.deployments.get(index) else { return Action::Continue };
        for (name, value) in [(DEPLOYMENT_HEADER, dep.id.as_str()), (GROUP_HEADER, dep.group.as_str())] {
            if let Err(status) = hostcalls::set_map_value(MapType::HttpResponseHeaders, name, Some(value)) {
                log::warn!("llm-router: setting response header {name} failed: {status:?}");
            }
        }
        let status = response_header(":status").and_then(|s| s.parse::<u16>().ok()).unwrap_or(0);
        if status < 400 {
            return Action::Continue;
        }
        let details = if status >= 500 {
            hostcalls::get_property(vec!["response", "code_details"])
                .ok()
                .flatten()
                .and_then(|b| String::from_utf8(b).ok())
        } else {
            None
        };
        let Some(class) = classify(status, details.as_deref()) else { return Action::Continue };
        let now = super::now_ms();
        let retry_after = parse_retry_after(
            response_header("retry-after").as_deref(),
            response_header("retry-after-ms").as_deref(),
            now,
        );
        match outcome::record(&SharedData, &cfg, index, class, retry_after, now) {
            Ok(r) => {
                if let Some(until) = r.cooled_until_ms {
                    log::info!(
                        "llm-router: deployment {} of {} cooling for {} ms after {class} ({} failure(s) this window)",
                        dep.id,
                        dep.group,
                        until.saturating_sub(now),
                        r.fails_in_window
                    );
                } else {
                    log::debug!("llm-router: deployment {} failed with {class} ({} this window)", dep.id, r.fails_in_window);
                }
            }
            Err(_) => log::warn!("llm-router: recording a {class} failure of deployment {} failed", dep.id),
        }
        Action::Continue
    }
}

fn response_header(name: &str) -> Option<String> {
    hostcalls::get_map_value(MapType::HttpResponseHeaders, name).ok().flatten()
}
