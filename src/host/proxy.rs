//! [`Host`] over `proxy_wasm::hostcalls`: each method is exactly one host call (the SDK's trait
//! helpers `unwrap` internally, so they are not used).

use super::shared::SharedData;
use crate::shell::{Host, HostError};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType, Status};

/// The current stream's host (proxy-wasm knows which stream a call is for).
pub struct ProxyHost;

fn err(status: Status) -> HostError {
    match status {
        Status::NotFound => HostError::NotFound,
        Status::BadArgument => HostError::BadArgument,
        Status::SerializationFailure => HostError::SerializationFailure,
        Status::ParseFailure => HostError::ParseFailure,
        Status::Empty => HostError::Empty,
        Status::CasMismatch => HostError::CasMismatch,
        Status::InternalFailure => HostError::InternalFailure,
        _ => HostError::Other,
    }
}

impl Host for ProxyHost {
    type Shared = SharedData;

    fn shared(&self) -> &SharedData {
        &SharedData
    }

    fn now_ms(&self) -> u64 {
        super::now_ms()
    }

    fn request_headers(&self) -> Result<Vec<(String, String)>, HostError> {
        hostcalls::get_map(MapType::HttpRequestHeaders).map_err(err)
    }

    fn request_header(&self, name: &str) -> Result<Option<String>, HostError> {
        hostcalls::get_map_value(MapType::HttpRequestHeaders, name).map_err(err)
    }

    fn set_request_headers(&self, headers: Vec<(&str, &str)>) -> Result<(), HostError> {
        hostcalls::set_map(MapType::HttpRequestHeaders, headers).map_err(err)
    }

    fn remove_request_header(&self, name: &str) -> Result<(), HostError> {
        hostcalls::remove_map_value(MapType::HttpRequestHeaders, name).map_err(err)
    }

    fn request_body(&self, size: usize) -> Result<Option<Vec<u8>>, HostError> {
        hostcalls::get_buffer(BufferType::HttpRequestBody, 0, size).map_err(err)
    }

    fn set_request_body(&self, replaced: usize, body: &[u8]) -> Result<(), HostError> {
        hostcalls::set_buffer(BufferType::HttpRequestBody, 0, replaced, body).map_err(err)
    }

    fn response_header(&self, name: &str) -> Result<Option<String>, HostError> {
        hostcalls::get_map_value(MapType::HttpResponseHeaders, name).map_err(err)
    }

    fn set_response_header(&self, name: &str, value: Option<&str>) -> Result<(), HostError> {
        hostcalls::set_map_value(MapType::HttpResponseHeaders, name, value).map_err(err)
    }

    fn response_headers(&self) -> Result<Vec<(String, String)>, HostError> {
        hostcalls::get_map(MapType::HttpResponseHeaders).map_err(err)
    }

    fn set_response_headers(&self, headers: Vec<(&str, &str)>) -> Result<(), HostError> {
        hostcalls::set_map(MapType::HttpResponseHeaders, headers).map_err(err)
    }

    fn response_body(&self, size: usize) -> Result<Option<Vec<u8>>, HostError> {
        hostcalls::get_buffer(BufferType::HttpResponseBody, 0, size).map_err(err)
    }

    fn property(&self, path: &[&str]) -> Result<Option<Vec<u8>>, HostError> {
        hostcalls::get_property(path.to_vec()).map_err(err)
    }

    fn set_property(&self, name: &str, value: &[u8]) -> Result<(), HostError> {
        hostcalls::set_property(vec![name], Some(value)).map_err(err)
    }

    fn send_reply(&self, status: u16, headers: Vec<(&str, &str)>, body: &[u8]) -> Result<(), HostError> {
        hostcalls::send_http_response(u32::from(status), headers, Some(body)).map_err(err)
    }

    /// The SDK's `dispatch_grpc_call`, the only way to have the answer routed back to this
    /// context (it registers the token). It panics on host statuses other than Ok, ParseFailure
    /// and InternalFailure; Envoy returns BadArgument only when the upstream bytes parse as a
    /// `GrpcService` it cannot use, which `config::rate_limit_service` rules out for the cluster
    /// names it accepts (a missing cluster is a ParseFailure).
    fn grpc_call(&self, cluster: &str, service: &str, method: &str, message: &[u8], timeout_ms: u64) -> Result<u32, HostError> {
        hostcalls::dispatch_grpc_call(cluster, service, method, Vec::new(), Some(message), std::time::Duration::from_millis(timeout_ms)).map_err(err)
    }

    fn grpc_response(&self, size: usize) -> Result<Option<Vec<u8>>, HostError> {
        hostcalls::get_buffer(BufferType::GrpcReceiveBuffer, 0, size).map_err(err)
    }

    fn resume_request(&self) -> Result<(), HostError> {
        hostcalls::resume_http_request().map_err(err)
    }

    fn enqueue(&self, queue: u32, message: &[u8]) -> Result<(), HostError> {
        hostcalls::enqueue_shared_queue(queue, Some(message)).map_err(err)
    }
}
