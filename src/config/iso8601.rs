//! ISO 8601 timestamps as LiteLLM writes a key's `expires` (`datetime.isoformat()`), to epoch
//! milliseconds.
//!
//! Why a parser of our own: the filter carries no date crate (size), and the forms that reach a
//! config are few: `2026-12-31`, `2026-12-31T23:59:59`, with `.ffffff` fractions, a space
//! instead of `T` (what LiteLLM's database export prints), and `Z` / `+HH:MM` / `+HHMM` offsets.
//! A timestamp without an offset is UTC, as LiteLLM reads it (`replace(tzinfo=timezone.utc)`).

/// Epoch milliseconds of `text`, or None when it is not one of the forms above (or before 1970).
pub fn parse_ms(text: &str) -> Option<u64> {
    let text = text.trim();
    let date = text.get(..10)?;
    let rest = text.get(10..)?;
    let (year, month, day) = parse_date(date)?;
    let (secs_of_day, millis, offset_secs) = if rest.is_empty() {
        (0, 0, 0)
    } else {
        let rest = rest.strip_prefix('T').or_else(|| rest.strip_prefix('t')).or_else(|| rest.strip_prefix(' '))?;
        parse_time(rest)?
    };
    let days = days_from_civil(year, month, day)?;
    let local = days.checked_mul(86_400)?.checked_add(secs_of_day)?;
    let utc = local.checked_sub(offset_secs)?;
    let utc = u64::try_from(utc).ok()?;
    utc.checked_mul(1000)?.checked_add(millis)
}

fn digits(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_date(s: &str) -> Option<(i64, i64, i64)> {
    let b = s.as_bytes();
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    let (y, m, d) = (digits(s.get(0..4)?)?, digits(s.get(5..7)?)?, digits(s.get(8..10)?)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days_in_month = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    (1..=days_in_month).contains(&d).then_some((y, m, d))
}

/// `HH:MM[:SS[.fff...]][Z|±HH:MM|±HHMM|±HH]` → (seconds of day, milliseconds, offset seconds).
fn parse_time(s: &str) -> Option<(i64, u64, i64)> {
    let split = s.find(['Z', 'z', '+', '-']).unwrap_or(s.len());
    let (clock, zone) = s.split_at(split);
    let mut parts = clock.splitn(3, ':');
    let h = digits(parts.next()?).filter(|h| *h < 24)?;
    let m = digits(parts.next()?).filter(|m| *m < 60)?;
    let (sec, millis) = match parts.next() {
        None => (0, 0),
        Some(sec) => {
            let (whole, frac) = sec.split_once('.').unwrap_or((sec, ""));
            let whole = digits(whole).filter(|s| *s < 60)?;
            if !frac.is_empty() && !frac.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let ms = frac.bytes().chain(std::iter::repeat(b'0')).take(3).fold(0u64, |acc, b| acc * 10 + u64::from(b - b'0'));
            (whole, ms)
        }
    };
    let offset = match zone {
        "" | "Z" | "z" => 0,
        _ => {
            let sign = if zone.starts_with('-') { -1 } else { 1 };
            let body = zone.get(1..)?;
            let (oh, om) = match body.len() {
                2 => (digits(body)?, 0),
                4 => (digits(body.get(..2)?)?, digits(body.get(2..)?)?),
                5 if body.as_bytes().get(2) == Some(&b':') => (digits(body.get(..2)?)?, digits(body.get(3..)?)?),
                _ => return None,
            };
            if oh > 23 || om > 59 {
                return None;
            }
            sign * (oh * 3600 + om * 60)
        }
    };
    Some((h * 3600 + m * 60 + sec, millis, offset))
}

/// `YYYY-MM-DDTHH:MM:SSZ` of epoch milliseconds (for messages: when a key expired).
pub fn format_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let sod = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", sod / 3600, sod % 3600 / 60, sod % 60)
}

/// The date of a day count since 1970-01-01 (inverse of [`days_from_civil`]).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> Option<i64> {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era.checked_mul(146_097)?.checked_add(doe)?.checked_sub(719_468)
}

#[cfg(test)]
mod tests {
    use super::{format_ms, parse_ms};

    #[test]
    fn formats_back() {
        for text in ["1970-01-01T00:00:00Z", "2024-02-29T12:00:00Z", "2026-12-31T23:59:59Z", "2100-03-01T00:00:01Z"] {
            assert_eq!(parse_ms(text).map(format_ms).as_deref(), Some(text));
        }
    }

    #[test]
    fn the_forms_litellm_writes() {
        let cases: &[(&str, Option<u64>)] = &[
            ("1970-01-01", Some(0)),
            ("2026-12-31", Some(1_798_675_200_000)),
            ("2026-12-31T00:00:00Z", Some(1_798_675_200_000)),
            ("2026-12-31T00:00:00", Some(1_798_675_200_000)),
            ("2026-12-31 00:00:00+00:00", Some(1_798_675_200_000)),
            ("2026-12-31T01:00:00+01:00", Some(1_798_675_200_000)),
            ("2026-12-30T23:00:00-0100", Some(1_798_675_200_000)),
            ("2026-12-31T00:00:00.123456Z", Some(1_798_675_200_123)),
            ("2026-12-31T00:00", Some(1_798_675_200_000)),
            ("2024-02-29T12:00:00Z", Some(1_709_208_000_000)),
            ("2023-02-29", None),
            ("2026-13-01", None),
            ("2026-12-31T24:00:00", None),
            ("2026-12-31T10:00:00+25:00", None),
            ("2026-12-31X10:00", None),
            ("31/12/2026", None),
            ("next week", None),
            ("1969-12-31", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_ms(text), *want, "{text}");
        }
    }
}
