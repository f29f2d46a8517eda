//! A recording fake [`Host`] for unit tests: in-memory request/response headers and bodies,
//! properties, replies and a settable clock; every call is recorded (in order, with its
//! argument), and any call can be made to fail. Shared data is a `health::MemStore` that
//! several fake hosts may share (the router's and the upstream role's side of one Envoy).

use super::host::{Host, HostError};
use crate::health::MemStore;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

/// One kind of host call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Now,
    RequestHeaders,
    RequestHeader,
    SetRequestHeaders,
    RemoveRequestHeader,
    RequestBody,
    SetRequestBody,
    ResponseHeader,
    SetResponseHeader,
    ResponseHeaders,
    SetResponseHeaders,
    ResponseBody,
    Property,
    SetProperty,
    SendReply,
    GrpcCall,
    GrpcResponse,
    ResumeRequest,
    Enqueue,
}

/// A local reply the stream sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl SentReply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The OpenAI-shaped body's `error.code`.
    pub fn code(&self) -> Option<String> {
        self.json().pointer("/error/code").and_then(|c| c.as_str()).map(str::to_string)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// A gRPC call the stream started: (cluster, `service/method`, message, timeout ms).
pub type GrpcCall = (String, String, Vec<u8>, u64);

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn get(map: &[(String, String)], name: &str) -> Option<String> {
    map.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
}

#[derive(Default)]
pub struct FakeHost {
    pub store: Rc<MemStore>,
    pub clock: Rc<Cell<u64>>,
    pub request_headers: RefCell<Vec<(String, String)>>,
    pub request_body: RefCell<Vec<u8>>,
    pub response_headers: RefCell<Vec<(String, String)>>,
    /// The current response body chunk.
    pub response_body: RefCell<Vec<u8>>,
    /// Readable properties by dotted path (`response.code_details`).
    pub properties: RefCell<HashMap<String, Vec<u8>>>,
    /// Properties the stream set, in order.
    pub set_properties: RefCell<Vec<(String, String)>>,
    pub replies: RefCell<Vec<SentReply>>,
    /// gRPC calls started; the token is the index + 1.
    pub grpc_calls: RefCell<Vec<GrpcCall>>,
    /// The answer `grpc_response` reads.
    pub grpc_answer: RefCell<Vec<u8>>,
    /// Messages enqueued, by queue id.
    pub queued: RefCell<Vec<(u32, Vec<u8>)>>,
    /// Every call, in order, with its main argument (a header name, a size, ...).
    pub calls: RefCell<Vec<(Op, String)>>,
    failing: RefCell<HashSet<Op>>,
}

impl FakeHost {
    /// A stream whose request has these headers and body.
    pub fn request(headers: &[(&str, &str)], body: &str) -> FakeHost {
        let host = FakeHost::default();
        host.set_request(headers, body);
        host
    }

    /// Another host over the same shared data and clock (the other side of the same Envoy).
    pub fn sharing(other: &FakeHost) -> FakeHost {
        FakeHost { store: other.store.clone(), clock: other.clock.clone(), ..FakeHost::default() }
    }

    pub fn set_request(&self, headers: &[(&str, &str)], body: &str) {
        *self.request_headers.borrow_mut() = owned(headers);
        *self.request_body.borrow_mut() = body.as_bytes().to_vec();
    }

    /// The upstream (or Envoy) answers with these response headers.
    pub fn respond(&self, headers: &[(&str, &str)]) {
        *self.response_headers.borrow_mut() = owned(headers);
    }

    pub fn set_property_value(&self, path: &str, value: &str) {
        self.properties.borrow_mut().insert(path.to_string(), value.as_bytes().to_vec());
    }

    /// Makes every later call of `op` fail.
    pub fn fail(&self, op: Op) {
        self.failing.borrow_mut().insert(op);
    }

    pub fn advance(&self, ms: u64) {
        self.clock.set(self.clock.get() + ms);
    }

    pub fn count(&self, op: Op) -> usize {
        self.calls.borrow().iter().filter(|(o, _)| *o == op).count()
    }

    /// The arguments of every call of `op`, in order.
    pub fn args(&self, op: Op) -> Vec<String> {
        self.calls.borrow().iter().filter(|(o, _)| *o == op).map(|(_, a)| a.clone()).collect()
    }

    pub fn clear_calls(&self) {
        self.calls.borrow_mut().clear();
    }

    pub fn request_header_value(&self, name: &str) -> Option<String> {
        get(&self.request_headers.borrow(), name)
    }

    pub fn response_header_value(&self, name: &str) -> Option<String> {
        get(&self.response_headers.borrow(), name)
    }

    pub fn request_header_names(&self) -> Vec<String> {
        self.request_headers.borrow().iter().map(|(n, _)| n.clone()).collect()
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.request_body.borrow()).into_owned()
    }

    /// The one reply sent (None when none; a test failure when several).
    pub fn reply(&self) -> Option<SentReply> {
        let replies = self.replies.borrow();
        assert!(replies.len() <= 1, "several replies: {replies:?}");
        replies.first().cloned()
    }

    fn call(&self, op: Op, arg: impl Into<String>) -> Result<(), HostError> {
        self.calls.borrow_mut().push((op, arg.into()));
        if self.failing.borrow().contains(&op) {
            Err(HostError::InternalFailure)
        } else {
            Ok(())
        }
    }
}

impl Host for FakeHost {
    type Shared = MemStore;

    fn shared(&self) -> &MemStore {
        &self.store
    }

    fn now_ms(&self) -> u64 {
        self.calls.borrow_mut().push((Op::Now, String::new()));
        self.clock.get()
    }

    fn request_headers(&self) -> Result<Vec<(String, String)>, HostError> {
        self.call(Op::RequestHeaders, "")?;
        Ok(self.request_headers.borrow().clone())
    }

    fn request_header(&self, name: &str) -> Result<Option<String>, HostError> {
        self.call(Op::RequestHeader, name)?;
        Ok(self.request_header_value(name))
    }

    fn set_request_headers(&self, headers: Vec<(&str, &str)>) -> Result<(), HostError> {
        self.call(Op::SetRequestHeaders, headers.len().to_string())?;
        *self.request_headers.borrow_mut() = owned(&headers);
        Ok(())
    }

    fn remove_request_header(&self, name: &str) -> Result<(), HostError> {
        self.call(Op::RemoveRequestHeader, name)?;
        self.request_headers.borrow_mut().retain(|(n, _)| n != name);
        Ok(())
    }

    fn request_body(&self, size: usize) -> Result<Option<Vec<u8>>, HostError> {
        self.call(Op::RequestBody, size.to_string())?;
        let body = self.request_body.borrow();
        let n = size.min(body.len());
        Ok((n > 0).then(|| body.iter().take(n).copied().collect()))
    }

    fn set_request_body(&self, replaced: usize, new: &[u8]) -> Result<(), HostError> {
        self.call(Op::SetRequestBody, replaced.to_string())?;
        let mut body = self.request_body.borrow_mut();
        let at = replaced.min(body.len());
        let tail = body.split_off(at);
        *body = new.to_vec();
        body.extend(tail);
        Ok(())
    }

    fn response_header(&self, name: &str) -> Result<Option<String>, HostError> {
        self.call(Op::ResponseHeader, name)?;
        Ok(self.response_header_value(name))
    }

    fn response_headers(&self) -> Result<Vec<(String, String)>, HostError> {
        self.call(Op::ResponseHeaders, "")?;
        Ok(self.response_headers.borrow().clone())
    }

    fn set_response_headers(&self, headers: Vec<(&str, &str)>) -> Result<(), HostError> {
        self.call(Op::SetResponseHeaders, headers.len().to_string())?;
        *self.response_headers.borrow_mut() = owned(&headers);
        Ok(())
    }

    fn set_response_header(&self, name: &str, value: Option<&str>) -> Result<(), HostError> {
        self.call(Op::SetResponseHeader, name)?;
        let mut headers = self.response_headers.borrow_mut();
        headers.retain(|(n, _)| n != name);
        if let Some(v) = value {
            headers.push((name.to_string(), v.to_string()));
        }
        Ok(())
    }

    fn response_body(&self, size: usize) -> Result<Option<Vec<u8>>, HostError> {
        self.call(Op::ResponseBody, size.to_string())?;
        let body = self.response_body.borrow();
        let n = size.min(body.len());
        Ok((n > 0).then(|| body.iter().take(n).copied().collect()))
    }

    fn property(&self, path: &[&str]) -> Result<Option<Vec<u8>>, HostError> {
        let path = path.join(".");
        self.call(Op::Property, path.as_str())?;
        Ok(self.properties.borrow().get(&path).cloned())
    }

    fn set_property(&self, name: &str, value: &[u8]) -> Result<(), HostError> {
        self.call(Op::SetProperty, name)?;
        self.set_properties.borrow_mut().push((name.to_string(), String::from_utf8_lossy(value).into_owned()));
        Ok(())
    }

    fn send_reply(&self, status: u16, headers: Vec<(&str, &str)>, body: &[u8]) -> Result<(), HostError> {
        self.call(Op::SendReply, status.to_string())?;
        self.replies.borrow_mut().push(SentReply { status, headers: owned(&headers), body: body.to_vec() });
        Ok(())
    }

    fn grpc_call(&self, cluster: &str, service: &str, method: &str, message: &[u8], timeout_ms: u64) -> Result<u32, HostError> {
        self.call(Op::GrpcCall, cluster)?;
        let mut calls = self.grpc_calls.borrow_mut();
        calls.push((cluster.to_string(), format!("{service}/{method}"), message.to_vec(), timeout_ms));
        Ok(u32::try_from(calls.len()).unwrap_or(u32::MAX))
    }

    fn grpc_response(&self, size: usize) -> Result<Option<Vec<u8>>, HostError> {
        self.call(Op::GrpcResponse, size.to_string())?;
        let answer = self.grpc_answer.borrow();
        let n = size.min(answer.len());
        Ok((n > 0).then(|| answer.iter().take(n).copied().collect()))
    }

    fn resume_request(&self) -> Result<(), HostError> {
        self.call(Op::ResumeRequest, "")
    }

    fn enqueue(&self, queue: u32, message: &[u8]) -> Result<(), HostError> {
        self.call(Op::Enqueue, queue.to_string())?;
        self.queued.borrow_mut().push((queue, message.to_vec()));
        Ok(())
    }
}

/// A key's SHA-256 hex, as the config's `token` holds it.
pub fn hex(raw: &str) -> String {
    crate::access::key_hash(raw).iter().map(|b| format!("{b:02x}")).collect()
}

/// Two model groups on two local upstreams: `gpt-4o` and `mini`.
pub fn two_models() -> serde_json::Value {
    serde_json::json!([
        {"model_name": "gpt-4o", "litellm_params": {"model": "openai/gpt-4o", "api_base": "http://127.0.0.1:18001/v1", "api_key": "sk-provider"}},
        {"model_name": "mini", "litellm_params": {"model": "openai/gpt-4o-mini", "api_base": "http://127.0.0.1:18002/v1", "api_key": "sk-provider"}},
    ])
}

/// The config `v` loaded (generation 1), and a VM to run streams on.
pub fn gateway_of(v: &serde_json::Value) -> (std::rc::Rc<crate::config::RouterConfig>, std::rc::Rc<super::vm::Vm<crate::metrics::FakeSink>>) {
    let loaded = crate::config::load(v.to_string().as_bytes(), &|_| None);
    let Some(mut cfg) = loaded.config else { panic!("config refused: {:?}", loaded.diagnostics.errors) };
    cfg.generation = 1;
    (std::rc::Rc::new(cfg), std::rc::Rc::new(super::vm::Vm::new(crate::routing::Rng::from_seed(7), (1, 2), crate::metrics::FakeSink::default())))
}
