//! The upstream role's HTTP context (`root_id: llm_router_upstream`): forwards each callback to
//! the host-agnostic [`UpstreamStream`] (`shell/upstream_stream.rs`) with this VM's key, whether
//! the router shares the VM, and the VM's pending retries.

use super::http::action;
use super::proxy::ProxyHost;
use super::root::{router_in_vm, vm_key};
use crate::failover::PendingAttempts;
use crate::shell::{UpstreamEnv, UpstreamStream};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::cell::RefCell;

thread_local! {
    /// Attempts that may be retried onto the redirector, by hashed request id (see
    /// `failover::pending`). Same worker thread, same VM.
    static PENDING: RefCell<PendingAttempts> = RefCell::new(PendingAttempts::default());
}

#[derive(Default)]
pub struct Upstream {
    stream: UpstreamStream,
}

fn with_env<R>(f: impl FnOnce(&UpstreamEnv<'_>) -> R) -> R {
    PENDING.with(|pending| f(&UpstreamEnv { key: vm_key(), verify: router_in_vm(), pending }))
}

impl Context for Upstream {}

impl HttpContext for Upstream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        action(with_env(|env| self.stream.on_request_headers(&ProxyHost, env)))
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        action(with_env(|env| self.stream.on_response_headers(&ProxyHost, env, end_of_stream)))
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        action(self.stream.on_response_body(&ProxyHost, body_size, end_of_stream))
    }
}
