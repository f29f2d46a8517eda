//! Rate limits through whole router streams on the fake host: admission in the body phase
//! after model access, the 429 LiteLLM answers, `x-ratelimit-*` on admitted responses, and one
//! settlement per stream however it ends (success, upstream error, client reset, a local reply
//! after forwarding, `on_log` called twice), with tpm reconciled from the response's usage.

use super::fake::{gateway_of, hex, two_models, FakeHost};
use super::host::Flow;
use super::vm::Vm;
use super::RouterStream;
use crate::access::key_hash;
use crate::config::{self, RouterConfig};
use crate::health::Store;
use crate::limits::Record;
use crate::metrics::FakeSink;
use crate::routing::Rng;
use serde_json::{json, Value};
use std::rc::Rc;

const CHAT: &str = "/v1/chat/completions";
const KEY: &str = "sk-limited";


fn gateway(key: Value, teams: Value) -> (Rc<RouterConfig>, Rc<Vm<FakeSink>>) {
    let mut key = key;
    key["token"] = json!(hex(KEY));
    key["key_alias"] = json!("lim-app");
    let mut models = two_models();
    // gpt-4o is priced ($1 / $2 per million tokens), mini is not.
    models[0]["model_info"] = json!({"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6});
    gateway_of(&json!({"model_list": models, "keys": [key], "teams": teams}))
}

fn body(model: &str, max_tokens: Option<u64>) -> String {
    let mut b = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    if let Some(m) = max_tokens {
        b["max_tokens"] = json!(m);
    }
    b.to_string()
}

/// A stream of `shared`'s Envoy through its body phase.
fn start(cfg: &Rc<RouterConfig>, vm: &Rc<Vm<FakeSink>>, shared: &FakeHost, body: &str) -> (RouterStream<FakeSink>, FakeHost) {
    let host = FakeHost::sharing(shared);
    let len = body.len().to_string();
    let auth = format!("Bearer {KEY}");
    host.set_request(
        &[(":method", "POST"), (":path", CHAT), (":authority", "gw"), ("content-type", "application/json"), ("content-length", &len), ("authorization", &auth)],
        body,
    );
    let mut s = RouterStream::new(Some(cfg.clone()), vm.clone());
    assert_eq!(s.on_request_headers(&host, false), Flow::Pause);
    let size = host.request_body.borrow().len();
    s.on_request_body(&host, size, true);
    (s, host)
}

fn admitted(host: &FakeHost) -> bool {
    host.reply().is_none()
}

fn record(shared: &FakeHost, key: &str) -> Option<Record> {
    shared.store.get(key).ok().and_then(|(v, _)| v).and_then(|v| Record::decode(&v))
}

fn limit_key(kind: &str, scope: &str, id: &str) -> String {
    format!("llm_router.v1.limit.{kind}.{scope}.{id}")
}

#[test]
fn rpm_admits_the_limit_then_answers_litellms_429_with_headers() {
    let (cfg, vm) = gateway(json!({"rpm_limit": 2}), json!([]));
    let shared = FakeHost::default();
    for n in 0..2u64 {
        let (mut s, host) = start(&cfg, &vm, &shared, &body("gpt-4o", None));
        assert!(admitted(&host), "{:?}", host.reply());
        host.respond(&[(":status", "200"), ("content-type", "application/json")]);
        s.on_response_headers(&host);
        assert_eq!(host.response_header_value("x-ratelimit-limit-requests").as_deref(), Some("2"));
        assert_eq!(host.response_header_value("x-ratelimit-remaining-requests"), Some((1 - n).to_string()));
        assert_eq!(host.response_header_value("x-ratelimit-reset-requests").as_deref(), Some("60s"));
        assert_eq!(host.response_header_value("x-ratelimit-limit-tokens"), None, "no tpm limit: no tokens headers");
        s.on_log(&host);
    }
    let (_s, host) = start(&cfg, &vm, &shared, &body("gpt-4o", None));
    let reply = host.reply().unwrap_or_else(|| panic!("third request admitted"));
    assert_eq!(reply.status, 429);
    assert_eq!(reply.json()["error"]["type"], "None");
    assert_eq!(reply.json()["error"]["code"], "429");
    let msg = reply.json()["error"]["message"].as_str().map(str::to_string).unwrap_or_default();
    assert!(msg.starts_with("Rate limit exceeded for api_key: lim-app. Limit type: requests. Current limit: 2, Remaining: 0."), "{msg}");
    assert!(!msg.contains(&hex(KEY)) && !msg.contains(KEY), "never the key or its hash: {msg}");
    assert_eq!(reply.header("retry-after"), Some("60"));
    assert_eq!(reply.header("x-ratelimit-remaining-requests"), Some("0"));
    assert_eq!(host.count(super::fake::Op::SetRequestBody), 0);

    // The window rolls 60 s after its first request.
    shared.advance(60_000);
    let (_s, host) = start(&cfg, &vm, &shared, &body("gpt-4o", None));
    assert!(admitted(&host), "a new window: {:?}", host.reply());
}

#[test]
fn team_and_key_per_model_limits_apply_too_and_the_tightest_refuses() {
    let (cfg, vm) = gateway(json!({"rpm_limit": 10, "team_id": "eng", "model_rpm_limit": {"mini": 1}}), json!([{"team_id": "eng", "rpm_limit": 3}]));
    let shared = FakeHost::default();
    let (_s, host) = start(&cfg, &vm, &shared, &body("mini", None));
    assert!(admitted(&host));
    let (_s, host) = start(&cfg, &vm, &shared, &body("mini", None));
    let msg = host.reply().map(|r| r.json()["error"]["message"].to_string()).unwrap_or_default();
    assert!(msg.contains("model_per_key: lim-app:mini"), "{msg}");
    // The refused request left no trace: the team has 2 left for gpt-4o.
    for _ in 0..2 {
        let (_s, host) = start(&cfg, &vm, &shared, &body("gpt-4o", None));
        assert!(admitted(&host), "{:?}", host.reply());
    }
    let (_s, host) = start(&cfg, &vm, &shared, &body("gpt-4o", None));
    let msg = host.reply().map(|r| r.json()["error"]["message"].to_string()).unwrap_or_default();
    assert!(msg.contains("team: eng. Limit type: requests. Current limit: 3"), "{msg}");
    assert_eq!(record(&shared, &limit_key("rpm", "key", &hex(KEY))).map(|r| r.used), Some(3), "key counted only the admitted");
}

/// Every ending releases the slot exactly once.
#[test]
fn parallel_slots_are_released_once_whatever_ends_the_stream() {
    let (cfg, vm) = gateway(json!({"max_parallel_requests": 2}), json!([]));
    let shared = FakeHost::default();
    let slots = limit_key("parallel", "key", &hex(KEY));
    type Ending = fn(&mut RouterStream<FakeSink>, &FakeHost);
    let endings: [(&str, Ending); 4] = [
        ("success", |s, h| {
            h.respond(&[(":status", "200"), ("content-type", "application/json")]);
            s.on_response_headers(h);
            s.on_log(h);
        }),
        ("upstream error", |s, h| {
            h.respond(&[(":status", "500")]);
            s.on_response_headers(h);
            s.on_log(h);
        }),
        ("client reset (no response)", |s, h| s.on_log(h)),
        ("local reply after forwarding (a refused redirect)", |s, h| {
            h.respond(&[(":status", "302"), ("location", "http://elsewhere/")]);
            s.on_response_headers(h);
            assert_eq!(h.reply().map(|r| r.status), Some(502));
            s.on_log(h);
        }),
    ];
    for (name, end) in endings {
        let (mut a, ha) = start(&cfg, &vm, &shared, &body("gpt-4o", None));
        let (mut b, hb) = start(&cfg, &vm, &shared, &body("gpt-4o", None));
        assert!(admitted(&ha) && admitted(&hb), "{name}");
        let (_c, hc) = start(&cfg, &vm, &shared, &body("gpt-4o", None));
        assert_eq!(hc.reply().map(|r| (r.status, r.header("retry-after").map(str::to_string))), Some((429, Some("1".into()))), "{name}");
        end(&mut a, &ha);
        a.on_log(&ha); // a second on_log: nothing more is released
        assert_eq!(record(&shared, &slots).map(|r| r.reserved), Some(1), "{name}: b still holds its slot");
        let (mut d, hd) = start(&cfg, &vm, &shared, &body("gpt-4o", None));
        assert!(admitted(&hd), "{name}: a's slot is free");
        let (_e, he) = start(&cfg, &vm, &shared, &body("gpt-4o", None));
        assert!(!admitted(&he), "{name}: b and d hold both slots (a released once, not twice)");
        d.on_log(&hd);
        b.on_log(&hb);
        assert_eq!(record(&shared, &slots).map(|r| r.reserved), Some(0), "{name}");
    }
}

#[test]
fn tpm_reserves_input_plus_max_tokens_and_settles_to_the_reported_usage() {
    let (cfg, vm) = gateway(json!({"tpm_limit": 100}), json!([]));
    let shared = FakeHost::default();
    let tpm = limit_key("tpm", "key", &hex(KEY));
    let b = body("gpt-4o", Some(40));
    let estimate = (b.len() as u64).div_ceil(4) + 40;
    let (mut s, host) = start(&cfg, &vm, &shared, &b);
    assert!(admitted(&host));
    assert_eq!(record(&shared, &tpm).map(|r| (r.used, r.reserved)), Some((0, estimate)));
    // Another one does not fit while the first holds its reservation.
    let (_t, other) = start(&cfg, &vm, &shared, &body("gpt-4o", Some(60)));
    assert_eq!(other.reply().map(|r| r.status), Some(429));
    assert_eq!(other.reply().and_then(|r| r.header("x-ratelimit-limit-tokens").map(str::to_string)).as_deref(), Some("100"));
    host.respond(&[(":status", "200"), ("content-type", "text/event-stream")]);
    s.on_response_headers(&host);
    assert_eq!(host.response_header_value("x-ratelimit-limit-tokens").as_deref(), Some("100"));
    assert_eq!(host.response_header_value("x-ratelimit-remaining-tokens"), Some((100 - estimate).to_string()));
    *host.response_body.borrow_mut() =
        b"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":5,\"total_tokens\":12}}\n\ndata: [DONE]\n\n".to_vec();
    let size = host.response_body.borrow().len();
    s.on_response_body(&host, size);
    s.on_log(&host);
    assert_eq!(record(&shared, &tpm).map(|r| (r.used, r.reserved)), Some((12, 0)), "the actual usage replaced the estimate");
    let (_t, after) = start(&cfg, &vm, &shared, &body("gpt-4o", Some(60)));
    assert!(admitted(&after), "fits once the first's actual usage is recorded: {:?}", after.reply());
}

#[test]
fn tpm_of_a_failed_attempt_counts_nothing_and_unknown_usage_keeps_the_estimate() {
    let (cfg, vm) = gateway(json!({"tpm_limit": 1000}), json!([]));
    let shared = FakeHost::default();
    let tpm = limit_key("tpm", "key", &hex(KEY));
    let (mut s, host) = start(&cfg, &vm, &shared, &body("gpt-4o", Some(10)));
    host.respond(&[(":status", "500")]);
    s.on_response_headers(&host);
    s.on_log(&host);
    assert_eq!(record(&shared, &tpm).map(|r| (r.used, r.reserved)), Some((0, 0)));
    let b = body("gpt-4o", Some(10));
    let (mut s, host) = start(&cfg, &vm, &shared, &b);
    host.respond(&[(":status", "200"), ("content-type", "application/json")]);
    s.on_response_headers(&host);
    s.on_log(&host); // no body: no usage
    assert_eq!(record(&shared, &tpm).map(|r| (r.used, r.reserved)), Some(((b.len() as u64).div_ceil(4) + 10, 0)));
    // A client reset before any answer: the provider may have worked, the reservation stays.
    let (mut s, host) = start(&cfg, &vm, &shared, &b);
    s.on_log(&host);
    assert_eq!(record(&shared, &tpm).map(|r| (r.used, r.reserved)), Some((2 * ((b.len() as u64).div_ceil(4) + 10), 0)));
}

#[test]
fn keys_without_limits_touch_no_limit_record() {
    let (cfg, vm) = gateway(json!({}), json!([]));
    let shared = FakeHost::default();
    let (mut s, host) = start(&cfg, &vm, &shared, &body("gpt-4o", None));
    assert!(admitted(&host));
    host.respond(&[(":status", "200")]);
    s.on_response_headers(&host);
    s.on_log(&host);
    assert_eq!(host.response_header_value("x-ratelimit-limit-requests"), None);
    assert_eq!(*shared.store.writes.borrow(), 0);
}

#[test]
fn a_reservation_larger_than_the_tpm_limit_runs_alone_instead_of_never() {
    // No max_tokens: the default 4096-token reservation is larger than the whole limit.
    let (cfg, vm) = gateway(json!({"tpm_limit": 1000}), json!([]));
    let shared = FakeHost::default();
    let tpm = limit_key("tpm", "key", &hex(KEY));
    let (mut s, host) = start(&cfg, &vm, &shared, &body("gpt-4o", None));
    assert!(admitted(&host), "{:?}", host.reply());
    assert_eq!(record(&shared, &tpm).map(|r| r.reserved), Some(1000), "held as the whole limit");
    let (_t, other) = start(&cfg, &vm, &shared, &body("gpt-4o", Some(1)));
    assert_eq!(other.reply().map(|r| r.status), Some(429), "nothing else fits meanwhile");
    host.respond(&[(":status", "200"), ("content-type", "application/json")]);
    s.on_response_headers(&host);
    *host.response_body.borrow_mut() = br#"{"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#.to_vec();
    let size = host.response_body.borrow().len();
    s.on_response_body(&host, size);
    s.on_log(&host);
    assert_eq!(record(&shared, &tpm).map(|r| (r.used, r.reserved)), Some((5, 0)));

    // tpm_limit 0 refuses everything.
    let (cfg, vm) = gateway(json!({"tpm_limit": 0}), json!([]));
    let (_s, host) = start(&cfg, &vm, &FakeHost::default(), &body("gpt-4o", Some(1)));
    assert_eq!(host.reply().map(|r| r.status), Some(429));
}

/// A JSON answer reporting this usage, through the response phases.
fn answer(s: &mut RouterStream<FakeSink>, host: &FakeHost, prompt: u64, completion: u64) {
    host.respond(&[(":status", "200"), ("content-type", "application/json")]);
    s.on_response_headers(host);
    *host.response_body.borrow_mut() = format!(r#"{{"choices":[],"usage":{{"prompt_tokens":{prompt},"completion_tokens":{completion}}}}}"#).into_bytes();
    let size = host.response_body.borrow().len();
    s.on_response_body(host, size);
    s.on_log(host);
}

#[test]
fn a_budget_reserves_the_worst_case_settles_the_priced_usage_and_refuses_once_reached() {
    // $1 / $2 per million tokens; budget $0.01, soft $0.004.
    let (cfg, vm) = gateway(json!({"max_budget": 0.01, "soft_budget": 0.004, "budget_duration": "1d"}), json!([]));
    let shared = FakeHost::default();
    let rec = limit_key("budget", "key", &hex(KEY));
    let b = body("gpt-4o", Some(1000));
    let worst = (b.len() as u64).div_ceil(4) * 1_000 + 1000 * 2_000;
    let (mut s, host) = start(&cfg, &vm, &shared, &b);
    assert!(admitted(&host), "{:?}", host.reply());
    assert_eq!(record(&shared, &rec).map(|r| (r.used, r.reserved)), Some((0, worst)), "the worst case is held");
    answer(&mut s, &host, 1000, 1500);
    assert_eq!(host.response_header_value("x-litellm-key-max-budget").as_deref(), Some("0.01"));
    assert_eq!(host.response_header_value("x-litellm-key-spend").as_deref(), Some("0.0"));
    assert_eq!(host.response_header_value("x-llm-router-soft-budget-exceeded"), None);
    assert_eq!(record(&shared, &rec).map(|r| (r.used, r.reserved)), Some((4_000_000, 0)), "1000 × $1e-6 + 1500 × $2e-6");
    // Spend $0.004 reached the soft budget: flagged, admitted.
    let (mut s, host) = start(&cfg, &vm, &shared, &b);
    answer(&mut s, &host, 1000, 1500);
    assert_eq!(host.response_header_value("x-llm-router-soft-budget-exceeded").as_deref(), Some("key"));
    assert_eq!(host.response_header_value("x-litellm-key-spend").as_deref(), Some("0.004"));
    // $0.008 < $0.01: admitted (LiteLLM refuses once spend has reached the budget), crosses it.
    let (mut s, host) = start(&cfg, &vm, &shared, &b);
    assert!(admitted(&host));
    answer(&mut s, &host, 1000, 1500);
    let (_s, host) = start(&cfg, &vm, &shared, &b);
    let reply = host.reply().unwrap_or_else(|| panic!("over budget, admitted"));
    assert_eq!((reply.status, reply.json()["error"]["type"].as_str(), reply.json()["error"]["code"].as_str()), (429, Some("budget_exceeded"), Some("429")));
    let msg = reply.json()["error"]["message"].as_str().map(str::to_string).unwrap_or_default();
    assert!(msg.starts_with("ExceededTokenBudget: Current spend for token: 0.012; Max Budget for Token: 0.01. Budget resets at: "), "{msg}");
    assert!(reply.header("retry-after").is_some(), "a 1d budget resets at midnight");
    assert_eq!(record(&shared, &rec).map(|r| (r.used, r.reserved)), Some((12_000_000, 0)), "a refusal holds nothing");
    // The next day the spend starts again.
    shared.advance(86_400_000);
    let (_s, host) = start(&cfg, &vm, &shared, &b);
    assert!(admitted(&host), "{:?}", host.reply());
}

#[test]
fn an_errored_attempt_costs_nothing_and_team_and_model_budgets_apply() {
    let (cfg, vm) = gateway(
        json!({"team_id": "eng", "model_max_budget": {"gpt-4o": {"budget_limit": 0.001, "time_period": "30d"}}}),
        json!([{"team_id": "eng", "max_budget": 1}]),
    );
    let shared = FakeHost::default();
    let b = body("gpt-4o", Some(10));
    let (mut s, host) = start(&cfg, &vm, &shared, &b);
    host.respond(&[(":status", "500")]);
    s.on_response_headers(&host);
    s.on_log(&host);
    assert_eq!(record(&shared, &limit_key("budget", "team", "eng")).map(|r| (r.used, r.reserved)), Some((0, 0)));
    let (mut s, host) = start(&cfg, &vm, &shared, &b);
    answer(&mut s, &host, 100, 500); // $0.0011
    assert_eq!(host.response_header_value("x-litellm-key-spend"), None, "no budget of the key's own");
    assert_eq!(record(&shared, &limit_key("budget", "team", "eng")).map(|r| r.used), Some(1_100_000));
    let (_s, host) = start(&cfg, &vm, &shared, &b);
    let msg = host.reply().map(|r| r.json()["error"]["message"].to_string()).unwrap_or_default();
    assert!(msg.contains("Budget has been exceeded! Key=lim-app Model=gpt-4o Current cost: 0.0011, Max budget: 0.001"), "{msg}");
    assert!(!msg.contains(&hex(KEY)), "{msg}");
    let (_s, host) = start(&cfg, &vm, &shared, &body("mini", Some(10)));
    assert!(admitted(&host), "another model: only the team's $1: {:?}", host.reply());
}

/// What a key's limits cost in host calls, pinned: the response headers are read and written
/// once as a map (not a call per `x-ratelimit-*` header), and each limit is one shared-data read
/// and one CAS write at admission, each held amount one more at settlement — whatever the number
/// of keys.
#[test]
fn a_key_s_limits_cost_one_header_map_write_and_one_read_write_per_limit() {
    let (cfg, vm) = gateway(json!({"rpm_limit": 1000000, "tpm_limit": 100000000, "max_parallel_requests": 1000, "max_budget": 100000, "budget_duration": "1d"}), json!([]));
    let shared = FakeHost::default();
    let (mut s, host) = start(&cfg, &vm, &shared, &body("gpt-4o", None));
    let (reads, writes) = (*shared.store.reads.borrow(), *shared.store.writes.borrow());
    answer(&mut s, &host, 10, 10);
    use super::fake::Op;
    assert_eq!((host.count(Op::ResponseHeaders), host.count(Op::SetResponseHeaders)), (1, 1));
    assert_eq!((host.count(Op::ResponseHeader), host.count(Op::SetResponseHeader)), (0, 0));
    assert_eq!(host.response_header_value("x-ratelimit-limit-requests").as_deref(), Some("1000000"));
    assert_eq!(host.response_header_value("x-litellm-key-max-budget").as_deref(), Some("100000.0"));
    assert!(host.response_header_value("x-llm-router-deployment").is_some());
    // Admission: parallel, rpm, tpm, budget (+ the cooldown view's read); settlement: parallel, tpm, budget.
    assert_eq!((reads, writes), (1 + 4, 4));
    assert_eq!((*shared.store.reads.borrow(), *shared.store.writes.borrow()), (reads + 3, writes + 3));
}
