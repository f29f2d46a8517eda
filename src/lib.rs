//! llm-router: an LLM deployment router that runs inside Envoy as a proxy-wasm filter.
//!
//! A client posts an OpenAI-style request (`{"model": "gpt-4o", ...}`); the filter resolves the
//! logical model name against a LiteLLM/DeltaLLM-shaped deployment table, picks a healthy
//! deployment, rewrites the body's `model`, `:authority`, `:path` and auth headers for that
//! provider, names the upstream cluster in a header the route reads, and records failures in
//! shared data so every worker cools the same deployments. Envoy does the transport.
//!
//! Everything except [`host`] is plain Rust with no proxy-wasm dependency and is unit-tested
//! natively; `host` is the thin proxy-wasm shell, compiled for wasm32 only.

// A panic kills the VM and fails every later request: no unwrap/expect/panic/indexing outside tests.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, clippy::unreachable)
)]

pub mod config;
pub mod failover;
pub mod health;
pub mod metrics;
pub mod openai;
pub mod pipeline;
pub mod probe;
pub mod provider;
pub mod routing;
pub mod stats;

#[cfg(target_arch = "wasm32")]
mod host;
