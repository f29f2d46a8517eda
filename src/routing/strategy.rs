//! The routing strategies (`router_settings.routing_strategy`): the last step of
//! [`super::select`], choosing one of the candidates that survived the filters.
//!
//! Why this exists: each LiteLLM strategy is a different ranking of the same candidates; they
//! share the statistics cache and the random tie-break kept here.
//!
//! * `simple-shuffle`: weighted random (`weight`, else `rpm`, else `tpm`; see `config::table`).
//! * `least-busy`: fewest in-flight attempts.
//! * `usage-based-routing` / `-v2`: lowest tokens used this minute (rpm/tpm caps already
//!   applied by the filters, as v2's "lowest TPM usage that fits").
//! * `latency-based-routing`: deployments without a fresh sample first; else the lowest latency
//!   average, or — with `lowest_latency_buffer` b — any within `lowest × (1 + b)`. Streaming
//!   requests rank on time to first byte when every ranked candidate has that sample.
//! * `cost-based-routing`: lowest `input_cost_per_token + output_cost_per_token`. There is no
//!   built-in price map: a missing price counts as LiteLLM's fallback of 5.0 per token, so
//!   unpriced deployments rank after priced ones.
//!
//! Ties are broken uniformly at random (LiteLLM does so for least-busy, usage and latency).

use crate::config::{Group, RouterSettings, Strategy, Table};
use crate::stats::{DeploymentStats, StatsSource};

use super::filters::deployment;
use super::shuffle::weighted;
use super::{RequestFacts, Rng};

/// LiteLLM's per-token price for a deployment it cannot price.
pub const UNPRICED_COST_PER_TOKEN: f64 = 5.0;

/// Reads each candidate's statistics at most once, and only when asked.
pub(super) struct StatsCache<'s> {
    source: &'s dyn StatsSource,
    members: &'s [usize],
    got: Vec<Option<DeploymentStats>>,
}

impl<'s> StatsCache<'s> {
    pub fn new(source: &'s dyn StatsSource, group: &'s Group) -> StatsCache<'s> {
        StatsCache { source, members: &group.members, got: Vec::new() }
    }

    /// Statistics of the member at position `pos`.
    pub fn get(&mut self, pos: usize) -> DeploymentStats {
        if self.got.is_empty() {
            self.got = vec![None; self.members.len()];
        }
        if let Some(Some(s)) = self.got.get(pos) {
            return *s;
        }
        let s = self.members.get(pos).map(|&i| self.source.stats(i)).unwrap_or_default();
        if let Some(slot) = self.got.get_mut(pos) {
            *slot = Some(s);
        }
        s
    }
}

/// Applies the configured strategy to `cands` (non-empty, member positions); returns the
/// chosen position.
pub(super) fn pick(
    settings: &RouterSettings,
    table: &Table,
    group: &Group,
    cands: &[usize],
    facts: &RequestFacts<'_>,
    stats: &mut StatsCache<'_>,
    rng: &mut Rng,
) -> Option<usize> {
    match settings.routing_strategy {
        Strategy::SimpleShuffle => weighted(cands, &group.weights, rng),
        Strategy::LeastBusy => min_random(cands, |p| stats.get(p).in_flight, rng),
        Strategy::UsageBased | Strategy::UsageBasedV2 => min_random(cands, |p| stats.get(p).tpm_used, rng),
        Strategy::LatencyBased => lowest_latency(cands, stats, facts.stream, settings.lowest_latency_buffer.unwrap_or(0.0), rng),
        Strategy::CostBased => min_random(
            cands,
            |p| {
                let info = deployment(table, group, p).map(|d| &d.info);
                let price = |v: Option<f64>| v.unwrap_or(UNPRICED_COST_PER_TOKEN);
                price(info.and_then(|i| i.input_cost_per_token)) + price(info.and_then(|i| i.output_cost_per_token))
            },
            rng,
        ),
    }
}

/// A uniformly random candidate among those with the smallest key (one pass, reservoir
/// sampling over the ties).
fn min_random<K: PartialOrd + Copy>(cands: &[usize], mut key: impl FnMut(usize) -> K, rng: &mut Rng) -> Option<usize> {
    let mut best: Option<(K, usize)> = None;
    let mut ties = 0usize;
    for &c in cands {
        let k = key(c);
        match best.map(|(b, _)| k.partial_cmp(&b)) {
            None | Some(Some(std::cmp::Ordering::Less)) => {
                best = Some((k, c));
                ties = 1;
            }
            Some(Some(std::cmp::Ordering::Equal)) => {
                ties += 1;
                if rng.below(ties) == 0 {
                    best = Some((k, c));
                }
            }
            _ => {}
        }
    }
    best.map(|(_, c)| c)
}

/// A uniformly random candidate among those `keep` accepts.
fn uniform_where(cands: &[usize], mut keep: impl FnMut(usize) -> bool, rng: &mut Rng) -> Option<usize> {
    let count = cands.iter().filter(|&&c| keep(c)).count();
    if count == 0 {
        return None;
    }
    let k = rng.below(count);
    cands.iter().copied().filter(|&c| keep(c)).nth(k)
}

fn lowest_latency(cands: &[usize], stats: &mut StatsCache<'_>, stream: bool, buffer: f64, rng: &mut Rng) -> Option<usize> {
    let use_ttft = stream
        && cands.iter().any(|&c| stats.get(c).ttft_ms.is_some())
        && cands.iter().all(|&c| {
            let s = stats.get(c);
            s.latency_ms.is_none() || s.ttft_ms.is_some()
        });
    let mut value = |c: usize| {
        let s = stats.get(c);
        if use_ttft {
            s.ttft_ms
        } else {
            s.latency_ms
        }
    };
    // Unseen (or expired) deployments first, so every deployment gets measured.
    if let Some(c) = uniform_where(cands, |c| value(c).is_none(), rng) {
        return Some(c);
    }
    let lowest = cands.iter().filter_map(|&c| value(c)).fold(f64::INFINITY, f64::min);
    let limit = lowest * (1.0 + buffer.max(0.0));
    uniform_where(cands, |c| value(c).is_some_and(|v| v <= limit), rng)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_random_breaks_ties_uniformly() {
        let mut rng = Rng::from_seed(9);
        let keys = [3u64, 1, 2, 1, 1];
        let mut counts = [0usize; 5];
        for _ in 0..30_000 {
            if let Some(c) = min_random(&[0, 1, 2, 3, 4], |c| keys[c], &mut rng) {
                counts[c] += 1;
            }
        }
        assert_eq!((counts[0], counts[2]), (0, 0));
        for c in [counts[1], counts[3], counts[4]] {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
        assert_eq!(min_random(&[], |c: usize| c, &mut rng), None);
    }

    #[test]
    fn uniform_where_filters() {
        let mut rng = Rng::from_seed(2);
        for _ in 0..50 {
            assert_eq!(uniform_where(&[4, 5, 6], |c| c == 5, &mut rng), Some(5));
        }
        assert_eq!(uniform_where(&[4, 5, 6], |_| false, &mut rng), None);
    }
}
