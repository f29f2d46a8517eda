//! Virtual keys through whole router streams on the fake host: a denied request never leaves
//! (no header write, no body read), an allowed one leaves with the provider's key instead of
//! the client's, `/v1/models` answers the key's own list, and the clock is read in the headers
//! phase only when some key can expire.

use super::fake::{gateway_of, hex, two_models, FakeHost, Op};
use super::host::Flow;
use super::vm::Vm;
use super::RouterStream;
use crate::access::key_hash;
use crate::config::{self, RouterConfig};
use crate::metrics::catalogue::Metric;
use crate::metrics::FakeSink;
use crate::routing::Rng;
use serde_json::{json, Value};
use std::rc::Rc;

const CHAT: &str = "/v1/chat/completions";


fn gateway(keys: Value) -> (Rc<RouterConfig>, Rc<Vm<FakeSink>>) {
    gateway_of(&json!({"model_list": two_models(), "keys": keys}))
}

fn request(method: &str, path: &str, key: &str, body: &str) -> FakeHost {
    let auth = format!("Bearer {key}");
    let len = body.len().to_string();
    FakeHost::request(
        &[(":method", method), (":path", path), (":authority", "gw"), ("content-type", "application/json"), ("content-length", &len), ("authorization", &auth)],
        body,
    )
}

fn chat(model: &str) -> String {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}).to_string()
}

fn run(cfg: &Rc<RouterConfig>, vm: &Rc<Vm<FakeSink>>, host: &FakeHost) -> Flow {
    let mut s = RouterStream::new(Some(cfg.clone()), vm.clone());
    if s.on_request_headers(host, false) == Flow::Pause && host.reply().is_some() {
        return Flow::Pause;
    }
    let size = host.request_body.borrow().len();
    s.on_request_body(host, size, true)
}

#[test]
fn an_allowed_key_is_forwarded_with_the_provider_key_and_a_denied_one_never_leaves() {
    let (cfg, vm) = gateway(json!([{"token": hex("sk-4o"), "key_alias": "4o-only", "models": ["gpt-4o"]}]));
    let ok = request("POST", CHAT, "sk-4o", &chat("gpt-4o"));
    assert_eq!(run(&cfg, &vm, &ok), Flow::Continue, "{:?}", ok.reply());
    assert_eq!(ok.request_header_value("authorization").as_deref(), Some("Bearer sk-provider"));
    let ops: Vec<Op> = ok.calls.borrow().iter().map(|(o, _)| *o).collect();
    assert_eq!(ops, [Op::RequestHeaders, Op::RequestBody, Op::Now, Op::SetRequestHeaders], "no clock read for keys that never expire");

    let denied = request("POST", CHAT, "sk-4o", &chat("mini"));
    assert_eq!(run(&cfg, &vm, &denied), Flow::Pause);
    let reply = denied.reply().unwrap_or_else(|| panic!("no reply"));
    assert_eq!((reply.status, reply.code().as_deref()), (401, Some("key_model_access_denied")));
    assert_eq!(reply.json()["error"]["type"], "key_model_access_denied");
    assert_eq!((denied.count(Op::SetRequestHeaders), denied.count(Op::SetRequestBody)), (0, 0), "nothing is forwarded");
    assert_eq!(vm.metrics.borrow().sink.value(Metric::Rejected, &["key_model_access_denied"]), 1);

    let unknown = request("POST", CHAT, "sk-guess", &chat("gpt-4o"));
    assert_eq!(run(&cfg, &vm, &unknown), Flow::Pause);
    assert_eq!(unknown.reply().map(|r| (r.status, r.code())), Some((401, Some("invalid_api_key".into()))));
    assert_eq!(unknown.count(Op::RequestBody), 0, "refused at the headers, before the body");
    assert!(!unknown.reply().map(|r| String::from_utf8_lossy(&r.body).into_owned()).unwrap_or_default().contains("sk-guess"));
}

#[test]
fn an_expiring_key_costs_one_clock_read_in_the_headers_phase() {
    let (cfg, vm) = gateway(json!([{"token": hex("sk-a"), "expires": "2100-01-01"}, {"token": hex("sk-old"), "expires": "2000-01-01"}]));
    let ok = request("POST", CHAT, "sk-a", &chat("gpt-4o"));
    assert_eq!(run(&cfg, &vm, &ok), Flow::Continue, "{:?}", ok.reply());
    let ops: Vec<Op> = ok.calls.borrow().iter().map(|(o, _)| *o).collect();
    assert_eq!(ops, [Op::RequestHeaders, Op::Now, Op::RequestBody, Op::Now, Op::SetRequestHeaders]);
    let old = request("POST", CHAT, "sk-old", &chat("mini"));
    old.advance(1_800_000_000_000);
    assert_eq!(run(&cfg, &vm, &old), Flow::Pause);
    assert_eq!(old.reply().map(|r| (r.status, r.code())), Some((401, Some("expired_key".into()))));
}

#[test]
fn the_model_list_is_the_keys_own_and_the_health_report_needs_the_master_key() {
    let (cfg, vm) = gateway(json!([{"token": hex("sk-mini"), "models": ["mini"], "aliases": {"small": "mini"}}]));
    let host = request("GET", "/v1/models", "sk-mini", "");
    let mut s = RouterStream::new(Some(cfg.clone()), vm.clone());
    assert_eq!(s.on_request_headers(&host, true), Flow::Pause);
    let reply = host.reply().unwrap_or_else(|| panic!("no reply"));
    let ids: Vec<String> = reply.json()["data"].as_array().into_iter().flatten().filter_map(|m| m["id"].as_str().map(str::to_string)).collect();
    assert_eq!((reply.status, ids), (200, vec!["mini".to_string(), "small".to_string()]));

    let health = request("GET", "/llm-router/health", "sk-mini", "");
    let mut s = RouterStream::new(Some(cfg.clone()), vm.clone());
    assert_eq!(s.on_request_headers(&health, true), Flow::Pause);
    assert_eq!(health.reply().map(|r| (r.status, r.code())), Some((401, Some("admin_only".into()))));
}
