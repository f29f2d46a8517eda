//! The prober lease: shared data key [`keys::PROBE_LEASE`], value `<holder_id> <expires_ms>`.
//!
//! Each VM calls [`tick`] once per tick with its random holder id. A VM takes the lease when it
//! is absent, empty, unreadable or expired, renews it when it is its own, and never takes a live
//! lease from another holder. Every write is a CAS through [`health::update`], so two VMs that
//! both see an expired lease cannot both win: the loser re-reads and finds the winner's lease.
//! All VMs of one Envoy process share one clock, so expiry compares like with like.

use crate::health::{self, keys, Store};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// This VM holds (took or renewed) the lease: it probes this tick.
    Holding,
    NotHolding,
}

/// Parses `<holder_id> <expires_ms>` (holder in hex).
pub fn decode(value: &[u8]) -> Option<(u64, u64)> {
    let s = std::str::from_utf8(value).ok()?;
    let (holder, expires) = s.trim().split_once(' ')?;
    Some((u64::from_str_radix(holder, 16).ok()?, expires.parse().ok()?))
}

pub fn encode(holder: u64, expires_ms: u64) -> Vec<u8> {
    format!("{holder:016x} {expires_ms}").into_bytes()
}

/// Takes or renews the lease for `me` at `now_ms` for `ttl_ms`; a store error means not holding
/// (this tick probes nothing rather than risk two probers).
pub fn tick<S: Store + ?Sized>(store: &S, me: u64, now_ms: u64, ttl_ms: u64) -> Lease {
    let written = health::update(store, keys::PROBE_LEASE, |current| {
        match current.and_then(decode) {
            Some((holder, expires)) if holder != me && expires > now_ms => None,
            _ => Some(encode(me, now_ms.saturating_add(ttl_ms))),
        }
    });
    match written {
        Ok(Some(_)) => Lease::Holding,
        Ok(None) | Err(_) => Lease::NotHolding,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{MemStore, SetError, StoreError};
    use std::cell::RefCell;

    const TTL: u64 = 3000;

    fn store() -> MemStore {
        let s = MemStore::default();
        // The shell creates the key empty at configure time so every write has a CAS token.
        let _ = s.set(keys::PROBE_LEASE, b"", None);
        s
    }

    #[test]
    fn of_two_vms_only_one_holds() {
        let s = store();
        for t in 0..10u64 {
            let now = 1_000 + t * 1000;
            let a = tick(&s, 0xa, now, TTL);
            let b = tick(&s, 0xb, now + 10, TTL);
            assert_eq!((a, b), (Lease::Holding, Lease::NotHolding), "tick {t}");
        }
        let value = s.get(keys::PROBE_LEASE).ok().and_then(|(v, _)| v).unwrap_or_default();
        assert_eq!(decode(&value), Some((0xa, 10_000 + TTL)));
        assert_eq!(String::from_utf8_lossy(&value), "000000000000000a 13000");
    }

    #[test]
    fn the_other_takes_over_once_the_holder_stops_renewing() {
        let s = store();
        assert_eq!(tick(&s, 0xa, 1_000, TTL), Lease::Holding);
        // a stops ticking (its VM or config is gone); b waits out the lease.
        assert_eq!(tick(&s, 0xb, 2_000, TTL), Lease::NotHolding);
        assert_eq!(tick(&s, 0xb, 3_999, TTL), Lease::NotHolding);
        assert_eq!(tick(&s, 0xb, 4_000, TTL), Lease::Holding);
        // a comes back: the lease is b's now.
        assert_eq!(tick(&s, 0xa, 4_500, TTL), Lease::NotHolding);
        assert_eq!(tick(&s, 0xb, 5_000, TTL), Lease::Holding);
    }

    #[test]
    fn garbage_or_missing_lease_is_taken() {
        let s = MemStore::default();
        assert_eq!(tick(&s, 7, 100, TTL), Lease::Holding);
        let _ = s.set(keys::PROBE_LEASE, b"not a lease", None);
        assert_eq!(tick(&s, 8, 200, TTL), Lease::Holding);
    }

    /// A store where another VM writes its own live lease between our read and our write.
    struct Racing {
        inner: MemStore,
        rival: RefCell<Option<Vec<u8>>>,
    }

    impl Store for Racing {
        fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
            self.inner.get(key)
        }
        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
            if let Some(rival) = self.rival.borrow_mut().take() {
                let (_, token) = self.inner.get(key).map_err(|_| SetError::Failed)?;
                self.inner.set(key, &rival, token)?;
            }
            self.inner.set(key, value, cas)
        }
    }

    #[test]
    fn a_cas_race_on_an_expired_lease_has_one_winner() {
        let s = Racing { inner: store(), rival: RefCell::new(None) };
        let _ = s.inner.set(keys::PROBE_LEASE, &encode(0xdead, 500), Some(0));
        // Both a and b read the expired lease at 1000; b's write lands first.
        *s.rival.borrow_mut() = Some(encode(0xb, 1_000 + TTL));
        assert_eq!(tick(&s, 0xa, 1_000, TTL), Lease::NotHolding);
        let value = s.inner.get(keys::PROBE_LEASE).ok().and_then(|(v, _)| v).unwrap_or_default();
        assert_eq!(decode(&value), Some((0xb, 4_000)));
        assert_eq!(tick(&s, 0xb, 2_000, TTL), Lease::Holding);
    }

    #[test]
    fn a_failing_store_means_not_holding() {
        struct Broken;
        impl Store for Broken {
            fn get(&self, _: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
                Err(StoreError)
            }
            fn set(&self, _: &str, _: &[u8], _: Option<u32>) -> Result<(), SetError> {
                Err(SetError::Failed)
            }
        }
        assert_eq!(tick(&Broken, 1, 1, TTL), Lease::NotHolding);
    }
}
