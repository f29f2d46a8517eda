//! Choosing one deployment of a model group: LiteLLM's filter chain (tried, tags, context
//! window, cooling, rpm/tpm caps, `order`), then its routing strategy.
//!
//! Selection only touches the group's members (a handful), never the whole table, so a table of
//! hundreds of deployments costs the same per request as one of ten. [`select`] is the entry
//! point for every attempt; [`simple_shuffle`] is the older, cooling-only entry point.

mod filters;
mod rng;
mod select;
mod shuffle;
mod strategy;

#[cfg(test)]
mod select_tests;

pub use filters::{caps_apply, DEFAULT_TAG};
pub use rng::Rng;
pub use select::{select, Ineligible, RequestFacts, Selection};
pub use shuffle::simple_shuffle;
pub use strategy::UNPRICED_COST_PER_TOKEN;

/// The outcome of a [`simple_shuffle`] selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// Index into the table's deployments.
    Deployment(usize),
    /// Every member is cooling; the soonest one is free again after this many milliseconds.
    AllCooling { retry_after_ms: u64 },
}
