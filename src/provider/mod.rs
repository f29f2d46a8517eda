//! Providers: which wire shape a deployment speaks and how its upstream request is shaped.
//!
//! The filter does no protocol translation; it only needs to know, per provider, the default
//! `api_base`, how the endpoint path is built, and which header carries the key. Everything
//! OpenAI-compatible (OpenAI, Groq, Together, vLLM, ...) shares one shape; Azure OpenAI and
//! Anthropic have their own. Adding a provider is one row in [`catalog`].

mod catalog;
mod endpoint;
mod path;

pub use catalog::{lookup, lookup_needing_api_base, Provider, Wire, KNOWN_PROVIDERS};
pub use endpoint::Endpoint;
pub use path::upstream_path;
