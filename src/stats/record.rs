//! One deployment's live statistics as stored in shared data, and the view routing reads.
//!
//! Why this exists: least-busy, usage-based and latency-based routing (and rpm/tpm caps) rank
//! deployments on counters that every worker must see. Each deployment has one small record,
//! written with CAS; this file owns its encoding and how it reads at a given time:
//!
//! * usage counters belong to one wall-clock minute (`now_ms / 60_000`) and read as zero once
//!   the minute has changed (LiteLLM keys them by `%H-%M`);
//! * latency samples older than the ttl read as "no sample", so the deployment is treated as
//!   unseen (LiteLLM's `routing_strategy_args.ttl`, default one hour);
//! * `in_flight` reads as zero when the record has not been written for
//!   [`IN_FLIGHT_STALE_MS`]: a VM that died mid-request cannot leave a deployment "busy" forever.
//!
//! Encoding: ASCII, `1` (the version) then ten space-separated unsigned integers. Anything else
//! (another version, garbage, an empty value) decodes as the default, i.e. "unseen".

/// Milliseconds per usage window.
pub const MINUTE_MS: u64 = 60_000;
/// LiteLLM's default latency ttl (`routing_strategy_args.ttl` for latency-based routing).
pub const DEFAULT_LATENCY_TTL_MS: u64 = 3_600_000;
/// A record untouched this long has its `in_flight` ignored (see the module docs).
pub const IN_FLIGHT_STALE_MS: u64 = 15 * MINUTE_MS;

const VERSION: &str = "1";
const FIELDS: usize = 10;

/// The stored record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Attempts started and not yet finished (least-busy).
    pub in_flight: u64,
    /// The minute (`now_ms / MINUTE_MS`) the usage counters belong to.
    pub minute: u64,
    /// Requests started this minute.
    pub rpm_used: u64,
    /// Tokens this minute: reservations of running attempts plus actual usage of finished ones.
    pub tpm_used: u64,
    /// Latency EWMA in microseconds: per output token when the token count was known, else per
    /// request.
    pub latency_us: u64,
    /// Time-to-first-byte EWMA of streamed responses, microseconds (whole, not per token).
    pub ttft_us: u64,
    /// Samples in `latency_us` since it was last (re)started.
    pub samples: u64,
    /// Samples in `ttft_us`.
    pub ttft_samples: u64,
    /// When the last latency/ttft sample was taken (the ttl runs from here).
    pub sampled_ms: u64,
    /// Last write (for [`IN_FLIGHT_STALE_MS`]).
    pub updated_ms: u64,
}

/// What routing reads for one deployment at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DeploymentStats {
    pub in_flight: u64,
    /// Requests started in the current minute.
    pub rpm_used: u64,
    /// Tokens used (or reserved) in the current minute.
    pub tpm_used: u64,
    /// Latency EWMA in ms (per output token when known); `None` when unseen or older than ttl.
    pub latency_ms: Option<f64>,
    /// Time-to-first-byte EWMA in ms for streams; `None` when unseen or older than ttl.
    pub ttft_ms: Option<f64>,
}

pub fn minute_of(now_ms: u64) -> u64 {
    now_ms / MINUTE_MS
}

/// Milliseconds until the usage window rolls over (a `retry-after` for rpm/tpm caps).
pub fn ms_to_next_minute(now_ms: u64) -> u64 {
    MINUTE_MS - now_ms % MINUTE_MS
}

impl StatsSnapshot {
    /// Decodes a stored value; anything malformed is the default (an unseen deployment).
    pub fn decode(bytes: &[u8]) -> StatsSnapshot {
        Self::try_decode(bytes).unwrap_or_default()
    }

    fn try_decode(bytes: &[u8]) -> Option<StatsSnapshot> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut parts = text.split(' ');
        if parts.next()? != VERSION {
            return None;
        }
        let mut v = [0u64; FIELDS];
        for slot in v.iter_mut() {
            *slot = parts.next()?.parse().ok()?;
        }
        if parts.next().is_some() {
            return None;
        }
        let [in_flight, minute, rpm_used, tpm_used, latency_us, ttft_us, samples, ttft_samples, sampled_ms, updated_ms] = v;
        Some(StatsSnapshot { in_flight, minute, rpm_used, tpm_used, latency_us, ttft_us, samples, ttft_samples, sampled_ms, updated_ms })
    }

    pub fn encode(&self) -> Vec<u8> {
        let s = self;
        format!(
            "{VERSION} {} {} {} {} {} {} {} {} {} {}",
            s.in_flight, s.minute, s.rpm_used, s.tpm_used, s.latency_us, s.ttft_us, s.samples, s.ttft_samples, s.sampled_ms, s.updated_ms
        )
        .into_bytes()
    }

    /// The record as seen at `now_ms` with latency samples valid for `ttl_ms`.
    pub fn view(&self, now_ms: u64, ttl_ms: u64) -> DeploymentStats {
        let this_minute = self.minute == minute_of(now_ms);
        let fresh = now_ms.saturating_sub(self.sampled_ms) <= ttl_ms;
        let ms = |us: u64, n: u64| (fresh && n > 0).then_some(us as f64 / 1000.0);
        DeploymentStats {
            in_flight: if self.in_flight_stale(now_ms) { 0 } else { self.in_flight },
            rpm_used: if this_minute { self.rpm_used } else { 0 },
            tpm_used: if this_minute { self.tpm_used } else { 0 },
            latency_ms: ms(self.latency_us, self.samples),
            ttft_ms: ms(self.ttft_us, self.ttft_samples),
        }
    }

    pub(super) fn in_flight_stale(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.updated_ms) > IN_FLIGHT_STALE_MS
    }

    /// Moves the usage counters to `now_ms`'s minute (zeroing them if it changed) and forgets a
    /// stale `in_flight`. Every write starts with this.
    pub(super) fn roll(&mut self, now_ms: u64) {
        let minute = minute_of(now_ms);
        if self.minute != minute {
            self.minute = minute;
            self.rpm_used = 0;
            self.tpm_used = 0;
        }
        if self.in_flight_stale(now_ms) {
            self.in_flight = 0;
        }
        self.updated_ms = self.updated_ms.max(now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StatsSnapshot {
        StatsSnapshot {
            in_flight: 2,
            minute: 10,
            rpm_used: 3,
            tpm_used: 400,
            latency_us: 25_500,
            ttft_us: 300_000,
            samples: 4,
            ttft_samples: 1,
            sampled_ms: 600_500,
            updated_ms: 600_900,
        }
    }

    #[test]
    fn round_trip() {
        let s = sample();
        assert_eq!(s.encode(), b"1 2 10 3 400 25500 300000 4 1 600500 600900");
        assert_eq!(StatsSnapshot::decode(&s.encode()), s);
    }

    #[test]
    fn malformed_is_default() {
        for bad in [&b""[..], b"1", b"2 2 10 3 400 25500 300000 4 1 600500 600900", b"1 2 10 3 400 25500 300000 4 1 600500", b"1 2 10 3 400 25500 300000 4 1 600500 600900 7", b"1 -2 10 3 400 25500 300000 4 1 600500 600900", b"\xff"] {
            assert_eq!(StatsSnapshot::decode(bad), StatsSnapshot::default(), "{bad:?}");
        }
    }

    #[test]
    fn view_applies_minute_ttl_and_staleness() {
        let s = sample();
        let v = s.view(610_000, 60_000);
        assert_eq!(v, DeploymentStats { in_flight: 2, rpm_used: 3, tpm_used: 400, latency_ms: Some(25.5), ttft_ms: Some(300.0) });
        // Next minute: usage resets, latency still fresh.
        let v = s.view(660_000, 60_000);
        assert_eq!((v.rpm_used, v.tpm_used, v.latency_ms), (0, 0, Some(25.5)));
        // Older than ttl: unseen.
        let v = s.view(660_501, 60_000);
        assert_eq!((v.latency_ms, v.ttft_ms), (None, None));
        // Untouched for long: in_flight forgotten.
        assert_eq!(s.view(600_900 + IN_FLIGHT_STALE_MS, 0).in_flight, 2);
        assert_eq!(s.view(600_901 + IN_FLIGHT_STALE_MS, 0).in_flight, 0);
        assert_eq!(StatsSnapshot::default().view(5, 100), DeploymentStats::default());
    }

    #[test]
    fn minute_helpers() {
        assert_eq!(minute_of(119_999), 1);
        assert_eq!(ms_to_next_minute(60_000), 60_000);
        assert_eq!(ms_to_next_minute(119_999), 1);
    }
}
