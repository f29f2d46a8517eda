//! `Retry-After` (delta-seconds or HTTP-date) and `retry-after-ms`, as sent by providers on 429/503.

/// Returns the wait in milliseconds, or None when absent or unparseable.
/// `retry_after_ms` (OpenAI/Azure's header) wins over `retry_after` when both are present.
pub fn parse_retry_after(retry_after: Option<&str>, retry_after_ms: Option<&str>, now_ms: u64) -> Option<u64> {
    if let Some(ms) = retry_after_ms.and_then(|v| v.trim().parse::<f64>().ok()) {
        if ms.is_finite() && ms >= 0.0 {
            return Some(ms as u64);
        }
    }
    let v = retry_after?.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then_some((secs * 1000.0) as u64);
    }
    let at_ms = http_date_ms(v)?;
    Some(at_ms.saturating_sub(now_ms))
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) to Unix milliseconds.
fn http_date_ms(s: &str) -> Option<u64> {
    let rest = s.split_once(", ").map_or(s, |(_, r)| r);
    let mut parts = rest.split_whitespace();
    let day: u64 = parts.next()?.parse().ok()?;
    let month = match parts.next()? {
        "Jan" => 1, "Feb" => 2, "Mar" => 3, "Apr" => 4, "May" => 5, "Jun" => 6,
        "Jul" => 7, "Aug" => 8, "Sep" => 9, "Oct" => 10, "Nov" => 11, "Dec" => 12,
        _ => return None,
    };
    let year: i64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, sec) = (hms.next()??, hms.next()??, hms.next()??);
    if parts.next()? != "GMT" || !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day as i64);
    let secs = days.checked_mul(86_400)?.checked_add((h * 3600 + m * 60 + sec) as i64)?;
    u64::try_from(secs).ok()?.checked_mul(1000)
}

/// Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_ms_and_dates() {
        assert_eq!(parse_retry_after(Some("7"), None, 0), Some(7_000));
        assert_eq!(parse_retry_after(Some(" 1.5 "), None, 0), Some(1_500));
        assert_eq!(parse_retry_after(Some("7"), Some("250"), 0), Some(250));
        assert_eq!(parse_retry_after(Some("-1"), None, 0), None);
        assert_eq!(parse_retry_after(Some("soon"), None, 0), None);
        assert_eq!(parse_retry_after(None, None, 0), None);
        // 784111777 = Sun, 06 Nov 1994 08:49:37 GMT
        let at = 784_111_777_000;
        assert_eq!(parse_retry_after(Some("Sun, 06 Nov 1994 08:49:37 GMT"), None, at - 3_000), Some(3_000));
        assert_eq!(parse_retry_after(Some("Sun, 06 Nov 1994 08:49:37 GMT"), None, at + 1), Some(0));
    }
}
