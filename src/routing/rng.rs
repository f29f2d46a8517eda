//! A small, fast PRNG (wyrand) seeded once per VM from the host's entropy (`getrandom`, WASI
//! `random_get` in Envoy), so picking a deployment costs no host call.

#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn from_seed(seed: u64) -> Rng {
        Rng(seed)
    }

    /// Seeds from the OS/host entropy source.
    pub fn from_entropy() -> Result<Rng, getrandom::Error> {
        let mut buf = [0u8; 8];
        getrandom::getrandom(&mut buf)?;
        Ok(Rng(u64::from_le_bytes(buf)))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.0) * u128::from(self.0 ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) ^ t) as u64
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [0, n); `n` must be > 0 (returns 0 otherwise).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roughly_uniform() {
        let mut r = Rng::from_seed(42);
        let mut counts = [0usize; 4];
        for _ in 0..40_000 {
            counts[r.below(4)] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
        let f = r.next_f64();
        assert!((0.0..1.0).contains(&f));
    }

    #[test]
    fn entropy_seeds_differ() {
        let a = Rng::from_entropy().map(|mut r| r.next_u64()).ok();
        let b = Rng::from_entropy().map(|mut r| r.next_u64()).ok();
        assert!(a.is_some() && a != b);
    }
}
