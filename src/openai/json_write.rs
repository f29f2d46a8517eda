//! Minimal-copy edits of a scanned JSON request body.
//!
//! Why this exists: after routing, the router must replace the `model` value
//! with the deployment's upstream model name and add default params the
//! client did not set. Re-serialising a parsed tree would reorder keys,
//! reformat numbers and cost allocations per node; instead these helpers copy
//! the original bytes around the edited spans (found by `json_scan`) into one
//! exactly-sized buffer, so everything else stays byte-for-byte identical.
//!
//! Ranges and spans are expected to come from `json_scan` on the same body.
//! Out-of-range values are clamped to the body (never a panic).

use std::ops::Range;

use super::json_scan::ObjectSpan;

/// Number of bytes [`write_string`] appends for `s` (quotes included).
pub fn string_len(s: &str) -> usize {
    2 + s.bytes().map(escaped_len).sum::<usize>()
}

fn escaped_len(b: u8) -> usize {
    match b {
        b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0C => 2,
        0x00..=0x1F => 6,
        _ => 1,
    }
}

/// Appends `s` as a JSON string literal: quotes, `\"`, `\\`, the short escapes
/// `\n \r \t \b \f`, and `\u00XX` for other control characters. Everything
/// else, including non-ASCII UTF-8, is copied as is.
pub fn write_string(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0C => b"\\f",
            0x00..=0x1F => b"",
            _ => continue,
        };
        out.extend_from_slice(bytes.get(start..i).unwrap_or(&[]));
        if short.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(hex_digit(b >> 4));
            out.push(hex_digit(b & 0x0F));
        } else {
            out.extend_from_slice(short);
        }
        start = i + 1;
    }
    out.extend_from_slice(bytes.get(start..).unwrap_or(&[]));
    out.push(b'"');
}

fn hex_digit(n: u8) -> u8 {
    if n < 10 {
        b'0' + n
    } else {
        b'a' + (n - 10)
    }
}

/// Clamps `range` into `lo..=len` so slicing cannot panic.
fn clamp(range: &Range<usize>, lo: usize, len: usize) -> Range<usize> {
    let start = range.start.max(lo).min(len);
    let end = range.end.max(start).min(len);
    start..end
}

/// Returns `body` with `range` replaced by `replacement` (one exact-capacity
/// allocation).
#[must_use]
#[cfg(test)]
pub fn splice(body: &[u8], range: Range<usize>, replacement: &[u8]) -> Vec<u8> {
    let r = clamp(&range, 0, body.len());
    let mut out = Vec::with_capacity(body.len() - r.len() + replacement.len());
    out.extend_from_slice(body.get(..r.start).unwrap_or(&[]));
    out.extend_from_slice(replacement);
    out.extend_from_slice(body.get(r.end..).unwrap_or(&[]));
    out
}

/// Returns `body` with `"key":value` members inserted right after the
/// top-level `{`, in the given order. Values are raw JSON supplied by the
/// caller (trusted, e.g. from config; validate with
/// [`super::json_scan::validate_value`] if unsure); keys are escaped here.
#[must_use]
#[cfg(test)]
pub fn insert_members(body: &[u8], object: &ObjectSpan, members: &[(&str, &[u8])]) -> Vec<u8> {
    rewrite(body, None, object, members)
}

/// The hot-path edit: replaces the model value token at `model.0` (a range
/// from `json_scan`, quotes included) with the JSON string `model.1`, and
/// inserts `extra_members` after the top-level `{` — in ONE exact-capacity
/// output allocation. All other bytes are copied unchanged.
#[must_use]
pub fn rewrite(
    body: &[u8],
    model: Option<(Range<usize>, &str)>,
    object: &ObjectSpan,
    extra_members: &[(&str, &[u8])],
) -> Vec<u8> {
    let insert_at = object.open.saturating_add(1).min(body.len());
    let model = model.map(|(range, name)| (clamp(&range, insert_at, body.len()), name));
    let inserted = members_len(extra_members, object.is_empty);
    let (removed, added) = model
        .as_ref()
        .map_or((0, 0), |(range, name)| (range.len(), string_len(name)));
    let mut out = Vec::with_capacity(body.len() - removed + added + inserted);
    out.extend_from_slice(body.get(..insert_at).unwrap_or(&[]));
    write_members(&mut out, extra_members, object.is_empty);
    match model {
        Some((range, name)) => {
            out.extend_from_slice(body.get(insert_at..range.start).unwrap_or(&[]));
            write_string(&mut out, name);
            out.extend_from_slice(body.get(range.end..).unwrap_or(&[]));
        }
        None => out.extend_from_slice(body.get(insert_at..).unwrap_or(&[])),
    }
    out
}

/// Bytes [`write_members`] appends (what [`rewrite`] inserts after the `{`).
pub fn members_len(members: &[(&str, &[u8])], object_is_empty: bool) -> usize {
    if members.is_empty() {
        return 0;
    }
    let each: usize = members
        .iter()
        .map(|(key, value)| string_len(key) + 1 + value.len())
        .sum();
    let commas = members.len() - 1 + usize::from(!object_is_empty);
    each + commas
}

/// `"k1":v1,"k2":v2` plus a trailing comma when existing members follow.
fn write_members(out: &mut Vec<u8>, members: &[(&str, &[u8])], object_is_empty: bool) {
    for (i, (key, value)) in members.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_string(out, key);
        out.push(b':');
        out.extend_from_slice(value);
    }
    if !members.is_empty() && !object_is_empty {
        out.push(b',');
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    use super::super::json_scan::tests::{mutate, Rng, SEED_BODIES};
    use super::super::json_scan::scan_object;
    use super::super::request_scan::scan_request;
    use super::*;
    use serde_json::{json, Value};

    fn written(s: &str) -> Vec<u8> {
        let mut out = Vec::new();
        write_string(&mut out, s);
        assert_eq!(out.len(), string_len(s), "{s:?}");
        out
    }

    fn parse(b: &[u8]) -> Value {
        serde_json::from_slice(b).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(b)))
    }

    fn span(body: &[u8]) -> ObjectSpan {
        scan_object(body, |_| {}).unwrap()
    }

    #[test]
    fn write_string_escapes() {
        let cases: &[(&str, &str)] = &[
            ("", r#""""#),
            ("plain", r#""plain""#),
            ("a\"b\\c", r#""a\"b\\c""#),
            ("\n\r\t\u{8}\u{c}", r#""\n\r\t\b\f""#),
            ("\u{0}\u{1}\u{1f}", r#""\u0000\u0001\u001f""#),
            ("/\u{7f}", "\"/\u{7f}\""),
            (
                "h\u{e9}llo \u{4E2D} \u{1F600} \u{2028}",
                "\"h\u{e9}llo \u{4E2D} \u{1F600} \u{2028}\"",
            ),
            ("end\\", r#""end\\""#),
        ];
        for (input, expected) in cases {
            assert_eq!(written(input), expected.as_bytes(), "{input:?}");
        }
    }

    #[test]
    fn write_string_matches_serde_and_round_trips() {
        let mut all_ascii = String::new();
        for c in 0u8..=0x7F {
            all_ascii.push(char::from(c));
        }
        let samples = [
            all_ascii.as_str(),
            "gpt-4o",
            "a\u{0}b\u{1b}[31mred",
            "\u{10FFFF}\u{FFFD}\u{FEFF}",
            "\"\"\\\\",
        ];
        for s in samples {
            let out = written(s);
            assert_eq!(out, serde_json::to_string(s).unwrap().into_bytes(), "{s:?}");
            assert_eq!(serde_json::from_slice::<String>(&out).unwrap(), s);
        }
    }

    #[test]
    fn splice_keeps_everything_else() {
        let body = br#"{ "model" : "gpt-4o",  "n":1.50, "x":"caf\u00e9" }"#;
        let r = scan_request(body, &[]).unwrap();
        let range = r.model.unwrap().value;
        let out = splice(body, range.clone(), b"\"other\"");
        assert_eq!(out.capacity(), out.len());
        assert_eq!(&out[..range.start], &body[..range.start]);
        assert_eq!(&out[range.start + 7..], &body[range.end..]);
        assert_eq!(out, br#"{ "model" : "other",  "n":1.50, "x":"caf\u00e9" }"#);
        assert_eq!(
            parse(&out),
            json!({"model":"other","n":1.5,"x":"caf\u{e9}"})
        );
        // Degenerate ranges are clamped, never a panic.
        assert_eq!(splice(b"abc", 5..9, b"X"), b"abcX");
        #[allow(clippy::reversed_empty_ranges)]
        let reversed = 2..1;
        assert_eq!(splice(b"abc", reversed, b"X"), b"abXc");
        assert_eq!(splice(b"abc", 0..3, b""), b"");
    }

    #[test]
    fn insert_members_into_empty_and_non_empty() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"{}", br#"{"k":"v","n":null}"#),
            (b" { \n } ", b" {\"k\":\"v\",\"n\":null \n } "),
            (br#"{ "a":1 }"#, br#"{"k":"v","n":null, "a":1 }"#),
            (
                b"\n{\"a\":1,\"b\":[]}\n",
                b"\n{\"k\":\"v\",\"n\":null,\"a\":1,\"b\":[]}\n",
            ),
        ];
        for (body, expected) in cases {
            let out = insert_members(body, &span(body), &[("k", b"\"v\""), ("n", b"null")]);
            assert_eq!(out, *expected, "{}", String::from_utf8_lossy(&out));
            assert_eq!(out.capacity(), out.len());
            parse(&out);
        }
        let out = insert_members(b"{}", &span(b"{}"), &[("temperature", b"0.2")]);
        assert_eq!(parse(&out), json!({"temperature":0.2}));
        let out = insert_members(br#"{ "a":1 }"#, &span(br#"{ "a":1 }"#), &[("t", b"0.2")]);
        assert_eq!(parse(&out), json!({"a":1,"t":0.2}));
        // Escaped keys; nothing to insert leaves the body untouched.
        let out = insert_members(b"{}", &span(b"{}"), &[("we\"ird\n", b"[1,{\"a\":2}]")]);
        assert_eq!(parse(&out), json!({"we\"ird\n":[1,{"a":2}]}));
        assert_eq!(
            insert_members(br#"{"a":1}"#, &span(br#"{"a":1}"#), &[]),
            br#"{"a":1}"#
        );
    }

    #[test]
    fn rewrite_replaces_model_and_inserts_in_one_copy() {
        let body = "{\n  \"messages\":[{\"role\":\"user\",\"content\":\"h\u{e9} \\ud83d\\ude00\"}],\n  \"model\" : \"my-group\",\n  \"top_p\": 1.0e0\n}".as_bytes();
        let r = scan_request(body, &["temperature"]).unwrap();
        let m = r.model.unwrap();
        let out = rewrite(
            body,
            Some((m.value.clone(), "azure/gpt-4o \"v2\"")),
            &r.object,
            &[("temperature", b"0.1"), ("user", b"\"router\"")],
        );
        assert_eq!(out.capacity(), out.len());
        let prefix = br#"{"temperature":0.1,"user":"router","#;
        assert_eq!(&out[..prefix.len()], prefix);
        assert_eq!(
            &out[prefix.len()..prefix.len() + m.value.start - 1],
            &body[1..m.value.start]
        );
        assert!(out.ends_with(&body[m.value.end..]));
        assert_eq!(
            parse(&out),
            json!({"temperature":0.1,"user":"router","model":"azure/gpt-4o \"v2\"","top_p":1.0,
                   "messages":[{"role":"user","content":"h\u{e9} \u{1F600}"}]})
        );
        // Model as the first member, no extras.
        let body = br#"{"model":"a","x":1}"#;
        let r = scan_request(body, &[]).unwrap();
        let out = rewrite(body, Some((r.model.unwrap().value, "bb")), &r.object, &[]);
        assert_eq!(out, br#"{"model":"bb","x":1}"#);
        // Model first with extras.
        let r = scan_request(body, &[]).unwrap();
        let out = rewrite(
            body,
            Some((r.model.unwrap().value, "")),
            &r.object,
            &[("n", b"2")],
        );
        assert_eq!(out, br#"{"n":2,"model":"","x":1}"#);
        // No model change: same as insert_members.
        let out = rewrite(body, None, &r.object, &[("n", b"2")]);
        assert_eq!(out, insert_members(body, &r.object, &[("n", b"2")]));
        // Nothing to do: identical copy.
        assert_eq!(rewrite(body, None, &r.object, &[]), body);
    }

    #[test]
    fn rewrite_clamps_bogus_ranges() {
        let body = br#"{"model":"a"}"#;
        let s = span(body);
        let out = rewrite(body, Some((100..200, "x")), &s, &[]);
        assert_eq!(out, br#"{"model":"a"}"x""#);
        let out = rewrite(body, Some((0..3, "x")), &s, &[]);
        assert_eq!(out, br#"{"x"odel":"a"}"#);
        let bogus = ObjectSpan {
            open: 99,
            close: 100,
            is_empty: true,
        };
        assert_eq!(
            rewrite(body, None, &bogus, &[("k", b"1")]),
            br#"{"model":"a"}"k":1"#
        );
    }

    #[test]
    fn rewrite_on_mutated_bodies_preserves_other_members() {
        let mut rng = Rng(0xD1B5_4A32_D192_ED03);
        let names = [
            "new",
            "with \"quote\"",
            "uni\u{e9}\u{1F600}",
            "ctl\u{1}\n",
            "",
        ];
        let mut checked = 0;
        for round in 0..3000 {
            let mut body = SEED_BODIES[round % SEED_BODIES.len()].as_bytes().to_vec();
            for _ in 0..rng.below(3) {
                mutate(&mut rng, &mut body);
            }
            let Ok(r) = scan_request(&body, &["temperature", "user"]) else {
                continue;
            };
            let Ok(Value::Object(original)) = serde_json::from_slice::<Value>(&body) else {
                continue;
            };
            let name = names[rng.below(names.len())];
            let model = r.model.as_ref().filter(|m| {
                !r.duplicate_model && m.kind == super::super::json_scan::ValueKind::String
            });
            let mut extras: Vec<(&str, &[u8])> = Vec::new();
            if !r.has(0) {
                extras.push(("temperature", b"0.25"));
            }
            if !r.has(1) && rng.below(2) == 0 {
                extras.push(("user", b"{\"id\":[1,2]}"));
            }
            let out = rewrite(
                &body,
                model.map(|m| (m.value.clone(), name)),
                &r.object,
                &extras,
            );
            assert_eq!(out.capacity(), out.len());
            let Value::Object(got) = parse(&out) else {
                panic!("not an object")
            };
            let mut expected = original.clone();
            if model.is_some() {
                expected.insert("model".into(), json!(name));
            }
            for (k, v) in &extras {
                expected.insert((*k).into(), serde_json::from_slice(v).unwrap());
            }
            assert_eq!(got, expected, "{}", String::from_utf8_lossy(&body));
            // Untouched tail is byte-identical.
            let tail_from = model.map_or(r.object.open + 1, |m| m.value.end);
            assert!(out.ends_with(&body[tail_from..]));
            checked += 1;
        }
        assert!(checked > 300, "only {checked} valid bodies");
    }
}
