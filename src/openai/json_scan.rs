//! Validating, allocation-free, single-pass scanner for JSON request bodies.
//!
//! Why this exists: the router inspects every request body (300 B to 1 MiB)
//! for a handful of top-level fields (`model`, `stream`, which keys are set)
//! and then edits it in place. Building a full tree (`serde_json::Value`)
//! allocates for every node and would dominate the filter's per-request cost
//! inside Envoy. This scanner instead:
//!
//! * validates the whole document against RFC 8259 in one pass (string
//!   escapes, control characters, `\u` surrogate pairing, UTF-8 inside
//!   strings, number grammar, literals, separators, trailing garbage);
//! * never allocates and never recurses: nesting is tracked in a 128-bit
//!   stack, so hostile input such as a million `[` cannot blow the wasm stack;
//! * skips string contents eight bytes at a time (SWAR) until it meets a
//!   quote, backslash, control byte or non-ASCII byte;
//! * reports each top-level member as byte ranges, which `json_write` uses to
//!   splice edits while leaving every other byte untouched.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

#[cfg(test)]
use super::json_string::decode_content;
use super::json_string::{decode_escape, decode_string, find_string_special, unescaped_eq, utf8_char_len};
pub use super::request_scan::RequestScan;

/// Maximum number of nested objects/arrays, counting the top-level value
/// itself. Deeper documents are rejected with [`REASON_TOO_DEEP`].
pub const MAX_DEPTH: usize = 128;

/// [`ScanError::reason`] for a document that is valid JSON but whose top-level
/// value is not an object. See [`ScanError::is_not_object`].
pub const REASON_NOT_AN_OBJECT: &str = "top-level value is not an object";

/// [`ScanError::reason`] when nesting exceeds [`MAX_DEPTH`].
pub const REASON_TOO_DEEP: &str = "nesting deeper than 128 levels";

/// JSON type of a member's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    String,
    Number,
    Bool,
    Null,
    Object,
    Array,
}

/// Why a body was rejected, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanError {
    /// Byte offset of the problem (for `decode_string`/`Member::key`: relative
    /// to the slice that was decoded).
    pub offset: usize,
    /// Short, static, human-readable reason.
    pub reason: &'static str,
}

impl ScanError {
    pub(super) fn at(offset: usize, reason: &'static str) -> Self {
        Self { offset, reason }
    }

    /// True when the body was valid JSON but not an object (the router answers
    /// that case with a different message than for malformed JSON).
    #[must_use]
    pub fn is_not_object(&self) -> bool {
        self.reason == REASON_NOT_AN_OBJECT
    }
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid JSON at byte {}: {}", self.offset, self.reason)
    }
}

impl std::error::Error for ScanError {}

/// Location of the top-level object's braces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectSpan {
    /// Index of the top-level `{`.
    pub open: usize,
    /// Index of the matching `}`.
    pub close: usize,
    /// True when the object has no members.
    pub is_empty: bool,
}

/// One top-level member, as byte ranges into the scanned body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member<'a> {
    /// Bytes between the key's quotes, still escaped (valid UTF-8).
    pub key_raw: &'a [u8],
    /// True when `key_raw` contains a backslash escape.
    pub key_has_escape: bool,
    /// Byte range of the value token in the body; strings include quotes.
    pub value: Range<usize>,
    /// The value token itself (`&body[value]`).
    pub value_raw: &'a [u8],
    /// JSON type of the value.
    pub kind: ValueKind,
    /// From the key's opening quote to the end of the value.
    pub member: Range<usize>,
}

impl<'a> Member<'a> {
    /// Whether the (unescaped) key equals `name`. Allocation-free; escapes are
    /// decoded on the fly only when the key has any.
    #[must_use]
    pub fn key_is(&self, name: &str) -> bool {
        if self.key_has_escape {
            unescaped_eq(self.key_raw, name.as_bytes())
        } else {
            self.key_raw == name.as_bytes()
        }
    }

    /// The decoded key (borrowed unless it contains escapes).
    ///
    /// # Errors
    /// Never for members produced by [`scan_object`] (keys are validated
    /// there); offsets are relative to `key_raw`.
    #[cfg(test)]
    pub fn key(&self) -> Result<Cow<'a, str>, ScanError> {
        decode_content(self.key_raw, 0)
    }

    /// The decoded value when it is a JSON string, else `None`.
    #[must_use]
    pub fn as_str(&self) -> Option<Cow<'a, str>> {
        match self.kind {
            ValueKind::String => decode_string(self.value_raw).ok(),
            _ => None,
        }
    }

    /// The value when it is a JSON boolean, else `None`.
    #[must_use]
    pub fn as_bool(&self) -> Option<bool> {
        match self.value_raw {
            b"true" => Some(true),
            b"false" => Some(false),
            _ => None,
        }
    }
}

/// Validates `body` (which must be a JSON object, optionally surrounded by
/// whitespace) and calls `visit` for every top-level member in document order.
///
/// `visit` runs while scanning: when this returns `Err`, anything collected by
/// `visit` must be discarded. A body that is valid JSON but not an object
/// yields an error for which [`ScanError::is_not_object`] is true.
///
/// # Errors
/// The first RFC 8259 violation (with its byte offset), nesting deeper than
/// [`MAX_DEPTH`], or [`REASON_NOT_AN_OBJECT`] for valid non-object JSON.
pub fn scan_object<'a>(
    body: &'a [u8],
    mut visit: impl FnMut(&Member<'a>),
) -> Result<ObjectSpan, ScanError> {
    let mut s = Scanner { b: body, i: 0 };
    s.skip_ws();
    let open = s.i;
    if s.peek() != Some(b'{') {
        // Validate whatever it is so callers can tell "malformed" from "not an object".
        s.value(0)?;
        s.finish()?;
        return Err(ScanError::at(open, REASON_NOT_AN_OBJECT));
    }
    s.i += 1;
    s.skip_ws();
    if s.peek() == Some(b'}') {
        let close = s.i;
        s.i += 1;
        s.finish()?;
        return Ok(ObjectSpan {
            open,
            close,
            is_empty: true,
        });
    }
    loop {
        s.skip_ws();
        let key_start = s.i;
        if s.peek() != Some(b'"') {
            return Err(s.err(if s.peek().is_none() {
                "unexpected end of input: expected a string key"
            } else {
                "expected a string key"
            }));
        }
        let key_has_escape = s.string()?;
        let key_end = s.i;
        s.skip_ws();
        s.expect(b':', "expected ':' after object key")?;
        s.skip_ws();
        let value_start = s.i;
        let kind = s.value(1)?;
        let value_end = s.i;
        visit(&Member {
            key_raw: body
                .get(key_start + 1..key_end.saturating_sub(1))
                .unwrap_or(&[]),
            key_has_escape,
            value: value_start..value_end,
            value_raw: body.get(value_start..value_end).unwrap_or(&[]),
            kind,
            member: key_start..value_end,
        });
        s.skip_ws();
        match s.peek() {
            Some(b',') => s.i += 1,
            Some(b'}') => {
                let close = s.i;
                s.i += 1;
                s.finish()?;
                return Ok(ObjectSpan {
                    open,
                    close,
                    is_empty: false,
                });
            }
            Some(_) => return Err(s.err("expected ',' or '}' in object")),
            None => return Err(s.err("unexpected end of input: unterminated object")),
        }
    }
}

/// Validates that `body` is exactly one JSON value of any type (surrounded by
/// optional whitespace) and returns its type. Useful for checking raw JSON
/// snippets (e.g. configured default params) before splicing them in.
///
/// # Errors
/// The first RFC 8259 violation, or nesting deeper than [`MAX_DEPTH`].
#[cfg(test)]
pub fn validate_value(body: &[u8]) -> Result<ValueKind, ScanError> {
    let mut s = Scanner { b: body, i: 0 };
    s.skip_ws();
    let kind = s.value(0)?;
    s.finish()?;
    Ok(kind)
}

// ---------------------------------------------------------------------------
// Internals
// ---------------------------------------------------------------------------

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn err(&self, reason: &'static str) -> ScanError {
        ScanError::at(self.i, reason)
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    fn expect(&mut self, c: u8, reason: &'static str) -> Result<(), ScanError> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.err(reason))
        }
    }

    /// After the top-level value: only whitespace may follow.
    fn finish(&mut self) -> Result<(), ScanError> {
        self.skip_ws();
        if self.i < self.b.len() {
            Err(self.err("trailing characters after the JSON value"))
        } else {
            Ok(())
        }
    }

    /// Any value at `self.i`; `outer_depth` containers already enclose it.
    fn value(&mut self, outer_depth: usize) -> Result<ValueKind, ScanError> {
        match self.peek() {
            Some(b'{') => {
                self.containers(outer_depth)?;
                Ok(ValueKind::Object)
            }
            Some(b'[') => {
                self.containers(outer_depth)?;
                Ok(ValueKind::Array)
            }
            _ => self.scalar(),
        }
    }

    fn scalar(&mut self) -> Result<ValueKind, ScanError> {
        match self.peek() {
            Some(b'"') => self.string().map(|_| ValueKind::String),
            Some(b'-' | b'0'..=b'9') => self.number().map(|()| ValueKind::Number),
            Some(b't') => self.literal(b"true").map(|()| ValueKind::Bool),
            Some(b'f') => self.literal(b"false").map(|()| ValueKind::Bool),
            Some(b'n') => self.literal(b"null").map(|()| ValueKind::Null),
            Some(_) => Err(self.err("expected a JSON value")),
            None => Err(self.err("unexpected end of input: expected a JSON value")),
        }
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<(), ScanError> {
        if self.b.get(self.i..self.i + word.len()) == Some(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(self.err("invalid literal (expected true, false or null)"))
        }
    }

    fn digits(&mut self) -> usize {
        let n = self
            .b
            .get(self.i..)
            .map_or(0, |r| r.iter().take_while(|c| c.is_ascii_digit()).count());
        self.i += n;
        n
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Result<(), ScanError> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.err("invalid number: expected a digit")),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(self.err("invalid number: expected a digit after '.'"));
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(self.err("invalid number: expected a digit in the exponent"));
            }
        }
        Ok(())
    }

    /// String at `self.i` (the opening quote). Leaves `self.i` after the
    /// closing quote; returns whether the string contains escapes.
    fn string(&mut self) -> Result<bool, ScanError> {
        let open = self.i;
        let mut i = open + 1;
        let mut has_escape = false;
        loop {
            let Some(at) = find_string_special(self.b, i) else {
                self.i = self.b.len();
                return Err(ScanError::at(open, "unterminated string"));
            };
            i = at;
            match self.b.get(i).copied() {
                Some(b'"') => {
                    self.i = i + 1;
                    return Ok(has_escape);
                }
                Some(b'\\') => {
                    has_escape = true;
                    let (_, len) = decode_escape(self.b, i)?;
                    i += len;
                }
                Some(c) if c < 0x20 => {
                    return Err(ScanError::at(i, "unescaped control character in string"));
                }
                Some(_) => {
                    i += utf8_char_len(self.b, i)
                        .ok_or(ScanError::at(i, "invalid UTF-8 in string"))?;
                }
                None => return Err(ScanError::at(open, "unterminated string")),
            }
        }
    }

    /// Iteratively validates the object/array starting at `self.i`.
    fn containers(&mut self, outer_depth: usize) -> Result<(), ScanError> {
        // Bit k of `stack` is 1 when the k-th open container (0 = outermost of
        // this call) is an object. `depth` never exceeds MAX_DEPTH (= 128).
        let mut stack: u128 = 0;
        let mut depth: usize = 0;
        let mut first = true;
        self.open(&mut stack, &mut depth, outer_depth)?;
        'items: loop {
            // At the start of an item slot: after '{', '[' or ','.
            self.skip_ws();
            let in_object = top_is_object(stack, depth);
            let closer = if in_object { b'}' } else { b']' };
            let closed_empty = first && self.peek() == Some(closer);
            if closed_empty {
                self.i += 1;
                depth = depth.saturating_sub(1);
            } else {
                if in_object {
                    if self.peek() != Some(b'"') {
                        return Err(self.err(if self.peek().is_none() {
                            "unexpected end of input: expected a string key"
                        } else {
                            "expected a string key"
                        }));
                    }
                    self.string()?;
                    self.skip_ws();
                    self.expect(b':', "expected ':' after object key")?;
                    self.skip_ws();
                }
                if let Some(b'{' | b'[') = self.peek() {
                    self.open(&mut stack, &mut depth, outer_depth)?;
                    first = true;
                    continue 'items;
                }
                self.scalar()?;
            }
            // After a complete value: a separator, or close as many containers as possible.
            loop {
                if depth == 0 {
                    return Ok(());
                }
                self.skip_ws();
                let closer = if top_is_object(stack, depth) {
                    b'}'
                } else {
                    b']'
                };
                match self.peek() {
                    Some(b',') => {
                        self.i += 1;
                        first = false;
                        continue 'items;
                    }
                    Some(c) if c == closer => {
                        self.i += 1;
                        depth = depth.saturating_sub(1);
                    }
                    Some(_) => {
                        return Err(self.err(if closer == b'}' {
                            "expected ',' or '}' in object"
                        } else {
                            "expected ',' or ']' in array"
                        }))
                    }
                    None => {
                        return Err(self.err(if closer == b'}' {
                            "unexpected end of input: unterminated object"
                        } else {
                            "unexpected end of input: unterminated array"
                        }))
                    }
                }
            }
        }
    }

    /// Pushes the container whose bracket is at `self.i`.
    fn open(&mut self, stack: &mut u128, depth: &mut usize, outer: usize) -> Result<(), ScanError> {
        if outer.saturating_add(*depth) >= MAX_DEPTH {
            return Err(self.err(REASON_TOO_DEEP));
        }
        let bit = 1u128 << (*depth & 127);
        if self.peek() == Some(b'{') {
            *stack |= bit;
        } else {
            *stack &= !bit;
        }
        *depth += 1;
        self.i += 1;
        Ok(())
    }
}

fn top_is_object(stack: u128, depth: usize) -> bool {
    depth
        .checked_sub(1)
        .is_some_and(|d| (stack >> (d & 127)) & 1 == 1)
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
pub(super) mod tests {
    use super::*;
    use serde_json::Value;
    use std::collections::HashMap;

    fn collect(body: &[u8]) -> Result<(ObjectSpan, Vec<Member<'_>>), ScanError> {
        let mut v = Vec::new();
        let span = scan_object(body, |m| v.push(m.clone()))?;
        Ok((span, v))
    }

    /// serde_json's verdict; `None` where it is stricter than RFC 8259 grammar
    /// on purpose (number range, its own recursion limit).
    fn serde_valid(body: &[u8]) -> Option<bool> {
        match serde_json::from_slice::<Value>(body) {
            Ok(_) => Some(true),
            Err(e) if e.to_string().contains("number out of range") => None,
            Err(e) if e.to_string().contains("recursion limit") => None,
            Err(_) => Some(false),
        }
    }

    /// Checks validate_value/scan_object consistency and agreement with serde_json.
    /// Returns true when the body is a valid object.
    fn check(body: &[u8]) -> bool {
        let any = validate_value(body);
        let obj = collect(body);
        match (&any, &obj) {
            (Ok(ValueKind::Object), Ok(_)) => {}
            (Ok(_), Err(e)) if e.is_not_object() => {}
            (Err(a), Err(b)) if !b.is_not_object() => assert_eq!(a, b, "{:?}", lossy(body)),
            other => panic!("inconsistent {other:?} for {:?}", lossy(body)),
        }
        if let Some(sv) = serde_valid(body) {
            assert_eq!(any.is_ok(), sv, "body {:?}: ours {:?}", lossy(body), any);
        }
        if obj.is_ok() && serde_valid(body) == Some(true) {
            cross_check_members(body);
            true
        } else {
            false
        }
    }

    fn lossy(b: &[u8]) -> String {
        String::from_utf8_lossy(b).into_owned()
    }

    fn cross_check_members(body: &[u8]) {
        let (span, ms) = collect(body).unwrap();
        let v: Value = serde_json::from_slice(body).unwrap();
        let map = v.as_object().unwrap();
        assert_eq!(body[span.open], b'{');
        assert_eq!(body[span.close], b'}');
        assert!(body[..span.open].iter().all(u8::is_ascii_whitespace));
        assert!(body[span.close + 1..].iter().all(u8::is_ascii_whitespace));
        assert_eq!(span.is_empty, ms.is_empty());
        let mut last: HashMap<String, Value> = HashMap::new();
        for m in &ms {
            assert_eq!(&body[m.value.clone()], m.value_raw);
            assert_eq!(body[m.member.start], b'"');
            assert_eq!(m.member.end, m.value.end);
            let key_tok = &body[m.member.start..m.member.start + m.key_raw.len() + 2];
            assert_eq!(&key_tok[1..key_tok.len() - 1], m.key_raw);
            assert_eq!(m.key_has_escape, m.key_raw.contains(&b'\\'));
            let key_serde: String = serde_json::from_slice(key_tok).unwrap();
            let key = m.key().unwrap().into_owned();
            assert_eq!(key, key_serde);
            assert_eq!(decode_string(key_tok).unwrap(), key_serde);
            assert!(m.key_is(&key));
            assert!(!m.key_is(&format!("{key}x")));
            let val: Value = serde_json::from_slice(m.value_raw).unwrap();
            let expected_kind = match &val {
                Value::String(_) => ValueKind::String,
                Value::Number(_) => ValueKind::Number,
                Value::Bool(_) => ValueKind::Bool,
                Value::Null => ValueKind::Null,
                Value::Object(_) => ValueKind::Object,
                Value::Array(_) => ValueKind::Array,
            };
            assert_eq!(m.kind, expected_kind);
            assert_eq!(m.as_str().as_deref(), val.as_str());
            assert_eq!(m.as_bool(), val.as_bool());
            last.insert(key, val);
        }
        assert_eq!(last.len(), map.len());
        for (k, v) in map {
            assert_eq!(&last[k], v, "key {k}");
        }
    }

    const VALID: &[&str] = &[
        "{}",
        " { } ",
        "\t\r\n{\t\r\n}\t\r\n",
        r#"{"a":1}"#,
        r#"{"a":[1,2,{"b":null}],"c":"d"}"#,
        " \t\n\r {\"a\" : true , \"b\" :false,\"c\":null} \n",
        r#"{"":""}"#,
        r#"{"a":-0,"b":-0.0e+5,"c":1E-7,"d":0.5,"e":123456789012345678901234567890,"f":1e308}"#,
        r#"{"a":"\u00e9\ud83d\ude00\"\\\/\b\f\n\r\t","b":"\uFFFF\u0000\u001f"}"#,
        "{\"a\":\"h\u{e9}llo \u{1F600} \u{4E2D}\u{6587} \u{2028}\u{7f}\"}",
        r#"{"mo\u0064el":"x"}"#,
        r#"{"a":{"b":{"c":[[],[{}],{"d":[true,false,null]}]}}}"#,
        r#"{"a":1,"a":2,"a":{"x":3}}"#,
        r#"{"a":[ ],"b":{ },"c":[ 1 , 2 ] , "d" : { "e" : "f" } }"#,
        r#"{"long":"abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz","k\"e\\y":"v"}"#,
        "[1,2]",
        "\"str\"",
        "1",
        "-1.5e3",
        "true",
        "false",
        " null ",
        "[]",
        "[[[]],{}]",
    ];

    const INVALID: &[&[u8]] = &[
        b"",
        b"   ",
        b"{",
        b"}",
        b"{\"a\"}",
        b"{\"a\":}",
        b"{\"a\":1,}",
        b"{,}",
        b"{\"a\":1 \"b\":2}",
        b"{\"a\" 1}",
        b"{a:1}",
        b"{'a':1}",
        b"{\"a\":01}",
        b"{\"a\":-01}",
        b"{\"a\":1.}",
        b"{\"a\":.5}",
        b"{\"a\":-}",
        b"{\"a\":1e}",
        b"{\"a\":1e+}",
        b"{\"a\":+1}",
        b"{\"a\":0x10}",
        b"{\"a\":NaN}",
        b"{\"a\":Infinity}",
        b"{\"a\":-Infinity}",
        b"{\"a\":tru}",
        b"{\"a\":True}",
        b"{\"a\":nul}",
        b"{\"a\":truee}",
        b"{\"a\":\"\\x\"}",
        b"{\"a\":\"\\u12\"}",
        b"{\"a\":\"\\u12G4\"}",
        b"{\"a\":\"\\ud800\"}",
        b"{\"a\":\"\\udc00\"}",
        b"{\"a\":\"\\ud800\\u0041\"}",
        b"{\"a\":\"\\ud800x\"}",
        b"{\"a\":\"\\ud800\\n\"}",
        b"{\"a\":\"tab\there\"}",
        b"{\"a\":\"nl\n\"}",
        b"{\"a\":\"\x00\"}",
        b"{\"a\":\"\x1f\"}",
        b"{\"a\":\"unterminated}",
        b"{\"a\":\"ends in backslash\\",
        b"{\"a\":[1,2}",
        b"{\"a\":[1,2]]}",
        b"{\"a\":{\"b\":1]}",
        b"{\"a\":1}}",
        b"{\"a\":1} x",
        b"{\"a\":1}{\"b\":2}",
        b"{\"a\":1}\x00",
        b"\xef\xbb\xbf{\"a\":1}",
        b"{\"a\":\"\xff\"}",
        b"{\"a\":\"\xc0\x80\"}",
        b"{\"a\":\"\xc1\xbf\"}",
        b"{\"a\":\"\xe0\x80\x80\"}",
        b"{\"a\":\"\xed\xa0\x80\"}",
        b"{\"a\":\"\xf4\x90\x80\x80\"}",
        b"{\"a\":\"\xf5\x80\x80\x80\"}",
        b"{\"a\":\"\xe4\xb8\"}",
        b"{\"a\":\"\x80\"}",
        b"{\"\xff\":1}",
        b"{\"a\":1}\xc3\xa9",
        b"{\"a\"\x00:1}",
        b"{\"a\":[1,]}",
        b"{\"a\":[,1]}",
        b"{\"a\":[1 2]}",
        b"{\"a\":{\"b\"}}",
        b"{\"a\":{,}}",
        b"{\"a\":{\"b\":1,}}",
        b"{\"a\":1,\"b\"",
        b"{\"a\":1,",
        b"{\"a\":[",
        b"{\"a\":[{",
        b"{\"a\":\xc3\xa9}",
        b"[1,]",
        b"[,1]",
        b"[1 2]",
        b"\"abc",
        b"1 2",
        b"-",
        b"\x0b{}",
        b"{}\x0c",
    ];

    #[test]
    fn valid_table_agrees_with_serde() {
        for case in VALID {
            let body = case.as_bytes();
            assert!(
                validate_value(body).is_ok(),
                "{case:?}: {:?}",
                validate_value(body)
            );
            assert_eq!(serde_valid(body), Some(true), "{case:?}");
            check(body);
        }
    }

    #[test]
    fn invalid_table_agrees_with_serde() {
        for case in INVALID {
            assert!(validate_value(case).is_err(), "accepted {:?}", lossy(case));
            let e = scan_object(case, |_| {}).unwrap_err();
            assert!(!e.is_not_object(), "{:?}", lossy(case));
            assert_eq!(
                serde_valid(case),
                Some(false),
                "serde accepted {:?}",
                lossy(case)
            );
            check(case);
        }
    }

    #[test]
    fn non_objects_are_reported_as_such() {
        for case in ["[1,2]", "\"str\"", "1", " true ", "null", "[]"] {
            let e = scan_object(case.as_bytes(), |_| {}).unwrap_err();
            assert!(e.is_not_object(), "{case}");
            assert_eq!(e.reason, REASON_NOT_AN_OBJECT);
            assert_eq!(e.offset, case.len() - case.trim_start().len());
        }
        // Malformed non-objects are "invalid JSON", not "not an object".
        for case in ["[1,", "\"abc", "tru", "[1]x"] {
            assert!(!scan_object(case.as_bytes(), |_| {})
                .unwrap_err()
                .is_not_object());
        }
    }

    #[test]
    fn error_offsets_and_display() {
        let e = scan_object(b"{\"a\":1,}", |_| {}).unwrap_err();
        assert_eq!(e.offset, 7);
        assert_eq!(
            e.to_string(),
            "invalid JSON at byte 7: expected a string key"
        );
        let e = scan_object(b"{\"a\":1} x", |_| {}).unwrap_err();
        assert_eq!(e.offset, 8);
        assert_eq!(e.reason, "trailing characters after the JSON value");
        let e = scan_object(b"{\"a\":\"x\ty\"}", |_| {}).unwrap_err();
        assert_eq!(e.offset, 7);
        let e = scan_object(b"{\"a\":\"abc", |_| {}).unwrap_err();
        assert_eq!((e.offset, e.reason), (5, "unterminated string"));
        let e = scan_object(b"", |_| {}).unwrap_err();
        assert_eq!(e.offset, 0);
        let e = scan_object(b"{\"a\":[1,2}", |_| {}).unwrap_err();
        assert_eq!((e.offset, e.reason), (9, "expected ',' or ']' in array"));
    }

    #[test]
    fn members_have_exact_ranges() {
        let body = br#" { "model" : "gpt-4o" , "n":2,"x":{"model":"no"},"s":[1,"]"] } "#;
        let (span, ms) = collect(body).unwrap();
        assert_eq!(
            span,
            ObjectSpan {
                open: 1,
                close: body.len() - 2,
                is_empty: false
            }
        );
        assert_eq!(ms.len(), 4);
        assert_eq!(ms[0].key_raw, b"model");
        assert_eq!(&body[ms[0].value.clone()], b"\"gpt-4o\"");
        assert_eq!(&body[ms[0].member.clone()], b"\"model\" : \"gpt-4o\"");
        assert_eq!(ms[0].kind, ValueKind::String);
        assert_eq!(ms[1].value_raw, b"2");
        assert_eq!(ms[1].kind, ValueKind::Number);
        assert_eq!(ms[2].value_raw, br#"{"model":"no"}"#);
        assert_eq!(ms[2].kind, ValueKind::Object);
        assert_eq!(ms[3].value_raw, br#"[1,"]"]"#);
        assert_eq!(ms[3].kind, ValueKind::Array);
        let (span, ms) = collect(b"{ }").unwrap();
        assert_eq!(
            span,
            ObjectSpan {
                open: 0,
                close: 2,
                is_empty: true
            }
        );
        assert!(ms.is_empty());
    }

    #[test]
    fn visit_sees_only_top_level_members() {
        let body = br#"{"messages":[{"role":"user","model":"a"}],"metadata":{"model":"b","stream":true},"model":"c"}"#;
        let (_, ms) = collect(body).unwrap();
        let keys: Vec<_> = ms.iter().map(|m| m.key().unwrap().into_owned()).collect();
        assert_eq!(keys, ["messages", "metadata", "model"]);
    }

    #[test]
    fn key_is_handles_escapes() {
        let cases: &[(&[u8], &str, bool)] = &[
            (br#"{"mo\u0064el":1}"#, "model", true),
            (br#"{"\u006d\u006F\u0064\u0065\u006c":1}"#, "model", true),
            (br#"{"model\u0000":1}"#, "model", false),
            (br#"{"mode":1}"#, "model", false),
            (br#"{"models":1}"#, "model", false),
            (br#"{"Model":1}"#, "model", false),
            (br#"{"a\"b":1}"#, "a\"b", true),
            (br#"{"a\\b":1}"#, "a\\b", true),
            (br#"{"\u00e9":1}"#, "\u{e9}", true),
            ("{\"\u{e9}\":1}".as_bytes(), "\u{e9}", true),
            (br#"{"\ud83d\ude00x":1}"#, "\u{1F600}x", true),
            (br#"{"\ud83d\ude00":1}"#, "\u{1F600}x", false),
            (br#"{"\/":1}"#, "/", true),
            (br#"{"":1}"#, "", true),
            (br#"{"":1}"#, "a", false),
        ];
        for (body, name, expected) in cases {
            let (_, ms) = collect(body).unwrap();
            assert_eq!(
                ms[0].key_is(name),
                *expected,
                "{:?} vs {name:?}",
                lossy(body)
            );
        }
    }

    #[test]
    fn depth_limit() {
        let nested = |n: usize| format!("{{\"a\":{}{}}}", "[".repeat(n), "]".repeat(n));
        // Top-level object + 127 arrays = 128 levels: accepted.
        assert!(scan_object(nested(MAX_DEPTH - 1).as_bytes(), |_| {}).is_ok());
        let e = scan_object(nested(MAX_DEPTH).as_bytes(), |_| {}).unwrap_err();
        assert_eq!(e.reason, REASON_TOO_DEEP);
        assert_eq!(e.offset, 5 + MAX_DEPTH - 1);
        let arrays = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(validate_value(arrays(MAX_DEPTH).as_bytes()).is_ok());
        assert_eq!(
            validate_value(arrays(MAX_DEPTH + 1).as_bytes())
                .unwrap_err()
                .reason,
            REASON_TOO_DEEP
        );
        // Mixed objects/arrays, and closing brackets must match the right kind.
        let mixed = format!("{{{}\"k\":1{}}}", "\"k\":[{".repeat(40), "}]".repeat(40));
        assert!(
            scan_object(mixed.as_bytes(), |_| {}).is_ok(),
            "{:?}",
            scan_object(mixed.as_bytes(), |_| {})
        );
        assert_eq!(serde_valid(mixed.as_bytes()), Some(true));
        let wrong = format!("{{{}\"k\":1{}}}", "\"k\":[{".repeat(40), "]}".repeat(40));
        assert!(scan_object(wrong.as_bytes(), |_| {}).is_err());
        // Hostile depth: no recursion, fails fast.
        let hostile = format!("{{\"a\":{}", "[".repeat(1_000_000));
        assert_eq!(
            scan_object(hostile.as_bytes(), |_| {}).unwrap_err().reason,
            REASON_TOO_DEEP
        );
        let hostile = "[{\"a\":".repeat(200_000);
        assert_eq!(
            validate_value(hostile.as_bytes()).unwrap_err().reason,
            REASON_TOO_DEEP
        );
    }

    #[test]
    fn every_byte_at_every_alignment_inside_strings() {
        // Exercises the 8-byte fast path and its byte-wise tail.
        for b in 0..=255u8 {
            for pre in 0..20 {
                for post in [0usize, 3, 11] {
                    let mut body = b"{\"k\":\"".to_vec();
                    body.extend(std::iter::repeat_n(b'a', pre));
                    body.push(b);
                    body.extend(std::iter::repeat_n(b'z', post));
                    body.extend_from_slice(b"\"}");
                    check(&body);
                    // Same byte in a key.
                    let mut body = b"{\"".to_vec();
                    body.extend(std::iter::repeat_n(b'a', pre));
                    body.push(b);
                    body.extend(std::iter::repeat_n(b'z', post));
                    body.extend_from_slice(b"\":0}");
                    check(&body);
                }
            }
        }
    }

    #[test]
    fn utf8_sequences_agree_with_std() {
        let probe = |seq: &[u8]| {
            let mut body = b"{\"k\":\"ab".to_vec();
            body.extend_from_slice(seq);
            body.extend_from_slice(b"cd\"}");
            let ours = scan_object(&body, |_| {}).is_ok();
            let std_ok = std::str::from_utf8(seq).is_ok()
                && !seq.iter().any(|&c| c < 0x20 || c == b'"' || c == b'\\');
            assert_eq!(ours, std_ok, "{seq:x?}");
            assert_eq!(serde_valid(&body), Some(ours), "{seq:x?}");
        };
        for b0 in 0x80..=0xFFu8 {
            for b1 in 0..=0xFFu8 {
                probe(&[b0, b1]);
            }
        }
        let edges = [0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0];
        for b0 in 0xE0..=0xF4u8 {
            for &b1 in &edges {
                for &b2 in &edges {
                    probe(&[b0, b1, b2]);
                    for &b3 in &edges {
                        probe(&[b0, b1, b2, b3]);
                    }
                }
            }
        }
    }

    #[test]
    fn escapes_at_every_alignment() {
        let escapes: &[&str] = &[
            r#"\""#,
            r"\\",
            r"\/",
            r"\b",
            r"\f",
            r"\n",
            r"\r",
            r"\t",
            r"\u0041",
            r"\uD83D\uDE00",
            r"\u",
            r"\uD83D",
            r"\uDE00",
            r"\uD83D\n",
            r"\a",
            r"\U0041",
            r"\u004",
            "\\",
        ];
        for esc in escapes {
            for pre in 0..17 {
                let body = format!("{{\"k\":\"{}{}xyz\",\"n\":1}}", "a".repeat(pre), esc);
                check(body.as_bytes());
            }
        }
    }

    /// Tiny deterministic PRNG (xorshift64*), so failures reproduce.
    pub(crate) struct Rng(pub(crate) u64);
    impl Rng {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        pub(crate) fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    pub(crate) const SEED_BODIES: &[&str] = &[
        r#"{"model":"gpt-4o","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Caf\u00e9? \"quoted\" \\ back\nslash \ud83d\ude00 and h\u00e9llo 中文 😀"}],"temperature":0.7,"max_tokens":256,"stream":true,"stop":["\n\n","END"],"logit_bias":{"50256":-100},"user":null,"n":1,"top_p":1e-3}"#,
        "{\n  \"model\" : \"text-embedding-3-small\" ,\n  \"input\" : [ \"a\", \"b\" ],\n  \"dimensions\" : 256,\n  \"encoding_format\":\"float\"\n}\n",
        r#"{"model":"claude","stream":false,"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}],"tool_choice":"auto","metadata":{"model":"nested"}}"#,
        r#"{"mo\u0064el":"x","model":"y","a":[[[{"b":[-0.5E+10,0,true,false,null]}]]],"":""}"#,
        r#"{}"#,
        r#"[{"model":"x"},1,"two",null]"#,
    ];

    pub(crate) fn mutate(rng: &mut Rng, body: &mut Vec<u8>) {
        const ALPHABET: &[u8] =
            b"{}[]\",:\\ \t\n\r0123456789-+.eEtrufalsn/ubx\x00\x1f\x7f\xc3\xa9\xff\xed\xa0\xf0\x9f";
        let pick = |rng: &mut Rng| {
            if rng.below(8) == 0 {
                (rng.next() & 0xFF) as u8
            } else {
                ALPHABET[rng.below(ALPHABET.len())]
            }
        };
        let len = body.len();
        match rng.below(7) {
            0 | 1 if len > 0 => {
                let i = rng.below(len);
                body[i] = pick(rng);
            }
            2 if len > 0 => {
                body.remove(rng.below(len));
            }
            3 => {
                let c = pick(rng);
                body.insert(rng.below(len + 1), c);
            }
            4 if len > 1 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(8)).min(len);
                body.drain(a..b);
            }
            5 if len > 1 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(16)).min(len);
                let chunk = body[a..b].to_vec();
                let at = rng.below(len + 1);
                body.splice(at..at, chunk);
            }
            _ if len > 0 => body.truncate(rng.below(len)),
            _ => body.push(pick(rng)),
        }
    }

    #[test]
    fn mutated_bodies_agree_with_serde() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let (mut valid_objects, mut invalid, mut total) = (0, 0, 0);
        for round in 0..3000 {
            let seed = SEED_BODIES[round % SEED_BODIES.len()];
            let mut body = seed.as_bytes().to_vec();
            for _ in 0..=rng.below(3) {
                mutate(&mut rng, &mut body);
            }
            total += 1;
            if check(&body) {
                valid_objects += 1;
            } else if validate_value(&body).is_err() {
                invalid += 1;
            }
        }
        // Both outcomes must be well represented for the comparison to mean anything.
        assert!(
            valid_objects > 200,
            "only {valid_objects}/{total} valid objects"
        );
        assert!(invalid > 1000, "only {invalid}/{total} invalid");
    }

    #[test]
    fn seed_bodies_are_valid() {
        for seed in SEED_BODIES {
            assert!(validate_value(seed.as_bytes()).is_ok(), "{seed}");
            check(seed.as_bytes());
        }
    }
}
