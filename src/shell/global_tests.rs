//! Global limits through whole router streams on the fake host: the admission call to the rate
//! limit service after the local gate, the request held until its answer, the 429 of an
//! over-limit answer (local admission undone), the failure policy (open for rate limits, 503
//! for budgets), and the settlement handed to the VM's queue in `on_log`.

use super::fake::{gateway_of, hex, two_models, FakeHost, Op};
use super::host::Flow;
use super::vm::Vm;
use super::RouterStream;
use crate::config::RouterConfig;
use crate::health::Store;
use crate::limits::Record;
use crate::metrics::catalogue::Metric;
use crate::metrics::FakeSink;
use serde_json::{json, Value};
use std::rc::Rc;

const CHAT: &str = "/v1/chat/completions";
const KEY: &str = "sk-global";
const QUEUE: u32 = 9;

fn gateway(key: Value, rls: Value) -> (Rc<RouterConfig>, Rc<Vm<FakeSink>>) {
    let mut key = key;
    key["token"] = json!(hex(KEY));
    key["key_alias"] = json!("glob-app");
    let mut models = two_models();
    models[0]["model_info"] = json!({"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6});
    let (cfg, vm) = gateway_of(&json!({"model_list": models, "keys": [key], "envoy_settings": {"rate_limit_service": rls}}));
    vm.settle_queue.set(Some(QUEUE));
    (cfg, vm)
}

fn rls() -> Value {
    json!({"cluster": "llm_router_rls", "domain": "gw", "timeout_ms": 40})
}

/// A stream through its body phase; the flow the body callback returned.
fn start(cfg: &Rc<RouterConfig>, vm: &Rc<Vm<FakeSink>>, shared: &FakeHost, max_tokens: u64) -> (RouterStream<FakeSink>, FakeHost, Flow) {
    let host = FakeHost::sharing(shared);
    let body = json!({"model": "gpt-4o", "max_tokens": max_tokens, "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let len = body.len().to_string();
    let auth = format!("Bearer {KEY}");
    host.set_request(
        &[(":method", "POST"), (":path", CHAT), (":authority", "gw"), ("content-type", "application/json"), ("content-length", &len), ("authorization", &auth)],
        &body,
    );
    let mut s = RouterStream::new(Some(cfg.clone()), vm.clone());
    assert_eq!(s.on_request_headers(&host, false), Flow::Pause);
    let size = host.request_body.borrow().len();
    let flow = s.on_request_body(&host, size, true);
    (s, host, flow)
}

/// `RateLimitResponse { overall_code, statuses: [{code, current_limit{requests_per_unit}, limit_remaining}] }`.
fn answer(overall: u8, statuses: &[(u8, u8, u8)]) -> Vec<u8> {
    let mut b = vec![0x08, overall];
    for &(code, limit, remaining) in statuses {
        b.extend_from_slice(&[0x12, 8, 0x08, code, 0x12, 2, 0x08, limit, 0x18, remaining]);
    }
    b
}

fn local(shared: &FakeHost, kind: &str) -> Option<Record> {
    let key = format!("llm_router.v1.limit.{kind}.key.{}", hex(KEY));
    shared.store.get(&key).ok().and_then(|(v, _)| v).and_then(|v| Record::decode(&v))
}

fn rls_calls(vm: &Vm<FakeSink>, call: &str, result: &str) -> i64 {
    vm.metrics.borrow().sink.value(Metric::RlsCalls, &[call, result])
}

#[test]
fn the_request_waits_for_the_service_then_goes_on_and_settles_through_the_queue() {
    let (cfg, vm) = gateway(json!({"rpm_limit": 10, "tpm_limit": 100_000}), rls());
    let shared = FakeHost::default();
    let (mut s, host, flow) = start(&cfg, &vm, &shared, 50);
    assert_eq!(flow, Flow::Pause, "held for the service's answer");
    let calls = host.grpc_calls.borrow().clone();
    assert_eq!(calls.len(), 1);
    assert_eq!((calls[0].0.as_str(), calls[0].1.as_str(), calls[0].3), ("llm_router_rls", "envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit", 40));
    assert!(calls[0].2.starts_with(&[0x0a, 2, b'g', b'w']), "domain first");
    let hash = hex(KEY);
    assert!(calls[0].2.windows(hash.len()).any(|w| w == hash.as_bytes()), "descriptors carry the key's hash");
    assert!(!calls[0].2.windows(KEY.len()).any(|w| w == KEY.as_bytes()), "never the key");
    assert_eq!(host.count(Op::ResumeRequest), 0);
    // OK; the service has 3 requests left (all replicas) where this Envoy counted 1 of 10.
    *host.grpc_answer.borrow_mut() = answer(1, &[(1, 10, 3), (1, 100, 90)]);
    s.on_grpc_response(&host, 1, 0, host.grpc_answer.borrow().len());
    assert_eq!(host.count(Op::ResumeRequest), 1);
    assert!(host.reply().is_none());
    assert_eq!(rls_calls(&vm, "admission", "ok"), 1);
    host.respond(&[(":status", "200"), ("content-type", "application/json")]);
    s.on_response_headers(&host);
    assert_eq!(host.response_header_value("x-ratelimit-remaining-requests").as_deref(), Some("3"), "the global remaining");
    *host.response_body.borrow_mut() = br#"{"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}"#.to_vec();
    s.on_response_body(&host, host.response_body.borrow().len());
    s.on_log(&host);
    let queued = host.queued.borrow().clone();
    assert_eq!(queued.len(), 1, "one settlement, to the root's queue");
    assert_eq!(queued[0].0, QUEUE);
    // tpm: reserved (estimate + 50), used 12: a negative difference (field 4 = true).
    assert!(queued[0].1.windows(2).any(|w| w == [0x20, 1]), "{:?}", queued[0].1);
    assert_eq!(host.count(Op::GrpcCall), 1, "the stream itself never sends the settlement");
}

#[test]
fn an_over_limit_answer_is_litellms_429_and_undoes_the_local_admission() {
    let (cfg, vm) = gateway(json!({"rpm_limit": 1}), rls());
    let shared = FakeHost::default();
    let (mut s, host, _) = start(&cfg, &vm, &shared, 10);
    assert_eq!(local(&shared, "rpm").map(|r| r.used), Some(1));
    *host.grpc_answer.borrow_mut() = answer(2, &[(2, 1, 0)]);
    s.on_grpc_response(&host, 1, 0, host.grpc_answer.borrow().len());
    let reply = host.reply().unwrap_or_else(|| panic!("not refused"));
    assert_eq!(reply.status, 429);
    let msg = reply.json()["error"]["message"].as_str().unwrap_or_default().to_string();
    assert!(msg.starts_with("Rate limit exceeded for api_key: glob-app. Limit type: requests. Current limit: 1"), "{msg}");
    assert_eq!(host.count(Op::ResumeRequest), 0);
    assert_eq!(local(&shared, "rpm").map(|r| r.used), Some(0), "the local count is undone");
    assert_eq!(rls_calls(&vm, "admission", "over_limit"), 1);
    s.on_log(&host);
    assert!(host.queued.borrow().is_empty(), "nothing to settle: the service charged nothing");
    // A stale answer (another token) is ignored.
    let (mut s, host, _) = start(&cfg, &vm, &shared, 10);
    s.on_grpc_response(&host, 99, 0, 0);
    assert_eq!((host.count(Op::ResumeRequest), host.replies.borrow().len()), (0, 0));
}

#[test]
fn no_answer_fails_open_for_rate_limits_and_closed_for_budgets() {
    let (cfg, vm) = gateway(json!({"rpm_limit": 5}), rls());
    let shared = FakeHost::default();
    let (mut s, host, _) = start(&cfg, &vm, &shared, 10);
    s.on_grpc_response(&host, 1, 14, 0); // UNAVAILABLE
    assert_eq!(host.count(Op::ResumeRequest), 1, "rpm fails open");
    assert_eq!(rls_calls(&vm, "admission", "unavailable"), 1);
    host.respond(&[(":status", "200")]);
    s.on_response_headers(&host);
    s.on_log(&host);
    assert!(host.queued.borrow().is_empty(), "not admitted by the service: nothing to settle");

    let (cfg, vm) = gateway(json!({"rpm_limit": 5, "max_budget": 10}), rls());
    let shared = FakeHost::default();
    let (mut s, host, _) = start(&cfg, &vm, &shared, 10);
    s.on_grpc_response(&host, 1, 4, 0); // DEADLINE_EXCEEDED
    let reply = host.reply().unwrap_or_else(|| panic!("a budget fails closed"));
    assert_eq!((reply.status, reply.code().as_deref(), reply.header("retry-after")), (503, Some("rate_limit_service_unavailable"), Some("1")));
    assert_eq!(rls_calls(&vm, "admission", "timeout"), 1);
    assert_eq!(local(&shared, "rpm").map(|r| r.used), Some(0), "the local admission is undone");
    assert_eq!(local(&shared, "budget").map(|r| r.reserved), Some(0));

    // The policy is the operator's: budgets open too.
    let (cfg, vm) = gateway(json!({"max_budget": 10}), json!({"cluster": "llm_router_rls", "failure_mode": {"budget": "open"}}));
    let (mut s, host, _) = start(&cfg, &vm, &FakeHost::default(), 10);
    *host.grpc_answer.borrow_mut() = vec![0xff, 0xff];
    s.on_grpc_response(&host, 1, 0, 2);
    assert_eq!(host.count(Op::ResumeRequest), 1);
    assert_eq!(rls_calls(&vm, "admission", "malformed"), 1);
}

#[test]
fn a_call_that_cannot_start_is_a_failure_decided_at_once() {
    let (cfg, vm) = gateway(json!({"rpm_limit": 5}), rls());
    let shared = FakeHost::default();
    shared.fail(Op::GrpcCall);
    let host = FakeHost::sharing(&shared);
    host.fail(Op::GrpcCall);
    let body = json!({"model": "gpt-4o", "messages": []}).to_string();
    let auth = format!("Bearer {KEY}");
    host.set_request(&[(":method", "POST"), (":path", CHAT), (":authority", "gw"), ("content-type", "application/json"), ("authorization", &auth)], &body);
    let mut s = RouterStream::new(Some(cfg.clone()), vm.clone());
    s.on_request_headers(&host, false);
    let size = host.request_body.borrow().len();
    assert_eq!(s.on_request_body(&host, size, true), Flow::Continue, "fails open without waiting");
    assert!(host.reply().is_none());
    assert_eq!(rls_calls(&vm, "admission", "dispatch"), 1);
    let (cfg, vm) = gateway(json!({"max_budget": 5}), rls());
    let host = FakeHost::default();
    host.fail(Op::GrpcCall);
    host.set_request(&[(":method", "POST"), (":path", CHAT), (":authority", "gw"), ("content-type", "application/json"), ("authorization", &auth)], &body);
    let mut s = RouterStream::new(Some(cfg), vm);
    s.on_request_headers(&host, false);
    let size = host.request_body.borrow().len();
    s.on_request_body(&host, size, true);
    assert_eq!(host.reply().map(|r| r.status), Some(503));
}

#[test]
fn a_client_gone_while_waiting_leaves_no_local_trace() {
    let (cfg, vm) = gateway(json!({"rpm_limit": 1, "max_parallel_requests": 1}), rls());
    let shared = FakeHost::default();
    let (mut s, host, _) = start(&cfg, &vm, &shared, 10);
    s.on_log(&host);
    assert_eq!(local(&shared, "rpm").map(|r| r.used), Some(0));
    assert_eq!(local(&shared, "parallel").map(|r| r.reserved), Some(0));
    s.on_grpc_response(&host, 1, 0, 0);
    assert_eq!(host.count(Op::ResumeRequest), 0, "a late answer after the end does nothing");
}

#[test]
fn without_limits_or_without_a_service_there_is_no_call() {
    let (cfg, vm) = gateway(json!({}), rls());
    let (_s, host, flow) = start(&cfg, &vm, &FakeHost::default(), 10);
    assert_eq!((flow, host.count(Op::GrpcCall)), (Flow::Continue, 0));
    let (cfg, vm) = gateway(json!({"rpm_limit": 3}), Value::Null);
    let (_s, host, flow) = start(&cfg, &vm, &FakeHost::default(), 10);
    assert_eq!((flow, host.count(Op::GrpcCall)), (Flow::Continue, 0));
}
