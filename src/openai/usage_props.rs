//! Property tests (proptest) for the usage reader: `usage` (`UsageTracker`, the SSE framing)
//! and `usage_json` (`JsonWatch`).
//!
//! * Chunking never matters: any body, JSON or SSE, fed in arbitrary pieces gives the same
//!   usage and event count as fed whole; arbitrary bytes never panic.
//! * Generated responses (random members, `usage` objects at the top level, inside top-level
//!   `message` / `response` objects, and decoys deeper down; SSE streams with comments, other
//!   fields, multi-line data, `[DONE]`, any line ending) give the counts an oracle computes from
//!   the generated values: each field the largest count seen, `usage` objects elsewhere ignored.
//!
//! Case count: proptest's default (256), or `PROPTEST_CASES`.

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Map, Value};

use super::props::{config, json_value, key, Formatter};
use super::usage::{BodyFormat, Usage, UsageTracker};
use super::usage_json::{Counts, JsonWatch};

// ---------------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------------

const COUNT_KEYS: &[&str] = &[
    "prompt_tokens", "completion_tokens", "input_tokens", "output_tokens", "total_tokens",
    "cache_creation_input_tokens", "cache_read_input_tokens", "prompt_tokens_details", "cached_tokens",
    "usage", "prompt_token",
];

/// What providers put in a usage field, and what they should not.
fn count_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => (0u64..5000).prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => (-100i64..0).prop_map(Value::from),
        1 => (0.0f64..1e6).prop_map(Value::from),
        1 => prop::sample::select(&[-1.5f64, -0.0, 0.0, 2.7, 1e19, 1e20, 1.7e308][..]).prop_map(Value::from),
        1 => prop::sample::select(&["12", "", "NaN"][..]).prop_map(Value::from),
        1 => Just(Value::Null),
        1 => (0u64..100).prop_map(|n| serde_json::json!({"cached_tokens": n, "prompt_tokens": n})),
    ]
}

/// A `usage` object (small: far below the reader's 4 KiB capture limit).
fn usage_object() -> impl Strategy<Value = Value> {
    prop::collection::vec((prop::sample::select(COUNT_KEYS).prop_map(str::to_string), count_value()), 0..7)
        .prop_map(|members| Value::Object(members.into_iter().collect::<Map<_, _>>()))
}

fn named(name: &'static str, value: impl Strategy<Value = Value>) -> impl Strategy<Value = (String, Value)> {
    value.prop_map(move |v| (name.to_string(), v))
}

fn object(members: impl Strategy<Value = Vec<(String, Value)>>) -> impl Strategy<Value = Value> {
    members.prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>()))
}

/// One top-level member of a response document.
fn response_member() -> impl Strategy<Value = (String, Value)> {
    let parent_member = prop_oneof![named("usage", usage_object()), (key(), json_value())];
    prop_oneof![
        3 => (key(), json_value()),
        3 => named("usage", usage_object()),
        1 => named("usage", prop_oneof![Just(Value::Null), (0u64..9).prop_map(Value::from), Just(Value::from("usage"))]),
        1 => named("usage", prop::collection::vec(usage_object(), 0..2).prop_map(Value::Array)),
        2 => (prop::sample::select(&["message", "response"][..]), object(prop::collection::vec(parent_member, 0..4)))
            .prop_map(|(k, v)| (k.to_string(), v)),
        1 => (prop::sample::select(&["choices", "metadata", "data", "delta"][..]), usage_object()).prop_map(|(k, u)| {
            // Decoys: usage objects deeper than the reader looks.
            (k.to_string(), serde_json::json!([{"message": {"usage": u.clone()}, "usage": u}]))
        }),
        1 => (prop::sample::select(&["message", "response"][..]), usage_object()).prop_map(|(k, u)| {
            (k.to_string(), serde_json::json!({"content": [{"usage": u.clone()}], "x": {"usage": u}}))
        }),
    ]
}

fn response_members() -> impl Strategy<Value = Vec<(String, Value)>> {
    prop::collection::vec(response_member(), 0..6)
}

/// A response document: members written by the formatter (plain keys: the reader, like every
/// provider, matches `usage` / `message` / `response` unescaped), and its expected counts.
fn document(members: &[(String, Value)], seed: u64) -> Vec<u8> {
    let mut f = Formatter::new(seed);
    f.plain_keys = true;
    f.object(members);
    f.out
}

/// The oracle: the counts the reader should find in one document.
fn expected_counts(members: &[(String, Value)], counts: &mut Counts) {
    for (k, v) in members {
        match (k.as_str(), v) {
            ("usage", Value::Object(u)) => merge(counts, u),
            ("message" | "response", Value::Object(parent)) => {
                if let Some(Value::Object(u)) = parent.get("usage") {
                    merge(counts, u);
                }
            }
            _ => {}
        }
    }
}

fn merge(counts: &mut Counts, usage: &Map<String, Value>) {
    for (k, v) in usage {
        let Value::Number(n) = v else { continue };
        let slot = match k.as_str() {
            "prompt_tokens" | "input_tokens" => &mut counts.input,
            "completion_tokens" | "output_tokens" => &mut counts.output,
            "cache_creation_input_tokens" => &mut counts.cache_creation,
            "cache_read_input_tokens" => &mut counts.cache_read,
            "total_tokens" => &mut counts.total,
            _ => continue,
        };
        // Integers exactly, fractions truncated (saturating), negatives ignored.
        let count = n.as_u64().or_else(|| n.as_f64().filter(|f| f.is_finite() && *f >= 0.0).map(|f| f as u64));
        if let Some(c) = count {
            *slot = Some(slot.map_or(c, |old| old.max(c)));
        }
    }
}

/// The usage the tracker reports for `counts` (usage.rs: cached input added, a missing side
/// filled from the total).
fn expected_usage(c: &Counts) -> Option<Usage> {
    if !c.any() {
        return None;
    }
    let cached = c.cache_creation.unwrap_or(0).saturating_add(c.cache_read.unwrap_or(0));
    let input = c.input.map(|i| i.saturating_add(cached));
    let (input_tokens, output_tokens) = match (input, c.output, c.total) {
        (Some(i), Some(o), _) => (i, o),
        (Some(i), None, t) => (i, t.map_or(0, |t| t.saturating_sub(i))),
        (None, Some(o), Some(t)) => (t.saturating_sub(o), o),
        (None, Some(o), None) => (cached, o),
        (None, None, t) => (t.unwrap_or(0), 0),
    };
    Some(Usage { input_tokens, output_tokens })
}

/// One SSE event as its lines (without line endings).
#[derive(Debug, Clone)]
enum Event {
    /// A JSON document, its data split into one `data:` line per line of the formatted text.
    Json { members: Vec<(String, Value)>, seed: u64 },
    /// A data line that is not JSON (`[DONE]`, text): no usage.
    Text(&'static str),
}

#[derive(Debug, Clone)]
struct Stream {
    /// Per event: the lines before its data (`event:`, `id:`, comments), and the event.
    events: Vec<(Vec<&'static str>, Event)>,
    ending: &'static str,
    /// The last event ends with a blank line (a stream may stop without one).
    terminated: bool,
}

fn stream() -> impl Strategy<Value = Stream> {
    let preamble = prop::collection::vec(
        prop::sample::select(&["event: message_delta", "event: ping", "id: 7", "retry: 100", ": keep-alive", ":", "dat: x", "datum: {\"usage\":{\"input_tokens\":9}}"][..]),
        0..3,
    );
    let event = prop_oneof![
        4 => (response_members(), any::<u64>()).prop_map(|(members, seed)| Event::Json { members, seed }),
        1 => prop::sample::select(&["[DONE]", "ping", "", " leading space", "usage: 5"][..]).prop_map(Event::Text),
    ];
    (
        prop::collection::vec((preamble, event), 0..6),
        prop::sample::select(&["\n", "\r\n", "\r"][..]),
        any::<bool>(),
    )
        .prop_map(|(events, ending, terminated)| Stream { events, ending, terminated })
}

/// The stream's bytes, its expected counts and its expected event count (events with a data
/// line whose payload starts with `{`).
fn render(s: &Stream) -> (Vec<u8>, Counts, u64) {
    let mut out = Vec::new();
    let mut counts = Counts::default();
    let mut json_events = 0;
    let line = |out: &mut Vec<u8>, text: &[u8]| {
        out.extend_from_slice(text);
        out.extend_from_slice(s.ending.as_bytes());
    };
    for (i, (preamble, event)) in s.events.iter().enumerate() {
        for p in preamble {
            line(&mut out, p.as_bytes());
        }
        match event {
            Event::Json { members, seed } => {
                let doc = document(members, *seed);
                let mut starts_with_brace = false;
                // JSON whitespace may hold line breaks (never inside strings): one data line each.
                for piece in String::from_utf8(doc).unwrap().split("\r\n").flat_map(|p| p.split(['\r', '\n'])) {
                    starts_with_brace |= piece.starts_with('{');
                    line(&mut out, format!("data: {piece}").as_bytes());
                }
                if starts_with_brace {
                    json_events += 1;
                }
                expected_counts(members, &mut counts);
            }
            Event::Text(text) => line(&mut out, format!("data: {text}").as_bytes()),
        }
        if s.terminated || i + 1 < s.events.len() {
            line(&mut out, b"");
        }
    }
    (out, counts, json_events)
}

/// Feeds `body` cut at `cuts` (any positions, any order) and returns what the tracker found.
fn feed_in_pieces(format: BodyFormat, body: &[u8], cuts: &[Index]) -> (Option<Usage>, u64) {
    let mut at: Vec<usize> = cuts.iter().map(|c| c.index(body.len() + 1)).collect();
    at.sort_unstable();
    let mut t = UsageTracker::new(format);
    let mut from = 0;
    for to in at.into_iter().chain([body.len()]) {
        t.feed(&body[from..to]);
        from = to;
    }
    (t.finish(), t.events())
}

fn feed_whole(format: BodyFormat, body: &[u8]) -> (Option<Usage>, u64) {
    let mut t = UsageTracker::new(format);
    t.feed(body);
    let found = (t.finish(), t.events());
    // finish is idempotent.
    assert_eq!(t.finish(), found.0);
    found
}

fn cuts() -> impl Strategy<Value = Vec<Index>> {
    prop::collection::vec(any::<Index>(), 0..12)
}

/// Bytes shaped like responses and event streams.
const ALPHABET: &[&[u8]] = &[
    b"data:", b"data: ", b"{", b"}", b"[", b"]", b"\"usage\"", b"\"message\"", b"\"response\"", b"\"prompt_tokens\"",
    b"\"output_tokens\"", b":", b",", b"\"", b"\\", b"\\\"", b"12", b"-1", b"2.5e3", b"null", b"\n", b"\r", b"\r\n", b" ", b"x",
    b"\xff", b"[DONE]", b"event: x",
];

fn response_ish_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(ALPHABET), 0..40).prop_map(|pieces| pieces.concat())
}

fn any_format() -> impl Strategy<Value = BodyFormat> {
    prop_oneof![Just(BodyFormat::Json), Just(BodyFormat::EventStream)]
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// A JSON response: the counts the oracle expects, and the same usage whatever the chunking.
    #[test]
    fn json_response_usage_in_any_chunks(members in response_members(), seed in any::<u64>(), cuts in cuts()) {
        let body = document(&members, seed);
        let mut counts = Counts::default();
        expected_counts(&members, &mut counts);
        let mut watch = JsonWatch::default();
        watch.feed(&body);
        prop_assert_eq!(watch.counts, counts, "body {}", String::from_utf8_lossy(&body));
        let whole = feed_whole(BodyFormat::Json, &body);
        prop_assert_eq!(whole, (expected_usage(&counts), 0));
        prop_assert_eq!(feed_in_pieces(BodyFormat::Json, &body, &cuts), whole);
    }

    /// An event stream: the counts of all its JSON events (largest per field), the number of
    /// JSON events, and the same result whatever the chunking.
    #[test]
    fn event_stream_usage_in_any_chunks(s in stream(), cuts in cuts()) {
        let (body, counts, json_events) = render(&s);
        let whole = feed_whole(BodyFormat::EventStream, &body);
        let expected = (expected_usage(&counts), json_events);
        prop_assert!(whole == expected, "found {:?}, expected {:?} in {:?}", whole, expected, String::from_utf8_lossy(&body));
        prop_assert_eq!(feed_in_pieces(BodyFormat::EventStream, &body, &cuts), whole);
    }

    /// Arbitrary bytes, either framing: no panic, and chunking never changes the result.
    #[test]
    fn arbitrary_bytes_in_any_chunks(
        format in any_format(),
        body in prop_oneof![prop::collection::vec(any::<u8>(), 0..96), response_ish_bytes()],
        cuts in cuts(),
    ) {
        let whole = feed_whole(format, &body);
        prop_assert_eq!(feed_in_pieces(format, &body, &cuts), whole);
        // Byte by byte is the extreme chunking.
        let mut t = UsageTracker::new(format);
        for b in &body {
            t.feed(std::slice::from_ref(b));
        }
        prop_assert_eq!((t.finish(), t.events()), whole);
    }
}
