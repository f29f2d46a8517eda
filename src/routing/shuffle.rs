//! LiteLLM's `simple-shuffle`: a weighted random pick among the healthy members.

use super::{Pick, Rng};
use crate::config::Group;
use crate::health::CooldownView;

/// Picks a member of `group` that is not cooling at `now_ms`, with probability proportional
/// to its weight (uniform when every healthy member weighs 0).
///
/// The pre-[`super::select`] entry point, kept for callers that have not moved to `select`
/// (which applies the same pick after its filters when the strategy is simple-shuffle).
pub fn simple_shuffle(group: &Group, cooling: &CooldownView, now_ms: u64, rng: &mut Rng) -> Option<Pick> {
    let healthy: Vec<usize> = group
        .members
        .iter()
        .enumerate()
        .filter(|(_, &i)| cooling.remaining_ms(i, now_ms).is_none())
        .map(|(pos, _)| pos)
        .collect();
    if healthy.is_empty() {
        let soonest = group.members.iter().filter_map(|&i| cooling.remaining_ms(i, now_ms)).min()?;
        return Some(Pick::AllCooling { retry_after_ms: soonest });
    }
    weighted(&healthy, &group.weights, rng).and_then(|pos| group.members.get(pos)).map(|&i| Pick::Deployment(i))
}

/// A weighted pick among `positions` (indices into the group's members and `weights`):
/// probability proportional to weight; zero-weight positions only when all weigh zero, then
/// uniformly. Returns the chosen position.
pub(super) fn weighted(positions: &[usize], weights: &[f64], rng: &mut Rng) -> Option<usize> {
    let weight = |pos: usize| weights.get(pos).copied().filter(|w| w.is_finite() && *w > 0.0).unwrap_or(0.0);
    let total: f64 = positions.iter().map(|&p| weight(p)).sum();
    if total <= 0.0 {
        return positions.get(rng.below(positions.len())).copied();
    }
    let mut target = rng.next_f64() * total;
    let mut last = None;
    for &pos in positions {
        let w = weight(pos);
        if w <= 0.0 {
            continue;
        }
        last = Some(pos);
        if target < w {
            return Some(pos);
        }
        target -= w;
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{Cooldowns, FailureClass};
    use std::collections::HashMap;

    fn group(weights: &[f64]) -> Group {
        Group { name: "g".into(), members: (0..weights.len()).collect(), weights: weights.to_vec() }
    }

    fn view(cooling: &[(usize, u64)], n: usize) -> CooldownView {
        let mut c = Cooldowns::default();
        let mut index = HashMap::new();
        for i in 0..n {
            index.insert(format!("d{i}"), i);
        }
        for &(i, until) in cooling {
            c.extend(&format!("d{i}"), until, FailureClass::ServerError);
        }
        CooldownView::new(&c, &index, n)
    }

    fn shares(g: &Group, v: &CooldownView, n: usize) -> Vec<f64> {
        let mut rng = Rng::from_seed(7);
        let mut counts = vec![0usize; g.members.len()];
        for _ in 0..n {
            if let Some(Pick::Deployment(i)) = simple_shuffle(g, v, 0, &mut rng) {
                counts[i] += 1;
            }
        }
        counts.iter().map(|&c| c as f64 / n as f64).collect()
    }

    #[test]
    fn weighted_split() {
        let s = shares(&group(&[3.0, 1.0]), &view(&[], 2), 20_000);
        assert!((s[0] - 0.75).abs() < 0.02, "{s:?}");
    }

    #[test]
    fn zero_weight_never_chosen_unless_all_zero() {
        let s = shares(&group(&[1.0, 0.0]), &view(&[], 2), 2_000);
        assert_eq!(s[1], 0.0);
        let s = shares(&group(&[0.0, 0.0]), &view(&[], 2), 20_000);
        assert!((s[0] - 0.5).abs() < 0.02, "{s:?}");
    }

    #[test]
    fn cooling_members_are_skipped() {
        let s = shares(&group(&[3.0, 1.0]), &view(&[(0, 10)], 2), 1_000);
        assert_eq!(s, vec![0.0, 1.0]);
        // Only zero-weight members left healthy: uniform among them.
        let s = shares(&group(&[1.0, 0.0, 0.0]), &view(&[(0, 10)], 3), 10_000);
        assert_eq!(s[0], 0.0);
        assert!((s[1] - 0.5).abs() < 0.03, "{s:?}");
    }

    #[test]
    fn all_cooling_reports_soonest_expiry() {
        let mut rng = Rng::from_seed(1);
        let p = simple_shuffle(&group(&[1.0, 1.0]), &view(&[(0, 5_000), (1, 2_000)], 2), 1_000, &mut rng);
        assert_eq!(p, Some(Pick::AllCooling { retry_after_ms: 1_000 }));
    }

    #[test]
    fn empty_group_picks_nothing() {
        let mut rng = Rng::from_seed(1);
        assert_eq!(simple_shuffle(&group(&[]), &view(&[], 0), 0, &mut rng), None);
        assert_eq!(weighted(&[], &[], &mut rng), None);
    }

    #[test]
    fn weighted_ignores_bad_weights_and_missing_positions() {
        let mut rng = Rng::from_seed(3);
        for _ in 0..100 {
            assert_eq!(weighted(&[0, 1, 2], &[f64::NAN, -1.0, 2.0], &mut rng), Some(2));
            assert_eq!(weighted(&[5], &[1.0], &mut rng), Some(5));
        }
    }
}
