//! llm-router: an LLM deployment router that runs inside Envoy as a proxy-wasm filter.
//!
//! A client posts an OpenAI-style request (`{"model": "gpt-4o", ...}`); the filter resolves the
//! logical model name against a LiteLLM/DeltaLLM-shaped deployment table, picks a healthy
//! deployment, rewrites the body's `model`, `:authority`, `:path` and auth headers for that
//! provider, names the upstream cluster in a header the route reads, and records failures in
//! shared data so every worker cools the same deployments. Envoy does the transport.
//!
//! Everything except [`host`] is plain Rust with no proxy-wasm dependency and is unit-tested
//! natively, including the per-stream flow ([`shell`], written against a small host trait and
//! tested with a fake host); `host` is the thin proxy-wasm adapter, compiled for wasm32 only.

// A panic kills the VM and fails every later request: no unwrap/expect/panic/indexing outside tests.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, clippy::unreachable)
)]

// Modules are crate-private except what the operator tool (`cli/`) uses, so the compiler reports
// dead code. Only the wasm32 build has the adapter that drives the shell: natively (unit tests,
// `cli/`) much of the core looks unused, so dead code is reported by the wasm32 build
// (`cargo clippy --lib --target wasm32-wasip1 -- -D warnings`, run by scripts/test).
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code, unused_imports))]

pub(crate) mod access;
pub mod config;
pub(crate) mod failover;
pub(crate) mod health;
pub(crate) mod metrics;
pub(crate) mod openai;
pub(crate) mod pipeline;
pub(crate) mod limits;
pub(crate) mod percent;
pub(crate) mod probe;
pub(crate) mod provider;
pub(crate) mod routing;
pub(crate) mod shell;
pub(crate) mod stats;

#[cfg(target_arch = "wasm32")]
mod host;

/// What the operator tool (`cli/`) needs from the crate-private modules.
pub mod cli_api {
    // `llm-router key new/import`: the one SHA-256 of a virtual key, and the loader's parsers of
    // `expires` and `budget_duration`.
    pub use crate::access::{key_hash, parse_hex};
    pub use crate::config::iso8601::parse_ms as parse_time_ms;
    pub use crate::limits::{is_none as is_no_duration, parse as parse_duration};
    // `llm-router spend`: cost totals printed as the access log prints a request's.
    pub use crate::limits::cost::usd;
    pub use crate::failover::FAILOVER_PATH;
    pub use crate::metrics::{tag_regex, TAGS};
    pub use crate::openai::json_write::string_len;
    pub use crate::pipeline::log_props::{ACCESS_LOG_FORMAT, ACCESS_LOG_JSON};
    // `llm-router rls`: every limit of the plans, named as the filter names them to an RLS.
    pub use crate::limits::global::{kind_value, remote_limit, scope_entry, LIMIT_ENTRY};
    pub use crate::limits::plan::rank as kind_rank;
    pub use crate::limits::{Duration, Kind, Limit, OnUnavailable, Scope, Unit, Window};
}
