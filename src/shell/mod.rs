//! The per-stream flow of both HTTP contexts, host-agnostic: what the filter does with each
//! Envoy callback, written against the small [`host::Host`] trait instead of proxy-wasm.
//!
//! `host/` (wasm32 only) is the adapter: its `Host` implementation forwards each method to one
//! `proxy_wasm::hostcalls` call, and its `HttpContext`s forward each callback here. Everything
//! here compiles natively, so whole streams are unit-tested against the recording fake host
//! (`fake.rs`) with `health::MemStore` as shared data and `metrics::FakeSink` as the metrics.
//!
//! - [`router_stream`]: the router (`root_id: llm_router`): headers → pause → body → the
//!   one-write rewrite → response headers → judge/record → `on_log`.
//! - [`upstream_stream`]: the upstream role (`root_id: llm_router_upstream`): state header off
//!   the request, pending retries, a failure turned into the failover 307 (or a 503).
//! - [`spend`]: spend attribution at the end of an attempt (access-log names and cost, spend
//!   metrics) and the soft-budget metric at admission.
//! - [`vm`]: what every stream of a VM shares (cooldown view, PRNG, key, metrics, spent nonces).

pub mod host;
mod identity;
pub mod router_stream;
pub mod spend;
pub mod upstream_stream;
pub mod vm;

#[cfg(test)]
pub mod fake;
#[cfg(test)]
mod global_tests;
#[cfg(test)]
mod identity_tests;
#[cfg(test)]
mod keys_tests;
#[cfg(test)]
mod limits_tests;
#[cfg(test)]
mod router_tests;
#[cfg(test)]
mod spend_tests;
#[cfg(test)]
mod upstream_tests;

pub use host::{Flow, Host, HostError};
pub use router_stream::RouterStream;
pub use upstream_stream::{UpstreamEnv, UpstreamStream};
pub use vm::Vm;
