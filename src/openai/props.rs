//! Property tests (proptest) for the request scanner and the body rewrite: `json_scan`,
//! `json_string`, `request_scan`, `json_write`.
//!
//! Generated request bodies are top-level members (duplicate keys possible) with arbitrary
//! serde_json values, written by [`Formatter`] with random whitespace and random but valid
//! string escapes (`\uXXXX`, surrogate pairs, `\/`). The formatter records where it put every
//! top-level member, so the scan is checked byte for byte; serde_json is the oracle for what
//! the bytes mean. Arbitrary and mutated byte strings check that the scanner never panics and
//! rejects exactly what serde_json rejects (except serde_json's own number-range and recursion
//! limits, which are stricter than RFC 8259).
//!
//! Case count: proptest's default (256), or `PROPTEST_CASES`.

use std::ops::Range;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::Config;
use serde_json::{Map, Number, Value};

use super::json_scan::{scan_object, validate_value, ValueKind, MAX_DEPTH, REASON_TOO_DEEP};
use super::json_string::decode_string;
use super::json_write::{insert_members, rewrite, splice, string_len, write_string};
use super::request_facts::{body_facts, scan_request_with_facts};
use super::request_scan::scan_request;

/// The proptest config of every property in the crate: the default case count (256, or
/// `PROPTEST_CASES`). Under wasm32 (scripts/wasi-run preopens no directory) failures are not
/// persisted to `proptest-regressions/`: proptest could not read or write the files.
pub(crate) fn config() -> Config {
    let mut config = Config::default();
    if cfg!(target_arch = "wasm32") {
        config.failure_persistence = None;
    }
    config
}

// ---------------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------------

/// Keys the router looks at, near misses, and keys that need escaping.
const KEYS: &[&str] = &[
    "model", "stream", "tags", "metadata", "temperature", "max_tokens", "messages", "seed", "user",
    "Model", "mode", "models", "model ", "", "caf\u{e9}", "\u{1F600}", "a\"b", "back\\slash", "nul\u{0}",
];

/// Characters JSON strings treat specially (escapes, controls, multi-byte, surrogate pairs).
const SPECIAL_CHARS: &[char] = &[
    '"', '\\', '/', '\n', '\r', '\t', '\u{8}', '\u{c}', '\u{0}', '\u{1}', '\u{1f}', '\u{7f}', ' ', '\u{e9}', '\u{7ff}',
    '\u{800}', '\u{2028}', '\u{fffd}', '\u{ffff}', '\u{10000}', '\u{1F600}', '\u{10ffff}',
];

pub(crate) fn short_string() -> impl Strategy<Value = String> {
    let c = prop_oneof![3 => prop::char::range('a', 'z'), 3 => prop::sample::select(SPECIAL_CHARS), 2 => any::<char>()];
    prop::collection::vec(c, 0..10).prop_map(|chars| chars.into_iter().collect())
}

pub(crate) fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(KEYS).prop_map(str::to_string),
        1 => short_string(),
    ]
}

fn number() -> impl Strategy<Value = Number> {
    prop_oneof![
        (-1000i64..1000).prop_map(Number::from),
        any::<i64>().prop_map(Number::from),
        any::<u64>().prop_map(Number::from),
        (-100.0f64..100.0).prop_filter_map("finite", Number::from_f64),
        any::<f64>().prop_filter_map("finite", Number::from_f64),
    ]
}

fn string_value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => short_string(),
        1 => prop::sample::select(&["gpt-4o", "openai/gpt-4o", "true", "{\"model\":1}", "", "\\u0000"][..])
            .prop_map(str::to_string),
    ]
}

/// Any JSON value, nested at most 3 deep, objects with keys from [`key`].
pub(crate) fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number().prop_map(Value::Number),
        string_value().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..5).prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Top-level members in order; keys may repeat.
fn members() -> impl Strategy<Value = Vec<(String, Value)>> {
    prop::collection::vec((key(), json_value()), 0..8)
}

/// Top-level members with distinct keys (first occurrence kept), so serde_json's reading of the
/// object is unambiguous.
fn distinct_members() -> impl Strategy<Value = Vec<(String, Value)>> {
    members().prop_map(dedup_keys)
}

fn dedup_keys(members: Vec<(String, Value)>) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = Vec::with_capacity(members.len());
    for (k, v) in members {
        if !out.iter().any(|(seen, _)| *seen == k) {
            out.push((k, v));
        }
    }
    out
}

/// A formatted body and where each top-level member went.
#[derive(Debug, Clone)]
pub(crate) struct Body {
    pub bytes: Vec<u8>,
    pub members: Vec<(String, Value)>,
    /// Per member: (from the key's opening quote to the end of the value, the value).
    pub spans: Vec<(Range<usize>, Range<usize>)>,
}

fn body_of(members: impl Strategy<Value = Vec<(String, Value)>>) -> impl Strategy<Value = Body> {
    (members, any::<u64>()).prop_map(|(members, seed)| {
        let mut f = Formatter::new(seed);
        let spans = f.object(&members);
        Body { bytes: f.out, members, spans }
    })
}

/// Writes JSON with whitespace and string escapes chosen by a seeded PRNG (splitmix64).
pub(crate) struct Formatter {
    pub out: Vec<u8>,
    state: u64,
    /// Object keys get only the escapes JSON requires (no optional `\uXXXX`, `\/`).
    pub plain_keys: bool,
}

impl Formatter {
    pub fn new(seed: u64) -> Formatter {
        Formatter { out: Vec::new(), state: seed, plain_keys: false }
    }

    fn bits(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn ws(&mut self) {
        let ws: &[u8] = match self.bits() % 10 {
            0 => b" ",
            1 => b"\n  ",
            2 => b"\t",
            3 => b"\r\n ",
            _ => b"",
        };
        self.out.extend_from_slice(ws);
    }

    fn u_escape(&mut self, c: char) {
        let upper = self.bits().is_multiple_of(2);
        let mut units = [0u16; 2];
        for unit in c.encode_utf16(&mut units) {
            let hex = if upper { format!("\\u{unit:04X}") } else { format!("\\u{unit:04x}") };
            self.out.extend_from_slice(hex.as_bytes());
        }
    }

    pub fn string(&mut self, s: &str) {
        self.string_with(s, true);
    }

    fn string_with(&mut self, s: &str, optional_escapes: bool) {
        self.out.push(b'"');
        for c in s.chars() {
            let roll = if optional_escapes { self.bits() % 8 } else { 7 };
            let short: Option<&[u8]> = match c {
                '"' => Some(b"\\\""),
                '\\' => Some(b"\\\\"),
                '/' if roll == 0 => Some(b"\\/"),
                '\n' => Some(b"\\n"),
                '\r' => Some(b"\\r"),
                '\t' => Some(b"\\t"),
                '\u{8}' => Some(b"\\b"),
                '\u{c}' => Some(b"\\f"),
                _ => None,
            };
            match short {
                Some(esc) if roll != 1 => self.out.extend_from_slice(esc),
                _ if roll == 1 || c < ' ' || c == '"' || c == '\\' => self.u_escape(c),
                _ => {
                    let mut buf = [0u8; 4];
                    self.out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        self.out.push(b'"');
    }

    pub fn value(&mut self, v: &Value) {
        match v {
            Value::Null => self.out.extend_from_slice(b"null"),
            Value::Bool(b) => self.out.extend_from_slice(if *b { b"true" } else { b"false" }),
            Value::Number(n) => self.out.extend_from_slice(n.to_string().as_bytes()),
            Value::String(s) => self.string(s),
            Value::Array(items) => {
                self.out.push(b'[');
                self.ws();
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.out.push(b',');
                        self.ws();
                    }
                    self.value(item);
                    self.ws();
                }
                self.out.push(b']');
            }
            Value::Object(map) => {
                let pairs: Vec<(String, Value)> = map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                self.members(&pairs);
            }
        }
    }

    pub fn members(&mut self, members: &[(String, Value)]) -> Vec<(Range<usize>, Range<usize>)> {
        let mut spans = Vec::with_capacity(members.len());
        self.out.push(b'{');
        self.ws();
        for (i, (k, v)) in members.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
                self.ws();
            }
            let start = self.out.len();
            self.string_with(k, !self.plain_keys);
            self.ws();
            self.out.push(b':');
            self.ws();
            let value_start = self.out.len();
            self.value(v);
            spans.push((start..self.out.len(), value_start..self.out.len()));
            self.ws();
        }
        self.out.push(b'}');
        spans
    }

    /// A whole body: whitespace, the object, whitespace.
    pub fn object(&mut self, members: &[(String, Value)]) -> Vec<(Range<usize>, Range<usize>)> {
        self.ws();
        let spans = self.members(members);
        self.ws();
        spans
    }
}

fn kind_of(v: &Value) -> ValueKind {
    match v {
        Value::Null => ValueKind::Null,
        Value::Bool(_) => ValueKind::Bool,
        Value::Number(_) => ValueKind::Number,
        Value::String(_) => ValueKind::String,
        Value::Array(_) => ValueKind::Array,
        Value::Object(_) => ValueKind::Object,
    }
}

fn parse(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("serde_json: {e}: {}", String::from_utf8_lossy(bytes)))
}

/// Bytes that are JSON-shaped often enough to reach deep into the grammar.
const ALPHABET: &[u8] = b"{}[]\",:\\ \t\n\r0123456789-+.eEtrufalsn/ubx\x00\x1f\x7f\xc3\xa9\xff\xed\xa0\xf0\x9f";

fn json_ish_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(ALPHABET), 0..48)
}

/// A formatted body with 1–4 byte edits (replace, insert, delete, truncate).
fn mutated_body() -> impl Strategy<Value = Vec<u8>> {
    let edit = (0u8..4, any::<Index>(), prop_oneof![prop::sample::select(ALPHABET), any::<u8>()]);
    (body_of(members()), prop::collection::vec(edit, 1..5)).prop_map(|(body, edits)| {
        let mut b = body.bytes;
        for (op, at, byte) in edits {
            let len = b.len();
            match op {
                0 if len > 0 => b[at.index(len)] = byte,
                1 => b.insert(at.index(len + 1), byte),
                2 if len > 0 => {
                    b.remove(at.index(len));
                }
                _ => b.truncate(at.index(len + 1)),
            }
        }
        b
    })
}

/// serde_json's verdict on `bytes`: `None` where it refuses RFC 8259 JSON (numbers out of f64
/// range, nesting past its recursion limit of 127 — the scanner allows [`MAX_DEPTH`] = 128).
fn serde_verdict(bytes: &[u8]) -> Option<Result<Value, ()>> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v) => Some(Ok(v)),
        Err(e) if e.to_string().contains("number out of range") || e.to_string().contains("recursion limit") => None,
        Err(_) => Some(Err(())),
    }
}

/// The scanner agrees with serde_json on `bytes`, and nothing that reads a body panics.
fn agrees_with_serde(bytes: &[u8]) -> Result<(), TestCaseError> {
    let any = validate_value(bytes);
    let object = scan_object(bytes, |_| {});
    // The request-path readers on the same bytes: must not panic, and agree with scan_object.
    prop_assert_eq!(scan_request(bytes, &["model", "temperature"]).is_ok(), object.is_ok());
    prop_assert_eq!(scan_request_with_facts(bytes, &[]).is_ok(), object.is_ok());
    prop_assert_eq!(body_facts(bytes).is_ok(), object.is_ok());
    match serde_verdict(bytes) {
        Some(Ok(Value::Object(_))) => {
            prop_assert_eq!(any, Ok(ValueKind::Object));
            prop_assert!(object.is_ok(), "serde_json accepts, scanner refuses: {:?}", object);
        }
        Some(Ok(v)) => {
            prop_assert_eq!(any, Ok(kind_of(&v)));
            prop_assert!(object.is_err_and(|e| e.is_not_object()));
        }
        Some(Err(())) => {
            prop_assert!(any.is_err(), "serde_json refuses, scanner accepts as {:?}", any);
            prop_assert!(object.is_err_and(|e| !e.is_not_object()));
        }
        None => {}
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// Every top-level member is reported, in order, at the exact bytes the formatter wrote it,
    /// with its decoded key and kind; serde_json reads the same values.
    #[test]
    fn scan_reports_every_member_where_it_was_written(body in body_of(members())) {
        let mut seen = Vec::new();
        let span = scan_object(&body.bytes, |m| {
            seen.push((m.member.clone(), m.value.clone(), m.key().map(|k| k.into_owned()), m.kind, m.value_raw.len()));
        });
        let span = span.map_err(|e| TestCaseError::fail(format!("{e}: {}", String::from_utf8_lossy(&body.bytes))))?;
        prop_assert_eq!(seen.len(), body.members.len());
        for ((member, value, key, kind, raw_len), ((k, v), (member_at, value_at))) in seen.iter().zip(body.members.iter().zip(&body.spans)) {
            prop_assert_eq!(member, member_at);
            prop_assert_eq!(value, value_at);
            prop_assert_eq!(key.as_deref(), Ok(k.as_str()));
            prop_assert_eq!(*kind, kind_of(v));
            prop_assert_eq!(*raw_len, value.len());
        }
        prop_assert_eq!(body.bytes[span.open], b'{');
        prop_assert_eq!(body.bytes[span.close], b'}');
        prop_assert_eq!(span.is_empty, body.members.is_empty());
        prop_assert!(body.bytes[..span.open].iter().chain(&body.bytes[span.close + 1..]).all(u8::is_ascii_whitespace));

        // serde_json (last duplicate wins) reads each member's value bytes as the scan reports them.
        let whole = parse(&body.bytes);
        let map = whole.as_object().unwrap();
        for (i, (k, _)) in body.members.iter().enumerate() {
            if body.members[i + 1..].iter().all(|(later, _)| later != k) {
                prop_assert_eq!(&parse(&body.bytes[body.spans[i].1.clone()]), &map[k]);
            }
        }
        prop_assert_eq!(map.len(), dedup_keys(body.members.clone()).len());
    }

    /// `scan_request` finds the first top-level `model` and `stream` (nested ones never),
    /// flags duplicates, and reports exactly the wanted keys that are present (first 64 names).
    #[test]
    fn scan_request_finds_model_stream_and_wanted_keys(
        body in body_of(members()),
        wanted in prop::collection::vec(key(), 0..70),
    ) {
        let wanted: Vec<&str> = wanted.iter().map(String::as_str).collect();
        let scan = scan_request(&body.bytes, &wanted).unwrap();
        let first = |name: &str| body.members.iter().position(|(k, _)| k == name);
        let count = |name: &str| body.members.iter().filter(|(k, _)| k == name).count();
        match first("model") {
            None => prop_assert!(scan.model.is_none()),
            Some(i) => {
                let m = scan.model.as_ref().unwrap();
                prop_assert_eq!(&m.value, &body.spans[i].1);
                let name = scan.model_name();
                prop_assert_eq!(name.as_deref(), body.members[i].1.as_str());
                // serde_json on a body without duplicates finds the same model.
                if count("model") == 1 {
                    let whole = parse(&body.bytes);
                    prop_assert_eq!(whole.get("model"), Some(&parse(m.value_raw)));
                }
            }
        }
        prop_assert_eq!(scan.duplicate_model, count("model") > 1);
        prop_assert_eq!(scan.stream, first("stream").and_then(|i| body.members[i].1.as_bool()));
        prop_assert_eq!(scan.duplicate_stream, count("stream") > 1);
        for (i, name) in wanted.iter().enumerate() {
            prop_assert_eq!(scan.has(i), i < 64 && first(name).is_some(), "wanted[{}] = {:?}", i, name);
        }
        prop_assert!(!scan.has(wanted.len().max(64)));
        let (with_facts, _) = scan_request_with_facts(&body.bytes, &wanted).unwrap();
        prop_assert_eq!(with_facts, scan);
    }

    /// The router's rewrite (as `pipeline::request::plan` calls it): serde_json reads the new
    /// body as the original object with only `model` replaced and the default params added that
    /// the body did not set; the buffer is allocated exactly once at its final size; the bytes
    /// before the insertion point and after the model value are the original ones.
    #[test]
    fn rewrite_replaces_model_and_adds_only_absent_defaults(
        body in body_of(distinct_members()),
        new_model in proptest::option::of(short_string()),
        defaults in prop::collection::vec((key(), json_value()), 0..6).prop_map(dedup_keys),
        other_keys in prop::collection::vec(key(), 0..4),
    ) {
        // The table's default-param keys: this deployment's and other deployments'.
        let mut wanted: Vec<&str> = Vec::new();
        for k in defaults.iter().map(|(k, _)| k).chain(&other_keys) {
            if !wanted.contains(&k.as_str()) {
                wanted.push(k.as_str());
            }
        }
        let scan = scan_request(&body.bytes, &wanted).unwrap();
        let raw: Vec<(&str, Vec<u8>)> = defaults
            .iter()
            .filter(|(k, _)| !wanted.iter().position(|w| *w == k.as_str()).is_some_and(|i| scan.has(i)))
            .map(|(k, v)| (k.as_str(), serde_json::to_vec(v).unwrap()))
            .collect();
        let added: Vec<(&str, &[u8])> = raw.iter().map(|(k, v)| (*k, v.as_slice())).collect();
        let edit = new_model.as_deref().and_then(|name| scan.model.as_ref().map(|m| (m.value.clone(), name)));

        let out = rewrite(&body.bytes, edit.clone(), &scan.object, &added);
        prop_assert_eq!(out.len(), out.capacity(), "one exact-size allocation");

        let Value::Object(mut expected) = parse(&body.bytes) else { unreachable!() };
        if let Some((_, name)) = &edit {
            expected.insert("model".to_string(), Value::String((*name).to_string()));
        }
        for (k, v) in &added {
            prop_assert!(!expected.contains_key(*k), "default {:?} added although the body sets it", k);
            expected.insert((*k).to_string(), parse(v));
        }
        prop_assert_eq!(parse(&out), Value::Object(expected));

        let open = scan.object.open;
        prop_assert!(out.starts_with(&body.bytes[..=open]));
        match &edit {
            Some((range, _)) => prop_assert!(out.ends_with(&body.bytes[range.end..])),
            None => prop_assert!(out.ends_with(&body.bytes[open + 1..])),
        }
        // The new body scans again: the router's second pass (failover) sees what it wrote.
        let again = scan_request(&out, &wanted).unwrap();
        for (k, _) in &defaults {
            let i = wanted.iter().position(|w| *w == k.as_str()).unwrap();
            prop_assert!(again.has(i));
        }
        if let Some((_, name)) = &edit {
            let found = again.model_name();
            prop_assert_eq!(found.as_deref(), Some(*name));
        }
        prop_assert!(!again.duplicate_model);
    }

    /// `insert_members` alone, and with an empty object written with inner whitespace.
    #[test]
    fn insert_members_into_any_object(
        body in body_of(distinct_members()),
        extra in prop::collection::vec((key(), json_value()), 0..4).prop_map(dedup_keys),
    ) {
        let extra: Vec<(String, Value)> = extra.into_iter().filter(|(k, _)| body.members.iter().all(|(b, _)| b != k)).collect();
        let raw: Vec<(String, Vec<u8>)> = extra.iter().map(|(k, v)| (k.clone(), serde_json::to_vec(v).unwrap())).collect();
        let members: Vec<(&str, &[u8])> = raw.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
        let span = scan_object(&body.bytes, |_| {}).unwrap();
        let out = insert_members(&body.bytes, &span, &members);
        prop_assert_eq!(out.len(), out.capacity());
        let Value::Object(mut expected) = parse(&body.bytes) else { unreachable!() };
        for (k, v) in &raw {
            expected.insert(k.clone(), parse(v));
        }
        prop_assert_eq!(parse(&out), Value::Object(expected));
    }

    /// Written strings round-trip through serde_json and the scanner's decoder; `string_len`
    /// is exact.
    #[test]
    fn write_string_round_trips(s in prop_oneof![short_string(), any::<String>()]) {
        let mut out = Vec::new();
        write_string(&mut out, &s);
        prop_assert_eq!(out.len(), string_len(&s));
        prop_assert_eq!(serde_json::from_slice::<String>(&out).unwrap(), s.clone());
        prop_assert_eq!(decode_string(&out).unwrap(), s);
    }

    /// String tokens (escapes, surrogates, raw control and non-UTF-8 bytes): the scanner's
    /// decoder accepts exactly what serde_json accepts, with the same result.
    #[test]
    fn decode_string_agrees_with_serde(pieces in prop::collection::vec(prop_oneof![
        4 => prop::sample::select(&[
            "a", "\u{e9}", "\u{1F600}", "/", "\\/", "\\\"", "\\\\", "\\n", "\\b", "\\u00e9", "\\u00E9",
            "\\ud83d", "\\ude00", "\\uD83D\\uDE00", "\\uDBFF\\uDFFF", "\\u0000", "\\x", "\\", "\\u12", "\\U0041", "\u{1}", "\u{7f}", "\"",
        ][..]).prop_map(|s| s.as_bytes().to_vec()),
        1 => any::<u8>().prop_map(|b| vec![b]),
    ], 0..8)) {
        let mut token = vec![b'"'];
        token.extend(pieces.concat());
        token.push(b'"');
        let ours = decode_string(&token).map(|s| s.into_owned()).ok();
        let serde = serde_json::from_slice::<String>(&token).ok();
        prop_assert_eq!(&ours, &serde, "token {:?}", String::from_utf8_lossy(&token));
        // The same token as a member value: the scan accepts it exactly when it decodes.
        let mut body = b"{\"k\":".to_vec();
        body.extend_from_slice(&token);
        body.push(b'}');
        prop_assert_eq!(scan_object(&body, |_| {}).is_ok(), ours.is_some());
    }

    /// Arbitrary bytes: nothing panics, and the scanner refuses whatever serde_json refuses
    /// (and accepts whatever it accepts).
    #[test]
    fn arbitrary_bytes_agree_with_serde(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        agrees_with_serde(&bytes)?;
    }

    #[test]
    fn json_shaped_bytes_agree_with_serde(bytes in json_ish_bytes()) {
        agrees_with_serde(&bytes)?;
    }

    #[test]
    fn mutated_bodies_agree_with_serde(bytes in mutated_body()) {
        agrees_with_serde(&bytes)?;
    }

    /// Nesting: accepted up to MAX_DEPTH containers (the top level counts), refused beyond.
    #[test]
    fn nesting_limit(objects in prop::collection::vec(any::<bool>(), 1..=MAX_DEPTH + 8)) {
        let mut body = Vec::new();
        for &object in &objects {
            body.extend_from_slice(if object { b"{\"k\":" } else { b"[" });
        }
        body.push(b'0');
        for &object in objects.iter().rev() {
            body.push(if object { b'}' } else { b']' });
        }
        let verdict = validate_value(&body);
        if objects.len() <= MAX_DEPTH {
            prop_assert!(verdict.is_ok());
        } else {
            prop_assert_eq!(verdict.unwrap_err().reason, REASON_TOO_DEEP);
        }
        if objects[0] {
            prop_assert_eq!(scan_object(&body, |_| {}).is_ok(), objects.len() <= MAX_DEPTH);
        }
        agrees_with_serde(&body)?;
    }

    /// `splice` never panics, whatever the range, and clamps it to the body.
    #[test]
    fn splice_clamps_any_range(
        body in prop::collection::vec(any::<u8>(), 0..32),
        start in 0usize..40,
        len in 0usize..40,
        reversed in any::<bool>(),
        replacement in prop::collection::vec(any::<u8>(), 0..8),
    ) {
        let range = if reversed { start + len..start } else { start..start + len };
        let out = splice(&body, range.clone(), &replacement);
        let s = range.start.min(body.len());
        let e = range.end.max(s).min(body.len());
        let mut expected = body[..s].to_vec();
        expected.extend_from_slice(&replacement);
        expected.extend_from_slice(&body[e..]);
        prop_assert_eq!(out, expected);
    }
}
