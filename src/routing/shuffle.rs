//! LiteLLM's `simple-shuffle` pick: weighted random among the members that survived
//! [`super::select`]'s filters (cooling, tags, caps, ...).

use super::Rng;

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

    /// Share of `n` picks each position of `weights` got, picking among `positions`.
    fn shares(positions: &[usize], weights: &[f64], n: usize) -> Vec<f64> {
        let mut rng = Rng::from_seed(7);
        let mut counts = vec![0usize; weights.len()];
        for _ in 0..n {
            if let Some(pos) = weighted(positions, weights, &mut rng) {
                counts[pos] += 1;
            }
        }
        counts.iter().map(|&c| c as f64 / n as f64).collect()
    }

    #[test]
    fn weighted_split() {
        let s = shares(&[0, 1], &[3.0, 1.0], 20_000);
        assert!((s[0] - 0.75).abs() < 0.02, "{s:?}");
    }

    #[test]
    fn zero_weight_never_chosen_unless_all_zero() {
        let s = shares(&[0, 1], &[1.0, 0.0], 2_000);
        assert_eq!(s[1], 0.0);
        let s = shares(&[0, 1], &[0.0, 0.0], 20_000);
        assert!((s[0] - 0.5).abs() < 0.02, "{s:?}");
    }

    #[test]
    fn only_the_given_positions_are_picked() {
        // Position 0 was filtered out (cooling, say); the zero-weight rest share uniformly.
        let s = shares(&[1, 2], &[1.0, 0.0, 0.0], 10_000);
        assert_eq!(s[0], 0.0);
        assert!((s[1] - 0.5).abs() < 0.03, "{s:?}");
    }

    #[test]
    fn nothing_to_pick_from() {
        let mut rng = Rng::from_seed(1);
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
