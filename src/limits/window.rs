//! LiteLLM's duration strings (`budget_duration`, `30s` … `1mo`) and the windows counters live in.
//!
//! Why this exists: a counter in shared data is only meaningful together with the window it
//! counts, and every worker must agree on that window without talking to the others. So the
//! window of a budget is a pure function of the timestamp (UTC calendar arithmetic, no date
//! crate: Howard Hinnant's `days_from_civil` / `civil_from_days`), and the window of a rate limit
//! is a pure function of the timestamp and the stored record.
//!
//! What LiteLLM does (BerriAI/litellm: duration_parser.py at 0cc4fef4, the v3 limiter at 00353f5f
//! and a later version with the same window script):
//!
//! * Parsing — `litellm/litellm_core_utils/duration_parser.py`, `_extract_from_regex`:
//!   `re.match(r"(\d+)(mo|[smhdw]?)")`, a *prefix* match: `30s`, `30m` (minutes), `30h`, `30d`,
//!   `2w`, `1mo`; `""`/`none`/`null` mean "no duration"; a bare number (`"30"`) has the empty unit
//!   and raises "Unsupported duration unit"; trailing text is ignored (`30days` is `30d`,
//!   `1month` is `1mo`). [`parse`] accepts the same strings, except that the ignored tail must
//!   be letters (so `30days` and `1month` load, `30d5` or `30 d` are errors) and `0` is an error
//!   (LiteLLM: "immediate expiration", i.e. a budget that never holds anything).
//! * Budget resets — `get_next_standardized_reset_time` (same file), called by
//!   `litellm/proxy/common_utils/timezone_utils.py::get_budget_reset_time` with
//!   `litellm_settings.timezone` (default UTC). Resets are aligned, not rolling from key
//!   creation: `1d` → next midnight; `7d` (and `1w`) → next Monday 00:00; `30d` → the 1st of next
//!   month 00:00 (a calendar month, *not* 30 days); `1mo` → the 1st of next month (`Nmo` with
//!   N ≠ 1 raises there); `Nh` → the next hour of the day that is a multiple of N; `Nm` → the
//!   next minute of the hour that is a multiple of N; `Ns` likewise within the minute; other
//!   `Nd` → midnight today + N days (so it depends on when the reset job last ran).
//!   [`Duration::window`] reproduces the aligned cases exactly (in UTC) and makes the others
//!   pure: `Nh`/`Nm`/`Ns` below the enclosing day/hour/minute are aligned inside it (the last
//!   window of the day is cut at midnight when N does not divide 24 — LiteLLM rolls over to
//!   `next_hour % 24`); longer ones, other `Nd`, `Nw` (N > 1) and `Nmo` (N > 1) are fixed
//!   windows counted from the Unix epoch (Monday 1970-01-05 for weeks, January 1970 for months).
//!   Only UTC: a non-UTC `timezone` needs a tz database; the config layer must refuse or warn.
//! * Rate-limit windows — `litellm/proxy/hooks/parallel_request_limiter_v3.py` (the current
//!   limiter): one window per descriptor (`{api_key:<hash>}:window`), `window_size` =
//!   `LITELLM_RATE_LIMIT_WINDOW_SIZE` (default 60 s); a window *opens at the first request after
//!   the previous one expired* (`now - window_start >= window_size` → reset to `now`), it is not
//!   aligned to the clock minute (v2's `%H-%M` keys were). [`Window::FirstHit`] is that rule; the
//!   refusal's `retry-after` is then the real time left in the window (LiteLLM sends the whole
//!   `window_size`).

use std::fmt;

/// Milliseconds per second, minute, hour, day.
pub const SECOND_MS: u64 = 1_000;
pub const MINUTE_MS: u64 = 60 * SECOND_MS;
pub const HOUR_MS: u64 = 60 * MINUTE_MS;
pub const DAY_MS: u64 = 24 * HOUR_MS;
/// LiteLLM's default rate-limit window (`LITELLM_RATE_LIMIT_WINDOW_SIZE`).
pub const DEFAULT_RATE_WINDOW_MS: u64 = MINUTE_MS;

/// The unit of a duration string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Seconds,
    Minutes,
    Hours,
    Days,
    Weeks,
    Months,
}

/// A parsed duration: `value` (≥ 1) of `unit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duration {
    pub value: u32,
    pub unit: Unit,
}

/// Why a duration string was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurationError {
    /// No leading digits (`d`, ` 30d`, `-1d`).
    NoNumber,
    /// The number does not fit (more than `u32::MAX`).
    TooLarge,
    /// `0` of anything.
    Zero,
    /// Digits not followed by one of `s m h d w mo` (`30`, `30x`, `30 d`).
    UnknownUnit,
    /// The unit is followed by something other than letters (`30d5`).
    Trailing,
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DurationError::NoNumber => "a duration starts with a number: 30s, 30m, 30h, 30d, 1w, 1mo",
            DurationError::TooLarge => "the duration's number is too large",
            DurationError::Zero => "a duration of 0 never holds anything",
            DurationError::UnknownUnit => "unknown duration unit: use s, m, h, d, w or mo (30s, 30m, 30h, 30d, 1w, 1mo)",
            DurationError::Trailing => "unexpected characters after the duration's unit",
        })
    }
}

/// Whether LiteLLM reads the string as "no duration" (`""`, `none`, `null`, any case, trimmed).
pub fn is_none(s: &str) -> bool {
    let t = s.trim();
    t.is_empty() || t.eq_ignore_ascii_case("none") || t.eq_ignore_ascii_case("null")
}

/// Parses a LiteLLM duration string (see the module docs for what is accepted).
///
/// # Errors
/// [`DurationError`] for strings LiteLLM refuses, and for `0`, a number beyond `u32` and a
/// non-letter tail.
pub fn parse(s: &str) -> Result<Duration, DurationError> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (number, rest) = s.split_at_checked(digits).ok_or(DurationError::NoNumber)?;
    if number.is_empty() {
        return Err(DurationError::NoNumber);
    }
    let value: u32 = number.parse().map_err(|_| DurationError::TooLarge)?;
    let (unit, tail) = if let Some(tail) = rest.strip_prefix("mo") {
        (Unit::Months, tail)
    } else {
        let mut chars = rest.chars();
        let unit = match chars.next() {
            Some('s') => Unit::Seconds,
            Some('m') => Unit::Minutes,
            Some('h') => Unit::Hours,
            Some('d') => Unit::Days,
            Some('w') => Unit::Weeks,
            _ => return Err(DurationError::UnknownUnit),
        };
        (unit, chars.as_str())
    };
    if !tail.chars().all(|c| c.is_ascii_alphabetic()) {
        return Err(DurationError::Trailing);
    }
    if value == 0 {
        return Err(DurationError::Zero);
    }
    Ok(Duration { value, unit })
}

/// A half-open interval `[start_ms, end_ms)` of Unix milliseconds (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span {
    pub start_ms: u64,
    pub end_ms: u64,
}

impl Span {
    /// The span that never ends (the window of a `max_parallel_requests` gauge).
    pub const FOREVER: Span = Span { start_ms: 0, end_ms: u64::MAX };

    pub fn contains(&self, t_ms: u64) -> bool {
        self.start_ms <= t_ms && t_ms < self.end_ms
    }
}

/// Fixed windows of `len` ms counted from `origin` (clamped to the timestamp range).
fn fixed(now_ms: u64, origin_ms: u64, len_ms: u64) -> Span {
    let len = i128::from(len_ms.max(1));
    let (now, origin) = (i128::from(now_ms), i128::from(origin_ms));
    // Windows extend before the origin too (the days before the first Monday of 1970).
    let start = now - (now - origin).rem_euclid(len);
    let clamp = |v: i128| u64::try_from(v.max(0)).unwrap_or(u64::MAX);
    Span { start_ms: clamp(start), end_ms: clamp(start + len) }
}

/// Windows of `len` aligned inside the enclosing `parent` span (the last one cut at its end).
fn within(now_ms: u64, parent_ms: u64, len_ms: u64) -> Span {
    let parent = fixed(now_ms, 0, parent_ms);
    let inner = fixed(now_ms, parent.start_ms, len_ms);
    Span { start_ms: inner.start_ms, end_ms: inner.end_ms.min(parent.end_ms) }
}

impl Duration {
    /// The nominal length (months as 30 days): a rate-limit window's length.
    pub fn nominal_ms(&self) -> u64 {
        let unit = match self.unit {
            Unit::Seconds => SECOND_MS,
            Unit::Minutes => MINUTE_MS,
            Unit::Hours => HOUR_MS,
            Unit::Days => DAY_MS,
            Unit::Weeks => 7 * DAY_MS,
            Unit::Months => 30 * DAY_MS,
        };
        unit.saturating_mul(u64::from(self.value))
    }

    /// The budget window containing `now_ms`: LiteLLM's reset times (module docs), UTC.
    pub fn window(&self, now_ms: u64) -> Span {
        let n = u64::from(self.value);
        match (self.unit, self.value) {
            (Unit::Seconds, _) if n < 60 => within(now_ms, MINUTE_MS, n * SECOND_MS),
            (Unit::Minutes, _) if n < 60 => within(now_ms, HOUR_MS, n * MINUTE_MS),
            (Unit::Hours, _) if n < 24 => within(now_ms, DAY_MS, n * HOUR_MS),
            (Unit::Days, 7) | (Unit::Weeks, 1) => fixed(now_ms, FIRST_MONDAY_MS, 7 * DAY_MS),
            (Unit::Days, 30) => month_window(now_ms, 1),
            (Unit::Weeks, _) => fixed(now_ms, FIRST_MONDAY_MS, self.nominal_ms()),
            (Unit::Months, _) => month_window(now_ms, self.value),
            _ => fixed(now_ms, 0, self.nominal_ms()),
        }
    }
}

/// Monday 1970-01-05 00:00 UTC (the epoch was a Thursday).
const FIRST_MONDAY_MS: u64 = 4 * DAY_MS;

/// Days since the epoch → (year, month 1..=12), proleptic Gregorian (Hinnant's civil_from_days).
fn civil_from_days(days: i64) -> (i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month)
}

/// (year, month 1..=12, day 1..=31) → days since the epoch (Hinnant's days_from_civil).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Milliseconds at 00:00 UTC on the 1st of the month `months` after January 1970.
fn month_start_ms(months: i64) -> u64 {
    let days = days_from_civil(1970 + months.div_euclid(12), months.rem_euclid(12) + 1, 1);
    u64::try_from(days).map_or(0, |d| d.saturating_mul(DAY_MS))
}

/// Calendar months grouped by `n` from January 1970.
fn month_window(now_ms: u64, n: u32) -> Span {
    // u64::MAX ms is about 2.1e11 days: far inside i64 and the algorithm's range.
    let days = i64::try_from(now_ms / DAY_MS).unwrap_or(i64::MAX / 2);
    let (year, month) = civil_from_days(days);
    let index = (year - 1970) * 12 + (month - 1);
    let n = i64::from(n.max(1));
    let first = index - index.rem_euclid(n);
    let start = month_start_ms(first);
    let end = if first.saturating_add(n) > index { month_start_ms(first.saturating_add(n)) } else { u64::MAX };
    // Past year ~584 million the end saturates; keep the span non-empty.
    Span { start_ms: start, end_ms: end.max(start.saturating_add(1)) }
}

/// How a counter's window is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// No window: a gauge (`max_parallel_requests`), always [`Span::FOREVER`].
    None,
    /// LiteLLM v3's rate-limit window: opens at the first admission after the previous window
    /// ended and lasts `len_ms` (module docs).
    FirstHit { len_ms: u64 },
    /// A budget window: aligned to the clock/calendar by [`Duration::window`].
    Calendar(Duration),
    /// A gauge whose holds expire (`max_parallel_requests`): fixed epochs of `len_ms` from the
    /// Unix epoch; a record rolling into the next epoch carries the holds of the one before
    /// (`Record::rolled`) and drops older ones, so a hold is counted for at least `len_ms` and
    /// at most `2 × len_ms` — a slot whose release was lost (a VM that died mid-stream) comes
    /// back instead of staying taken until Envoy restarts.
    Epoch { len_ms: u64 },
}

/// The epoch of parallel slots: a hold counts for 15 to 30 minutes unless released. Longer
/// than any request the router sends without a configured timeout (LiteLLM's default 600 s), so
/// only lost releases and streams running past 15 minutes expire.
pub const PARALLEL_EPOCH_MS: u64 = 15 * MINUTE_MS;

impl Window {
    /// Whether a record rolling into the next window carries the holds of the previous one.
    pub fn carries(&self) -> bool {
        matches!(self, Window::Epoch { .. })
    }

    /// The window a write at `now_ms` counts in, given the window of the stored record (`None`
    /// when there is none). `fresh` is false when that is the stored window (counts carry on),
    /// true when it is a new one (counts start at zero).
    pub fn at(&self, now_ms: u64, stored: Option<Span>) -> (Span, bool) {
        let next = match self {
            Window::None => Span::FOREVER,
            Window::Calendar(d) => d.window(now_ms),
            Window::Epoch { len_ms } => fixed(now_ms, 0, *len_ms),
            Window::FirstHit { len_ms } => {
                // Still open (a worker whose clock read lags may see a start after its now).
                if let Some(s) = stored.filter(|s| now_ms < s.end_ms && s.end_ms.saturating_sub(s.start_ms) == (*len_ms).max(1)) {
                    return (s, false);
                }
                Span { start_ms: now_ms, end_ms: now_ms.saturating_add((*len_ms).max(1)) }
            }
        };
        // Records only move forward: a worker whose clock read is older than the window another
        // worker already opened counts in that window instead of resetting it to the past (which
        // would wipe the newer window's counts).
        if let Some(s) = stored.filter(|s| s.start_ms > next.start_ms) {
            return (s, false);
        }
        let fresh = stored != Some(next);
        (next, fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2024-02-29 13:45:30.250 UTC (a Thursday, in a leap year).
    const T: u64 = 1_709_214_330_250;

    fn ms(y: i64, m: i64, d: i64, h: u64, min: u64, s: u64) -> u64 {
        u64::try_from(days_from_civil(y, m, d)).unwrap() * DAY_MS + h * HOUR_MS + min * MINUTE_MS + s * SECOND_MS
    }

    fn d(value: u32, unit: Unit) -> Duration {
        Duration { value, unit }
    }

    #[test]
    fn parses_litellm_strings() {
        for (s, want) in [
            ("30s", d(30, Unit::Seconds)),
            ("30m", d(30, Unit::Minutes)),
            ("30h", d(30, Unit::Hours)),
            ("30d", d(30, Unit::Days)),
            ("2w", d(2, Unit::Weeks)),
            ("1mo", d(1, Unit::Months)),
            ("1month", d(1, Unit::Months)),
            ("30days", d(30, Unit::Days)),
            ("1hr", d(1, Unit::Hours)),
            ("007d", d(7, Unit::Days)),
        ] {
            assert_eq!(parse(s), Ok(want), "{s}");
        }
        for (s, err) in [
            ("", DurationError::NoNumber),
            ("d", DurationError::NoNumber),
            (" 30d", DurationError::NoNumber),
            ("-1d", DurationError::NoNumber),
            ("30", DurationError::UnknownUnit),
            ("30x", DurationError::UnknownUnit),
            ("30 d", DurationError::UnknownUnit),
            ("30d5", DurationError::Trailing),
            ("1mo ", DurationError::Trailing),
            ("0d", DurationError::Zero),
            ("4294967296s", DurationError::TooLarge),
            ("٣d", DurationError::NoNumber),
        ] {
            assert_eq!(parse(s), Err(err), "{s:?}");
        }
        assert!(is_none(" None ") && is_none("") && is_none("NULL") && !is_none("1d"));
    }

    #[test]
    fn calendar_arithmetic_round_trips() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(11_016), (2000, 2));
        assert_eq!(T, ms(2024, 2, 29, 13, 45, 30) + 250);
        for day in (-800_000..800_000).step_by(997) {
            let (y, m) = civil_from_days(day);
            let first = days_from_civil(y, m, 1);
            assert!(first <= day && day - first < 31, "{day}");
            assert_eq!(civil_from_days(first), (y, m));
        }
    }

    #[test]
    fn budget_windows_follow_litellm_resets() {
        let span = |s: &str| parse(s).unwrap().window(T);
        let (s, e) = (ms(2024, 2, 29, 0, 0, 0), ms(2024, 3, 1, 0, 0, 0));
        assert_eq!(span("1d"), Span { start_ms: s, end_ms: e });
        // 30d and 1mo: the calendar month (February 2024 has 29 days).
        let feb = Span { start_ms: ms(2024, 2, 1, 0, 0, 0), end_ms: ms(2024, 3, 1, 0, 0, 0) };
        assert_eq!(span("30d"), feb);
        assert_eq!(span("1mo"), feb);
        // December rolls into January.
        assert_eq!(parse("1mo").unwrap().window(ms(2023, 12, 31, 23, 59, 59)), Span { start_ms: ms(2023, 12, 1, 0, 0, 0), end_ms: ms(2024, 1, 1, 0, 0, 0) });
        // 7d and 1w: Monday to Monday.
        let week = Span { start_ms: ms(2024, 2, 26, 0, 0, 0), end_ms: ms(2024, 3, 4, 0, 0, 0) };
        assert_eq!(span("7d"), week);
        assert_eq!(span("1w"), week);
        // Nh inside the day, Nm inside the hour, Ns inside the minute.
        assert_eq!(span("1h"), Span { start_ms: ms(2024, 2, 29, 13, 0, 0), end_ms: ms(2024, 2, 29, 14, 0, 0) });
        assert_eq!(span("6h"), Span { start_ms: ms(2024, 2, 29, 12, 0, 0), end_ms: ms(2024, 2, 29, 18, 0, 0) });
        assert_eq!(span("5h"), Span { start_ms: ms(2024, 2, 29, 10, 0, 0), end_ms: ms(2024, 2, 29, 15, 0, 0) });
        assert_eq!(parse("5h").unwrap().window(ms(2024, 2, 29, 21, 0, 0)), Span { start_ms: ms(2024, 2, 29, 20, 0, 0), end_ms: e });
        assert_eq!(span("15m"), Span { start_ms: ms(2024, 2, 29, 13, 45, 0), end_ms: ms(2024, 2, 29, 14, 0, 0) });
        assert_eq!(span("30s"), Span { start_ms: ms(2024, 2, 29, 13, 45, 30), end_ms: ms(2024, 2, 29, 13, 46, 0) });
        // Multi-month windows from January 1970: 1970 + 648 months = 2024, so 2mo = Jan–Feb 2024.
        assert_eq!(span("2mo"), Span { start_ms: ms(2024, 1, 1, 0, 0, 0), end_ms: ms(2024, 3, 1, 0, 0, 0) });
        assert_eq!(span("12mo"), Span { start_ms: ms(2024, 1, 1, 0, 0, 0), end_ms: ms(2025, 1, 1, 0, 0, 0) });
        // Other day counts: fixed windows from the epoch.
        let w = span("3d");
        assert!(w.contains(T) && w.end_ms - w.start_ms == 3 * DAY_MS && w.start_ms % DAY_MS == 0);
        let w = span("90m");
        assert!(w.contains(T) && w.end_ms - w.start_ms == 90 * MINUTE_MS);
    }

    #[test]
    fn windows_contain_now_at_any_time() {
        for s in ["1s", "7s", "59s", "60s", "1m", "7m", "1h", "5h", "24h", "30h", "1d", "3d", "7d", "30d", "1w", "2w", "1mo", "5mo", "12mo"] {
            let dur = parse(s).unwrap();
            for now in [0, 1, T, T + 12_345_678_901, u64::MAX / 2, u64::MAX - 1] {
                let w = dur.window(now);
                assert!(w.start_ms <= now && (now < w.end_ms || w.end_ms == u64::MAX), "{s} {now} {w:?}");
                // The window is the same for every instant in it.
                assert_eq!(dur.window(w.start_ms), w, "{s} {now}");
            }
        }
    }

    #[test]
    fn first_hit_windows_open_on_demand() {
        let win = Window::FirstHit { len_ms: MINUTE_MS };
        let (s, fresh) = win.at(T, None);
        assert_eq!((s, fresh), (Span { start_ms: T, end_ms: T + MINUTE_MS }, true));
        assert_eq!(win.at(T + MINUTE_MS - 1, Some(s)), (s, false));
        // A lagging clock read still counts in the open window.
        assert_eq!(win.at(T - 5, Some(s)), (s, false));
        let (next, fresh) = win.at(T + MINUTE_MS, Some(s));
        assert_eq!((next.start_ms, fresh), (T + MINUTE_MS, true));
        // A stored window of another length (config changed) is replaced.
        assert!(win.at(T + 1, Some(Span { start_ms: T, end_ms: T + 10 })).1);
        assert_eq!(Window::None.at(T, Some(Span::FOREVER)), (Span::FOREVER, false));
        let cal = Window::Calendar(d(1, Unit::Days));
        assert!(cal.at(T, None).1);
        let today = cal.at(T, None).0;
        assert!(!cal.at(T, Some(today)).1);
        // A lagging clock read (yesterday) counts in today's window, never resets it backwards.
        assert_eq!(cal.at(T - DAY_MS, Some(today)), (today, false));
        assert!(cal.at(T + DAY_MS, Some(today)).1);
    }
}
