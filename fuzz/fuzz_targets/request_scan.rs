//! The request scanner on arbitrary bytes: never panics, rejects exactly what serde_json
//! rejects (except serde_json's number-range and recursion limits, stricter than RFC 8259), and
//! the router's rewrite of an accepted body is accepted again by both.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_router::openai::{rewrite, scan_request};
use serde_json::Value;

const WANTED: &[&str] = &["temperature", "max_tokens", "stream_options"];

fuzz_target!(|data: &[u8]| {
    let serde = match serde_json::from_slice::<Value>(data) {
        Err(e) if e.to_string().contains("number out of range") || e.to_string().contains("recursion limit") => None,
        other => Some(other.ok()),
    };
    match scan_request(data, WANTED) {
        Ok(scan) => {
            if let Some(parsed) = &serde {
                assert!(parsed.as_ref().is_some_and(Value::is_object), "scanner accepts what serde_json refuses");
            }
            let edit = scan.model.as_ref().map(|m| (m.value.clone(), "fuzz/\"model\"\n"));
            let extra: &[(&str, &[u8])] = if scan.has(0) { &[] } else { &[("temperature", b"0.5")] };
            let out = rewrite(data, edit, &scan.object, extra);
            let again = scan_request(&out, WANTED).expect("the rewritten body scans");
            assert!(again.has(0));
            if scan.model.is_some() {
                assert_eq!(again.model_name().as_deref(), Some("fuzz/\"model\"\n"));
            }
            if serde.is_some() {
                assert!(serde_json::from_slice::<Value>(&out).is_ok_and(|v| v.is_object()));
            }
        }
        Err(e) => {
            if let Some(parsed) = &serde {
                match parsed {
                    Some(v) => assert!(e.is_not_object() && !v.is_object(), "scanner refuses what serde_json accepts: {e}"),
                    None => assert!(!e.is_not_object()),
                }
            }
        }
    }
});
