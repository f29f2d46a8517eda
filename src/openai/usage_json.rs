//! Finds token `usage` objects in a JSON document that arrives in arbitrary pieces, without
//! buffering the document.
//!
//! Why this exists: latency- and usage-based routing need the token counts of every response,
//! but response bodies (and every SSE event's JSON) may be large and are split across body
//! chunks at arbitrary bytes. [`JsonWatch`] is a byte-level state machine that tracks only
//! nesting depth, string state and the last key at depths 1–2. When an object-valued `usage`
//! member starts at the top level, or inside a top-level `message` / `response` object
//! (Anthropic `message_start`, Responses API `response.completed`), it copies just that object
//! (bounded by [`MAX_USAGE_BYTES`]) and parses it with the validating scanner once its braces
//! close. Everything else streams through without being kept.

use super::json_scan::{scan_object, Member, ValueKind};

/// A `usage` object larger than this is ignored (real ones are well under 1 KiB).
pub const MAX_USAGE_BYTES: usize = 4096;
/// Longest key we need to recognise (`response`).
const KEY_CAP: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Usage,
    /// `message` or `response`: a container whose `usage` member counts.
    Parent,
    Other,
}

/// Token counts seen so far; each field keeps its largest value (providers report cumulative
/// counts, e.g. Anthropic's `message_delta.usage.output_tokens`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Counts {
    pub input: Option<u64>,
    pub cache_creation: Option<u64>,
    pub cache_read: Option<u64>,
    pub output: Option<u64>,
    pub total: Option<u64>,
}

impl Counts {
    fn merge_member(&mut self, m: &Member<'_>) {
        if m.kind != ValueKind::Number {
            return;
        }
        let slot = if m.key_is("prompt_tokens") || m.key_is("input_tokens") {
            &mut self.input
        } else if m.key_is("completion_tokens") || m.key_is("output_tokens") {
            &mut self.output
        } else if m.key_is("cache_creation_input_tokens") {
            &mut self.cache_creation
        } else if m.key_is("cache_read_input_tokens") {
            &mut self.cache_read
        } else if m.key_is("total_tokens") {
            &mut self.total
        } else {
            return;
        };
        if let Some(n) = parse_count(m.value_raw) {
            *slot = Some(slot.map_or(n, |old| old.max(n)));
        }
    }

    pub fn any(&self) -> bool {
        self.input.is_some() || self.output.is_some() || self.total.is_some()
    }
}

/// A JSON number as a token count: integers exactly, fractions truncated, negatives ignored.
fn parse_count(raw: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(raw).ok()?;
    if let Ok(n) = text.parse::<u64>() {
        return Some(n);
    }
    let f = text.parse::<f64>().ok()?;
    (f.is_finite() && f >= 0.0).then_some(f as u64)
}

/// The incremental watcher for one JSON document (one response body, or one SSE event's data).
#[derive(Debug, Default)]
pub(super) struct JsonWatch {
    depth: u32,
    in_string: bool,
    escape: bool,
    /// The current string is at depth 1–2 and is being copied into `key`.
    recording: bool,
    key: [u8; KEY_CAP],
    key_len: usize,
    /// Class of the last string completed at depth 1–2 (a key when a `:` follows).
    last_string: Option<Key>,
    /// After a `:` at depth 1–2: the key whose value comes next, and that depth.
    awaiting: Option<(Key, u32)>,
    /// The open depth-2 container is the object value of a top-level `message`/`response`.
    parent_open: bool,
    capture: Vec<u8>,
    capturing: bool,
    /// Depth inside the captured object (the capture ends when it closes).
    capture_depth: u32,
    pub counts: Counts,
}

impl JsonWatch {
    /// Forgets the document structure (a new SSE event starts) but keeps the counts.
    pub fn reset_document(&mut self) {
        let counts = self.counts;
        let mut capture = std::mem::take(&mut self.capture);
        capture.clear();
        *self = JsonWatch { counts, capture, ..JsonWatch::default() };
    }

    #[cfg(test)]
    pub fn capture_capacity(&self) -> usize {
        self.capture.capacity()
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            if self.in_string && !self.recording && !self.capturing && !self.escape {
                // Fast path: skip string contents nobody needs.
                match bytes.get(i..).and_then(|rest| rest.iter().position(|&c| c == b'"' || c == b'\\')) {
                    Some(p) => i += p,
                    None => return,
                }
                let Some(&c) = bytes.get(i) else { return };
                self.step(c);
                i += 1;
                continue;
            }
            self.step(b);
            i += 1;
        }
    }

    fn step(&mut self, b: u8) {
        if self.capturing {
            if self.capture.len() >= MAX_USAGE_BYTES {
                self.capturing = false;
                self.capture.clear();
            } else {
                self.capture.push(b);
            }
        }
        if self.in_string {
            self.string_byte(b);
            return;
        }
        match b {
            b'"' => {
                self.in_string = true;
                self.awaiting = None;
                self.recording = matches!(self.depth, 1 | 2);
                self.key_len = 0;
            }
            b'{' | b'[' => self.open(b == b'{'),
            b'}' | b']' => {
                self.depth = self.depth.saturating_sub(1);
                self.awaiting = None;
                if self.capturing {
                    self.capture_depth = self.capture_depth.saturating_sub(1);
                    if self.capture_depth == 0 {
                        self.capturing = false;
                        self.finish_capture();
                    }
                }
            }
            b':' => {
                if matches!(self.depth, 1 | 2) {
                    self.awaiting = self.last_string.take().map(|k| (k, self.depth));
                }
            }
            b' ' | b'\t' | b'\n' | b'\r' => {}
            _ => self.awaiting = None,
        }
    }

    fn string_byte(&mut self, b: u8) {
        if self.escape {
            self.escape = false;
            return;
        }
        match b {
            b'\\' => {
                self.escape = true;
                if self.recording {
                    // Escaped keys are never the ones we look for.
                    self.recording = false;
                    self.last_string = Some(Key::Other);
                }
            }
            b'"' => {
                self.in_string = false;
                if self.recording {
                    self.recording = false;
                    self.last_string = Some(self.classify());
                }
            }
            _ if self.recording => match self.key.get_mut(self.key_len) {
                Some(slot) => {
                    *slot = b;
                    self.key_len += 1;
                }
                None => {
                    // Too long to be a key we want: decided, and the rest can be skipped fast.
                    self.recording = false;
                    self.last_string = Some(Key::Other);
                }
            },
            _ => {}
        }
    }

    fn classify(&self) -> Key {
        match self.key.get(..self.key_len) {
            Some(b"usage") => Key::Usage,
            Some(b"message" | b"response") => Key::Parent,
            _ => Key::Other,
        }
    }

    fn open(&mut self, object: bool) {
        let before = self.depth;
        let value_of = self.awaiting.take().filter(|&(_, d)| d == before).map(|(k, _)| k);
        self.depth = self.depth.saturating_add(1);
        if self.capturing {
            self.capture_depth = self.capture_depth.saturating_add(1);
            return;
        }
        if object && value_of == Some(Key::Usage) && (before == 1 || (before == 2 && self.parent_open)) {
            self.capturing = true;
            self.capture_depth = 1;
            self.capture.clear();
            self.capture.push(b'{');
        }
        if before == 1 {
            self.parent_open = object && value_of == Some(Key::Parent);
        }
    }

    fn finish_capture(&mut self) {
        let mut counts = self.counts;
        if scan_object(&self.capture, |m| counts.merge_member(m)).is_ok() {
            self.counts = counts;
        }
        self.capture.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(doc: &str) -> Counts {
        let mut w = JsonWatch::default();
        w.feed(doc.as_bytes());
        w.counts
    }

    #[test]
    fn top_level_usage_is_captured() {
        let c = watch(r#"{"id":"x","choices":[{"message":{"content":"hi \"usage\": {"}}],"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17,"prompt_tokens_details":{"cached_tokens":0}}}"#);
        assert_eq!(c.input, Some(12));
        assert_eq!(c.output, Some(5));
        assert_eq!(c.total, Some(17));
    }

    #[test]
    fn nested_usage_only_under_message_or_response() {
        let c = watch(r#"{"type":"message_start","message":{"id":"m","usage":{"input_tokens":25,"output_tokens":1}}}"#);
        assert_eq!((c.input, c.output), (Some(25), Some(1)));
        let c = watch(r#"{"type":"response.completed","response":{"usage":{"input_tokens":7,"output_tokens":9}}}"#);
        assert_eq!((c.input, c.output), (Some(7), Some(9)));
        // A `usage` elsewhere is not the response's usage.
        let c = watch(r#"{"metadata":{"usage":{"input_tokens":99}},"choices":[{"usage":{"input_tokens":98}}]}"#);
        assert!(!c.any());
        // Values named usage, and null usage, are skipped.
        let c = watch(r#"{"note":"usage","usage":null,"x":{"usage":3}}"#);
        assert!(!c.any());
    }

    #[test]
    fn oversized_or_broken_usage_is_ignored() {
        let big = "1,".repeat(MAX_USAGE_BYTES);
        let c = watch(&format!(r#"{{"usage":{{"pad":[{big}0],"prompt_tokens":1}}}}"#));
        assert!(!c.any());
        let c = watch(r#"{"usage":{"prompt_tokens":-3,"completion_tokens":2.7,"total_tokens":"9"}}"#);
        assert_eq!((c.input, c.output, c.total), (None, Some(2), None));
    }

    #[test]
    fn max_merge_and_reset_keeps_counts() {
        let mut w = JsonWatch::default();
        w.feed(br#"{"usage":{"output_tokens":3}}"#);
        w.reset_document();
        w.feed(br#"{"usage":{"output_tokens":10}}"#);
        w.reset_document();
        w.feed(br#"{"usage":{"output_tokens":4}"#);
        assert_eq!(w.counts.output, Some(10));
    }
}
