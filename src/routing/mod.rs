//! Choosing one deployment of a model group: drop the cooling ones, then apply the strategy.
//!
//! Selection only touches the group's members (a handful), never the whole table, so a table of
//! hundreds of deployments costs the same per request as one of ten.

mod rng;
mod shuffle;

pub use rng::Rng;
pub use shuffle::simple_shuffle;

/// The outcome of a selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// Index into the table's deployments.
    Deployment(usize),
    /// Every member is cooling; the soonest one is free again after this many milliseconds.
    AllCooling { retry_after_ms: u64 },
}
