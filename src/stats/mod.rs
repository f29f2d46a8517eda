//! Live per-deployment statistics for the stateful routing strategies, shared by every worker.
//!
//! Why this exists: least-busy needs each deployment's in-flight count, usage-based routing and
//! rpm/tpm caps the current minute's requests and tokens, latency-based routing a latency
//! average — and all workers must agree, so the numbers live in shared data behind
//! [`crate::health::Store`], one small record per deployment ([`keys::stats`]) updated with CAS.
//!
//! The request path: [`Track::for_deployment`] says what to record (nothing for simple-shuffle);
//! [`on_start`] when an attempt goes upstream; [`on_finish`] when it is over (with latency, time
//! to first byte and the token [`crate::openai::Usage`] read from the response); selection reads
//! [`DeploymentStats`] through a [`StatsSource`] ([`StoreStats`] in the host).

mod record;
mod source;
mod track;
mod update;

pub use record::{ms_to_next_minute, DeploymentStats};
#[cfg(test)]
pub use source::NoStats;
pub use source::{StatsSource, StoreStats};
pub use track::{latency_ttl_ms, Track};
pub use update::{on_finish, on_start, Attempt, Finish, Outcome};

/// Shared-data keys, in the style of [`crate::health::keys`]: versioned, one per deployment id.
/// Like the health keys they should be created empty at configure time (for tracked
/// deployments), since creating a key is the one write CAS cannot protect.
pub mod keys {
    pub const STATS_PREFIX: &str = "llm_router.v1.stats.";

    pub fn stats(id: &str) -> String {
        let mut k = String::with_capacity(STATS_PREFIX.len() + id.len());
        k.push_str(STATS_PREFIX);
        k.push_str(id);
        k
    }
}
