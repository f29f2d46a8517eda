//! Deployment health: classify outcomes, count failures and cool deployments down — shared by
//! every worker through the host's shared data, behind the [`Store`] and a caller-supplied clock.
//!
//! State lives in two kinds of keys (see [`keys`]): one small "cooldowns" record read on every
//! request (so all workers skip a cooled deployment at once), and one failure counter per
//! deployment, written only when that deployment fails. Successes write nothing.

mod class;
mod cooldown;
mod failures;
mod probe;
mod retry_after;
mod store;

pub use class::{classify, counts_against_deployment, may_count, timeout_or_connect_failure, FailureClass};
pub use cooldown::{CooldownView, Cooldowns};
pub use failures::{record_failure, Failure, FailureRecord, FailureWindow, Policy};
pub use probe::ProbeResult;
pub use retry_after::parse_retry_after;
#[cfg(test)]
pub use store::MemStore;
pub use store::{update, SetError, Store, StoreError};

/// Shared-data keys. Versioned so a future format change cannot misread old state.
pub mod keys {
    pub const COOLDOWNS: &str = "llm_router.v1.cooldowns";
    pub const FAILS_PREFIX: &str = "llm_router.v1.fails.";
    /// The active health probe's last result per deployment (`"<finished_ms> <http_status> <result>"`).
    pub const PROBE_PREFIX: &str = "llm_router.v1.probe.";

    /// The health-probe lease (`src/probe/lease.rs`): `<holder_id> <expires_ms> <generation>`.
    pub const PROBE_LEASE: &str = "llm_router.v1.probe_lease";
    /// `<config hash> <generation>` of the newest plugin configuration (orders lease holders).
    pub const PROBE_CONFIG: &str = "llm_router.v1.probe_config";

    pub fn fails(id: &str) -> String {
        prefixed(FAILS_PREFIX, id)
    }

    /// The last probe result of deployment `id`: `<finished_ms> <http_status> <result>`.
    pub fn probe(id: &str) -> String {
        prefixed(PROBE_PREFIX, id)
    }

    fn prefixed(prefix: &str, id: &str) -> String {
        let mut k = String::with_capacity(prefix.len() + id.len());
        k.push_str(prefix);
        k.push_str(id);
        k
    }
}
