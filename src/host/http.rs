//! The router's HTTP context: forwards each proxy-wasm callback to the host-agnostic
//! [`RouterStream`] (`shell/router_stream.rs`, where the flow and its host-call budget are).

use super::metrics::HostSink;
use super::proxy::ProxyHost;
use super::root::HostVm;
use crate::config::RouterConfig;
use crate::shell::{Flow, RouterStream};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::rc::Rc;

pub struct Http {
    stream: RouterStream<HostSink>,
}

impl Http {
    pub fn new(config: Option<Rc<RouterConfig>>, vm: Rc<HostVm>) -> Http {
        Http { stream: RouterStream::new(config, vm) }
    }
}

pub fn action(flow: Flow) -> Action {
    match flow {
        Flow::Continue => Action::Continue,
        Flow::Pause => Action::Pause,
    }
}

impl Context for Http {
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        self.stream.on_grpc_response(&ProxyHost, token_id, status_code, response_size);
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        action(self.stream.on_request_headers(&ProxyHost, end_of_stream))
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        action(self.stream.on_request_body(&ProxyHost, body_size, end_of_stream))
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        action(self.stream.on_request_trailers(&ProxyHost))
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        action(self.stream.on_response_headers(&ProxyHost))
    }

    fn on_http_response_body(&mut self, body_size: usize, _end_of_stream: bool) -> Action {
        action(self.stream.on_response_body(&ProxyHost, body_size))
    }

    fn on_log(&mut self) {
        self.stream.on_log(&ProxyHost);
    }
}
