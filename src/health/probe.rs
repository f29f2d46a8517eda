//! The active health probe's last result for one deployment, as the probe writes it to shared
//! data (key [`super::keys::probe`]): `"<finished_ms> <http_status> <result>"`, where `result` is
//! `ok` or a [`FailureClass`] name and `http_status` is 0 when no response came. Read leniently:
//! the health report shows what is there and treats anything else as "no probe result".

use super::class::FailureClass;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeResult {
    pub at_ms: u64,
    pub status: u16,
    /// None: the probe succeeded (`ok`).
    pub failure: Option<FailureClass>,
}

impl ProbeResult {
    pub fn decode(bytes: &[u8]) -> Option<ProbeResult> {
        let text = std::str::from_utf8(bytes).ok()?.trim();
        let mut parts = text.split(' ');
        let at_ms = parts.next()?.parse().ok()?;
        let status = parts.next()?.parse().ok()?;
        let failure = match parts.next()? {
            "ok" => None,
            other => Some(FailureClass::parse(other)?),
        };
        parts.next().is_none().then_some(ProbeResult { at_ms, status, failure })
    }

    /// The value the probe writes; [`ProbeResult::decode`] reads it back.
    pub fn encode(&self) -> String {
        format!("{} {} {}", self.at_ms, self.status, self.result())
    }

    /// `ok` or the failure class name.
    pub fn result(&self) -> &'static str {
        self.failure.map_or("ok", FailureClass::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_probe_format_leniently() {
        assert_eq!(ProbeResult::decode(b"1700 200 ok"), Some(ProbeResult { at_ms: 1700, status: 200, failure: None }));
        let r = ProbeResult::decode(b"5 0 connect_failure");
        assert_eq!(r.map(|r| (r.status, r.result())), Some((0, "connect_failure")));
        let r = ProbeResult { at_ms: 9, status: 429, failure: Some(FailureClass::RateLimit) };
        assert_eq!(r.encode(), "9 429 rate_limit");
        assert_eq!(ProbeResult::decode(r.encode().as_bytes()), Some(r));
        for bad in [&b""[..], b"1 2", b"x 200 ok", b"1 200 weird", b"1 99999 ok", b"1 200 ok extra", b"\xff"] {
            assert_eq!(ProbeResult::decode(bad), None, "{bad:?}");
        }
    }
}
