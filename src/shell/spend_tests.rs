//! Spend attribution through whole router streams on the fake host: the caller's names and the
//! cost reach the access-log properties at `on_log`, the spend metrics are labelled with
//! config-defined names only (alias, `keys[i]`, team id, model group), never a key or its hash.

use super::fake::{hex, FakeHost};
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


fn gateway(envoy: Value) -> (Rc<RouterConfig>, Rc<Vm<FakeSink>>) {
    let v = json!({
        "model_list": [
            {"model_name": "gpt-4o", "litellm_params": {"model": "openai/gpt-4o", "api_base": "http://127.0.0.1:18001/v1", "api_key": "sk-provider"},
             "model_info": {"id": "priced", "input_cost_per_token": 2.5e-6, "output_cost_per_token": 1e-5}},
            {"model_name": "free", "litellm_params": {"model": "openai/free", "api_base": "http://127.0.0.1:18002/v1", "api_key": "sk-provider"},
             "model_info": {"id": "free"}},
        ],
        "general_settings": {"master_key": "sk-master"},
        "teams": [{"team_id": "finance"}],
        "keys": [
            {"token": hex("sk-fin"), "key_alias": "finance-app\nforged=1", "team_id": "finance"},
            {"token": hex("sk-anon")},
        ],
        "envoy_settings": envoy,
    });
    let Some(mut cfg) = config::load(v.to_string().as_bytes(), &|_| None).config else { panic!("config refused") };
    cfg.generation = 1;
    (Rc::new(cfg), Rc::new(Vm::new(Rng::from_seed(7), (1, 2), FakeSink::default())))
}

/// One request with `key`, answered 200 with a JSON body reporting `usage`; the properties set.
fn request(cfg: &Rc<RouterConfig>, vm: &Rc<Vm<FakeSink>>, key: &str, model: &str) -> Vec<(String, String)> {
    let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let auth = format!("Bearer {key}");
    let len = body.len().to_string();
    let host = FakeHost::request(
        &[(":method", "POST"), (":path", "/v1/chat/completions"), (":authority", "gw"), ("content-type", "application/json"), ("content-length", &len), ("authorization", &auth)],
        &body,
    );
    let mut s = RouterStream::new(Some(cfg.clone()), vm.clone());
    assert_eq!(s.on_request_headers(&host, false), Flow::Pause);
    assert_eq!(s.on_request_body(&host, body.len(), true), Flow::Continue, "{:?}", host.reply());
    host.respond(&[(":status", "200"), ("content-type", "application/json")]);
    s.on_response_headers(&host);
    *host.response_body.borrow_mut() = br#"{"choices":[],"usage":{"prompt_tokens":1000,"completion_tokens":30}}"#.to_vec();
    let size = host.response_body.borrow().len();
    s.on_response_body(&host, size);
    s.on_log(&host);
    let props = host.set_properties.borrow().clone();
    props
}

fn spend_props(props: &[(String, String)]) -> Vec<(&str, &str)> {
    props
        .iter()
        .filter(|(k, _)| ["key_alias", "team_id", "user_id", "tags", "cost_usd"].iter().any(|n| k == &format!("llm_router.{n}")))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

#[test]
fn names_and_cost_reach_the_access_log_and_the_metrics() {
    let (cfg, vm) = gateway(json!({"access_log_properties": true, "access_log_tokens": true}));
    // 1000 × 2.5e-6 + 30 × 1e-5 = 0.0025 + 0.0003 USD.
    let props = request(&cfg, &vm, "sk-fin", "gpt-4o");
    assert_eq!(
        spend_props(&props),
        [("llm_router.key_alias", "finance-app_forged=1"), ("llm_router.team_id", "finance"), ("llm_router.cost_usd", "0.0028")],
        "the alias's newline cannot end the log line"
    );
    let props = request(&cfg, &vm, "sk-anon", "gpt-4o");
    assert_eq!(spend_props(&props), [("llm_router.key_alias", "keys[1]"), ("llm_router.cost_usd", "0.0028")]);
    let props = request(&cfg, &vm, "sk-master", "free");
    assert_eq!(spend_props(&props), [("llm_router.key_alias", "master_key")], "an unpriced deployment: no cost");
    request(&cfg, &vm, "sk-fin", "gpt-4o");

    let m = vm.metrics.borrow();
    let fin = ["finance", "finance-app_forged=1", "gpt-4o"];
    assert_eq!(m.sink.value(Metric::SpendRequests, &fin), 2);
    assert_eq!(m.sink.value(Metric::SpendNanoUsd, &fin), 5_600_000);
    assert_eq!((m.sink.value(Metric::SpendInputTokens, &fin), m.sink.value(Metric::SpendOutputTokens, &fin)), (2000, 60));
    assert_eq!(m.sink.value(Metric::SpendNanoUsd, &["-", "keys[1]", "gpt-4o"]), 2_800_000);
    assert_eq!(m.sink.value(Metric::SpendRequests, &["-", "master_key", "free"]), 1);
    for name in m.sink.values.keys() {
        assert!(!name.contains(&hex("sk-fin")) && !name.contains("sk-"), "a key or its hash in a metric name: {name}");
    }
}

#[test]
fn without_access_log_properties_only_the_metrics_and_without_tokens_no_cost_property() {
    let (cfg, vm) = gateway(json!({}));
    assert_eq!(spend_props(&request(&cfg, &vm, "sk-fin", "gpt-4o")), []);
    assert_eq!(vm.metrics.borrow().sink.value(Metric::SpendNanoUsd, &["finance", "finance-app_forged=1", "gpt-4o"]), 2_800_000);
    let (cfg, vm) = gateway(json!({"access_log_properties": true, "metrics": false}));
    assert_eq!(spend_props(&request(&cfg, &vm, "sk-fin", "gpt-4o")), [("llm_router.key_alias", "finance-app_forged=1"), ("llm_router.team_id", "finance")]);
    assert!(vm.metrics.borrow().sink.values.is_empty());
}

#[test]
fn a_soft_budget_past_its_mark_counts_per_scope_by_config_names() {
    let v = json!({
        "model_list": [{"model_name": "gpt-4o", "litellm_params": {"model": "openai/gpt-4o", "api_base": "http://127.0.0.1:18001/v1", "api_key": "sk-provider"},
                        "model_info": {"input_cost_per_token": 2.5e-6, "output_cost_per_token": 1e-5}}],
        "teams": [{"team_id": "finance", "max_budget": 10, "soft_budget": 0.001}],
        "users": [{"user_id": "ann", "max_budget": 10, "soft_budget": 0.001}],
        "keys": [{"token": hex("sk-fin"), "key_alias": "fin", "team_id": "finance", "max_budget": 10, "soft_budget": 0.001},
                 {"token": hex("sk-ann"), "user_id": "ann"}],
        "envoy_settings": {"access_log_properties": true, "access_log_tokens": true},
    });
    let Some(mut cfg) = config::load(v.to_string().as_bytes(), &|_| None).config else { panic!("config refused") };
    cfg.generation = 1;
    let (cfg, vm) = (Rc::new(cfg), Rc::new(Vm::new(Rng::from_seed(7), (1, 2), FakeSink::default())));
    let shared = FakeHost::default();
    let one = |key: &str, expect_cost: &str| {
        let host = FakeHost::sharing(&shared);
        let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50}).to_string();
        let len = body.len().to_string();
        host.set_request(
            &[(":method", "POST"), (":path", "/v1/chat/completions"), (":authority", "gw"), ("content-type", "application/json"), ("content-length", &len), ("authorization", &format!("Bearer {key}"))],
            &body,
        );
        let mut s = RouterStream::new(Some(cfg.clone()), vm.clone());
        s.on_request_headers(&host, false);
        assert_eq!(s.on_request_body(&host, body.len(), true), Flow::Continue, "{:?}", host.reply());
        host.respond(&[(":status", "200"), ("content-type", "application/json")]);
        s.on_response_headers(&host);
        *host.response_body.borrow_mut() = br#"{"choices":[],"usage":{"prompt_tokens":1000,"completion_tokens":30}}"#.to_vec();
        let size = host.response_body.borrow().len();
        s.on_response_body(&host, size);
        s.on_log(&host);
        let props = host.set_properties.borrow().clone();
        assert!(props.contains(&("llm_router.cost_usd".to_string(), expect_cost.to_string())), "{props:?}");
    };
    one("sk-fin", "0.0028");
    let soft = |scope: &str, name: &str| vm.metrics.borrow().sink.value(Metric::SoftBudgetExceeded, &[scope, name]);
    assert_eq!((soft("key", "fin"), soft("team", "finance")), (0, 0), "nothing spent at the first admission");
    one("sk-fin", "0.0028");
    one("sk-fin", "0.0028");
    assert_eq!((soft("key", "fin"), soft("team", "finance")), (2, 2), "past $0.001 at the second and third admission");
    // A key without a team spends its user's budget; its own name is `keys[1]`.
    one("sk-ann", "0.0028");
    one("sk-ann", "0.0028");
    assert_eq!(soft("user", "ann"), 1);
    assert_eq!(vm.metrics.borrow().sink.value(Metric::SpendRequests, &["-", "keys[1]", "gpt-4o"]), 2);
    assert_eq!(vm.metrics.borrow().sink.value(Metric::SpendNanoUsd, &["finance", "fin", "gpt-4o"]), 8_400_000);
}

#[test]
fn the_request_s_tags_follow_the_key_s_in_the_log_only() {
    let (cfg, vm) = gateway(json!({"access_log_properties": true}));
    let body = json!({"model": "gpt-4o", "messages": [], "metadata": {"tags": ["batch", "a\u{7}b", "x,y"]}}).to_string();
    let len = body.len().to_string();
    let host = FakeHost::request(
        &[(":method", "POST"), (":path", "/v1/chat/completions"), (":authority", "gw"), ("content-type", "application/json"), ("content-length", &len), ("authorization", "Bearer sk-anon")],
        &body,
    );
    let mut s = RouterStream::new(Some(cfg.clone()), vm.clone());
    s.on_request_headers(&host, false);
    assert_eq!(s.on_request_body(&host, body.len(), true), Flow::Continue, "{:?}", host.reply());
    host.respond(&[(":status", "200"), ("content-type", "application/json")]);
    s.on_response_headers(&host);
    s.on_log(&host);
    let props = host.set_properties.borrow().clone();
    assert!(props.contains(&("llm_router.tags".to_string(), "batch,a_b,x_y".to_string())), "{props:?}");
    for name in vm.metrics.borrow().sink.values.keys() {
        assert!(!name.contains("batch"), "a client's tag in a metric name: {name}");
    }
}

#[test]
fn a_request_the_router_refuses_after_identifying_its_key_names_the_key_in_its_log_line() {
    let (cfg, vm) = super::fake::gateway_of(&json!({
        "model_list": super::fake::two_models(),
        "teams": [{"team_id": "support"}],
        "keys": [{"token": hex("sk-bot"), "key_alias": "support-bot", "team_id": "support", "models": ["mini"], "rpm_limit": 1}],
        "envoy_settings": {"access_log_properties": true},
    }));
    let shared = FakeHost::default();
    let refused = |model: &str| {
        let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}).to_string();
        let len = body.len().to_string();
        let host = FakeHost::sharing(&shared);
        host.set_request(
            &[(":method", "POST"), (":path", "/v1/chat/completions"), (":authority", "gw"), ("content-type", "application/json"), ("content-length", &len), ("authorization", "Bearer sk-bot")],
            &body,
        );
        let mut s = RouterStream::new(Some(cfg.clone()), vm.clone());
        s.on_request_headers(&host, false);
        s.on_request_body(&host, body.len(), true);
        s.on_log(&host);
        let status = host.reply().map(|r| r.status);
        let props = host.set_properties.borrow().clone();
        (status, props)
    };
    // A model the key may not call: 401, and the line says whose request it was.
    let (status, props) = refused("gpt-4o");
    assert_eq!(status, Some(401));
    assert_eq!(spend_props(&props), [("llm_router.key_alias", "support-bot"), ("llm_router.team_id", "support")]);
    // Rate limited: the second request of the window, 429, named too; nothing was spent.
    assert_eq!(refused("mini").0, None, "the first fits");
    let (status, props) = refused("mini");
    assert_eq!(status, Some(429));
    assert_eq!(spend_props(&props), [("llm_router.key_alias", "support-bot"), ("llm_router.team_id", "support")]);
}
