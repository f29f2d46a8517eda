//! Whole router streams driven through the fake host, as scenarios: what Envoy would see the
//! filter do (host calls, header maps, replies) and what lands in shared data and the metrics.

use super::fake::{FakeHost, Op};
use super::host::Flow;
use super::router_stream::{ATTEMPTS_HEADER, DEPLOYMENT_HEADER, GROUP_HEADER};
use super::upstream_stream::{UpstreamEnv, UpstreamStream};
use super::vm::Vm;
use super::RouterStream;
use crate::config::{self, RouterConfig};
use crate::failover::{AttemptState, PendingAttempts, STATE_HEADER};
use crate::health::{keys, Cooldowns, FailureClass, FailureWindow, Store};
use crate::metrics::catalogue::Metric;
use crate::metrics::FakeSink;
use crate::routing::Rng;
use crate::stats::{StatsSource, StoreStats};
use serde_json::{json, Value};
use std::cell::RefCell;
use std::rc::Rc;

const KEY: (u64, u64) = (0x1234, 0x5678);
const CHAT: &str = "/v1/chat/completions";

/// One VM with one configuration.
struct Gw {
    cfg: Rc<RouterConfig>,
    vm: Rc<Vm<FakeSink>>,
}

impl Gw {
    fn new(v: Value) -> Gw {
        let env = |n: &str| (n == "OPENAI_API_KEY").then(|| "sk-env".to_string());
        let Some(mut cfg) = config::load(v.to_string().as_bytes(), &env).config else { panic!("config refused") };
        cfg.generation = 1;
        Gw { cfg: Rc::new(cfg), vm: Rc::new(Vm::new(Rng::from_seed(7), KEY, FakeSink::default())) }
    }

    fn stream(&self) -> RouterStream<FakeSink> {
        RouterStream::new(Some(self.cfg.clone()), self.vm.clone())
    }

    fn metric(&self, m: Metric, labels: &[&str]) -> i64 {
        self.vm.metrics.borrow().sink.value(m, labels)
    }

    /// Deployment id by cluster name.
    fn id_of_cluster(&self, cluster: &str) -> String {
        self.cfg.table.deployments.iter().find(|d| d.upstream.cluster == cluster).map(|d| d.id.clone()).unwrap_or_default()
    }
}

fn deployment(group: &str, model: &str, port: u16, key: &str, id: &str) -> Value {
    json!({"model_name": group, "litellm_params": {"model": model, "api_base": format!("http://127.0.0.1:{port}/v1"), "api_key": key},
        "model_info": {"id": id}})
}

/// Two deployments of `gpt-4o`, one of `mini` (its body model changes), a wildcard; the master
/// key; the failover wiring and retries; per-try budget 2 s.
fn config(strategy: &str) -> Value {
    json!({
        "model_list": [
            deployment("gpt-4o", "openai/gpt-4o", 18001, "sk-a", "a"),
            deployment("gpt-4o", "openai/gpt-4o", 18002, "sk-b", "b"),
            deployment("mini", "openai/gpt-4o-mini", 18003, "sk-m", "m"),
            {"model_name": "openai/*", "litellm_params": {"model": "openai/*", "api_key": "sk-w"}, "model_info": {"id": "w"}},
        ],
        "router_settings": {"num_retries": 2, "timeout": 2, "routing_strategy": strategy},
        "general_settings": {"master_key": "sk-master"},
        "envoy_settings": {"failover": true},
    })
}

fn gw() -> Gw {
    Gw::new(config("simple-shuffle"))
}

fn chat(model: &str) -> String {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}).to_string()
}

/// A client's routed request with the gateway key, plus `extra` headers.
fn client(body: &str, extra: &[(&str, &str)]) -> FakeHost {
    let len = body.len().to_string();
    let mut headers = vec![
        (":method", "POST"),
        (":path", CHAT),
        (":authority", "gw.local"),
        (":scheme", "http"),
        ("content-type", "application/json"),
        ("content-length", len.as_str()),
        ("authorization", "Bearer sk-master"),
        ("x-request-id", "rid-1"),
    ];
    headers.extend_from_slice(extra);
    FakeHost::request(&headers, body)
}

/// Runs the request phase: headers (paused for the body), then the whole body.
fn forward(s: &mut RouterStream<FakeSink>, host: &FakeHost) -> Flow {
    assert_eq!(s.on_request_headers(host, false), Flow::Pause, "the body is buffered: {:?}", host.reply());
    let size = host.request_body.borrow().len();
    s.on_request_body(host, size, true)
}

/// A forwarded stream (asserted), with its host.
fn routed(gw: &Gw, model: &str) -> (RouterStream<FakeSink>, FakeHost) {
    let host = client(&chat(model), &[]);
    let mut s = gw.stream();
    assert_eq!(forward(&mut s, &host), Flow::Continue, "{:?}", host.reply());
    assert_eq!(host.reply(), None);
    (s, host)
}

fn window(host: &FakeHost, id: &str) -> Option<FailureWindow> {
    host.store.get(&keys::fails(id)).ok().and_then(|(v, _)| v).and_then(|v| FailureWindow::decode(&v))
}

fn cooldowns(host: &FakeHost) -> Cooldowns {
    host.store.get(keys::COOLDOWNS).ok().and_then(|(v, _)| v).map(|v| Cooldowns::decode(&v)).unwrap_or_default()
}

#[test]
fn a_routed_request_leaves_with_one_merged_header_map() {
    let gw = gw();
    let body = chat("mini");
    let host = client(
        &body,
        &[
            ("openai-organization", "org-evil"),
            ("openai-project", "proj-evil"),
            ("cookie", "session=1"),
            ("api-key", "client-key"),
            ("x-api-key", "client-key-2"),
            ("x-envoy-max-retries", "50"),
            ("x-envoy-upstream-rq-timeout-ms", "1"),
            ("x-llm-router-cluster", "outbound|443||internal-admin"),
            ("x-llm-router-state", "forged"),
            ("x-llm-router-redirector", "1"),
            ("traceparent", "00-abc"),
            ("user-agent", "sdk/1"),
        ],
    );
    let mut s = gw.stream();
    assert_eq!(forward(&mut s, &host), Flow::Continue);
    assert_eq!(host.count(Op::SetRequestHeaders), 1, "one header-map write");
    assert_eq!(host.count(Op::RemoveRequestHeader), 0, "nothing removed one by one");

    let new_body = host.body_text();
    let sent: Value = serde_json::from_str(&new_body).unwrap_or(Value::Null);
    assert_eq!(sent["model"], "gpt-4o-mini", "the body names the deployment's model");
    let length = new_body.len().to_string();
    let h = |n: &str| host.request_header_value(n);
    assert_eq!(h(":authority").as_deref(), Some("127.0.0.1:18003"));
    assert_eq!(h(":path").as_deref(), Some(CHAT));
    assert_eq!(h("x-llm-router-cluster").as_deref(), Some("outbound|18003||127.0.0.1"));
    assert_eq!(h("authorization").as_deref(), Some("Bearer sk-m"), "the provider key replaces the gateway key");
    assert_eq!(h("content-length").as_deref(), Some(length.as_str()));
    assert_eq!(h("x-envoy-upstream-rq-per-try-timeout-ms").as_deref(), Some("2000"));
    assert_eq!(h(STATE_HEADER), None, "the forged state is gone (one deployment, nothing left to try: no state of ours)");
    for gone in ["openai-organization", "openai-project", "cookie", "api-key", "x-api-key", "x-envoy-max-retries", "x-envoy-upstream-rq-timeout-ms", "x-llm-router-redirector"] {
        assert_eq!(h(gone), None, "{gone} is not forwarded");
    }
    for (kept, value) in [(":method", "POST"), (":scheme", "http"), ("content-type", "application/json"), ("x-request-id", "rid-1"), ("traceparent", "00-abc"), ("user-agent", "sdk/1")] {
        assert_eq!(h(kept).as_deref(), Some(value), "{kept} is forwarded as is");
    }
    let mut names = host.request_header_names();
    let total = names.len();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), total, "no header twice: {names:?}");
    assert_eq!(gw.metric(Metric::Requests, &["mini", "m"]), 1);
    assert_eq!(gw.metric(Metric::InFlight, &["mini", "m"]), 1);
}

#[test]
fn the_hot_path_makes_the_documented_host_calls() {
    let gw = gw();
    // The body's model is the deployment's: the body goes on untouched.
    let (mut s, host) = routed(&gw, "gpt-4o");
    let ops = |host: &FakeHost| host.calls.borrow().iter().map(|(o, _)| *o).collect::<Vec<_>>();
    assert_eq!(ops(&host), [Op::RequestHeaders, Op::RequestBody, Op::Now, Op::SetRequestHeaders]);
    assert_eq!(*host.store.reads.borrow(), 1, "one shared-data read: the cooldown record");
    assert_eq!(*host.store.writes.borrow(), 0, "no shared-data write on success");
    assert_eq!(host.request_header_value("content-length").map(|l| l.parse::<usize>().ok()), Some(Some(chat("gpt-4o").len())));

    host.clear_calls();
    host.respond(&[(":status", "200"), ("content-type", "application/json")]);
    assert_eq!(s.on_response_headers(&host), Flow::Continue);
    let expected_reads = [":status", "content-encoding", "content-type"];
    assert_eq!(host.args(Op::ResponseHeader), expected_reads, "status, then the usage reader's two");
    assert_eq!(host.args(Op::SetResponseHeader), [DEPLOYMENT_HEADER, GROUP_HEADER, ATTEMPTS_HEADER]);
    assert_eq!((host.count(Op::Property), host.count(Op::Now)), (0, 1));
    assert_eq!(host.response_header_value(ATTEMPTS_HEADER).as_deref(), Some("1"));
    assert_eq!(host.response_header_value(GROUP_HEADER).as_deref(), Some("gpt-4o"));

    host.clear_calls();
    *host.response_body.borrow_mut() = br#"{"id":"x","usage":{"prompt_tokens":11,"completion_tokens":4,"total_tokens":15}}"#.to_vec();
    let size = host.response_body.borrow().len();
    assert_eq!(s.on_response_body(&host, size), Flow::Continue);
    s.on_log(&host);
    assert_eq!(ops(&host), [Op::Now, Op::ResponseBody, Op::Now], "first byte, the chunk, the end");
    let id = gw.id_of_cluster(&host.request_header_value("x-llm-router-cluster").unwrap_or_default());
    assert_eq!(gw.metric(Metric::InFlight, &["gpt-4o", &id]), 0);
    assert_eq!(gw.metric(Metric::InputTokens, &["gpt-4o", &id]), 11);
    assert_eq!(gw.metric(Metric::OutputTokens, &["gpt-4o", &id]), 4);
    assert_eq!(*host.store.writes.borrow(), 0);
}

#[test]
fn a_request_rewritten_writes_its_body_once_with_its_length() {
    let gw = gw();
    let (_s, host) = routed(&gw, "mini");
    assert_eq!(host.count(Op::SetRequestBody), 1);
    assert_eq!(host.args(Op::SetRequestBody), [chat("mini").len().to_string()], "the whole buffered body is replaced");
    assert!(host.body_text().contains("\"gpt-4o-mini\""));
    assert_eq!(host.request_header_value("content-length"), Some(host.body_text().len().to_string()));
}

#[test]
fn a_passed_through_request_only_loses_the_router_headers() {
    let gw = gw();
    let headers = [
        (":method", "GET"),
        (":path", "/healthz"),
        (":authority", "gw.local"),
        ("x-llm-router-cluster", "outbound|443||internal-admin"),
        ("authorization", "Bearer anything"),
        ("x-llm-router-state", "forged"),
        ("x-envoy-max-retries", "5"),
    ];
    let host = FakeHost::request(&headers, "");
    let mut s = gw.stream();
    assert_eq!(s.on_request_headers(&host, true), Flow::Continue);
    assert_eq!(host.args(Op::RemoveRequestHeader), ["x-llm-router-cluster", "x-llm-router-state"]);
    assert_eq!(host.request_header_names(), [":method", ":path", ":authority", "authorization", "x-envoy-max-retries"], "nothing else touched");
    assert_eq!((host.count(Op::SetRequestHeaders), host.count(Op::RequestBody), host.reply()), (0, 0, None));
    // Without internal headers: no write at all.
    let clean = FakeHost::request(&[(":method", "GET"), (":path", "/healthz")], "");
    assert_eq!(gw.stream().on_request_headers(&clean, true), Flow::Continue);
    assert_eq!(clean.calls.borrow().iter().map(|(o, _)| *o).collect::<Vec<_>>(), [Op::RequestHeaders]);
}

#[test]
fn a_custom_cluster_header_is_internal_on_every_request() {
    let mut v = config("simple-shuffle");
    v["envoy_settings"]["cluster_header"] = json!("x-route-to");
    let gw = Gw::new(v);
    let host = FakeHost::request(&[(":method", "GET"), (":path", "/other"), ("x-route-to", "admin"), ("x-llm-router-cluster", "x")], "");
    assert_eq!(gw.stream().on_request_headers(&host, true), Flow::Continue);
    assert_eq!(host.args(Op::RemoveRequestHeader), ["x-route-to", "x-llm-router-cluster"]);
}

/// Runs pass 1 of `gpt-4o`, its upstream role seeing `status`, and returns the replay Envoy
/// would make (its headers and body), with pass 1's stream and the first deployment's id.
fn failover_replay(gw: &Gw, pending: &RefCell<PendingAttempts>, status: &str) -> (Vec<(String, String)>, String, RouterStream<FakeSink>, String) {
    let (s1, gw1) = routed(gw, "gpt-4o");
    let first = gw.id_of_cluster(&gw1.request_header_value("x-llm-router-cluster").unwrap_or_default());
    // A retry is possible: the router's own state rides along, signed with the VM key.
    let state = gw1.request_header_value(STATE_HEADER).and_then(|s| AttemptState::decode(&s, KEY));
    assert_eq!(state.map(|st| (st.model, st.tried)), Some(("gpt-4o".to_string(), vec![first.clone()])));
    // The upstream role on the chosen cluster sees the rewritten request.
    let up = FakeHost::sharing(&gw1);
    *up.request_headers.borrow_mut() = gw1.request_headers.borrow().clone();
    let env = UpstreamEnv { key: KEY, verify: true, pending };
    let mut u = UpstreamStream::default();
    assert_eq!(u.on_request_headers(&up, &env), Flow::Continue);
    assert_eq!(up.request_header_value(STATE_HEADER), None, "no provider sees the state");
    up.respond(&[(":status", status), ("retry-after", "3")]);
    assert_eq!(u.on_response_headers(&up, &env, false), Flow::Continue);
    assert_eq!(up.response_header_value(":status").as_deref(), Some("307"));
    let location = up.response_header_value("location").unwrap_or_default();
    let path = location.strip_prefix("http://gw.local").unwrap_or_else(|| panic!("{location}")).to_string();
    assert!(path.starts_with(&format!("/__llm_router/failover?status={status}&ra=3000&state=")), "{path}");
    // Envoy follows it: the same (upstream-edited) header map, the location's path, the body as
    // pass 1 forwarded it, and x-envoy-original-url.
    let mut replay: Vec<(String, String)> = up.request_headers.borrow().clone();
    for (name, value) in replay.iter_mut() {
        match name.as_str() {
            ":path" => *value = path.clone(),
            ":authority" => *value = "gw.local".into(),
            _ => {}
        }
    }
    replay.push(("x-envoy-original-url".into(), "http://gw.local/v1/chat/completions".into()));
    (replay, gw1.body_text(), s1, first)
}

fn replay_host(gw1: &FakeHost, headers: &[(String, String)], body: &str) -> FakeHost {
    let host = FakeHost::sharing(gw1);
    *host.request_headers.borrow_mut() = headers.to_vec();
    *host.request_body.borrow_mut() = body.as_bytes().to_vec();
    host
}

#[test]
fn a_failover_pass_is_attributed_to_the_first_pass_s_caller() {
    let gw = gw();
    let pending = RefCell::new(PendingAttempts::default());
    let (replay, body, mut s1, first) = failover_replay(&gw, &pending, "500");
    let state = replay.iter().find(|(n, _)| n == ":path").and_then(|(_, p)| p.split_once("state=")).map(|(_, s)| s.to_string());
    assert!(state.is_some_and(|s| s.contains("u=m") || s.contains("u%3Dm")), "the payer rides in the signed state");
    let base = FakeHost::default();
    s1.on_log(&base);
    let gw2 = replay_host(&base, &replay, &body);
    let mut s2 = gw.stream();
    assert_eq!(forward(&mut s2, &gw2), Flow::Continue, "{:?}", gw2.reply());
    let second = gw.id_of_cluster(&gw2.request_header_value("x-llm-router-cluster").unwrap_or_default());
    assert_ne!(second, first);
    gw2.respond(&[(":status", "200")]);
    s2.on_response_headers(&gw2);
    s2.on_log(&gw2);
    // Both passes were the master key's, though the replay is not re-identified.
    assert_eq!(gw.metric(Metric::SpendRequests, &["-", "master_key", "gpt-4o"]), 2);
}

#[test]
fn a_failover_replay_is_accepted_once() {
    let gw = gw();
    let pending = RefCell::new(PendingAttempts::default());
    let (replay, body, mut s1, first) = failover_replay(&gw, &pending, "429");
    let base = FakeHost::default();

    let gw2 = replay_host(&base, &replay, &body);
    let mut s2 = gw.stream();
    assert_eq!(forward(&mut s2, &gw2), Flow::Continue, "{:?}", gw2.reply());
    let second = gw.id_of_cluster(&gw2.request_header_value("x-llm-router-cluster").unwrap_or_default());
    assert_ne!((second.as_str(), first.as_str()), ("", ""));
    assert_ne!(second, first, "the retry goes to the other deployment");
    let auth = if second == "a" { "Bearer sk-a" } else { "Bearer sk-b" };
    assert_eq!(gw2.request_header_value("authorization").as_deref(), Some(auth), "the previous pass's key is replaced");
    assert_eq!(gw2.request_header_value(":path").as_deref(), Some(CHAT), "the client's path again, not the failover path");
    // The failed attempt is recorded once, by this pass (429 in a group of two: cools at once).
    assert_eq!(window(&gw2, &first).map(|w| (w.count, w.last_class)), Some((1, Some(FailureClass::RateLimit))));
    assert!(cooldowns(&gw2).get(&first).is_some());
    assert_eq!(gw.metric(Metric::Failures, &["gpt-4o", &first, "rate_limit"]), 1);
    assert_eq!(gw.metric(Metric::Retries, &["gpt-4o", &second]), 1);
    gw2.respond(&[(":status", "200")]);
    assert_eq!(s2.on_response_headers(&gw2), Flow::Continue);
    assert_eq!(gw2.response_header_value(ATTEMPTS_HEADER).as_deref(), Some("2"));
    // Pass 1 ends at its redirect.
    s1.on_log(&base);
    assert_eq!(gw.metric(Metric::InFlight, &["gpt-4o", &first]), 0);

    // The same replay again (a captured location): refused before its body, headers untouched.
    let gw3 = replay_host(&base, &replay, &body);
    let mut s3 = gw.stream();
    assert_eq!(s3.on_request_headers(&gw3, false), Flow::Pause);
    let reply = gw3.reply().unwrap_or_else(|| panic!("no reply"));
    assert_eq!((reply.status, reply.code().as_deref()), (502, Some("upstream_redirect_refused")));
    assert_eq!((gw3.count(Op::SetRequestHeaders), gw3.count(Op::RemoveRequestHeader), gw3.count(Op::RequestBody)), (0, 0, 0));
    assert_eq!(s3.on_request_body(&gw3, body.len(), true), Flow::Continue, "a replied stream ignores its body");
    assert_eq!(gw3.count(Op::RequestBody), 0);
    assert_eq!(window(&gw3, &first).map(|w| w.count), Some(1), "nothing recorded twice");
}

#[test]
fn a_replay_with_another_body_is_refused_and_records_nothing() {
    let gw = gw();
    let pending = RefCell::new(PendingAttempts::default());
    let (replay, body, _s1, first) = failover_replay(&gw, &pending, "500");
    let host = replay_host(&FakeHost::default(), &replay, &body.replace("hi", "ho"));
    let mut s = gw.stream();
    assert_eq!(forward(&mut s, &host), Flow::Pause);
    assert_eq!(host.reply().map(|r| (r.status, r.code())), Some((502, Some("upstream_redirect_refused".into()))));
    assert_eq!(host.count(Op::SetRequestHeaders), 0);
    assert_eq!(window(&host, &first), None);
}

#[test]
fn a_followed_provider_redirect_is_refused() {
    // Envoy followed a provider's own 3xx: the replay of a routed URL carries the provider key.
    let gw = gw();
    let (_s, pass1) = routed(&gw, "gpt-4o");
    let mut headers = pass1.request_headers.borrow().clone();
    headers.push(("x-envoy-original-url".into(), "http://127.0.0.1:18001/v1/chat/completions".into()));
    for (n, v) in headers.iter_mut() {
        if n == ":path" {
            *v = "/v1/steal".into();
        }
    }
    let host = replay_host(&pass1, &headers, &pass1.body_text());
    assert_eq!(gw.stream().on_request_headers(&host, false), Flow::Pause);
    assert_eq!(host.reply().map(|r| r.status), Some(502));
    assert_eq!((host.count(Op::RemoveRequestHeader), host.count(Op::SetRequestHeaders)), (0, 0));
}

#[test]
fn a_provider_redirect_gets_a_502_and_the_attempt_is_closed_once() {
    // least-busy tracks in-flight attempts in shared data: the close must release it exactly once.
    let gw = Gw::new(config("least-busy"));
    let (mut s, host) = routed(&gw, "mini");
    let index = gw.cfg.table.ids.get("m").copied().unwrap_or(usize::MAX);
    let in_flight = |host: &FakeHost| {
        let live = StoreStats { store: &*host.store, table: &gw.cfg.table, now_ms: 0, latency_ttl_ms: 1 };
        live.stats(index).in_flight
    };
    assert_eq!(in_flight(&host), 1);
    host.respond(&[(":status", "307"), ("location", "http://internal.example/steal")]);
    assert_eq!(s.on_response_headers(&host), Flow::Pause);
    let reply = host.reply().unwrap_or_else(|| panic!("no reply"));
    assert_eq!((reply.status, reply.code().as_deref()), (502, Some("upstream_redirect_refused")));
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(host.count(Op::Property), 0);
    assert_eq!(window(&host, "m"), None, "a redirect is not the deployment's failure");
    assert_eq!(gw.metric(Metric::Rejected, &["upstream_redirect_refused"]), 1);
    s.on_log(&host);
    assert_eq!((in_flight(&host), gw.metric(Metric::InFlight, &["mini", "m"])), (0, 0));
    let writes = *host.store.writes.borrow();
    s.on_log(&host);
    assert_eq!((in_flight(&host), gw.metric(Metric::InFlight, &["mini", "m"])), (0, 0), "closed exactly once");
    assert_eq!(*host.store.writes.borrow(), writes);
    assert_eq!(gw.vm.metrics.borrow().sink.samples(Metric::Duration, &["mini", "m"]).len(), 1);
}

#[test]
fn a_404_under_a_wildcard_records_nothing() {
    let gw = gw();
    let (mut s, host) = routed(&gw, "openai/invented-model");
    assert_eq!(host.request_header_value("x-llm-router-cluster").as_deref(), Some("outbound|443||api.openai.com"));
    host.respond(&[(":status", "404")]);
    assert_eq!(s.on_response_headers(&host), Flow::Continue);
    assert_eq!(host.args(Op::Property), ["response.code_details"]);
    assert_eq!(*host.store.writes.borrow(), 0, "the client's invented name is not the deployment's failure");
    assert_eq!(gw.metric(Metric::Failures, &["openai/*", "w", "not_found"]), 0);
    assert_eq!(host.response_header_value(":status").as_deref(), Some("404"), "passed on as is");
    // The same 404 from a named group counts.
    let (mut s, host) = routed(&gw, "mini");
    host.respond(&[(":status", "404")]);
    s.on_response_headers(&host);
    assert_eq!(window(&host, "m").map(|w| w.last_class), Some(Some(FailureClass::NotFound)));
}

#[test]
fn a_504_response_timeout_records_a_timeout() {
    let gw = gw();
    let (mut s, host) = routed(&gw, "mini");
    host.respond(&[(":status", "504")]);
    host.set_property_value("response.code_details", "response_timeout");
    assert_eq!(s.on_response_headers(&host), Flow::Continue);
    assert_eq!(window(&host, "m").map(|w| (w.count, w.last_class)), Some((1, Some(FailureClass::Timeout))));
    assert_eq!(gw.metric(Metric::Failures, &["mini", "m", "timeout"]), 1);
    // Envoy's own overflow (circuit breaker) is not the deployment's.
    let (mut s, host) = routed(&gw, "mini");
    host.respond(&[(":status", "503")]);
    host.set_property_value("response.code_details", "upstream_reset_before_response_started{overflow}");
    s.on_response_headers(&host);
    assert_eq!(window(&host, "m"), None);
}

#[test]
fn an_unfollowed_failover_redirect_becomes_the_failure_it_reports() {
    // max_internal_redirects reached: the router sees the upstream role's 307.
    let gw = gw();
    let (mut s, host) = routed(&gw, "mini");
    host.respond(&[(":status", "307"), ("location", "http://gw.local/__llm_router/failover?status=429&ra=5000&state=x"), ("retry-after", "5")]);
    assert_eq!(s.on_response_headers(&host), Flow::Continue);
    assert_eq!(host.reply(), None);
    assert_eq!(host.response_header_value(":status").as_deref(), Some("429"));
    assert_eq!(host.response_header_value("location"), None);
    assert_eq!(window(&host, "m").map(|w| w.last_class), Some(Some(FailureClass::RateLimit)));
}

#[test]
fn a_redirector_answer_is_a_timeout_or_a_connect_failure_by_elapsed_time() {
    let gw = gw();
    for (elapsed, class) in [(1_990, FailureClass::Timeout), (5, FailureClass::ConnectFailure)] {
        let (mut s, host) = routed(&gw, "mini");
        host.advance(elapsed);
        host.respond(&[(":status", "307"), ("location", "http://gw.local/__llm_router/failover?status=0&state=x"), ("x-llm-router-redirector", "1")]);
        s.on_response_headers(&host);
        assert_eq!(host.response_header_value(":status").as_deref(), Some("503"));
        assert_eq!(host.response_header_value("x-llm-router-redirector"), None, "the marker never reaches the client");
        assert_eq!(window(&host, "m").map(|w| w.last_class), Some(Some(class)), "{elapsed} ms of a 2000 ms budget");
        host.store.set(&keys::fails("m"), b"", None).ok();
    }
}

#[test]
fn a_failing_header_write_degrades_one_request() {
    let gw = gw();
    let host = client(&chat("mini"), &[]);
    host.fail(Op::SetRequestHeaders);
    let mut s = gw.stream();
    assert_eq!(forward(&mut s, &host), Flow::Pause);
    let reply = host.reply().unwrap_or_else(|| panic!("no reply"));
    assert_eq!((reply.status, reply.code().as_deref()), (500, Some("internal_error")));
    assert_eq!(reply.json()["error"]["type"], "api_error", "OpenAI-shaped");
    assert_eq!(host.count(Op::SetRequestBody), 0);
    assert_eq!(gw.metric(Metric::Requests, &["mini", "m"]), 0, "never forwarded");
    host.clear_calls();
    host.respond(&[(":status", "500")]);
    assert_eq!(s.on_response_headers(&host), Flow::Continue);
    s.on_log(&host);
    assert_eq!(host.calls.borrow().len(), 0, "a replied stream makes no more calls");
}

#[test]
fn a_failing_body_write_degrades_one_request() {
    let gw = gw();
    let host = client(&chat("mini"), &[]);
    host.fail(Op::SetRequestBody);
    let mut s = gw.stream();
    assert_eq!(forward(&mut s, &host), Flow::Pause);
    assert_eq!(host.reply().map(|r| r.status), Some(500));
}

#[test]
fn unreadable_request_headers_fail_closed() {
    let gw = gw();
    let host = client(&chat("mini"), &[("x-llm-router-cluster", "outbound|443||internal-admin")]);
    host.fail(Op::RequestHeaders);
    let mut s = gw.stream();
    assert_eq!(s.on_request_headers(&host, false), Flow::Pause, "never passed on unsanitised");
    assert_eq!(host.reply().map(|r| (r.status, r.code())), Some((500, Some("internal_error".into()))));
}

#[test]
fn an_unreadable_body_is_not_judged_as_the_clients() {
    let gw = gw();
    let host = client(&chat("mini"), &[]);
    host.fail(Op::RequestBody);
    let mut s = gw.stream();
    assert_eq!(forward(&mut s, &host), Flow::Pause);
    assert_eq!(host.reply().map(|r| r.status), Some(500), "not a 400 for a body the router could not read");
    assert_eq!(host.count(Op::SetRequestHeaders), 0);
}

#[test]
fn failing_response_calls_lose_headers_not_the_request() {
    let gw = gw();
    let (mut s, host) = routed(&gw, "mini");
    host.fail(Op::SetResponseHeader);
    host.fail(Op::ResponseHeader);
    host.fail(Op::ResponseBody);
    assert_eq!(s.on_response_headers(&host), Flow::Continue);
    assert_eq!(s.on_response_body(&host, 10), Flow::Continue);
    s.on_log(&host);
    assert_eq!(host.reply(), None);
    assert_eq!(gw.metric(Metric::InFlight, &["mini", "m"]), 0);
}

#[test]
fn the_body_is_awaited_then_judged() {
    let gw = gw();
    let host = client(&chat("mini"), &[]);
    let mut s = gw.stream();
    assert_eq!(s.on_request_headers(&host, false), Flow::Pause);
    assert_eq!(s.on_request_body(&host, 5, false), Flow::Pause, "not the end yet");
    assert_eq!(host.count(Op::RequestBody), 0, "nothing read before the end");
    // A request without a body (end of stream at the headers): answered at once.
    let empty = client("", &[]);
    assert_eq!(gw.stream().on_request_headers(&empty, true), Flow::Pause);
    assert_eq!(empty.reply().map(|r| r.status), Some(400));
}

#[test]
fn head_phase_rejections_are_replies() {
    let gw = gw();
    let no_key = FakeHost::request(&[(":method", "POST"), (":path", CHAT), ("content-type", "application/json")], "{}");
    assert_eq!(gw.stream().on_request_headers(&no_key, false), Flow::Pause);
    assert_eq!(no_key.reply().map(|r| (r.status, r.code())), Some((401, Some("invalid_api_key".into()))));
    let get = FakeHost::request(&[(":method", "GET"), (":path", CHAT), ("authorization", "Bearer sk-master")], "");
    gw.stream().on_request_headers(&get, true);
    let reply = get.reply().unwrap_or_else(|| panic!("no reply"));
    assert_eq!((reply.status, reply.header("allow")), (405, Some("POST")));
    assert_eq!(gw.metric(Metric::Rejected, &["invalid_api_key"]), 1);
}

#[test]
fn an_all_cooling_group_gets_429_with_retry_after() {
    let gw = gw();
    let (_s, host) = routed(&gw, "mini");
    let mut c = Cooldowns::default();
    c.extend("m", 30_000, FailureClass::ServerError);
    host.store.set(keys::COOLDOWNS, &c.encode(0, |_| true), None).ok();
    let next = client(&chat("mini"), &[]);
    let next = {
        let h = FakeHost::sharing(&host);
        *h.request_headers.borrow_mut() = next.request_headers.borrow().clone();
        *h.request_body.borrow_mut() = next.request_body.borrow().clone();
        h
    };
    let mut s = gw.stream();
    assert_eq!(forward(&mut s, &next), Flow::Pause);
    let reply = next.reply().unwrap_or_else(|| panic!("no reply"));
    assert_eq!((reply.status, reply.header("retry-after")), (429, Some("30")));
    assert_eq!(next.count(Op::SetRequestHeaders), 0);
}

#[test]
fn the_model_list_is_answered_locally() {
    let gw = gw();
    let host = FakeHost::request(&[(":method", "GET"), (":path", "/v1/models"), ("authorization", "Bearer sk-master")], "");
    let mut s = gw.stream();
    assert_eq!(s.on_request_headers(&host, true), Flow::Pause);
    let reply = host.reply().unwrap_or_else(|| panic!("no reply"));
    assert_eq!((reply.status, reply.header("cache-control")), (200, Some("no-store")));
    let ids: Vec<String> = reply.json()["data"].as_array().into_iter().flatten().filter_map(|m| m["id"].as_str().map(str::to_string)).collect();
    assert!(ids.contains(&"gpt-4o".to_string()) && ids.contains(&"mini".to_string()), "{ids:?}");
    assert_eq!(s.on_response_headers(&host), Flow::Continue);
    assert_eq!(host.count(Op::SetResponseHeader), 0);
}

#[test]
fn access_log_properties_are_set_per_pass_and_tokens_at_the_end() {
    let mut v = config("simple-shuffle");
    v["envoy_settings"]["access_log_properties"] = json!(true);
    v["envoy_settings"]["access_log_tokens"] = json!(true);
    let gw = Gw::new(v);
    let (mut s, host) = routed(&gw, "mini");
    let props = |host: &FakeHost| host.set_properties.borrow().clone();
    let routing = vec![
        ("llm_router.deployment".to_string(), "m".to_string()),
        ("llm_router.model_group".to_string(), "mini".to_string()),
        ("llm_router.attempts".to_string(), "1".to_string()),
    ];
    assert_eq!(props(&host), routing);
    host.respond(&[(":status", "200"), ("content-type", "text/event-stream")]);
    s.on_response_headers(&host);
    *host.response_body.borrow_mut() =
        b"data: {\"choices\":[]}\n\ndata: {\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n".to_vec();
    let size = host.response_body.borrow().len();
    s.on_response_body(&host, size);
    s.on_log(&host);
    let all = props(&host);
    let end = [("llm_router.prompt_tokens", "3"), ("llm_router.completion_tokens", "2"), ("llm_router.key_alias", "master_key")];
    assert_eq!(all.get(3..), Some(&end.map(|(k, v)| (k.to_string(), v.to_string()))[..]), "the deployment has no price: no cost");
}

#[test]
fn a_failing_property_write_is_not_a_failed_request() {
    let mut v = config("simple-shuffle");
    v["envoy_settings"]["access_log_properties"] = json!(true);
    let gw = Gw::new(v);
    let host = client(&chat("mini"), &[]);
    host.fail(Op::SetProperty);
    let mut s = gw.stream();
    assert_eq!(forward(&mut s, &host), Flow::Continue);
    assert_eq!(host.reply(), None);
}

#[test]
fn without_a_config_nothing_is_touched() {
    let vm = Rc::new(Vm::new(Rng::from_seed(1), KEY, FakeSink::default()));
    let mut s = RouterStream::new(None, vm);
    let host = client(&chat("mini"), &[("x-llm-router-cluster", "x")]);
    assert_eq!(s.on_request_headers(&host, false), Flow::Continue);
    assert_eq!(s.on_request_body(&host, 10, true), Flow::Continue);
    assert_eq!(s.on_response_headers(&host), Flow::Continue);
    s.on_log(&host);
    assert_eq!(host.calls.borrow().len(), 0);
}

#[test]
fn trailers_end_the_body_and_the_request_is_routed_there() {
    // HTTP/2: the last DATA frame does not end the stream, the trailers do.
    let gw = gw();
    let host = client(&chat("mini"), &[("x-llm-router-cluster", "outbound|443||internal-admin"), ("x-llm-router-state", "forged")]);
    let mut s = gw.stream();
    assert_eq!(s.on_request_headers(&host, false), Flow::Pause);
    let size = host.request_body.borrow().len();
    assert_eq!(s.on_request_body(&host, size, false), Flow::Pause);
    assert_eq!(s.on_request_trailers(&host), Flow::Continue);
    assert_eq!(host.args(Op::RequestBody), [usize::MAX.to_string()], "the whole buffered body");
    assert_eq!(host.args(Op::SetRequestBody), [size.to_string()]);
    assert_eq!(host.request_header_value("x-llm-router-cluster").as_deref(), Some("outbound|18003||127.0.0.1"));
    assert_eq!(host.request_header_value("authorization").as_deref(), Some("Bearer sk-m"));
    assert_eq!(host.request_header_value("x-llm-router-state"), None);
    assert!(host.body_text().contains("\"gpt-4o-mini\""));
    // Trailers after a body that is not JSON: the router's 400, never a pass-through.
    let bad = client("not json", &[]);
    let mut s = gw.stream();
    s.on_request_headers(&bad, false);
    s.on_request_body(&bad, 8, false);
    assert_eq!(s.on_request_trailers(&bad), Flow::Pause);
    assert_eq!(bad.reply().map(|r| r.status), Some(400));
    // Trailers of a stream that is not buffering (forwarded, passed through): nothing to do.
    let (mut s, host) = routed(&gw, "mini");
    host.clear_calls();
    assert_eq!(s.on_request_trailers(&host), Flow::Continue);
    assert_eq!(host.calls.borrow().len(), 0);
}
