//! How selection reads the statistics: the [`StatsSource`] trait, and its shared-data
//! implementation.
//!
//! Why this exists: selection is a pure function over the group's candidates, and it asks for
//! a deployment's statistics only when the strategy or the rpm/tpm caps need them (never for
//! simple-shuffle without pre-call checks), at most once per candidate. Behind the trait the
//! host reads one shared-data key per asked deployment ([`StoreStats`]); tests use a map.

use std::collections::HashMap;

use crate::config::Table;
use crate::health::Store;

use super::keys;
use super::record::{DeploymentStats, StatsSnapshot};

/// Statistics by deployment index (position in [`Table::deployments`]).
pub trait StatsSource {
    fn stats(&self, index: usize) -> DeploymentStats;
}

/// No statistics: every deployment unseen and idle.
#[cfg(test)]
#[derive(Debug, Clone, Copy, Default)]
pub struct NoStats;

#[cfg(test)]
impl StatsSource for NoStats {
    fn stats(&self, _: usize) -> DeploymentStats {
        DeploymentStats::default()
    }
}

impl StatsSource for HashMap<usize, DeploymentStats> {
    fn stats(&self, index: usize) -> DeploymentStats {
        self.get(&index).copied().unwrap_or_default()
    }
}

/// Reads deployment `id`'s record from `store` as seen at `now_ms` (unreadable → unseen).
pub fn read<S: Store + ?Sized>(store: &S, id: &str, now_ms: u64, latency_ttl_ms: u64) -> DeploymentStats {
    match store.get(&keys::stats(id)) {
        Ok((Some(bytes), _)) => StatsSnapshot::decode(&bytes).view(now_ms, latency_ttl_ms),
        _ => DeploymentStats::default(),
    }
}

/// [`StatsSource`] over a [`Store`]: one `get` per deployment asked for.
pub struct StoreStats<'a, S: Store + ?Sized> {
    pub store: &'a S,
    pub table: &'a Table,
    pub now_ms: u64,
    /// [`super::latency_ttl_ms`] of the active settings.
    pub latency_ttl_ms: u64,
}

impl<S: Store + ?Sized> StatsSource for StoreStats<'_, S> {
    fn stats(&self, index: usize) -> DeploymentStats {
        match self.table.deployments.get(index) {
            Some(d) => read(self.store, &d.id, self.now_ms, self.latency_ttl_ms),
            None => DeploymentStats::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::health::MemStore;
    use serde_json::json;

    #[test]
    fn store_stats_reads_the_deployments_key() {
        let v = json!({"model_list": [{"model_name": "g", "litellm_params": {"model": "openai/a", "api_key": "k"}, "model_info": {"id": "a"}}]});
        let Some(cfg) = config::load(v.to_string().as_bytes(), &|_| None).config else { panic!("config refused") };
        let store = MemStore::default();
        let rec = StatsSnapshot { in_flight: 3, minute: 0, rpm_used: 2, updated_ms: 10, ..StatsSnapshot::default() };
        assert!(store.set(&keys::stats("a"), &rec.encode(), None).is_ok());
        let src = StoreStats { store: &store, table: &cfg.table, now_ms: 20, latency_ttl_ms: 1000 };
        assert_eq!(src.stats(0), DeploymentStats { in_flight: 3, rpm_used: 2, ..DeploymentStats::default() });
        assert_eq!(src.stats(7), DeploymentStats::default());
        assert_eq!(read(&store, "missing", 20, 1000), DeploymentStats::default());
    }
}
