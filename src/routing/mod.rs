//! Choosing one deployment of a model group: LiteLLM's filter chain (tried, tags, context
//! window, cooling, rpm/tpm caps, `order`), then its routing strategy.
//!
//! Selection only touches the group's members (a handful), never the whole table, so a table of
//! hundreds of deployments costs the same per request as one of ten. [`select`] is the entry
//! point for every attempt.

mod filters;
mod rng;
mod select;
mod shuffle;
mod strategy;

#[cfg(test)]
mod select_tests;

pub use filters::caps_apply;
pub use rng::Rng;
pub use select::{select, Ineligible, RequestFacts, Selection};
