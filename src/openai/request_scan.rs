//! One-pass extraction of what the router needs from a request body.
//!
//! Why this exists: every request must be validated and routed on its
//! top-level `model` (and `stream`), and default params may only be added for
//! keys the client did not set. Doing all of that in the single validating
//! scan of `json_scan`, without allocating per member, keeps the hot path to
//! one pass over the body. Callers name the keys they care about and get a
//! 64-bit presence mask back instead of a list of keys.

use std::borrow::Cow;

use super::json_scan::{scan_object, Member, ObjectSpan, ScanError};

/// What the router needs from a request body, gathered in one scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestScan<'a> {
    /// FIRST top-level `"model"` member (any value type; check `kind`).
    /// Duplicate keys are legal JSON; see `duplicate_model`.
    pub model: Option<Member<'a>>,
    /// True when `"model"` occurs more than once at top level. Upstreams that
    /// parse with "last wins" would then see a different model than the one
    /// routed on, so the router may want to reject such bodies.
    pub duplicate_model: bool,
    /// Value of the FIRST top-level `"stream"` member when it is a JSON bool.
    pub stream: Option<bool>,
    /// True when `"stream"` occurs more than once at top level.
    pub duplicate_stream: bool,
    /// Braces of the top-level object.
    pub object: ObjectSpan,
    /// Bit `i` is set when `wanted[i]` is a top-level key (only the first 64
    /// names of `wanted` are considered).
    pub present: u64,
}

impl<'a> RequestScan<'a> {
    /// Whether `wanted[index]` was present (false for `index >= 64`).
    #[must_use]
    pub fn has(&self, index: usize) -> bool {
        u32::try_from(index)
            .ok()
            .and_then(|i| 1u64.checked_shl(i))
            .is_some_and(|bit| self.present & bit != 0)
    }

    /// The decoded model name when `"model"` is present and a string.
    pub fn model_name(&self) -> Option<Cow<'a, str>> {
        self.model.as_ref().and_then(Member::as_str)
    }
}

/// Scans a request body once: validates it, finds the top-level `model` and
/// `stream` members (first occurrence wins; nested ones are ignored), and
/// records which of the `wanted` names (max 64) are top-level keys.
///
/// # Errors
/// Same as [`scan_object`].
#[cfg(test)]
pub fn scan_request<'a>(body: &'a [u8], wanted: &[&str]) -> Result<RequestScan<'a>, ScanError> {
    scan_request_members(body, wanted).map(|(scan, _)| scan)
}

/// The top-level members request facts are read from (first occurrence each).
#[derive(Debug, Clone, Default)]
pub(super) struct FactMembers<'a> {
    pub tags: Option<Member<'a>>,
    pub metadata: Option<Member<'a>>,
    pub max_tokens: Option<Member<'a>>,
    pub max_completion_tokens: Option<Member<'a>>,
}

/// [`scan_request`], also keeping the `tags` and `metadata` members: the one visitor both use.
pub(super) fn scan_request_members<'a>(body: &'a [u8], wanted: &[&str]) -> Result<(RequestScan<'a>, FactMembers<'a>), ScanError> {
    let mut model: Option<Member<'a>> = None;
    let mut duplicate_model = false;
    let mut stream = None;
    let mut stream_seen = false;
    let mut duplicate_stream = false;
    let mut present = 0u64;
    let mut facts = FactMembers::default();
    let object = scan_object(body, |m| {
        if m.key_is("model") {
            if model.is_none() {
                model = Some(m.clone());
            } else {
                duplicate_model = true;
            }
        } else if m.key_is("stream") {
            if stream_seen {
                duplicate_stream = true;
            } else {
                stream_seen = true;
                stream = m.as_bool();
            }
        } else if m.key_is("tags") {
            facts.tags.get_or_insert_with(|| m.clone());
        } else if m.key_is("metadata") {
            facts.metadata.get_or_insert_with(|| m.clone());
        } else if m.key_is("max_tokens") {
            facts.max_tokens.get_or_insert_with(|| m.clone());
        } else if m.key_is("max_completion_tokens") {
            facts.max_completion_tokens.get_or_insert_with(|| m.clone());
        }
        for (bit, name) in wanted.iter().take(64).enumerate() {
            if m.key_is(name) {
                present |= 1u64 << (bit & 63);
            }
        }
    })?;
    Ok((RequestScan { model, duplicate_model, stream, duplicate_stream, object, present }, facts))
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    use super::super::json_scan::ValueKind;
    use super::*;

    #[test]
    fn scan_request_finds_top_level_fields_only() {
        let body = br#"{"messages":[{"model":"nested"}],"metadata":{"model":"meta","stream":false},"stream":true,"model":"gpt-4o"}"#;
        let r = scan_request(body, &["temperature", "model", "metadata", "stream"]).unwrap();
        assert_eq!(r.model_name().as_deref(), Some("gpt-4o"));
        assert_eq!(r.stream, Some(true));
        assert!(!r.duplicate_model && !r.duplicate_stream);
        assert_eq!(r.present, 0b1110);
        assert!(!r.has(0) && r.has(1) && r.has(2) && r.has(3) && !r.has(4) && !r.has(1000));
        let m = r.model.unwrap();
        assert_eq!(&body[m.value.clone()], b"\"gpt-4o\"");

        let r = scan_request(br#"{"metadata":{"model":"x"}}"#, &["model"]).unwrap();
        assert!(r.model.is_none());
        assert_eq!(r.present, 0);
        assert_eq!(r.stream, None);
    }

    #[test]
    fn scan_request_escaped_duplicate_and_odd_values() {
        let r = scan_request(
            br#"{"mo\u0064el":"a","model":"b","str\u0065am":"yes","stream":false}"#,
            &["model", "stream"],
        )
        .unwrap();
        assert_eq!(
            r.model_name().as_deref(),
            Some("a"),
            "first occurrence wins"
        );
        assert!(r.model.as_ref().unwrap().key_has_escape);
        assert!(r.duplicate_model);
        assert_eq!(r.stream, None, "first stream is not a bool");
        assert!(r.duplicate_stream);
        assert_eq!(r.present, 0b11);

        let r = scan_request(br#"{"model":42,"stream":"true"}"#, &[]).unwrap();
        assert_eq!(r.model.as_ref().unwrap().kind, ValueKind::Number);
        assert_eq!(r.model_name(), None);
        assert_eq!(r.stream, None);

        let r = scan_request(br#"{"model":"caf\u00e9 \"x\"","stream":false}"#, &[]).unwrap();
        assert_eq!(r.model_name().as_deref(), Some("caf\u{e9} \"x\""));
        assert_eq!(r.stream, Some(false));

        let r = scan_request(b"{}", &["model"]).unwrap();
        assert!(r.object.is_empty && r.model.is_none() && r.present == 0);

        assert!(scan_request(b"[]", &[]).unwrap_err().is_not_object());
        assert!(!scan_request(b"{\"model\":\"x\",}", &[])
            .unwrap_err()
            .is_not_object());
    }

    #[test]
    fn scan_request_caps_wanted_at_64() {
        let names: Vec<String> = (0..70).map(|i| format!("k{i}")).collect();
        let wanted: Vec<&str> = names.iter().map(String::as_str).collect();
        let body = br#"{"k0":1,"k63":1,"k64":1,"k69":1}"#;
        let r = scan_request(body, &wanted).unwrap();
        assert_eq!(r.present, 1 | (1 << 63));
        assert!(r.has(63) && !r.has(64) && !r.has(69));
    }
}
