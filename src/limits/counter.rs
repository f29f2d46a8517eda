//! One counter record per (scope, limit kind): its encoding in shared data and the pure
//! transitions admission and settlement apply to it.
//!
//! Why this exists: the record is the unit of CAS, so everything one admission needs to decide
//! for one limit must be in it — the window it counts in, what was consumed (`used`) and what
//! running requests hold (`reserved`). A write first moves the record to the current window
//! ([`Record::rolled`]): a new window starts at zero, which is the reset (no reset job, no
//! timer: the first write of a window resets it, a read of an old window reads as zero).
//!
//! Encoding: ASCII `1 <start_ms> <end_ms> <used> <reserved>` (`1` is the version). An empty
//! value (a key created at configure time), another version or garbage decodes as "no record":
//! the next write starts a fresh window. Amounts are integers in the limit's unit: requests,
//! tokens, parallel slots, or nano-USD for budgets ([`NANO_USD`]).

use super::window::{Span, Window};

const VERSION: &str = "1";

/// Budget amounts are integers of 1e-9 USD: a gpt-4o-mini input token costs 150 of them, and
/// u64 holds 18 billion USD.
pub const NANO_USD: f64 = 1e9;

/// USD → nano-USD, rounded up (a reservation never under-reserves), saturating; NaN and
/// negative amounts are 0.
pub fn usd_to_nanos(usd: f64) -> u64 {
    let x = usd * NANO_USD;
    // 0.15e-6 * 1e9 is 150.00000000000003: float noise is not a nano-USD to reserve.
    let n = if (x - x.round()).abs() < 1e-6 { x.round() } else { x.ceil() };
    if n.is_nan() || n <= 0.0 {
        0
    } else if n >= u64::MAX as f64 {
        u64::MAX
    } else {
        n as u64
    }
}

/// How admission compares a request's amount with what is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Admit only if `used + reserved + amount <= limit`: the limit is never exceeded while
    /// settled amounts stay within their reservations. For rpm and parallel (amount 1) this is
    /// LiteLLM's rule; for budgets and tpm it refuses a request whose worst case does not fit.
    Fits,
    /// Admit while `used + reserved < limit` (LiteLLM's budget rule `spend >= max_budget` →
    /// refuse, and its tpm rule): the last admitted request may run past the limit by at most
    /// its own reservation.
    BelowLimit,
}

/// A counter as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub window: Span,
    /// Consumed in this window (requests started; settled tokens or cost).
    pub used: u64,
    /// Held by running requests (estimated tokens, worst-case cost, parallel slots).
    pub reserved: u64,
}

/// The counter is full: what a refusal reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Over {
    /// `limit - used - reserved`, saturating at 0.
    pub remaining: u64,
    /// What the window has consumed (settled; a budget's spend).
    pub used: u64,
    /// When the window ends (`u64::MAX` for a gauge: it frees when a request ends).
    pub reset_ms: u64,
}

impl Record {
    /// Decodes a stored value; `None` for an empty, foreign or malformed one.
    pub fn decode(bytes: &[u8]) -> Option<Record> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut parts = text.split(' ');
        if parts.next()? != VERSION {
            return None;
        }
        let mut v = [0u64; 4];
        for slot in v.iter_mut() {
            *slot = parts.next()?.parse().ok()?;
        }
        if parts.next().is_some() {
            return None;
        }
        let [start_ms, end_ms, used, reserved] = v;
        (start_ms < end_ms).then_some(Record { window: Span { start_ms, end_ms }, used, reserved })
    }

    pub fn encode(&self) -> Vec<u8> {
        format!("{VERSION} {} {} {} {}", self.window.start_ms, self.window.end_ms, self.used, self.reserved).into_bytes()
    }

    /// The record a write at `now_ms` starts from: the stored one if its window is current,
    /// else a fresh window at zero (the reset) — or, for a gauge's next epoch, the carried holds.
    pub fn rolled(stored: Option<Record>, window: &Window, now_ms: u64) -> Record {
        let (span, fresh) = window.at(now_ms, stored.map(|r| r.window));
        match stored {
            Some(r) if !fresh => r,
            // The next epoch of a gauge: the previous epoch's holds move to `used`, the ones
            // before it (in `used`) expire.
            Some(r) if window.carries() && r.window.end_ms == span.start_ms => Record { window: span, used: r.reserved, reserved: 0 },
            _ => Record { window: span, used: 0, reserved: 0 },
        }
    }

    /// What the limit has left (saturating).
    pub fn remaining(&self, limit: u64) -> u64 {
        limit.saturating_sub(self.used.saturating_add(self.reserved))
    }

    /// Admits `amount` against `limit`: counted in `used` (`consume`, rpm: a started request
    /// counts whatever happens to it) or held in `reserved` (settled later).
    ///
    /// # Errors
    /// [`Over`] when `check` refuses; the record is unchanged.
    pub fn admit(&self, limit: u64, amount: u64, check: Check, consume: bool) -> Result<Record, Over> {
        let taken = self.used.saturating_add(self.reserved);
        let ok = match check {
            Check::Fits => taken.checked_add(amount).is_some_and(|t| t <= limit),
            Check::BelowLimit => taken < limit,
        };
        if !ok {
            return Err(Over { remaining: self.remaining(limit), used: self.used, reset_ms: self.window.end_ms });
        }
        let mut next = *self;
        if consume {
            next.used = next.used.saturating_add(amount);
        } else {
            next.reserved = next.reserved.saturating_add(amount);
        }
        Ok(next)
    }

    /// Settles a reservation of `reserved` made in window `held`: the reservation leaves and
    /// `consumed` is counted. If the window has rolled since, the reservation went with it and
    /// nothing is charged to the new window (a request counts in the window that admitted it:
    /// that keeps every window within its limit). `reserved` never goes below zero.
    pub fn settled(&self, held: Span, reserved: u64, consumed: u64) -> Record {
        let mut next = *self;
        if self.window == held {
            next.reserved = next.reserved.saturating_sub(reserved);
            next.used = next.used.saturating_add(consumed);
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::window::{Duration, Unit, DAY_MS, MINUTE_MS};

    const W: Span = Span { start_ms: 60_000, end_ms: 120_000 };

    #[test]
    fn round_trip_and_malformed() {
        let r = Record { window: W, used: 3, reserved: 40 };
        assert_eq!(r.encode(), b"1 60000 120000 3 40");
        assert_eq!(Record::decode(&r.encode()), Some(r));
        for bad in [&b""[..], b"1", b"2 60000 120000 3 40", b"1 60000 120000 3", b"1 60000 120000 3 40 5", b"1 60000 120000 -3 40", b"1 5 5 0 0", b"\xff"] {
            assert_eq!(Record::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn rolling_resets_a_new_window() {
        let win = Window::FirstHit { len_ms: MINUTE_MS };
        let r = Record { window: W, used: 3, reserved: 40 };
        assert_eq!(Record::rolled(Some(r), &win, 119_999), r);
        assert_eq!(Record::rolled(Some(r), &win, 120_000), Record { window: Span { start_ms: 120_000, end_ms: 180_000 }, used: 0, reserved: 0 });
        assert_eq!(Record::rolled(None, &win, 5).window.start_ms, 5);
        let day = Window::Calendar(Duration { value: 1, unit: Unit::Days });
        // A day window moves on at midnight; a stored window ahead of the clock read is kept.
        let today = Record { window: Span { start_ms: 0, end_ms: DAY_MS }, used: 3, reserved: 0 };
        assert_eq!(Record::rolled(Some(today), &day, DAY_MS - 1), today);
        assert_eq!(Record::rolled(Some(today), &day, DAY_MS).used, 0);
        assert_eq!(Record::rolled(Some(r), &day, 119_999), r);
        assert_eq!(Record::rolled(None, &Window::None, 7).window, Span::FOREVER);
    }

    #[test]
    fn admission_checks() {
        let r = Record { window: W, used: 3, reserved: 4 };
        assert_eq!(r.admit(10, 3, Check::Fits, false), Ok(Record { reserved: 7, ..r }));
        assert_eq!(r.admit(10, 4, Check::Fits, false), Err(Over { remaining: 3, used: 3, reset_ms: 120_000 }));
        assert_eq!(r.admit(10, 1, Check::Fits, true), Ok(Record { used: 4, ..r }));
        // BelowLimit admits while anything is left, whatever the amount.
        assert_eq!(r.admit(8, 100, Check::BelowLimit, false), Ok(Record { reserved: 104, ..r }));
        assert_eq!(r.admit(7, 1, Check::BelowLimit, false), Err(Over { remaining: 0, used: 3, reset_ms: 120_000 }));
        // Limit 0 admits nothing; overflow refuses instead of wrapping.
        assert!(Record { window: W, used: 0, reserved: 0 }.admit(0, 0, Check::BelowLimit, true).is_err());
        assert!(Record { window: W, used: u64::MAX, reserved: 0 }.admit(u64::MAX, 1, Check::Fits, true).is_err());
    }

    #[test]
    fn settlement() {
        let r = Record { window: W, used: 3, reserved: 40 };
        assert_eq!(r.settled(W, 30, 12), Record { window: W, used: 15, reserved: 10 });
        assert_eq!(r.settled(W, 50, 0), Record { window: W, used: 3, reserved: 0 });
        // The window rolled: nothing is charged to the new one.
        assert_eq!(r.settled(Span { start_ms: 0, end_ms: 60_000 }, 30, 12), r);
    }

    #[test]
    fn usd_conversion() {
        assert_eq!(usd_to_nanos(1.0), 1_000_000_000);
        assert_eq!(usd_to_nanos(0.000_000_15), 150);
        assert_eq!(usd_to_nanos(1e-12), 1);
        assert_eq!(usd_to_nanos(-1.0), 0);
        assert_eq!(usd_to_nanos(f64::NAN), 0);
        assert_eq!(usd_to_nanos(1e30), u64::MAX);
    }
}
