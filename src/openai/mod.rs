//! OpenAI-compatible request/response plumbing that is independent of Envoy.
//!
//! Why this exists: the router must read a few fields from every OpenAI-style
//! request body, rewrite the `model` and inject default params without
//! disturbing the rest of the body, and answer locally with errors shaped
//! like OpenAI's so SDKs surface them properly. Keeping this pure `std` code
//! (no proxy-wasm calls) lets it run and be tested natively.
//!
//! * [`json_scan`]: validating, allocation-free scan of the request body.
//! * [`json_string`]: string skipping/validation/decoding used by the scan.
//! * [`request_scan`]: the router's one-pass view (model, stream, keys set).
//! * [`json_write`]: minimal-copy edits (model rewrite, member insertion).
//! * [`error`]: OpenAI-shaped error bodies for the router's local replies.
//! * [`request_facts`]: request tags and an input-token estimate, from the same scan.
//! * [`usage`]: token usage read incrementally from response bodies (JSON or SSE).

pub mod error;
pub mod json_scan;
pub mod json_string;
pub mod json_write;
pub mod request_facts;
pub mod request_scan;
pub mod usage;
mod usage_json;

// Property tests, in their own files (proptest; see each file's header).
#[cfg(test)]
pub(crate) mod props;
#[cfg(test)]
mod usage_props;

pub use error::ApiError;
pub use json_write::{rewrite, write_string};
pub use request_facts::{scan_request_with_facts, BodyFacts};
pub use usage::{Usage, UsageTracker};
