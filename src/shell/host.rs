//! The host as the stream logic sees it: the few calls the router's and the upstream role's
//! HTTP contexts make, nothing more. `host/` implements it over `proxy_wasm::hostcalls`; tests
//! use the recording fake (`shell/fake.rs`). Shared data stays behind [`crate::health::Store`]
//! (reached through [`Host::shared`]), metrics behind [`crate::metrics::Sink`] (held per VM).
//!
//! Every call returns its error: the stream decides what a failure costs (one request, never the
//! VM). Each method is one host call, so the stream's host-call count is what it calls here.

use crate::health::Store;

/// A failed host call (proxy-wasm's status codes; `Other` for anything unexpected).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostError {
    NotFound,
    BadArgument,
    SerializationFailure,
    ParseFailure,
    Empty,
    CasMismatch,
    InternalFailure,
    Other,
}

/// What a callback tells the host: go on with the stream, or hold it (buffer the body, wait
/// for a local reply, hold the response headers while a body is inspected).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Pause,
}

pub trait Host {
    /// The process-wide shared data (proxy-wasm shared data; a `MemStore` in tests).
    type Shared: Store;
    fn shared(&self) -> &Self::Shared;

    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;

    /// All request headers in one call (pseudo-headers included, names lowercase).
    fn request_headers(&self) -> Result<Vec<(String, String)>, HostError>;
    fn request_header(&self, name: &str) -> Result<Option<String>, HostError>;
    /// Replaces the whole request header map in one call.
    fn set_request_headers(&self, headers: Vec<(&str, &str)>) -> Result<(), HostError>;
    fn remove_request_header(&self, name: &str) -> Result<(), HostError>;
    /// The first `size` bytes of the buffered request body (None: no body).
    fn request_body(&self, size: usize) -> Result<Option<Vec<u8>>, HostError>;
    /// Replaces the first `replaced` bytes of the buffered request body (all of it) with `body`.
    fn set_request_body(&self, replaced: usize, body: &[u8]) -> Result<(), HostError>;

    fn response_header(&self, name: &str) -> Result<Option<String>, HostError>;
    /// Sets (replaces) a response header; `None` removes it.
    fn set_response_header(&self, name: &str, value: Option<&str>) -> Result<(), HostError>;
    /// All response headers in one call (`:status` included).
    fn response_headers(&self) -> Result<Vec<(String, String)>, HostError>;
    /// Replaces the whole response header map in one call.
    fn set_response_headers(&self, headers: Vec<(&str, &str)>) -> Result<(), HostError>;
    /// The first `size` bytes of the current response body chunk.
    fn response_body(&self, size: usize) -> Result<Option<Vec<u8>>, HostError>;

    /// A stream property such as `["response", "code_details"]`.
    fn property(&self, path: &[&str]) -> Result<Option<Vec<u8>>, HostError>;
    /// A one-element filter-state property (`wasm.<name>` in Envoy's access log).
    fn set_property(&self, name: &str, value: &[u8]) -> Result<(), HostError>;

    /// Answers the stream locally with `status`, `headers` and `body`.
    fn send_reply(&self, status: u16, headers: Vec<(&str, &str)>, body: &[u8]) -> Result<(), HostError>;

    /// Starts a unary gRPC call to `cluster` (`proxy_grpc_call`); the answer comes to the
    /// stream's `on_grpc_response` with the returned token, whatever happens (Envoy enforces
    /// `timeout_ms`).
    fn grpc_call(&self, cluster: &str, service: &str, method: &str, message: &[u8], timeout_ms: u64) -> Result<u32, HostError>;
    /// The answer's first `size` bytes (in `on_grpc_response`).
    fn grpc_response(&self, size: usize) -> Result<Option<Vec<u8>>, HostError>;
    /// Lets a request the stream paused go on.
    fn resume_request(&self) -> Result<(), HostError>;
    /// Appends `message` to the shared queue `queue` (the VM's root context drains it).
    fn enqueue(&self, queue: u32, message: &[u8]) -> Result<(), HostError>;
}
