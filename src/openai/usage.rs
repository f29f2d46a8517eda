//! Token usage of a response, read incrementally from its body chunks without buffering it.
//!
//! Why this exists: usage- and latency-based routing count each deployment's tokens and
//! per-token latency, and the only source of truth is the provider's response — a JSON body or
//! a `text/event-stream` that may run for minutes. [`UsageTracker`] is fed every body chunk as
//! Envoy hands it over and keeps only a few bytes of state plus, briefly, the small `usage`
//! object itself (see `usage_json`). It understands:
//!
//! * JSON bodies: a top-level `usage` (OpenAI chat/completions `prompt_tokens` /
//!   `completion_tokens`, embeddings `prompt_tokens`, Anthropic and Responses API
//!   `input_tokens` / `output_tokens`);
//! * SSE streams, one JSON document per event: OpenAI `chat.completion.chunk` with a final
//!   `usage` (`stream_options.include_usage`), Anthropic `message_start`
//!   (`message.usage.input_tokens`) and `message_delta` (`usage.output_tokens`, cumulative),
//!   Responses API `response.completed` (`response.usage`).
//!
//! Anthropic's `cache_creation_input_tokens` / `cache_read_input_tokens` are added to the input
//! count (Anthropic's `input_tokens` excludes them; OpenAI's `prompt_tokens` already includes
//! cached tokens). Compressed bodies (`content-encoding`) cannot be read: don't track them.

use super::usage_json::JsonWatch;

/// Tokens one response consumed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

/// How the response body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// One JSON document (`application/json`, and anything that is not an event stream).
    Json,
    /// `text/event-stream`: events separated by blank lines, JSON in `data:` lines.
    EventStream,
}

impl BodyFormat {
    /// From the response's `content-type` header.
    pub fn from_content_type(content_type: Option<&str>) -> BodyFormat {
        let mime = content_type.and_then(|ct| ct.split(';').next()).unwrap_or("").trim();
        if mime.eq_ignore_ascii_case("text/event-stream") {
            BodyFormat::EventStream
        } else {
            BodyFormat::Json
        }
    }
}

/// Where the SSE line parser is within the current line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// At the first byte of a line.
    Start,
    /// Matched this many bytes of `data:`.
    Prefix(usize),
    /// Right after `data:` (one optional space is skipped).
    DataStart,
    /// At the payload's first byte (decides whether the event is JSON, wherever chunks split).
    PayloadStart,
    /// Inside a data line's payload.
    Payload,
    /// Any other field or a comment: ignored up to the end of the line.
    Skip,
}

const DATA: &[u8] = b"data:";

/// Incremental usage reader for one response body. Memory stays bounded (a few hundred bytes
/// plus at most 4 KiB while a `usage` object is being read).
#[derive(Debug)]
pub struct UsageTracker {
    format: BodyFormat,
    json: JsonWatch,
    line: Line,
    /// The previous byte was `\r` (so a following `\n` does not end another line).
    after_cr: bool,
    /// The current event's data started with `{`.
    event_is_json: bool,
    events: u64,
    finished: bool,
}

impl UsageTracker {
    pub fn new(format: BodyFormat) -> UsageTracker {
        UsageTracker {
            format,
            json: JsonWatch::default(),
            line: Line::Start,
            after_cr: false,
            event_is_json: false,
            events: 0,
            finished: false,
        }
    }

    pub fn for_content_type(content_type: Option<&str>) -> UsageTracker {
        UsageTracker::new(BodyFormat::from_content_type(content_type))
    }

    /// Feeds the next body chunk (any size, split anywhere).
    pub fn feed(&mut self, chunk: &[u8]) {
        match self.format {
            BodyFormat::Json => self.json.feed(chunk),
            BodyFormat::EventStream => self.feed_sse(chunk),
        }
    }

    /// Ends the body (call at end of stream) and returns the usage found, if any.
    /// Idempotent.
    pub fn finish(&mut self) -> Option<Usage> {
        if !self.finished {
            self.finished = true;
            if self.format == BodyFormat::EventStream {
                // A last event without its terminating blank line still counts.
                self.end_event();
            }
        }
        self.usage()
    }

    /// The usage found so far.
    pub fn usage(&self) -> Option<Usage> {
        let c = self.json.counts;
        if !c.any() {
            return None;
        }
        let cached = c.cache_creation.unwrap_or(0).saturating_add(c.cache_read.unwrap_or(0));
        let (input, output) = match (c.input, c.output, c.total) {
            (Some(i), Some(o), _) => (i.saturating_add(cached), o),
            (Some(i), None, total) => {
                let i = i.saturating_add(cached);
                (i, total.map_or(0, |t| t.saturating_sub(i)))
            }
            (None, Some(o), Some(t)) => (t.saturating_sub(o), o),
            (None, Some(o), None) => (cached, o),
            (None, None, t) => (t.unwrap_or(0), 0),
        };
        Some(Usage { input_tokens: input, output_tokens: output })
    }

    /// SSE events whose data was a JSON object (`[DONE]` and comments excluded); for streamed
    /// chat completions roughly the number of output chunks.
    #[cfg(test)]
    pub fn events(&self) -> u64 {
        self.events
    }

    #[cfg(test)]
    fn json_capacity(&self) -> usize {
        self.json.capture_capacity()
    }

    fn end_event(&mut self) {
        if self.event_is_json {
            self.events += 1;
        }
        self.event_is_json = false;
        self.json.reset_document();
    }

    fn feed_sse(&mut self, chunk: &[u8]) {
        let mut i = 0;
        while i < chunk.len() {
            let Some(&b) = chunk.get(i) else { break };
            if b == b'\n' && self.after_cr {
                self.after_cr = false;
                i += 1;
                continue;
            }
            self.after_cr = false;
            if b == b'\r' || b == b'\n' {
                self.after_cr = b == b'\r';
                self.end_line();
                i += 1;
                continue;
            }
            match self.line {
                Line::Start | Line::Prefix(_) => {
                    let n = if let Line::Prefix(n) = self.line { n } else { 0 };
                    self.line = match DATA.get(n) {
                        Some(&expected) if expected == b => {
                            if n + 1 == DATA.len() {
                                Line::DataStart
                            } else {
                                Line::Prefix(n + 1)
                            }
                        }
                        _ => Line::Skip,
                    };
                    i += 1;
                }
                Line::DataStart => {
                    self.line = Line::PayloadStart;
                    if b == b' ' {
                        i += 1;
                    }
                }
                Line::PayloadStart => {
                    self.line = Line::Payload;
                    if b == b'{' {
                        self.event_is_json = true;
                    }
                }
                Line::Payload | Line::Skip => {
                    let rest = chunk.get(i..).unwrap_or(&[]);
                    let len = rest.iter().position(|&c| c == b'\n' || c == b'\r').unwrap_or(rest.len());
                    if self.line == Line::Payload {
                        self.json.feed(rest.get(..len).unwrap_or(&[]));
                    }
                    i += len;
                }
            }
        }
    }

    fn end_line(&mut self) {
        match self.line {
            Line::Start => self.end_event(),
            // Data lines of one event are joined with a newline: whitespace to the JSON watcher.
            Line::Payload | Line::PayloadStart | Line::DataStart => self.json.feed(b"\n"),
            Line::Prefix(_) | Line::Skip => {}
        }
        self.line = Line::Start;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENAI_JSON: &str = r#"{
  "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
  "object": "chat.completion",
  "created": 1741570283,
  "model": "gpt-4o-2024-08-06",
  "choices": [{"index": 0, "message": {"role": "assistant", "content": "The image shows a wooden boardwalk: \"usage\": {\"prompt_tokens\": 1}", "refusal": null, "annotations": []}, "logprobs": null, "finish_reason": "stop"}],
  "usage": {"prompt_tokens": 1117, "completion_tokens": 46, "total_tokens": 1163,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}},
  "service_tier": "default",
  "system_fingerprint": "fp_fc9f1d7035"
}"#;

    const ANTHROPIC_JSON: &str = r#"{"id":"msg_01","type":"message","role":"assistant","model":"claude-3-5-sonnet-20241022","content":[{"type":"text","text":"Hi! {\"usage\":1}"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":2095,"cache_creation_input_tokens":10,"cache_read_input_tokens":5,"output_tokens":503}}"#;

    const EMBEDDINGS_JSON: &str = r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.0023064255,-0.009327292,-0.0028842222]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":8,"total_tokens":8}}"#;

    const RESPONSES_JSON: &str = r#"{"id":"resp_1","object":"response","status":"completed","output":[{"type":"message","content":[{"type":"output_text","text":"hello"}]}],"usage":{"input_tokens":36,"input_tokens_details":{"cached_tokens":0},"output_tokens":87,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":123}}"#;

    const OPENAI_SSE: &str = "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}],\"usage\":null}\n\n\
data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello \\\"usage\\\":{\"}}],\"usage\":null}\n\n\
data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n\
data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":19,\"completion_tokens\":10,\"total_tokens\":29}}\n\n\
data: [DONE]\n\n";

    const ANTHROPIC_SSE: &str = "event: message_start\r\n\
data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-3-5-sonnet\",\"stop_reason\":null,\"usage\":{\"input_tokens\":25,\"cache_read_input_tokens\":3,\"output_tokens\":1}}}\r\n\r\n\
event: content_block_start\r\n\
data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\r\n\r\n\
event: ping\r\n\
data: {\"type\": \"ping\"}\r\n\r\n\
event: content_block_delta\r\n\
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\r\n\r\n\
event: content_block_stop\r\n\
data: {\"type\":\"content_block_stop\",\"index\":0}\r\n\r\n\
event: message_delta\r\n\
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\r\n\r\n\
event: message_stop\r\n\
data: {\"type\":\"message_stop\"}\r\n\r\n";

    const RESPONSES_SSE: &str = "event: response.created\n\
data: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_1\",\"status\":\"in_progress\",\"usage\":null}}\n\n\
event: response.output_text.delta\n\
data: {\"type\":\"response.output_text.delta\",\"item_id\":\"msg_1\",\"delta\":\"Hi\"}\n\n\
: keep-alive comment\n\n\
event: response.completed\n\
data: {\"type\":\"response.completed\",\"response\":{\"id\":\"resp_1\",\"status\":\"completed\",\"usage\":{\"input_tokens\":37,\"output_tokens\":11,\"total_tokens\":48}}}\n\n";

    /// Feeds `body` whole, then split at every byte position (2 chunks), then byte by byte.
    fn all_splits(format: BodyFormat, body: &str) -> (Option<Usage>, u64) {
        let body = body.as_bytes();
        let mut whole = UsageTracker::new(format);
        whole.feed(body);
        let expected = (whole.finish(), whole.events());
        for cut in 0..=body.len() {
            let mut t = UsageTracker::new(format);
            t.feed(&body[..cut]);
            t.feed(&body[cut..]);
            assert_eq!((t.finish(), t.events()), expected, "split at {cut}");
        }
        let mut t = UsageTracker::new(format);
        for b in body {
            t.feed(std::slice::from_ref(b));
        }
        assert_eq!((t.finish(), t.events()), expected, "byte by byte");
        expected
    }

    fn usage(input_tokens: u64, output_tokens: u64) -> Option<Usage> {
        Some(Usage { input_tokens, output_tokens })
    }

    #[test]
    fn json_bodies_at_every_split() {
        assert_eq!(all_splits(BodyFormat::Json, OPENAI_JSON), (usage(1117, 46), 0));
        assert_eq!(all_splits(BodyFormat::Json, ANTHROPIC_JSON), (usage(2110, 503), 0));
        assert_eq!(all_splits(BodyFormat::Json, EMBEDDINGS_JSON), (usage(8, 0), 0));
        assert_eq!(all_splits(BodyFormat::Json, RESPONSES_JSON), (usage(36, 87), 0));
    }

    #[test]
    fn event_streams_at_every_split() {
        assert_eq!(all_splits(BodyFormat::EventStream, OPENAI_SSE), (usage(19, 10), 4));
        assert_eq!(all_splits(BodyFormat::EventStream, ANTHROPIC_SSE), (usage(28, 15), 7));
        assert_eq!(all_splits(BodyFormat::EventStream, RESPONSES_SSE), (usage(37, 11), 3));
    }

    #[test]
    fn stream_without_usage_counts_events_only() {
        let body = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"b\"}}]}\n\ndata: [DONE]\n\n";
        assert_eq!(all_splits(BodyFormat::EventStream, body), (None, 2));
        // A final event without its blank line still counts.
        assert_eq!(all_splits(BodyFormat::EventStream, "data: {\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":1}}"), (usage(2, 1), 1));
    }

    #[test]
    fn multi_line_data_and_bare_cr_lines() {
        let body = "data: {\"usage\":\ndata: {\"prompt_tokens\":4,\rdata: \"completion_tokens\":6}}\r\rdata:{\"x\":1}\r";
        assert_eq!(all_splits(BodyFormat::EventStream, body), (usage(4, 6), 2));
    }

    #[test]
    fn json_events_are_told_by_the_payload_start_wherever_chunks_split() {
        // Regression (found by usage_props): a chunk starting inside a data line with `{` made a
        // non-JSON event count as JSON.
        assert_eq!(all_splits(BodyFormat::EventStream, "data: [{\"a\":1}]\n\ndata:  {\"b\":2}\n\n"), (None, 0));
        assert_eq!(all_splits(BodyFormat::EventStream, "data: [\ndata: {\"b\":2}]\n\ndata:{}\r\r"), (None, 2));
    }

    #[test]
    fn garbage_does_not_poison_later_events() {
        let body = "data: {\"a\":[[[{\"b\":\"\n\ndata: {\"usage\":{\"input_tokens\":3,\"output_tokens\":4}}\n\n";
        assert_eq!(all_splits(BodyFormat::EventStream, body), (usage(3, 4), 2));
    }

    #[test]
    fn totals_fill_missing_sides_and_finish_is_idempotent() {
        let mut t = UsageTracker::new(BodyFormat::Json);
        t.feed(br#"{"usage":{"prompt_tokens":5,"total_tokens":12}}"#);
        assert_eq!(t.finish(), usage(5, 7));
        assert_eq!(t.finish(), usage(5, 7));
        let mut t = UsageTracker::new(BodyFormat::Json);
        t.feed(br#"{"usage":{"total_tokens":12}}"#);
        assert_eq!(t.finish(), usage(12, 0));
        let mut t = UsageTracker::new(BodyFormat::Json);
        t.feed(br#"{"usage":{"output_tokens":2,"total_tokens":12}}"#);
        assert_eq!(t.finish(), usage(10, 2));
        let mut t = UsageTracker::new(BodyFormat::Json);
        t.feed(br#"{"error":{"message":"nope"}}"#);
        assert_eq!(t.finish(), None);
    }

    #[test]
    fn content_type_selects_the_format() {
        assert_eq!(BodyFormat::from_content_type(Some("text/event-stream; charset=utf-8")), BodyFormat::EventStream);
        assert_eq!(BodyFormat::from_content_type(Some("Text/Event-Stream")), BodyFormat::EventStream);
        assert_eq!(BodyFormat::from_content_type(Some("application/json")), BodyFormat::Json);
        assert_eq!(BodyFormat::from_content_type(None), BodyFormat::Json);
    }

    #[test]
    fn memory_stays_bounded_on_a_long_stream() {
        let mut t = UsageTracker::new(BodyFormat::EventStream);
        let event = "data: {\"choices\":[{\"delta\":{\"content\":\"token\"}}],\"usage\":null}\n\n";
        for _ in 0..10_000 {
            t.feed(event.as_bytes());
        }
        assert_eq!(t.events(), 10_000);
        assert!(t.json_capacity() <= super::super::usage_json::MAX_USAGE_BYTES);
    }
}
