//! The protobuf bytes of `envoy.service.ratelimit.v3` that the router sends and reads.
//!
//! Why hand-written: the filter needs one message out (`RateLimitRequest` with descriptors,
//! per-descriptor `hits_addend` and `is_negative_hits`) and four fields in
//! (`RateLimitResponse.overall_code` and per status `code`, `current_limit.requests_per_unit`,
//! `limit_remaining`, `duration_until_reset`). `prost` with the generated Envoy types would pull
//! the whole API tree into the wasm; this is ~150 lines whose field numbers are checked against
//! `envoy-types` 0.7.7's generated code (tools/rls decodes what this encodes in its tests, and the
//! e2e tests run it against a real server). Unknown response fields are skipped, as protobuf
//! requires.

/// One descriptor: `[("limit", <kind>), (<scope key>, <value>)]`, its addend and sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor<'a> {
    pub entries: [(&'a str, &'a str); 2],
    pub addend: u64,
    pub negative: bool,
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn tag(out: &mut Vec<u8>, field: u32, wire: u8) {
    varint(out, (u64::from(field) << 3) | u64::from(wire));
}

fn bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    tag(out, field, 2);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// A length-delimited sub-message written by `f`.
fn message(out: &mut Vec<u8>, field: u32, f: impl FnOnce(&mut Vec<u8>)) {
    let mut inner = Vec::new();
    f(&mut inner);
    bytes(out, field, &inner);
}

/// `RateLimitRequest { domain = 1, descriptors = 2 }` (request-level `hits_addend` = 3 unset:
/// every descriptor carries its own).
pub fn request(domain: &str, descriptors: &[Descriptor<'_>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + descriptors.len() * 120);
    bytes(&mut out, 1, domain.as_bytes());
    for d in descriptors {
        // RateLimitDescriptor { entries = 1 { key = 1, value = 2 }, hits_addend = 3
        // (google.protobuf.UInt64Value { value = 1 }), is_negative_hits = 4 }
        message(&mut out, 2, |m| {
            for (k, v) in d.entries {
                message(m, 1, |e| {
                    bytes(e, 1, k.as_bytes());
                    bytes(e, 2, v.as_bytes());
                });
            }
            // Present even when 0: `Some(0)` is a peek, unset would count as 1.
            message(m, 3, |w| {
                if d.addend != 0 {
                    tag(w, 1, 0);
                    varint(w, d.addend);
                }
            });
            if d.negative {
                tag(m, 4, 0);
                varint(m, 1);
            }
        });
    }
    out
}

/// `RateLimitResponse.Code`.
pub const OK: u64 = 1;
pub const OVER_LIMIT: u64 = 2;

/// One `DescriptorStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Status {
    pub code: u64,
    /// `current_limit.requests_per_unit` (None: no limit matched the descriptor).
    pub limit: Option<u64>,
    pub remaining: u64,
    /// `duration_until_reset` in ms (None: not sent).
    pub reset_in_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Response {
    pub overall: u64,
    pub statuses: Vec<Status>,
}

/// A field read off the wire.
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    /// Fixed-width, skipped.
    Other,
}

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = *self.b.get(self.i)?;
            self.i += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.i.checked_add(n)?;
        let s = self.b.get(self.i..end)?;
        self.i = end;
        Some(s)
    }

    /// The next (field number, value); None at the end; Err on malformed bytes.
    fn next(&mut self) -> Result<Option<(u64, Field<'a>)>, ()> {
        if self.i >= self.b.len() {
            return Ok(None);
        }
        let tag = self.varint().ok_or(())?;
        let field = tag >> 3;
        if field == 0 {
            return Err(());
        }
        let value = match tag & 7 {
            0 => Field::Varint(self.varint().ok_or(())?),
            1 => self.take(8).map(|_| Field::Other).ok_or(())?,
            2 => {
                let n = usize::try_from(self.varint().ok_or(())?).map_err(|_| ())?;
                Field::Bytes(self.take(n).ok_or(())?)
            }
            5 => self.take(4).map(|_| Field::Other).ok_or(())?,
            _ => return Err(()),
        };
        Ok(Some((field, value)))
    }
}

fn each<'a>(b: &'a [u8], mut f: impl FnMut(u64, Field<'a>)) -> Result<(), ()> {
    let mut r = Reader { b, i: 0 };
    while let Some((field, value)) = r.next()? {
        f(field, value);
    }
    Ok(())
}

/// Whether `b` is a well-formed sequence of protobuf fields, unknown ones included (what
/// `ParseFromString` accepts; groups count as malformed, as a top-level end-group is).
pub fn well_formed(b: &[u8]) -> bool {
    each(b, |_, _| {}).is_ok()
}

/// Reads a `RateLimitResponse`.
///
/// # Errors
/// Malformed protobuf.
pub fn response(b: &[u8]) -> Result<Response, ()> {
    let mut out = Response::default();
    let mut bad = false;
    each(b, |field, value| match (field, value) {
        (1, Field::Varint(v)) => out.overall = v,
        (2, Field::Bytes(s)) => match status(s) {
            Ok(s) => out.statuses.push(s),
            Err(()) => bad = true,
        },
        _ => {}
    })?;
    if bad {
        return Err(());
    }
    Ok(out)
}

fn status(b: &[u8]) -> Result<Status, ()> {
    let mut s = Status::default();
    let mut bad = false;
    each(b, |field, value| match (field, value) {
        (1, Field::Varint(v)) => s.code = v,
        // RateLimit { requests_per_unit = 1, unit = 2, name = 3 }
        (2, Field::Bytes(m)) => {
            let mut limit = 0;
            bad |= each(m, |f, v| {
                if let (1, Field::Varint(n)) = (f, v) {
                    limit = n;
                }
            })
            .is_err();
            s.limit = Some(limit);
        }
        (3, Field::Varint(v)) => s.remaining = v,
        // google.protobuf.Duration { seconds = 1, nanos = 2 }
        (4, Field::Bytes(m)) => {
            let (mut secs, mut nanos) = (0u64, 0u64);
            bad |= each(m, |f, v| match (f, v) {
                (1, Field::Varint(n)) => secs = n,
                (2, Field::Varint(n)) => nanos = n,
                _ => {}
            })
            .is_err();
            // Negative durations (int64 as a 10-byte varint) read as huge: clamp to 0.
            let ms = if secs > i64::MAX as u64 { 0 } else { secs.saturating_mul(1000).saturating_add(nanos.min(999_999_999) / 1_000_000) };
            s.reset_in_ms = Some(ms);
        }
        _ => {}
    })?;
    if bad {
        return Err(());
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_bytes_match_protobuf_encoding() {
        let d = [
            Descriptor { entries: [("limit", "rpm"), ("api_key", "ab")], addend: 1, negative: false },
            Descriptor { entries: [("limit", "tpm"), ("team", "t")], addend: 0, negative: false },
            Descriptor { entries: [("limit", "parallel"), ("team", "t")], addend: 300, negative: true },
        ];
        let b = request("d", &d);
        let want: Vec<u8> = [
            &[0x0a, 1, b'd'][..],
            // descriptor 1 (33 bytes): entry ("limit", "rpm") of 12, entry ("api_key", "ab") of 13,
            // addend {1: 1}
            &[0x12, 33, 0x0a, 12, 0x0a, 5, b'l', b'i', b'm', b'i', b't', 0x12, 3, b'r', b'p', b'm'],
            &[0x0a, 13, 0x0a, 7, b'a', b'p', b'i', b'_', b'k', b'e', b'y', 0x12, 2, b'a', b'b'],
            &[0x1a, 2, 0x08, 1],
        ]
        .concat();
        assert_eq!(&b[..want.len()], &want[..]);
        // A zero addend is an empty but present wrapper: Some(0).
        let second = &b[want.len()..];
        assert_eq!(second[0], 0x12);
        assert!(second.windows(2).any(|w| w == [0x1a, 0]), "{second:?}");
        // 300 = 0xac 0x02; is_negative_hits = field 4 varint 1.
        assert!(b.ends_with(&[0x1a, 3, 0x08, 0xac, 0x02, 0x20, 1]), "{b:?}");
    }

    #[test]
    fn response_reads_codes_limits_remaining_and_reset() {
        // overall OVER_LIMIT; status 1 OK {limit 10/minute, remaining 3, reset 12.5 s};
        // status 2 OVER_LIMIT without current_limit; an unknown field 9 (fixed64) skipped.
        let b: Vec<u8> = [
            &[0x08, 2][..],
            &[0x12, 14, 0x08, 1, 0x12, 4, 0x08, 10, 0x10, 2, 0x18, 3, 0x22, 4, 0x08, 12, 0x10, 0x80],
            &[],
        ]
        .concat();
        // nanos 500_000_000 as a varint: 0x80 0xca 0xb5 0xee 0x01 — rebuild the status properly.
        let mut st = vec![0x08, 1, 0x12, 4, 0x08, 10, 0x10, 2, 0x18, 3];
        let mut dur = vec![0x08, 12, 0x10];
        varint(&mut dur, 500_000_000);
        st.push(0x22);
        st.push(dur.len() as u8);
        st.extend(dur);
        let mut full = vec![0x08, 2];
        bytes(&mut full, 2, &st);
        bytes(&mut full, 2, &[0x08, 2]);
        full.extend_from_slice(&[0x49, 0, 0, 0, 0, 0, 0, 0, 0]);
        let r = response(&full).expect("decodes");
        assert_eq!(r.overall, OVER_LIMIT);
        assert_eq!(r.statuses, vec![Status { code: OK, limit: Some(10), remaining: 3, reset_in_ms: Some(12_500) }, Status { code: OVER_LIMIT, limit: None, remaining: 0, reset_in_ms: None }]);
        assert!(response(&b).is_err(), "a truncated nested message is malformed");
        assert!(response(&[0x12, 5, 1]).is_err());
        assert_eq!(response(&[]), Ok(Response::default()), "empty: overall UNKNOWN");
    }

    #[test]
    fn hostile_bytes_never_panic() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..200usize {
            let b: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let _ = response(&b);
        }
        let _ = response(&[0xff; 20]);
    }
}
