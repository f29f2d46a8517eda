//! Nonces of attempt states the router has already acted on, so each state is accepted once.
//!
//! A failover pass consumes its state's nonce; a second pass with the same state (a replay of
//! a captured `location`) is refused. Entries are kept until their state's deadline, bounded
//! by count: past [`MAX_SPENT`] the oldest entry goes first (its state is then refused by its
//! deadline alone). Per VM: a redirect replays on the worker, hence the VM, that issued it.

use std::collections::{HashSet, VecDeque};

/// At most this many nonces are remembered (16 bytes each, plus the set's overhead).
pub const MAX_SPENT: usize = 16_384;

#[derive(Debug, Default)]
pub struct SpentStates {
    /// (nonce, expires_ms) in the order they were spent.
    order: VecDeque<(u64, u64)>,
    set: HashSet<u64>,
}

impl SpentStates {
    /// Marks `nonce` spent; false when it already was (the state is a replay).
    pub fn consume(&mut self, nonce: u64, expires_ms: u64, now_ms: u64) -> bool {
        while let Some(&(old, expires)) = self.order.front() {
            if expires >= now_ms && self.order.len() < MAX_SPENT {
                break;
            }
            self.order.pop_front();
            self.set.remove(&old);
        }
        if !self.set.insert(nonce) {
            return false;
        }
        self.order.push_back((nonce, expires_ms));
        true
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.set.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_accepted_once_until_it_expires() {
        let mut s = SpentStates::default();
        assert!(s.consume(7, 1_000, 0));
        assert!(!s.consume(7, 1_000, 10));
        assert!(s.consume(8, 2_000, 20));
        // Past 7's deadline its entry is dropped (the state itself is refused by its deadline).
        assert!(s.consume(9, 3_000, 1_500));
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn bounded_by_count() {
        let mut s = SpentStates::default();
        for n in 0..(MAX_SPENT as u64 + 100) {
            assert!(s.consume(n, u64::MAX, 0));
        }
        assert_eq!(s.len(), MAX_SPENT);
        assert!(!s.consume(MAX_SPENT as u64 + 99, u64::MAX, 0), "recent ones are still remembered");
    }
}
