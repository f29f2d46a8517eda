//! Recording one attempt: [`on_start`] when it is sent upstream, [`on_finish`] when it is over.
//!
//! Why this exists: these are the only writers of the stats records, and they must keep the
//! counters right under concurrency (every write is a CAS update of the deployment's record)
//! and under partial failure (an attempt releases its in-flight slot exactly once).
//!
//! Token accounting (a deliberate refinement of LiteLLM's usage-based-routing-v2, which counts
//! the request in rpm before the call and adds the response's `total_tokens` to tpm after it):
//! rpm is counted on start; tpm is *reserved* on start with the input estimate, then settled on
//! finish to the actual `usage` total (input + output). Without the reservation a burst would
//! see the same tpm everywhere until the first responses arrive, and tpm caps would let the
//! whole burst through. If the minute rolled over while the attempt ran, the reservation went
//! with the old minute and the actual total counts in the new one (as LiteLLM's success-time
//! counting does). Unknown usage keeps the estimate on success and drops it on failure.
//!
//! Latency (LiteLLM's lowest-latency): on success, the whole-attempt latency divided by the
//! output tokens when known, else the whole latency; for streams also the time to first byte
//! (not divided: it does not grow with the answer). Samples feed an EWMA with weight 1/5
//! (about the last ten samples, like LiteLLM's ten-sample average); a sample arriving after the
//! previous one expired (ttl) restarts it. A timeout records LiteLLM's 1000 s penalty.

use crate::health::{update, Store, StoreError};
use crate::openai::Usage;

use super::keys;
use super::record::{minute_of, StatsSnapshot};
use super::track::Track;

/// LiteLLM's latency penalty for a timed-out attempt (1000 s), in microseconds.
pub const TIMEOUT_PENALTY_US: u64 = 1_000_000_000;
/// EWMA weight of a new sample: 1/EWMA_DIVISOR.
const EWMA_DIVISOR: u128 = 5;

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// Timed out (upstream or Envoy's route timeout): latency penalty.
    Timeout,
    /// Any other failure: no latency sample.
    Failed,
}

/// The receipt of [`on_start`]; the host keeps it with the attempt and passes it to
/// [`on_finish`], which uses it to release and settle exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    pub started_ms: u64,
    /// Tokens reserved in the start minute's tpm.
    pub reserved_tokens: u64,
    pub track: Track,
    /// This attempt holds an in-flight slot that has not been released.
    holds_slot: bool,
    /// Tokens were settled (or there was nothing to settle).
    settled: bool,
    /// The attempt's latency sample was recorded (one per attempt).
    sampled: bool,
    /// The start write failed: nothing was counted, so nothing is undone.
    start_failed: bool,
}

impl Attempt {
    /// An attempt that records nothing (untracked deployment).
    pub fn untracked(now_ms: u64) -> Attempt {
        Attempt { started_ms: now_ms, reserved_tokens: 0, track: Track::NONE, holds_slot: false, settled: true, sampled: false, start_failed: false }
    }

    /// The receipt of an attempt whose [`on_start`] succeeded in another filter instance (its
    /// `started_ms` and `reserved_tokens` carried over, e.g. in the signed attempt state): it
    /// holds the in-flight slot and the reservation that `track` implies.
    #[cfg(test)]
    pub fn resume(started_ms: u64, reserved_tokens: u64, track: Track) -> Attempt {
        Attempt {
            started_ms,
            reserved_tokens: if track.usage { reserved_tokens } else { 0 },
            track,
            holds_slot: track.in_flight,
            settled: !track.usage,
            sampled: false,
            start_failed: false,
        }
    }

    /// Whether the start could not be recorded (shared data unavailable); worth a log line.
    pub fn start_failed(&self) -> bool {
        self.start_failed
    }

    /// Whether [`on_finish`] still has something to release or settle.
    pub fn open(&self) -> bool {
        self.holds_slot || !self.settled
    }
}

/// What the host learned about a finished (or progressing) attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finish {
    /// From sending the request to the end of the response.
    pub latency_ms: u64,
    /// From sending the request to the first response byte (streams only).
    pub ttft_ms: Option<u64>,
    /// Token usage from the response ([`crate::openai::UsageTracker`]).
    pub usage: Option<Usage>,
    /// The attempt is over: release its in-flight slot and settle its tokens. `false` only
    /// records the latency sample (e.g. at end of stream, releasing later from `on_log`).
    pub in_flight_release: bool,
    pub outcome: Outcome,
}

/// Records the start of an attempt on deployment `id`: in_flight + 1 (least-busy), rpm + 1 and
/// the input estimate reserved in tpm (usage). Untracked deployments cost nothing.
pub fn on_start<S: Store + ?Sized>(store: &S, id: &str, now_ms: u64, estimated_input_tokens: u64, track: Track) -> Attempt {
    if !(track.in_flight || track.usage) {
        return Attempt { track, ..Attempt::untracked(now_ms) };
    }
    let reserved = if track.usage { estimated_input_tokens } else { 0 };
    let written = update(store, &keys::stats(id), |current| {
        let mut rec = current.map(StatsSnapshot::decode).unwrap_or_default();
        rec.roll(now_ms);
        if track.in_flight {
            rec.in_flight = rec.in_flight.saturating_add(1);
        }
        if track.usage {
            rec.rpm_used = rec.rpm_used.saturating_add(1);
            rec.tpm_used = rec.tpm_used.saturating_add(reserved);
        }
        Some(rec.encode())
    });
    match written {
        Ok(_) => Attempt {
            started_ms: now_ms,
            reserved_tokens: reserved,
            track,
            holds_slot: track.in_flight,
            settled: !track.usage,
            sampled: false,
            start_failed: false,
        },
        Err(StoreError) => Attempt { track, start_failed: true, ..Attempt::untracked(now_ms) },
    }
}

/// Records what `finish` says about `attempt` on deployment `id`: the latency sample (latency
/// tracking, not on plain failures) and, with `in_flight_release`, the release of the in-flight
/// slot and the settlement of the token reservation — each at most once per attempt however
/// often this is called; in-flight never goes below zero. One CAS update when anything is due,
/// none otherwise.
///
/// # Errors
/// When shared data cannot be read or written; the attempt then stays open (a later call may
/// retry).
pub fn on_finish<S: Store + ?Sized>(store: &S, id: &str, now_ms: u64, attempt: &mut Attempt, finish: &Finish) -> Result<(), StoreError> {
    let release = finish.in_flight_release && attempt.holds_slot;
    let settle = finish.in_flight_release && !attempt.settled;
    let sample = attempt.track.latency && !attempt.sampled && finish.outcome != Outcome::Failed;
    if !(release || settle || sample) {
        if finish.in_flight_release {
            attempt.settled = true;
        }
        return Ok(());
    }
    let start_minute = minute_of(attempt.started_ms);
    let ttl = attempt.track.latency_ttl_ms;
    let reserved = attempt.reserved_tokens;
    update(store, &keys::stats(id), |current| {
        let mut rec = current.map(StatsSnapshot::decode).unwrap_or_default();
        rec.roll(now_ms);
        if release {
            rec.in_flight = rec.in_flight.saturating_sub(1);
        }
        if settle {
            if start_minute == rec.minute {
                rec.tpm_used = rec.tpm_used.saturating_sub(reserved);
            }
            let consumed = match (finish.usage, finish.outcome) {
                (Some(u), _) => u.total(),
                (None, Outcome::Success) => reserved,
                (None, _) => 0,
            };
            rec.tpm_used = rec.tpm_used.saturating_add(consumed);
        }
        if sample {
            record_latency(&mut rec, now_ms, ttl, finish);
        }
        Some(rec.encode())
    })?;
    if release {
        attempt.holds_slot = false;
    }
    if sample {
        attempt.sampled = true;
    }
    if finish.in_flight_release {
        attempt.settled = true;
    }
    Ok(())
}

fn record_latency(rec: &mut StatsSnapshot, now_ms: u64, ttl_ms: u64, finish: &Finish) {
    let expired = now_ms.saturating_sub(rec.sampled_ms) > ttl_ms;
    let (latency, ttft) = match finish.outcome {
        Outcome::Timeout => (TIMEOUT_PENALTY_US, finish.ttft_ms.map(|_| TIMEOUT_PENALTY_US)),
        _ => {
            let whole_us = finish.latency_ms.saturating_mul(1000);
            let per_token = match finish.usage.map(|u| u.output_tokens) {
                Some(n) if n > 0 => whole_us / n,
                _ => whole_us,
            };
            (per_token, finish.ttft_ms.map(|t| t.saturating_mul(1000)))
        }
    };
    if expired {
        rec.samples = 0;
        rec.ttft_samples = 0;
    }
    ewma(&mut rec.latency_us, &mut rec.samples, latency);
    if let Some(t) = ttft {
        ewma(&mut rec.ttft_us, &mut rec.ttft_samples, t);
    }
    rec.sampled_ms = rec.sampled_ms.max(now_ms);
}

fn ewma(value: &mut u64, samples: &mut u64, sample: u64) {
    *value = if *samples == 0 {
        sample
    } else {
        let next = (u128::from(*value) * (EWMA_DIVISOR - 1) + u128::from(sample)) / EWMA_DIVISOR;
        u64::try_from(next).unwrap_or(u64::MAX)
    };
    *samples = samples.saturating_add(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{MemStore, SetError};
    use crate::stats::record::{DeploymentStats, MINUTE_MS};

    const ALL: Track = Track { in_flight: true, usage: true, latency: true, latency_ttl_ms: 60_000 };

    fn read(store: &MemStore, id: &str, now_ms: u64) -> DeploymentStats {
        let bytes = store.get(&keys::stats(id)).ok().and_then(|(v, _)| v).unwrap_or_default();
        StatsSnapshot::decode(&bytes).view(now_ms, 60_000)
    }

    fn done(latency_ms: u64, usage: Option<Usage>, outcome: Outcome) -> Finish {
        Finish { latency_ms, ttft_ms: None, usage, in_flight_release: true, outcome }
    }

    fn usage(input_tokens: u64, output_tokens: u64) -> Option<Usage> {
        Some(Usage { input_tokens, output_tokens })
    }

    #[test]
    fn untracked_costs_nothing() {
        let s = MemStore::default();
        let mut a = on_start(&s, "a", 0, 100, Track::NONE);
        assert!(on_finish(&s, "a", 10, &mut a, &done(10, usage(1, 1), Outcome::Success)).is_ok());
        assert_eq!(*s.writes.borrow(), 0);
        assert!(!a.open());
    }

    #[test]
    fn start_counts_and_finish_settles_once() {
        let s = MemStore::default();
        let mut a = on_start(&s, "a", 1_000, 100, ALL);
        let mut b = on_start(&s, "a", 1_100, 50, ALL);
        let v = read(&s, "a", 1_200);
        assert_eq!((v.in_flight, v.rpm_used, v.tpm_used), (2, 2, 150));
        assert!(on_finish(&s, "a", 2_000, &mut a, &done(1_000, usage(80, 20), Outcome::Success)).is_ok());
        // Finishing twice neither releases nor settles again.
        assert!(on_finish(&s, "a", 2_100, &mut a, &done(1_100, usage(80, 20), Outcome::Success)).is_ok());
        let v = read(&s, "a", 2_200);
        assert_eq!((v.in_flight, v.rpm_used, v.tpm_used), (1, 2, 150));
        assert!(!a.open() && b.open());
        // A failure without usage drops its reservation.
        assert!(on_finish(&s, "a", 2_300, &mut b, &done(1_200, None, Outcome::Failed)).is_ok());
        let v = read(&s, "a", 2_400);
        assert_eq!((v.in_flight, v.rpm_used, v.tpm_used), (0, 2, 100));
    }

    #[test]
    fn in_flight_never_goes_below_zero() {
        let s = MemStore::default();
        let mut a = on_start(&s, "a", 0, 0, ALL);
        // Someone reset the record meanwhile.
        assert!(s.set(&keys::stats("a"), b"garbage", None).is_ok());
        assert!(on_finish(&s, "a", 5, &mut a, &done(5, None, Outcome::Failed)).is_ok());
        assert_eq!(read(&s, "a", 6).in_flight, 0);
    }

    #[test]
    fn success_without_usage_keeps_the_estimate_and_minute_rollover_moves_the_count() {
        let s = MemStore::default();
        let mut a = on_start(&s, "a", 1_000, 40, ALL);
        assert!(on_finish(&s, "a", 2_000, &mut a, &done(1_000, None, Outcome::Success)).is_ok());
        assert_eq!(read(&s, "a", 2_000).tpm_used, 40);
        let mut b = on_start(&s, "a", MINUTE_MS - 10, 40, ALL);
        assert_eq!(read(&s, "a", MINUTE_MS - 5).tpm_used, 80);
        assert!(on_finish(&s, "a", MINUTE_MS + 10, &mut b, &done(20, usage(30, 5), Outcome::Success)).is_ok());
        let v = read(&s, "a", MINUTE_MS + 20);
        assert_eq!((v.rpm_used, v.tpm_used), (0, 35));
    }

    #[test]
    fn latency_ewma_per_token_ttft_ttl_and_timeout_penalty() {
        let s = MemStore::default();
        let track = Track { latency: true, ..Track::NONE };
        let finish = |now: u64, f: Finish| {
            let mut a = on_start(&s, "a", now - f.latency_ms, 10, Track { latency_ttl_ms: 60_000, ..track });
            assert!(on_finish(&s, "a", now, &mut a, &f).is_ok());
        };
        finish(10_000, done(2_000, usage(10, 100), Outcome::Success)); // 20 ms/token
        assert_eq!(read(&s, "a", 10_000).latency_ms, Some(20.0));
        finish(11_000, done(1_000, None, Outcome::Success)); // 1000 ms: 20 + (1000-20)/5
        assert_eq!(read(&s, "a", 11_000).latency_ms, Some(216.0));
        finish(12_000, done(500, None, Outcome::Failed)); // failures: no sample
        assert_eq!(read(&s, "a", 12_000).latency_ms, Some(216.0));
        finish(13_000, Finish { ttft_ms: Some(300), ..done(3_000, usage(1, 30), Outcome::Success) });
        let v = read(&s, "a", 13_000);
        assert_eq!((v.latency_ms, v.ttft_ms), (Some(192.8), Some(300.0)));
        // After the ttl the next sample restarts the averages.
        finish(200_000, done(100, usage(1, 10), Outcome::Success));
        let v = read(&s, "a", 200_000);
        assert_eq!((v.latency_ms, v.ttft_ms), (Some(10.0), None));
        finish(201_000, done(30_000, None, Outcome::Timeout));
        assert_eq!(read(&s, "a", 201_000).latency_ms, Some((10_000.0 * 4.0 + 1_000_000_000.0) / 5.0 / 1000.0));
        // Only latency is tracked: one write per finish, none per start.
        assert_eq!(*s.writes.borrow(), 5);
    }

    #[test]
    fn samples_without_release_keep_the_attempt_open() {
        let s = MemStore::default();
        let mut a = on_start(&s, "a", 0, 10, ALL);
        let progress = Finish { in_flight_release: false, ..done(100, None, Outcome::Success) };
        assert!(on_finish(&s, "a", 100, &mut a, &progress).is_ok());
        assert!(a.open());
        let v = read(&s, "a", 100);
        assert_eq!((v.in_flight, v.latency_ms), (1, Some(100.0)));
        assert!(on_finish(&s, "a", 200, &mut a, &done(200, None, Outcome::Success)).is_ok());
        assert!(!a.open());
        // Released, and no second sample for the same attempt.
        let v = read(&s, "a", 200);
        assert_eq!((v.in_flight, v.latency_ms), (0, Some(100.0)));
    }

    #[test]
    fn resumed_receipt_finishes_like_the_original() {
        let s = MemStore::default();
        let original = on_start(&s, "a", 1_000, 30, ALL);
        let mut resumed = Attempt::resume(original.started_ms, original.reserved_tokens, ALL);
        assert_eq!(resumed, original);
        assert!(on_finish(&s, "a", 2_000, &mut resumed, &done(1_000, usage(10, 10), Outcome::Success)).is_ok());
        let v = read(&s, "a", 2_000);
        assert_eq!((v.in_flight, v.rpm_used, v.tpm_used), (0, 1, 20));
    }

    /// A store that fails every write.
    struct Broken;
    impl Store for Broken {
        fn get(&self, _: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
            Ok((None, None))
        }
        fn set(&self, _: &str, _: &[u8], _: Option<u32>) -> Result<(), SetError> {
            Err(SetError::Failed)
        }
    }

    #[test]
    fn failed_start_holds_nothing() {
        let mut a = on_start(&Broken, "a", 0, 10, ALL);
        assert!(a.start_failed());
        // Nothing to release or settle; only the latency sample is attempted (and fails).
        assert!(on_finish(&Broken, "a", 5, &mut a, &done(5, None, Outcome::Success)).is_err());
        assert!(!a.open());
    }
}
