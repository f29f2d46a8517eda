//! What routing needs from a request body beyond its model: the request's tags and an input
//! token estimate.
//!
//! Why this exists: tag routing (`enable_tag_filtering`), rpm/tpm caps and context-window
//! checks filter deployments per request. The facts come from the same single validating scan
//! that finds `model` ([`scan_request_with_facts`] is
//! [`scan_request`](super::request_scan::scan_request) plus a note of where the
//! top-level `tags` and `metadata` members are); only the `metadata` object, when present, is
//! scanned a second time, and only to find its `tags`.
//!
//! * Tags: top-level `tags` and `metadata.tags` (LiteLLM's proxy merges the first into the
//!   second), in that order, deduplicated; each an array of strings (non-strings are skipped) or
//!   a single string. At most [`MAX_TAGS`] tags of at most [`MAX_TAG_BYTES`] bytes are kept.
//! * Input tokens: `ceil(body bytes / 4)`. OpenAI's rule of thumb is ~4 bytes of English per
//!   token; counting the whole body (JSON syntax, roles, parameters) errs high, which is the safe
//!   side for tpm caps. It is no tokenizer: base64 images and non-English text skew it, which is
//!   one reason context-window filtering only runs with `enable_pre_call_checks` (as in LiteLLM).

use super::json_scan::{scan_object, Member, ScanError, ValueKind};
use super::json_string::decode_string;
use super::request_scan::{scan_request_members, RequestScan};

/// Tags kept per request (matching is O(request tags × deployment tags) per candidate).
pub const MAX_TAGS: usize = 32;
/// Longer tags are ignored.
pub const MAX_TAG_BYTES: usize = 256;

/// The routing facts of one request body (owned: they outlive the body buffer).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BodyFacts {
    pub tags: Vec<String>,
    pub input_tokens: u64,
    /// `max_completion_tokens`, else `max_tokens`, when a non-negative integer (the tpm
    /// reservation's output part).
    pub max_output_tokens: Option<u64>,
}

/// A member's value as a non-negative integer.
fn whole(m: Option<&Member<'_>>) -> Option<u64> {
    let m = m.filter(|m| m.kind == ValueKind::Number)?;
    std::str::from_utf8(m.value_raw).ok()?.parse::<u64>().ok()
}

/// `ceil(body_len / 4)`: see the module docs.
pub fn estimate_input_tokens(body_len: usize) -> u64 {
    (body_len as u64).div_ceil(4)
}

/// [`scan_request`](super::request_scan::scan_request) in the same single pass, plus the
/// request's [`BodyFacts`].
///
/// # Errors
/// Same as [`scan_request`](super::request_scan::scan_request).
pub fn scan_request_with_facts<'a>(body: &'a [u8], wanted: &[&str]) -> Result<(RequestScan<'a>, BodyFacts), ScanError> {
    let (scan, members) = scan_request_members(body, wanted)?;
    let facts = BodyFacts {
        tags: request_tags(members.tags.as_ref(), members.metadata.as_ref()),
        input_tokens: estimate_input_tokens(body.len()),
        max_output_tokens: whole(members.max_completion_tokens.as_ref()).or_else(|| whole(members.max_tokens.as_ref())),
    };
    Ok((scan, facts))
}

/// Facts of a body that was already scanned some other way (costs one more full scan).
///
/// # Errors
/// Same as [`scan_request`](super::request_scan::scan_request).
#[cfg(test)]
pub fn body_facts(body: &[u8]) -> Result<BodyFacts, ScanError> {
    scan_request_with_facts(body, &[]).map(|(_, facts)| facts)
}

/// Tags from the top-level `tags` member, then from `metadata.tags`.
pub fn request_tags(tags: Option<&Member<'_>>, metadata: Option<&Member<'_>>) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(m) = tags {
        push_tags(m.kind, m.value_raw, &mut out);
    }
    if let Some(meta) = metadata.filter(|m| m.kind == ValueKind::Object) {
        let mut inner: Option<(ValueKind, &[u8])> = None;
        // The member was validated by the outer scan, so this cannot fail.
        let _ = scan_object(meta.value_raw, |m| {
            if inner.is_none() && m.key_is("tags") {
                inner = Some((m.kind, m.value_raw));
            }
        });
        if let Some((kind, raw)) = inner {
            push_tags(kind, raw, &mut out);
        }
    }
    out
}

fn push_tags(kind: ValueKind, raw: &[u8], out: &mut Vec<String>) {
    match kind {
        ValueKind::String => push_tag(raw, out),
        ValueKind::Array => {
            for item in string_items(raw) {
                push_tag(item, out);
            }
        }
        _ => {}
    }
}

fn push_tag(token: &[u8], out: &mut Vec<String>) {
    if out.len() >= MAX_TAGS || token.len() > MAX_TAG_BYTES + 2 {
        return;
    }
    if let Ok(tag) = decode_string(token) {
        if !tag.is_empty() && tag.len() <= MAX_TAG_BYTES && !out.iter().any(|t| t == tag.as_ref()) {
            out.push(tag.into_owned());
        }
    }
}

/// The string elements (as tokens, quotes included) of a validated JSON array; nested values
/// and non-strings are skipped.
fn string_items(array: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut depth = 0usize;
    let mut i = 0usize;
    std::iter::from_fn(move || {
        while let Some(&b) = array.get(i) {
            match b {
                b'[' | b'{' => depth += 1,
                b']' | b'}' => depth = depth.saturating_sub(1),
                b'"' => {
                    let start = i;
                    let end = string_end(array, i)?;
                    i = end;
                    if depth == 1 {
                        return array.get(start..end);
                    }
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
        None
    })
}

/// Index just past the string token starting at `open`.
fn string_end(b: &[u8], open: usize) -> Option<usize> {
    let mut i = open + 1;
    loop {
        match b.get(i)? {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::request_scan::scan_request;
    use super::*;

    fn facts(body: &str) -> BodyFacts {
        match body_facts(body.as_bytes()) {
            Ok(f) => f,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn max_output_tokens_prefers_max_completion_tokens_and_needs_an_integer() {
        assert_eq!(facts(r#"{"max_tokens":7}"#).max_output_tokens, Some(7));
        assert_eq!(facts(r#"{"max_tokens":7,"max_completion_tokens":9}"#).max_output_tokens, Some(9));
        assert_eq!(facts(r#"{"max_completion_tokens":"9","max_tokens":7}"#).max_output_tokens, Some(7));
        assert_eq!(facts(r#"{"max_tokens":-1}"#).max_output_tokens, None);
        assert_eq!(facts(r#"{"max_tokens":1.5,"x":{"max_tokens":3}}"#).max_output_tokens, None);
        assert_eq!(facts(r#"{"model":"m"}"#).max_output_tokens, None);
    }

    #[test]
    fn tags_from_top_level_and_metadata() {
        let f = facts(r#"{"model":"m","tags":["free","x\"y",3,{"a":["no"]},["no"]],"metadata":{"tags":["paid","free"],"user":"u"}}"#);
        assert_eq!(f.tags, ["free", "x\"y", "paid"]);
        assert_eq!(facts(r#"{"tags":"solo"}"#).tags, ["solo"]);
        assert_eq!(facts(r#"{"metadata":{"tags":"m"}}"#).tags, ["m"]);
        assert!(facts(r#"{"metadata":"tags","tags":null,"x":{"tags":["nested"]}}"#).tags.is_empty());
        assert_eq!(facts(r#"{"tags":["", "é\u00e9"]}"#).tags, ["éé"]);
    }

    #[test]
    fn tags_are_bounded() {
        let many: Vec<String> = (0..100).map(|i| format!("\"t{i}\"")).collect();
        let f = facts(&format!(r#"{{"tags":[{}]}}"#, many.join(",")));
        assert_eq!(f.tags.len(), MAX_TAGS);
        let long = "a".repeat(MAX_TAG_BYTES + 1);
        assert!(facts(&format!(r#"{{"tags":["{long}"]}}"#)).tags.is_empty());
    }

    #[test]
    fn input_estimate_is_bytes_over_four_rounded_up() {
        assert_eq!(estimate_input_tokens(0), 0);
        assert_eq!(estimate_input_tokens(1), 1);
        assert_eq!(estimate_input_tokens(8), 2);
        assert_eq!(estimate_input_tokens(9), 3);
        assert_eq!(facts(r#"{"model":"gpt-4o"}"#).input_tokens, 5);
    }

    #[test]
    fn same_scan_as_scan_request() {
        let bodies: &[&str] = &[
            r#"{"model":"gpt-4o","stream":true,"temperature":1,"tags":["a"],"metadata":{"tags":["b"]}}"#,
            r#"{"mo\u0064el":"a","model":"b","str\u0065am":"yes","stream":false}"#,
            r#"{"messages":[{"model":"nested"}],"metadata":{"model":"meta"},"model":"x","seed":1}"#,
            r#"{}"#,
            r#"{"tags":1,"tags":["second"],"model":42}"#,
        ];
        let wanted = ["temperature", "seed", "model", "tags"];
        for body in bodies {
            let plain = scan_request(body.as_bytes(), &wanted);
            let with = scan_request_with_facts(body.as_bytes(), &wanted).map(|(s, _)| s);
            assert_eq!(plain, with, "{body}");
        }
        for bad in ["[]", "{\"model\":}", "{\"tags\":[\"x\"],}"] {
            assert_eq!(scan_request(bad.as_bytes(), &[]).err(), scan_request_with_facts(bad.as_bytes(), &[]).err());
        }
    }
}
