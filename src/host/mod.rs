//! The proxy-wasm adapter: the only module that names proxy-wasm.
//!
//! It implements [`crate::shell::Host`] over `proxy_wasm::hostcalls` (`proxy.rs`), forwards each
//! HTTP callback to the host-agnostic stream logic in [`crate::shell`] (`http.rs`, `upstream.rs`),
//! and holds what only a real host has: the root context (`root.rs`), the prober's callouts
//! (`probe.rs`), shared data as [`crate::health::Store`] (`shared.rs`) and the metrics sink
//! (`metrics.rs`). Every host call's error is handled (the SDK's trait helpers `unwrap`
//! internally, so they are not used): a failed call degrades one request, never the VM.

mod http;
mod metrics;
mod probe;
mod proxy;
mod root;
mod settle;
mod shared;
mod upstream;

use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    // Host calls are not allowed here (`_initialize`); the host's level is read in on_vm_start.
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| Box::new(root::Root::default()));
}}

/// Milliseconds since the Unix epoch from the host clock. Should the proxy-wasm clock call fail,
/// WASI's clock (Envoy implements `clock_time_get`) answers instead; a 0 would make every
/// deadline and cooldown meaningless (nothing would ever cool, every state would be live).
fn now_ms() -> u64 {
    let since_epoch = |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).ok();
    match proxy_wasm::hostcalls::get_current_time().ok().and_then(since_epoch) {
        Some(d) => d.as_millis() as u64,
        None => {
            log::warn!("llm-router: the host clock failed; using the WASI clock");
            since_epoch(std::time::SystemTime::now()).map_or(0, |d| d.as_millis() as u64)
        }
    }
}
