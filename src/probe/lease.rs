//! The prober lease: shared data key [`keys::PROBE_LEASE`], value
//! `<holder_id> <expires_ms> <generation>` (holder in hex).
//!
//! Each root context calls [`tick`] once per tick with its random holder id. It takes the lease
//! when it is absent, empty, unreadable or expired, renews it when it is its own, and never takes
//! a live lease from another holder — except from an older config generation. Measured on Envoy
//! 1.40: after a listener update the old config's root contexts keep ticking while the old
//! filter chain drains (`--drain-time-s`, 600 s by default), so without the generation the old
//! holder would go on probing with the old config. [`generation`] gives every root context of
//! one plugin configuration the same number and a changed configuration a higher one.
//!
//! Every write is a CAS through [`health::update`], so two VMs that both see an expired lease
//! cannot both win: the loser re-reads and finds the winner's lease. All VMs of one Envoy
//! process share one clock, so expiry compares like with like.

use crate::health::{self, keys, Store};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// This VM holds (took or renewed) the lease: it probes this tick.
    Holding,
    NotHolding,
}

/// The lease as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    pub id: u64,
    pub expires_ms: u64,
    pub generation: u64,
}

/// Parses `<holder_id> <expires_ms> [<generation>]` (holder in hex; generation 0 when absent).
pub fn decode(value: &[u8]) -> Option<Holder> {
    let s = std::str::from_utf8(value).ok()?;
    let mut parts = s.split_ascii_whitespace();
    let id = u64::from_str_radix(parts.next()?, 16).ok()?;
    let expires_ms = parts.next()?.parse().ok()?;
    let generation = match parts.next() {
        Some(g) => g.parse().ok()?,
        None => 0,
    };
    Some(Holder { id, expires_ms, generation })
}

pub fn encode(h: Holder) -> Vec<u8> {
    format!("{:016x} {} {}", h.id, h.expires_ms, h.generation).into_bytes()
}

/// Takes or renews the lease for `me` (of config `generation`) at `now_ms` for `ttl_ms`; a store
/// error means not holding (this tick probes nothing rather than risk two probers).
pub fn tick<S: Store + ?Sized>(store: &S, me: u64, generation: u64, now_ms: u64, ttl_ms: u64) -> Lease {
    let written = health::update(store, keys::PROBE_LEASE, |current| match current.and_then(decode) {
        Some(h) if h.id != me && h.expires_ms > now_ms && h.generation >= generation => None,
        _ => Some(encode(Holder { id: me, expires_ms: now_ms.saturating_add(ttl_ms), generation })),
    });
    match written {
        Ok(Some(_)) => Lease::Holding,
        Ok(None) | Err(_) => Lease::NotHolding,
    }
}

/// Gives the lease up at once when `me` holds it (the holder found it must not probe: see
/// `host/probe.rs`), so another VM takes it on its next tick instead of after expiry.
pub fn release<S: Store + ?Sized>(store: &S, me: u64) {
    let _ = health::update(store, keys::PROBE_LEASE, |current| match current.and_then(decode) {
        Some(h) if h.id == me => Some(encode(Holder { expires_ms: 0, ..h })),
        _ => None,
    });
}

/// The generation of the plugin configuration whose content hash is `config_hash`, from shared
/// data key [`keys::PROBE_CONFIG`] (`<hash hex> <generation>`): the stored generation when the
/// hash is the current one, else the next generation (stored). Every root context of one
/// configuration thus shares a generation, and a reload to a different one gets a higher one.
pub fn generation<S: Store + ?Sized>(store: &S, config_hash: u64) -> u64 {
    let mut seen = 0;
    let written = health::update(store, keys::PROBE_CONFIG, |current| {
        let stored = current
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|s| s.split_once(' '))
            .and_then(|(h, g)| Some((u64::from_str_radix(h, 16).ok()?, g.trim().parse::<u64>().ok()?)));
        match stored {
            Some((hash, generation)) if hash == config_hash => {
                seen = generation;
                None
            }
            other => {
                seen = other.map_or(0, |(_, g)| g).saturating_add(1);
                Some(format!("{config_hash:016x} {seen}").into_bytes())
            }
        }
    });
    // On a store error every root context answers 0: they still exclude each other.
    if written.is_err() {
        return 0;
    }
    seen
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
            let a = tick(&s, 0xa, 1, now, TTL);
            let b = tick(&s, 0xb, 1, now + 10, TTL);
            assert_eq!((a, b), (Lease::Holding, Lease::NotHolding), "tick {t}");
        }
        let value = s.get(keys::PROBE_LEASE).ok().and_then(|(v, _)| v).unwrap_or_default();
        assert_eq!(decode(&value), Some(Holder { id: 0xa, expires_ms: 10_000 + TTL, generation: 1 }));
        assert_eq!(String::from_utf8_lossy(&value), "000000000000000a 13000 1");
    }

    #[test]
    fn the_other_takes_over_once_the_holder_stops_renewing() {
        let s = store();
        assert_eq!(tick(&s, 0xa, 1, 1_000, TTL), Lease::Holding);
        // a stops ticking (its VM or config is gone); b waits out the lease.
        assert_eq!(tick(&s, 0xb, 1, 2_000, TTL), Lease::NotHolding);
        assert_eq!(tick(&s, 0xb, 1, 3_999, TTL), Lease::NotHolding);
        assert_eq!(tick(&s, 0xb, 1, 4_000, TTL), Lease::Holding);
        // a comes back: the lease is b's now.
        assert_eq!(tick(&s, 0xa, 1, 4_500, TTL), Lease::NotHolding);
        assert_eq!(tick(&s, 0xb, 1, 5_000, TTL), Lease::Holding);
    }

    #[test]
    fn a_newer_config_generation_takes_a_live_lease_and_keeps_it() {
        let s = store();
        assert_eq!(tick(&s, 0xa, 1, 1_000, TTL), Lease::Holding);
        assert_eq!(tick(&s, 0xb, 2, 1_100, TTL), Lease::Holding);
        // The old config's root context keeps ticking while its listener drains: it never gets it back.
        for t in 1..5u64 {
            assert_eq!(tick(&s, 0xa, 1, 1_000 + t * 1000, TTL), Lease::NotHolding);
            assert_eq!(tick(&s, 0xb, 2, 1_100 + t * 1000, TTL), Lease::Holding);
        }
        // Another root context of the same new config does not steal it either.
        assert_eq!(tick(&s, 0xc, 2, 5_500, TTL), Lease::NotHolding);
    }

    #[test]
    fn a_released_lease_is_taken_on_the_next_tick() {
        let s = store();
        assert_eq!(tick(&s, 0xa, 1, 1_000, TTL), Lease::Holding);
        release(&s, 0xb); // not b's: nothing happens
        assert_eq!(tick(&s, 0xb, 1, 1_500, TTL), Lease::NotHolding);
        release(&s, 0xa);
        assert_eq!(tick(&s, 0xb, 1, 1_600, TTL), Lease::Holding);
    }

    #[test]
    fn generations_follow_config_changes() {
        let s = MemStore::default();
        assert_eq!(generation(&s, 0xaaaa), 1);
        assert_eq!(generation(&s, 0xaaaa), 1, "every root context of one config shares it");
        assert_eq!(generation(&s, 0xbbbb), 2);
        assert_eq!(generation(&s, 0xbbbb), 2);
        assert_eq!(generation(&s, 0xaaaa), 3, "back to an earlier config is still a newer reload");
    }

    #[test]
    fn garbage_or_missing_lease_is_taken() {
        let s = MemStore::default();
        assert_eq!(tick(&s, 7, 0, 100, TTL), Lease::Holding);
        let _ = s.set(keys::PROBE_LEASE, b"not a lease", None);
        assert_eq!(tick(&s, 8, 0, 200, TTL), Lease::Holding);
        assert_eq!(decode(b"00000000000000ff 500"), Some(Holder { id: 0xff, expires_ms: 500, generation: 0 }));
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
        let _ = s.inner.set(keys::PROBE_LEASE, &encode(Holder { id: 0xdead, expires_ms: 500, generation: 1 }), Some(0));
        // Both a and b read the expired lease at 1000; b's write lands first.
        *s.rival.borrow_mut() = Some(encode(Holder { id: 0xb, expires_ms: 1_000 + TTL, generation: 1 }));
        assert_eq!(tick(&s, 0xa, 1, 1_000, TTL), Lease::NotHolding);
        let value = s.inner.get(keys::PROBE_LEASE).ok().and_then(|(v, _)| v).unwrap_or_default();
        assert_eq!(decode(&value).map(|h| (h.id, h.expires_ms)), Some((0xb, 4_000)));
        assert_eq!(tick(&s, 0xb, 1, 2_000, TTL), Lease::Holding);
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
        assert_eq!(tick(&Broken, 1, 1, 1, TTL), Lease::NotHolding);
        assert_eq!(generation(&Broken, 5), 0);
    }
}
