//! Recording one failed attempt: bump the deployment's failure window, and cool it down when
//! LiteLLM's rules say so. Runs only on failures, never on the success path.
//!
//! Rules (LiteLLM's): a deployment is cooled when its failures within the window exceed
//! `allowed_fails`, or at once on a 429 when its group has other deployments to take the load.
//! The cooldown lasts `cooldown_time`, or the provider's `Retry-After` when given (capped). A
//! failure while already cooling extends the cooldown; nothing ever shortens it.

use super::class::FailureClass;
use super::cooldown::Cooldowns;
use super::keys;
use super::store::{update, Store, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Failures tolerated within the window for this failure's class.
    pub allowed_fails: u64,
    pub cooldown_ms: u64,
    pub max_cooldown_ms: u64,
    pub window_ms: u64,
    /// `disable_cooldowns`: count failures but never cool.
    pub disabled: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureRecord {
    /// Failures of this deployment in the current window, this one included.
    pub fails_in_window: u64,
    /// Set when this failure started or extended a cooldown: the deadline now in force.
    pub cooled_until_ms: Option<u64>,
    /// This failure started a cooldown (none was in force); extending one is not a start.
    pub started: bool,
}

/// What one failed attempt tells the tracker.
#[derive(Debug, Clone, Copy)]
pub struct Failure<'a> {
    pub id: &'a str,
    pub class: FailureClass,
    /// Deployments in the failing deployment's group.
    pub group_size: usize,
    pub retry_after_ms: Option<u64>,
}

/// Records `failure` at `now_ms`. `is_current` says whether an id is still in the table; other
/// ids are pruned from the cooldown record when it is rewritten.
pub fn record_failure<S: Store + ?Sized>(
    store: &S,
    now_ms: u64,
    failure: Failure<'_>,
    policy: &Policy,
    is_current: impl Fn(&str) -> bool,
) -> Result<FailureRecord, StoreError> {
    let mut fails = 0;
    update(store, &keys::fails(failure.id), |current| {
        let (start, count) = current.and_then(FailureWindow::decode).map_or((now_ms, 0), |w| (w.start_ms, w.count));
        let (start, count) = if now_ms.saturating_sub(start) >= policy.window_ms { (now_ms, 1) } else { (start, count + 1) };
        fails = count;
        Some(format!("{start} {count} {}", failure.class).into_bytes())
    })?;

    if policy.disabled {
        return Ok(FailureRecord { fails_in_window: fails, cooled_until_ms: None, started: false });
    }
    let trips = fails > policy.allowed_fails || (failure.class == FailureClass::RateLimit && failure.group_size > 1);
    let duration = failure.retry_after_ms.map_or(policy.cooldown_ms, |r| r.min(policy.max_cooldown_ms));
    let mut deadline = None;
    let mut started = false;
    update(store, keys::COOLDOWNS, |current| {
        let mut record = current.map(Cooldowns::decode).unwrap_or_default();
        let cooling = record.get(failure.id).is_some_and(|e| e.until_ms > now_ms);
        started = !cooling;
        if !trips && !cooling {
            deadline = None;
            return None;
        }
        deadline = Some(record.extend(failure.id, now_ms.saturating_add(duration), failure.class));
        Some(record.encode(now_ms, &is_current))
    })?;
    Ok(FailureRecord { fails_in_window: fails, cooled_until_ms: deadline, started: started && deadline.is_some() })
}

/// One deployment's failure window as stored: `"<start_ms> <count> <class>"`, the class being
/// the last failure's (for the health report). The older two-field form still reads (no class).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureWindow {
    pub start_ms: u64,
    pub count: u64,
    pub last_class: Option<FailureClass>,
}

impl FailureWindow {
    pub fn decode(bytes: &[u8]) -> Option<FailureWindow> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut parts = text.split(' ');
        let start_ms = parts.next()?.parse().ok()?;
        let count = parts.next()?.parse().ok()?;
        let last_class = parts.next().and_then(FailureClass::parse);
        Some(FailureWindow { start_ms, count, last_class })
    }

    /// Failures still inside the window at `now_ms` (0 once the window has passed).
    pub fn count_at(&self, now_ms: u64, window_ms: u64) -> u64 {
        if now_ms.saturating_sub(self.start_ms) >= window_ms {
            0
        } else {
            self.count
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::store::MemStore;

    const POLICY: Policy = Policy { allowed_fails: 2, cooldown_ms: 5_000, max_cooldown_ms: 60_000, window_ms: 60_000, disabled: false };

    fn fail(store: &MemStore, now: u64, id: &str, class: FailureClass, group_size: usize, retry_after_ms: Option<u64>) -> FailureRecord {
        let f = Failure { id, class, group_size, retry_after_ms };
        match record_failure(store, now, f, &POLICY, |_| true) {
            Ok(r) => r,
            Err(e) => panic!("{e:?}"),
        }
    }

    fn cooling_until(store: &MemStore, id: &str) -> Option<u64> {
        let (v, _) = store.get(keys::COOLDOWNS).ok()?;
        Cooldowns::decode(&v?).get(id).map(|e| e.until_ms)
    }

    #[test]
    fn cools_when_failures_exceed_allowed_fails() {
        let s = MemStore::default();
        assert_eq!(fail(&s, 1_000, "a", FailureClass::ServerError, 2, None).cooled_until_ms, None);
        assert_eq!(fail(&s, 2_000, "a", FailureClass::ServerError, 2, None).cooled_until_ms, None);
        let r = fail(&s, 3_000, "a", FailureClass::ServerError, 2, None);
        assert_eq!(r, FailureRecord { fails_in_window: 3, cooled_until_ms: Some(8_000), started: true });
        assert_eq!(cooling_until(&s, "a"), Some(8_000));
    }

    #[test]
    fn window_keeps_the_last_class_and_reads_the_old_form() {
        let s = MemStore::default();
        fail(&s, 1_000, "a", FailureClass::ServerError, 2, None);
        fail(&s, 2_000, "a", FailureClass::Timeout, 2, None);
        let stored = s.get(&keys::fails("a")).ok().and_then(|(v, _)| v).unwrap_or_default();
        assert_eq!(stored, b"1000 2 timeout");
        let w = FailureWindow::decode(&stored);
        assert_eq!(w, Some(FailureWindow { start_ms: 1_000, count: 2, last_class: Some(FailureClass::Timeout) }));
        assert_eq!(w.map(|w| (w.count_at(60_999, 60_000), w.count_at(61_000, 60_000))), Some((2, 0)));
        // The two-field form written before the class was added.
        assert_eq!(FailureWindow::decode(b"5 3"), Some(FailureWindow { start_ms: 5, count: 3, last_class: None }));
        assert_eq!(FailureWindow::decode(b"x 3"), None);
        s.set(&keys::fails("b"), b"0 1", None).ok();
        assert_eq!(fail(&s, 10, "b", FailureClass::RateLimit, 1, None).fails_in_window, 2);
    }

    #[test]
    fn window_resets_after_a_minute() {
        let s = MemStore::default();
        fail(&s, 0, "a", FailureClass::ServerError, 2, None);
        fail(&s, 1, "a", FailureClass::ServerError, 2, None);
        let r = fail(&s, 60_000, "a", FailureClass::ServerError, 2, None);
        assert_eq!(r, FailureRecord { fails_in_window: 1, cooled_until_ms: None, started: false });
    }

    #[test]
    fn rate_limit_cools_at_once_only_when_group_has_others() {
        let s = MemStore::default();
        assert_eq!(fail(&s, 0, "solo", FailureClass::RateLimit, 1, None).cooled_until_ms, None);
        assert_eq!(fail(&s, 0, "a", FailureClass::RateLimit, 2, None).cooled_until_ms, Some(5_000));
    }

    #[test]
    fn retry_after_sets_duration_capped_by_max() {
        let s = MemStore::default();
        assert_eq!(fail(&s, 0, "a", FailureClass::RateLimit, 2, Some(20_000)).cooled_until_ms, Some(20_000));
        assert_eq!(fail(&s, 0, "b", FailureClass::RateLimit, 2, Some(3_600_000)).cooled_until_ms, Some(60_000));
    }

    #[test]
    fn failure_during_cooldown_extends_never_shortens() {
        let s = MemStore::default();
        assert!(fail(&s, 0, "a", FailureClass::RateLimit, 2, Some(30_000)).started);
        // A 500 while cooling (allowed_fails not reached) extends to now + cooldown_time only if later.
        assert_eq!(fail(&s, 1_000, "a", FailureClass::ServerError, 2, None).cooled_until_ms, Some(30_000));
        let extended = fail(&s, 29_000, "a", FailureClass::ServerError, 2, None);
        assert_eq!((extended.cooled_until_ms, extended.started), (Some(34_000), false));
        assert_eq!(cooling_until(&s, "a"), Some(34_000));
        // After expiry, the next cooldown is a new start.
        assert!(fail(&s, 35_000, "a", FailureClass::RateLimit, 2, None).started);
    }

    #[test]
    fn successes_and_uncooled_failures_write_no_cooldown_record() {
        let s = MemStore::default();
        fail(&s, 0, "a", FailureClass::ServerError, 2, None);
        assert_eq!(s.get(keys::COOLDOWNS).ok().and_then(|(v, _)| v), None);
    }

    #[test]
    fn disabled_cooldowns_only_count() {
        let s = MemStore::default();
        let p = Policy { disabled: true, ..POLICY };
        for _ in 0..5 {
            let f = Failure { id: "a", class: FailureClass::RateLimit, group_size: 3, retry_after_ms: None };
            assert_eq!(record_failure(&s, 0, f, &p, |_| true).ok().and_then(|r| r.cooled_until_ms), None);
        }
    }

    #[test]
    fn removed_deployments_are_pruned_on_write() {
        let s = MemStore::default();
        fail(&s, 0, "old", FailureClass::RateLimit, 2, None);
        let f = Failure { id: "new", class: FailureClass::RateLimit, group_size: 2, retry_after_ms: None };
        assert!(record_failure(&s, 1, f, &POLICY, |id| id != "old").is_ok());
        assert_eq!(cooling_until(&s, "old"), None);
        assert_eq!(cooling_until(&s, "new"), Some(5_001));
    }
}
