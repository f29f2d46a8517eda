//! The upstream role's memory of attempts that may be retried onto the redirector.
//!
//! Envoy's retry of an attempt that got no response (connect failure, timeout) replays the
//! request header map the upstream role already edited — the state header is gone by then — so
//! the retried attempt finds its state here, by request id. Same worker thread, same VM.
//!
//! The request id is not unique: Envoy keeps a trusted client's `x-request-id`. Two live
//! attempts under one id with different states make the slot *ambiguous*: neither retry gets a
//! state (the redirector's answer then ends the request with a 503, charged to the deployment
//! that attempt really went to), rather than one request being answered for the other.
//! Ids are kept as a keyed 64-bit hash (a 40 KB id costs 8 bytes), states are bounded in size,
//! slots in number ([`MAX_SLOTS`]) and age ([`MAX_AGE_MS`]).

use std::collections::{HashMap, VecDeque};

pub const MAX_SLOTS: usize = 1024;
/// A slot older than this is dropped (no attempt waits that long for its first response byte
/// without a per-try timeout: LiteLLM's default request timeout is 600 s).
pub const MAX_AGE_MS: u64 = 630_000;
/// Larger states are not remembered (the router bounds path, model and authority well below).
pub const MAX_STATE_BYTES: usize = 8 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot {
    One { nonce: u64, encoded: String, stamp: u64 },
    Ambiguous { stamp: u64 },
}

impl Slot {
    fn stamp(&self) -> u64 {
        match self {
            Slot::One { stamp, .. } | Slot::Ambiguous { stamp } => *stamp,
        }
    }
}

#[derive(Debug, Default)]
pub struct PendingAttempts {
    slots: HashMap<u64, Slot>,
    /// (id hash, stamp, inserted_ms) in insertion order; entries whose slot is gone or newer are skipped.
    order: VecDeque<(u64, u64, u64)>,
    next_stamp: u64,
}

impl PendingAttempts {
    /// Remembers the state an attempt carried (`nonce` identifies it).
    pub fn remember(&mut self, id: u64, nonce: u64, encoded: &str, now_ms: u64) {
        self.prune(now_ms);
        let stamp = self.next_stamp;
        self.next_stamp = self.next_stamp.wrapping_add(1);
        let slot = match self.slots.get(&id) {
            Some(Slot::One { nonce: n, .. }) if *n == nonce => return,
            Some(_) => Slot::Ambiguous { stamp },
            None if encoded.len() > MAX_STATE_BYTES => return,
            None => Slot::One { nonce, encoded: encoded.to_string(), stamp },
        };
        self.slots.insert(id, slot);
        self.order.push_back((id, stamp, now_ms));
    }

    /// The state of the attempt under `id`, unless none or several are waiting.
    pub fn recall(&self, id: u64) -> Option<&str> {
        match self.slots.get(&id)? {
            Slot::One { encoded, .. } => Some(encoded),
            Slot::Ambiguous { .. } => None,
        }
    }

    /// The attempt with `nonce` got its response: Envoy will not retry it any more.
    /// An ambiguous slot stays until it ages out.
    pub fn forget(&mut self, id: u64, nonce: u64) {
        if matches!(self.slots.get(&id), Some(Slot::One { nonce: n, .. }) if *n == nonce) {
            self.slots.remove(&id);
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn prune(&mut self, now_ms: u64) {
        while let Some(&(id, stamp, at)) = self.order.front() {
            let full = self.slots.len() >= MAX_SLOTS || self.order.len() >= 4 * MAX_SLOTS;
            if !full && now_ms.saturating_sub(at) <= MAX_AGE_MS {
                break;
            }
            self.order.pop_front();
            if self.slots.get(&id).is_some_and(|s| s.stamp() == stamp) {
                self.slots.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_finds_its_own_state() {
        let mut p = PendingAttempts::default();
        p.remember(1, 10, "state-a", 0);
        p.remember(2, 20, "state-b", 0);
        assert_eq!(p.recall(1), Some("state-a"));
        assert_eq!(p.recall(2), Some("state-b"));
        p.forget(1, 10);
        assert_eq!(p.recall(1), None);
        assert_eq!(p.recall(2), Some("state-b"));
    }

    #[test]
    fn two_attempts_under_one_id_get_neither_state() {
        let mut p = PendingAttempts::default();
        p.remember(7, 1, "request-a", 0);
        p.remember(7, 2, "request-b", 5);
        assert_eq!(p.recall(7), None, "never B's state for A's retry");
        p.forget(7, 1);
        p.forget(7, 2);
        assert_eq!(p.recall(7), None);
        p.remember(7, 3, "request-c", 10);
        assert_eq!(p.recall(7), None, "still ambiguous until it ages out");
        p.remember(8, 4, "x", MAX_AGE_MS + 20);
        p.remember(7, 5, "request-d", MAX_AGE_MS + 20);
        assert_eq!(p.recall(7), Some("request-d"));
        // The same attempt seen twice (Envoy re-runs the filter for a retry with the header) is not a collision.
        p.remember(8, 4, "x", MAX_AGE_MS + 21);
        assert_eq!(p.recall(8), Some("x"));
    }

    #[test]
    fn bounded_in_count_age_and_size() {
        let mut p = PendingAttempts::default();
        for id in 0..(3 * MAX_SLOTS as u64) {
            p.remember(id, id, "s", 0);
        }
        assert!(p.len() <= MAX_SLOTS);
        assert_eq!(p.recall(3 * MAX_SLOTS as u64 - 1), Some("s"), "the newest are kept");
        p.remember(u64::MAX, 1, &"x".repeat(MAX_STATE_BYTES + 1), 0);
        assert_eq!(p.recall(u64::MAX), None);
        p.remember(5_000_000, 1, "late", 2 * MAX_AGE_MS);
        assert_eq!(p.len(), 1, "everything older than MAX_AGE_MS is gone");
        // Churn (remember + forget) does not grow the order queue without bound.
        for i in 0..(10 * MAX_SLOTS as u64) {
            p.remember(i, i, "s", 2 * MAX_AGE_MS);
            p.forget(i, i);
        }
        assert!(p.order.len() <= 4 * MAX_SLOTS);
    }
}
