//! Identity and model access: who is calling (the master key, a virtual key, or nobody when the
//! gateway is open) and which models that caller may call — LiteLLM's virtual keys and teams,
//! configured in the plugin config (`keys`, `teams`) rather than a database.
//!
//! Everything is decided here, without proxy-wasm: the header phase identifies the caller
//! ([`Policy::identify`]), the body phase checks the model once it is known
//! ([`Policy::check_model`]), `/v1/models` answers with the caller's own list
//! ([`Policy::listing`]). The policy is compiled once per config (`policy.rs`); a key is only ever
//! held as its SHA-256 (`hash.rs`), compared in constant time after a hash-map lookup, and no
//! error, log line or header carries a key or its hash.
//!
//! Limits and budgets of keys, teams and users (`rpm_limit`, `tpm_limit`, `max_parallel_requests`,
//! `model_*_limit`, `max_budget` over `budget_duration`, `soft_budget`, `model_max_budget`) are
//! enforced by `crate::limits` (lists built per key in `limits::plan`).

mod grant;
mod hash;
mod policy;
#[cfg(test)]
mod tests;

pub use hash::{key_hash, parse_hex, KeyHash};
pub use policy::{Caller, Policy};
