//! No-op proxy-wasm HTTP filter for bench/run.
//!
//! Plugin configuration selects the mode:
//! - anything else (the benchmark's variant 2, "no-op"): every callback returns Continue and
//!   touches nothing, so the cost measured is Envoy's wasm plumbing alone.
//! - `buffer_read` (breakdown variant "2b"): pauses in the request headers, waits for the whole
//!   body, reads it into the VM once, then continues — the floor of what any body-inspecting
//!   filter (like llm-router) must pay, without any routing work.
//! - `host_calls` (breakdown variant "2h"): `buffer_read` plus the host calls llm-router makes on a
//!   routed request, with fixed values and no computation: read all request headers, one shared-data
//!   read, remove the client's `authorization`, set the cluster header, `:authority`, `:path`, the
//!   attempt-state header, the provider's auth and the per-try timeout (which re-routes the request to
//!   a deployment cluster), then on the response read `:status` and set three headers. The difference
//!   to llm-router is the router's own work inside the VM (JSON scan, resolution, selection, state
//!   signing, body rewrite).

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Noop,
    BufferRead,
    HostCalls,
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { mode: Mode::Noop }) });
}}

struct Root {
    mode: Mode,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        self.mode = match config.trim_ascii() {
            b"buffer_read" => Mode::BufferRead,
            b"host_calls" => Mode::HostCalls,
            _ => Mode::Noop,
        };
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        match self.mode {
            Mode::Noop => Some(Box::new(Noop)),
            Mode::BufferRead => Some(Box::new(BufferRead)),
            Mode::HostCalls => Some(Box::new(HostCalls)),
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Continue everywhere (all HttpContext methods keep their default: Continue).
struct Noop;

impl Context for Noop {}
impl HttpContext for Noop {}

/// Pause until the body is complete, read it once, continue.
struct BufferRead;

impl Context for BufferRead {}

impl HttpContext for BufferRead {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        if end_of_stream {
            Action::Continue
        } else {
            Action::Pause
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause;
        }
        let body = self.get_http_request_body(0, body_size).unwrap_or_default();
        std::hint::black_box(body.len());
        Action::Continue
    }
}

/// llm-router's host calls on a routed request, without its computation (values are fixed: the
/// benchmark's hot deployment on api.openai.com).
struct HostCalls;

impl Context for HostCalls {}

const STATE: &str = "v=1;h=0;m=gpt-4o;o=gpt-4o;g=gpt-4o;f=0;r=0;t=gpt-4o-openai;p=/v1/chat/completions;\
a=127.0.0.1:10000;s=1795430036557;b=120000;c=1;x=0;w=0;mac=e0c57babdde2e0a7";

impl HttpContext for HostCalls {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let headers = self.get_http_request_headers();
        std::hint::black_box(headers.len());
        if end_of_stream {
            Action::Continue
        } else {
            Action::Pause
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause;
        }
        let body = self.get_http_request_body(0, body_size).unwrap_or_default();
        std::hint::black_box(body.len());
        std::hint::black_box(self.get_shared_data("llm_router.v1.cooldowns"));
        self.set_http_request_header("authorization", None);
        self.set_http_request_header("x-llm-router-cluster", Some("outbound|443||api.openai.com"));
        self.set_http_request_header(":authority", Some("api.openai.com"));
        self.set_http_request_header(":path", Some("/v1/chat/completions"));
        self.set_http_request_header("x-llm-router-state", Some(STATE));
        self.set_http_request_header("authorization", Some("Bearer sk-bench-openai-primary"));
        self.set_http_request_header("x-envoy-upstream-rq-per-try-timeout-ms", Some("120000"));
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.set_http_response_header("x-llm-router-deployment", Some("gpt-4o-openai"));
        self.set_http_response_header("x-llm-router-model-group", Some("gpt-4o"));
        self.set_http_response_header("x-llm-router-attempts", Some("1"));
        std::hint::black_box(self.get_http_response_header(":status"));
        Action::Continue
    }
}
