//! The proxy-wasm shell: the only module that talks to Envoy.
//!
//! It moves bytes and headers between Envoy and the pure [`crate::pipeline`], and adapts the
//! host's shared data to [`crate::health::Store`]. Every host call's error is handled (the SDK's
//! trait helpers `unwrap` internally, so they are not used): a failed call degrades one request,
//! never the VM.

mod http;
mod metrics;
mod probe;
mod root;
mod shared;
mod upstream;

use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    // Host calls are not allowed here (`_initialize`); the host's level is read in on_vm_start.
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| Box::new(root::Root::default()));
}}

/// Milliseconds since the Unix epoch from the host clock (0 if unavailable).
fn now_ms() -> u64 {
    proxy_wasm::hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}
