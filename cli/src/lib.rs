//! `llm-router`, the operator tool for the llm-router Envoy filter (native only; the filter
//! itself is the workspace's root package).
//!
//! - [`source`] reads a LiteLLM/DeltaLLM config as LiteLLM does ([`yaml`]: YAML 1.1 scalars,
//!   anchors, merge keys; `include:`) into the filter's JSON, keeping a position per field path;
//! - [`plan`] validates it with the filter's own loader (`llm_router::config::load`) and derives
//!   the upstream clusters the filter will name;
//! - [`envoy`] and [`istio`] generate deployment config, [`rls`] a rate limit service's limits;
//!   [`value`] writes JSON and YAML;
//! - [`package`] writes the built filter as an OCI image (the Wasm image format istio-agent pulls);
//! - [`key`] makes virtual keys' config entries (`key new`) and imports LiteLLM's key and team
//!   exports (`key import`);
//! - [`spend`] sums requests, tokens and cost from access logs (`spend`);
//! - [`check`] is the `check` command, [`summary`] what a loaded config will serve;
//! - [`cli`] is the command line.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, clippy::unreachable, clippy::todo, clippy::unimplemented)
)]

pub mod check;
pub mod cli;
pub mod env;
pub mod envoy;
pub mod istio;
pub mod key;
pub mod package;
pub mod plan;
pub mod rls;
pub mod source;
pub mod spend;
pub mod summary;
pub mod value;
pub mod yaml;
