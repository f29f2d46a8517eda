use super::*;
use super::attempt::BodyDecision;
use super::head::{MAX_AUTHORITY_BYTES, MAX_PATH_BYTES};
use crate::access::Caller;
use crate::config::RouterConfig;
use crate::failover::{AttemptState, FailureReport, SpentStates};
use crate::health::CooldownView;
use crate::pipeline::auth::ClientCredentials;
use crate::routing::Rng;
use crate::config;
use crate::health::{Cooldowns, FailureClass};
use serde_json::{json, Value};

/// A fresh replay check at `now_ms` (its spent set lives for the test; leaked on purpose).
fn replay(now_ms: u64) -> ReplayCheck<'static> {
    ReplayCheck { key: KEY, now_ms, spent: Box::leak(Box::default()) }
}

/// Loads `v`; with the failover wiring declared (`envoy_settings.failover`) unless `v` says.
fn cfg(mut v: Value) -> RouterConfig {
    let env = |n: &str| (n == "OPENAI_API_KEY").then(|| "sk-up".to_string());
    if let Some(obj) = v.as_object_mut() {
        obj.entry("envoy_settings").or_insert_with(|| json!({"failover": true}));
    }
    match config::load(v.to_string().as_bytes(), &env).config {
        Some(c) => c,
        None => panic!("config refused"),
    }
}

fn sample() -> RouterConfig {
    cfg(json!({
        "model_list": [
            {"model_name": "gpt-4o", "litellm_params": {"model": "openai/gpt-4o", "api_base": "http://127.0.0.1:18001/v1",
                "api_key": "os.environ/OPENAI_API_KEY"}, "model_info": {"id": "oa"}},
            {"model_name": "az", "litellm_params": {"model": "azure/gpt-4o-prod", "api_base": "http://127.0.0.1:18002",
                "api_key": "az-key", "api_version": "2024-10-21"}, "model_info": {"id": "az"}},
            {"model_name": "claude", "litellm_params": {"model": "anthropic/claude-3-5-sonnet-latest",
                "api_base": "http://127.0.0.1:18003", "api_key": "ant"}, "model_info": {"id": "an"}},
            {"model_name": "groq", "litellm_params": {"model": "groq/llama-3.1-8b", "api_base": "http://127.0.0.1:18004/openai/v1",
                "api_key": "k", "auth_header_name": "X-API-Key", "auth_header_format": "Token {api_key}"},
                "model_info": {"id": "gq", "default_params": {"temperature": 0.2, "seed": 7}}},
            {"model_name": "openai/*", "litellm_params": {"model": "openai/*", "api_key": "w"}, "model_info": {"id": "wc"}},
        ],
        "router_settings": {"model_group_alias": {"gpt4": "gpt-4o"}},
        "general_settings": {"master_key": "sk-master"},
    }))
}

fn head<'a>(method: &'a str, path: &'a str) -> RequestHead<'a> {
    RequestHead {
        method,
        path,
        credentials: ClientCredentials { authorization: Some("Bearer sk-master"), ..Default::default() },
        ..Default::default()
    }
}

const KEY: (u64, u64) = (11, 22);

fn pending(cfg: &RouterConfig, path: &str) -> Pending {
    match on_head(cfg, &head("POST", path), &mut replay(0)) {
        HeadDecision::ReadBody(p) => *p,
        other => panic!("{other:?}"),
    }
}

fn route<'c>(cfg: &'c RouterConfig, path: &str, body: &str) -> Result<Forward<'c>, Reply> {
    let view = CooldownView::new(&Cooldowns::default(), &cfg.table.ids, cfg.table.deployments.len());
    let mut rng = Rng::from_seed(1);
    let mut env = Env { cooling: &view, stats: &crate::stats::NoStats, now_ms: 0, rng: &mut rng, key: KEY };
    on_body(cfg, &pending(cfg, path), body.as_bytes(), &mut env).action
}

fn body_json(f: &Forward<'_>) -> Value {
    serde_json::from_slice(f.body.as_deref().unwrap_or(b"null")).unwrap_or(Value::Null)
}

fn code(r: Result<Forward<'_>, Reply>) -> (u16, Option<&'static str>) {
    match r {
        Ok(f) => panic!("forwarded to {}", f.deployment.id),
        Err(reply) => (reply.error.status, reply.error.code),
    }
}

#[test]
fn head_checks() {
    let c = sample();
    assert_eq!(on_head(&c, &head("POST", "/healthz"), &mut replay(0)), HeadDecision::PassThrough);
    assert_eq!(on_head(&c, &head("GET", "/v1/model"), &mut replay(0)), HeadDecision::PassThrough);
    let reject = |h: &RequestHead<'_>| match on_head(&c, h, &mut replay(0)) {
        HeadDecision::Reject(r) => (r.error.status, r.error.code),
        other => panic!("{other:?}"),
    };
    assert_eq!(reject(&head("GET", "/v1/chat/completions")), (405, Some("method_not_allowed")));
    let mut h = head("POST", "/v1/chat/completions");
    h.credentials = ClientCredentials::default();
    assert_eq!(reject(&h), (401, Some("invalid_api_key")));
    let mut h = head("POST", "/v1/chat/completions");
    h.content_type = Some("text/plain");
    assert_eq!(reject(&h), (415, Some("unsupported_media_type")));
    h.content_type = Some("application/json; charset=utf-8");
    h.content_length = Some("2000000");
    assert_eq!(reject(&h), (413, Some("request_too_large")));
    h.content_length = Some("20");
    assert!(matches!(on_head(&c, &h, &mut replay(0)), HeadDecision::ReadBody(_)));
    h.content_type = Some("application/vnd.api+json");
    assert!(matches!(on_head(&c, &h, &mut replay(0)), HeadDecision::ReadBody(_)));
}

#[test]
fn local_endpoints_get_or_head_with_the_master_key() {
    let c = sample();
    let decide = |method, path, key: Option<&'static str>| {
        let mut h = head(method, path);
        h.credentials = ClientCredentials { authorization: key, ..Default::default() };
        on_head(&c, &h, &mut replay(0))
    };
    let ok = Some("Bearer sk-master");
    assert_eq!(decide("GET", "/v1/models", ok), HeadDecision::Local(LocalReply::Models(Caller::Master)));
    assert_eq!(decide("GET", "/models?limit=5", ok), HeadDecision::Local(LocalReply::Models(Caller::Master)));
    assert_eq!(decide("HEAD", "/llm-router/health", ok), HeadDecision::Local(LocalReply::Health));
    assert_eq!(decide("GET", "/v1/models/", ok), HeadDecision::PassThrough, "exact paths only");
    let HeadDecision::Reject(r) = decide("POST", "/llm-router/health", ok) else { panic!("not rejected") };
    assert_eq!((r.error.status, r.headers.clone()), (405, vec![("allow", "GET, HEAD".to_string())]));
    assert!(r.error.message.ends_with("use GET"), "{}", r.error.message);
    let HeadDecision::Reject(r) = decide("GET", "/v1/models", None) else { panic!("not rejected") };
    assert_eq!(r.error.code, Some("invalid_api_key"));
    let HeadDecision::Reject(r) = decide("GET", "/v1/models", Some("Bearer wrong")) else { panic!("not rejected") };
    assert_eq!(r.error.status, 401);

    // Custom paths; disabled endpoints pass through; no master key: open.
    let custom = cfg(json!({
        "model_list": [{"model_name": "m", "litellm_params": {"model": "openai/m", "api_key": "k"}}],
        "envoy_settings": {"models_paths": ["/gw/models"], "health_path": null},
    }));
    let anon = |path| on_head(&custom, &RequestHead { method: "GET", path, ..Default::default() }, &mut replay(0));
    assert_eq!(anon("/gw/models"), HeadDecision::Local(LocalReply::Models(Caller::Open)));
    assert_eq!(anon("/v1/models"), HeadDecision::PassThrough);
    assert_eq!(anon("/llm-router/health"), HeadDecision::PassThrough);
}

#[test]
fn openai_rewrite_keeps_rest_of_body_byte_identical() {
    let c = sample();
    let body = r#"{ "messages": [{"role":"user","content":"hi \u00e9"}], "model" : "gpt4", "n": 1.50 }"#;
    let f = match route(&c, "/v1/chat/completions?x=1", body) {
        Ok(f) => f,
        Err(r) => panic!("{r:?}"),
    };
    assert_eq!(f.deployment.id, "oa");
    assert_eq!(f.group, "gpt-4o");
    assert_eq!(f.cluster, "outbound|18001||127.0.0.1");
    assert_eq!(f.authority, "127.0.0.1:18001");
    assert_eq!(f.path, "/v1/chat/completions?x=1");
    assert_eq!(f.auth.map(|a| (a.name.as_str(), a.value.as_str())), Some(("authorization", "Bearer sk-up")));
    assert_eq!(
        f.body.as_deref(),
        Some(br#"{ "messages": [{"role":"user","content":"hi \u00e9"}], "model" : "gpt-4o", "n": 1.50 }"#.as_slice())
    );
    assert!(!f.stream);
}

#[test]
fn unchanged_model_leaves_body_alone() {
    let c = sample();
    let f = route(&c, "/v1/chat/completions", r#"{"model":"gpt-4o","stream":true}"#);
    let f = f.unwrap_or_else(|r| panic!("{r:?}"));
    assert!(f.body.is_none());
    assert!(f.stream);
}

#[test]
fn azure_anthropic_and_custom_auth() {
    let c = sample();
    let f = route(&c, "/v1/embeddings", r#"{"model":"az","input":"x"}"#).unwrap_or_else(|r| panic!("{r:?}"));
    assert_eq!(f.path, "/openai/deployments/gpt-4o-prod/embeddings?api-version=2024-10-21");
    assert_eq!(f.auth.map(|a| a.name.as_str()), Some("api-key"));
    assert_eq!(body_json(&f)["model"], "gpt-4o-prod");

    let f = route(&c, "/v1/messages", r#"{"model":"claude","max_tokens":5}"#).unwrap_or_else(|r| panic!("{r:?}"));
    assert_eq!(f.path, "/v1/messages");
    assert_eq!(f.auth.map(|a| (a.name.as_str(), a.value.as_str())), Some(("x-api-key", "ant")));
    assert_eq!(f.anthropic_version, Some("2023-06-01"));
    assert_eq!(body_json(&f)["model"], "claude-3-5-sonnet-latest");

    assert_eq!(code(route(&c, "/v1/messages", r#"{"model":"gpt-4o"}"#)), (400, Some("unsupported_endpoint")));

    let f = route(&c, "/chat/completions", r#"{"model":"groq","temperature":1}"#).unwrap_or_else(|r| panic!("{r:?}"));
    assert_eq!(f.path, "/openai/v1/chat/completions");
    assert_eq!(f.auth.map(|a| (a.name.as_str(), a.value.as_str())), Some(("x-api-key", "Token k")));
    assert_eq!(body_json(&f), json!({"model": "llama-3.1-8b", "temperature": 1, "seed": 7}));
}

#[test]
fn wildcard_takes_captured_name() {
    let c = sample();
    let f = route(&c, "/v1/chat/completions", r#"{"model":"openai/gpt-4.1"}"#).unwrap_or_else(|r| panic!("{r:?}"));
    assert_eq!(f.group, "openai/*");
    assert_eq!(body_json(&f)["model"], "gpt-4.1");
    assert_eq!(f.cluster, "outbound|443||api.openai.com");
}

#[test]
fn body_errors() {
    let c = sample();
    let p = "/v1/chat/completions";
    assert_eq!(code(route(&c, p, "")), (400, Some("invalid_json")));
    assert_eq!(code(route(&c, p, "{\"model\":")), (400, Some("invalid_json")));
    assert_eq!(code(route(&c, p, "[1]")), (400, Some("invalid_json")));
    assert_eq!(code(route(&c, p, r#"{"messages":[]}"#)), (400, Some("missing_model")));
    assert_eq!(code(route(&c, p, r#"{"model":5}"#)), (400, Some("missing_model")));
    assert_eq!(code(route(&c, p, r#"{"model":"gpt-4o","model":"x"}"#)), (400, Some("duplicate_model")));
    assert_eq!(code(route(&c, p, r#"{"model":"nope"}"#)), (404, Some("model_not_found")));
    assert_eq!(code(route(&c, p, r#"{"x":{"model":"gpt-4o"}}"#)), (400, Some("missing_model")));
}

#[test]
fn all_cooling_gives_429_with_retry_after() {
    let c = sample();
    let mut record = Cooldowns::default();
    record.extend("oa", 2_500, FailureClass::RateLimit);
    let view = CooldownView::new(&record, &c.table.ids, c.table.deployments.len());
    let mut rng = Rng::from_seed(1);
    let mut env = Env { cooling: &view, stats: &crate::stats::NoStats, now_ms: 1_000, rng: &mut rng, key: KEY };
    let r = on_body(&c, &pending(&c, "/v1/chat/completions"), br#"{"model":"gpt-4o"}"#, &mut env).action;
    let Err(reply) = r else { panic!("forwarded") };
    assert_eq!((reply.error.status, reply.error.code), (429, Some("no_healthy_deployments")));
    assert_eq!(reply.headers, vec![("retry-after", "2".to_string())]);
    assert!(reply.error.message.contains("gpt-4o"));
}

fn failover_cfg() -> RouterConfig {
    cfg(json!({
        "model_list": [
            {"model_name": "a", "litellm_params": {"model": "openai/a1", "api_base": "http://h1/v1"}, "model_info": {"id": "a1"}},
            {"model_name": "a", "litellm_params": {"model": "openai/a2", "api_base": "http://h2/v1"}, "model_info": {"id": "a2"}},
            {"model_name": "b", "litellm_params": {"model": "azure/b1", "api_base": "http://h3", "api_key": "kb"}, "model_info": {"id": "b1"}},
            {"model_name": "c", "litellm_params": {"model": "openai/c1", "api_base": "http://h4/v1", "timeout": 2}, "model_info": {"id": "c1"}},
        ],
        "router_settings": {"num_retries": 1, "fallbacks": [{"a": ["b", "c"]}]},
    }))
}

/// Runs one pass; `redirect` is the failed previous pass (its state and reported status).
fn pass<'c>(c: &'c RouterConfig, body: &[u8], redirect: Option<(&str, &str)>, now: u64) -> BodyDecision<'c> {
    let view = CooldownView::new(&Cooldowns::default(), &c.table.ids, c.table.deployments.len());
    let mut rng = Rng::from_seed(3);
    let mut env = Env { cooling: &view, stats: &crate::stats::NoStats, now_ms: now, rng: &mut rng, key: KEY };
    let path = redirect.map_or("/v1/chat/completions?q=1".to_string(), |(state, report)| {
        let report = FailureReport::from_query(report).map(|(r, _)| r).unwrap_or(FailureReport { status: 1, retry_after_ms: None, context_window: false, content_policy: false });
        let loc = crate::failover::failover_location("gw:10000", state, &report);
        loc.split_once("gw:10000").map(|(_, p)| p.to_string()).unwrap_or_default()
    });
    let head = RequestHead {
        method: "POST",
        path: &path,
        authority: "gw:10000",
        internal_redirect: redirect.is_some(),
        ..Default::default()
    };
    match on_head(c, &head, &mut replay(now)) {
        HeadDecision::ReadBody(p) => on_body(c, &p, body, &mut env),
        other => panic!("{other:?}"),
    }
}

#[test]
fn failover_retries_in_group_then_falls_back_in_order() {
    let c = failover_cfg();
    let body = br#"{"model":"a","stream":true}"#.to_vec();
    let first = pass(&c, &body, None, 1_000);
    let f1 = first.action.unwrap_or_else(|r| panic!("{r:?}"));
    assert_eq!((f1.attempts, f1.fallback_from.as_deref()), (1, None));
    let s1 = AttemptState::decode(f1.state.as_deref().unwrap_or(""), KEY).unwrap_or_default();
    assert!(s1.can_failover);
    assert_eq!((s1.path.as_str(), s1.authority.as_str()), ("/v1/chat/completions?q=1", "gw:10000"));
    let body1 = f1.body.clone().unwrap_or_else(|| body.clone());

    // 500 → retry on the other member of `a`.
    let second = pass(&c, &body1, Some((f1.state.as_deref().unwrap_or(""), "status=500")), 1_100);
    assert_eq!(second.failed.map(|f| (f.deployment_index, f.class)), Some((f1.deployment_index, FailureClass::ServerError)));
    let f2 = second.action.unwrap_or_else(|r| panic!("{r:?}"));
    assert_ne!(f2.deployment.id, f1.deployment.id);
    assert_eq!(f2.group, "a");
    assert_eq!(f2.path, "/v1/chat/completions?q=1");
    assert_eq!(f2.attempts, 2);
    let body2 = f2.body.clone().unwrap_or(body1);
    assert_eq!(serde_json::from_slice::<Value>(&body2).ok(), Some(json!({"model": f2.deployment.model, "stream": true})));

    // 429 → retries used up: first fallback `b` (Azure), previous auth header removed.
    let third = pass(&c, &body2, Some((f2.state.as_deref().unwrap_or(""), "status=429&ra=5000")), 1_200);
    assert_eq!(third.failed.map(|f| (f.class, f.retry_after_ms)), Some((FailureClass::RateLimit, Some(5_000))));
    let f3 = third.action.unwrap_or_else(|r| panic!("{r:?}"));
    assert_eq!((f3.deployment.id.as_str(), f3.attempts, f3.fallback_from.as_deref()), ("b1", 3, Some("a")));
    assert_eq!(f3.path, "/openai/deployments/b1/chat/completions?api-version=2024-10-21");
    assert!(f3.stream);
    let body3 = f3.body.clone().unwrap_or(body2);

    // Connect failure (redirector, well within the budget) → `b` has no retry target left → `c`.
    let fourth = pass(&c, &body3, Some((f3.state.as_deref().unwrap_or(""), "status=0")), 1_250);
    assert_eq!(fourth.failed.map(|f| f.class), Some(FailureClass::ConnectFailure));
    let f4 = fourth.action.unwrap_or_else(|r| panic!("{r:?}"));
    assert_eq!((f4.deployment.id.as_str(), f4.attempts), ("c1", 4));
    assert_eq!(f4.per_try_timeout_ms, Some(2_000));
    assert_eq!(f4.state, None, "nothing is left after c: no state, the upstream side passes failures through");
}

#[test]
fn exhausted_when_every_remaining_target_is_cooling() {
    let c = cfg(json!({
        "model_list": [
            {"model_name": "a", "litellm_params": {"model": "openai/a1", "api_base": "http://h1/v1", "timeout": 2, "weight": 1}, "model_info": {"id": "a1"}},
            {"model_name": "a", "litellm_params": {"model": "openai/a2", "api_base": "http://h2/v1", "weight": 0}, "model_info": {"id": "a2"}},
        ],
        "router_settings": {"num_retries": 1},
    }));
    let mut record = Cooldowns::default();
    record.extend("a2", 60_000, FailureClass::RateLimit);
    let view = CooldownView::new(&record, &c.table.ids, c.table.deployments.len());
    let mut rng = Rng::from_seed(5);
    let run = |pending: &Pending, body: &[u8], now: u64, rng: &mut Rng| {
        let mut env = Env { cooling: &view, stats: &crate::stats::NoStats, now_ms: now, rng, key: KEY };
        on_body(&c, pending, body, &mut env)
    };
    let f1 = run(&pending(&c, "/v1/chat/completions"), br#"{"model":"a"}"#, 1_000, &mut rng).action.unwrap_or_else(|r| panic!("{r:?}"));
    assert_eq!(f1.deployment.id, "a1");
    let state = f1.state.clone().unwrap_or_default();
    assert!(!state.is_empty(), "a retry is possible (a2 is untried)");
    // The attempt used its whole 2 s budget: the redirector answered → a timeout; a2 cools → 504.
    let report = FailureReport { status: 0, retry_after_ms: None, context_window: false, content_policy: false };
    let loc = crate::failover::failover_location("gw", &state, &report);
    let path = loc.split_once("gw").map(|(_, p)| p.to_string()).unwrap_or_default();
    let head = RequestHead { method: "POST", path: &path, internal_redirect: true, ..Default::default() };
    let HeadDecision::ReadBody(p2) = on_head(&c, &head, &mut replay(3_000)) else { panic!("not a failover pass") };
    let body = f1.body.clone().unwrap_or_default();
    let second = run(&p2, &body, 3_000, &mut rng);
    assert_eq!(second.failed.map(|f| f.class), Some(FailureClass::Timeout));
    let reply = match second.action {
        Err(r) => r,
        Ok(f) => panic!("forwarded to {}", f.deployment.id),
    };
    assert_eq!((reply.error.status, reply.error.code), (504, Some("upstream_timeout")));
    assert!(reply.error.message.contains("All 1 attempt(s) for model group `a`"), "{}", reply.error.message);
}

/// The head of a failover pass with `state` and `report`, replayed by Envoy (or not).
fn failover_head<'a>(path: &'a str, redirected: bool) -> RequestHead<'a> {
    RequestHead {
        method: "POST",
        path,
        internal_redirect: redirected,
        original_url: redirected.then_some("http://gw/v1/chat/completions"),
        ..Default::default()
    }
}

fn failover_path(state: &str, status: u16) -> String {
    let report = FailureReport { status, retry_after_ms: None, context_window: false, content_policy: false };
    let loc = crate::failover::failover_location("gw", state, &report);
    loc.split_once("gw").map(|(_, p)| p.to_string()).unwrap_or_default()
}

fn refused(d: &HeadDecision) -> bool {
    matches!(d, HeadDecision::Reject(r) if (r.error.status, r.error.code) == (502, Some("upstream_redirect_refused")))
}

#[test]
fn forged_reused_expired_or_unredirected_failover_states_are_refused() {
    let c = failover_cfg();
    let f1 = pass(&c, br#"{"model":"a"}"#, None, 1_000).action.unwrap_or_else(|r| panic!("{r:?}"));
    let state = f1.state.clone().unwrap_or_default();
    let body = f1.body.clone().unwrap_or_default();
    let path = failover_path(&state, 500);

    // Forged (signature does not match) → refused, never passed through with credentials.
    let forged = failover_path(&state.replace("h=0", "h=1"), 500);
    assert!(refused(&on_head(&c, &failover_head(&forged, true), &mut replay(1_100))));
    // Signed with another VM's key (or before a restart) → refused.
    let mut other = ReplayCheck { key: (1, 2), now_ms: 1_100, spent: &mut SpentStates::default() };
    assert!(refused(&on_head(&c, &failover_head(&path, true), &mut other)));
    // Past its deadline → refused.
    let late = 1_000 + crate::failover::state_ttl_ms(None) + 1;
    assert!(refused(&on_head(&c, &failover_head(&path, true), &mut replay(late))));
    // Not replayed by Envoy (a client calling the failover path itself) → not ours at all.
    assert_eq!(on_head(&c, &failover_head(&path, false), &mut replay(1_100)), HeadDecision::PassThrough);

    // The genuine pass is accepted once; the same state a second time is a replay.
    let mut spent = SpentStates::default();
    let mut check = ReplayCheck { key: KEY, now_ms: 1_100, spent: &mut spent };
    let HeadDecision::ReadBody(p) = on_head(&c, &failover_head(&path, true), &mut check) else { panic!("genuine pass refused") };
    assert!(refused(&on_head(&c, &failover_head(&path, true), &mut check)), "a captured state replayed");

    // Bound to the body: the same state with another body is refused and records nothing.
    let view = CooldownView::new(&Cooldowns::default(), &c.table.ids, c.table.deployments.len());
    let mut rng = Rng::from_seed(3);
    let mut env = Env { cooling: &view, stats: &crate::stats::NoStats, now_ms: 1_100, rng: &mut rng, key: KEY };
    let other_body = br#"{"model":"a-one","messages":[{"role":"user","content":"steal"}]}"#;
    let d = on_body(&c, &p, other_body, &mut env);
    assert!(d.failed.is_none());
    assert!(matches!(d.action, Err(ref r) if r.error.code == Some("upstream_redirect_refused")), "{:?}", d.action);
    let d = on_body(&c, &p, &body, &mut env);
    assert!(d.failed.is_some() && d.action.is_ok(), "the genuine body goes on");
}

#[test]
fn replays_of_routed_requests_that_are_not_failover_passes_are_refused() {
    // A provider's own `307 location: http://internal.example/...` makes Envoy replay the
    // request — its headers still hold the provider key — to that URL.
    let c = failover_cfg();
    let mut head = failover_head("/steal", true);
    assert!(refused(&on_head(&c, &head, &mut replay(0))));
    head.original_url = Some("https://gw:8443/v1/messages?beta=1");
    assert!(refused(&on_head(&c, &head, &mut replay(0))));
    // Someone else's internal redirect (a route the router does not serve) is not its business.
    head.original_url = Some("http://gw/static/index.html");
    assert_eq!(on_head(&c, &head, &mut replay(0)), HeadDecision::PassThrough);
}

#[test]
fn model_names_are_data() {
    let c = cfg(json!({
        "model_list": [
            {"model_name": "azure/*", "litellm_params": {"model": "azure/*", "api_base": "https://r.openai.azure.com", "api_key": "k"}},
            {"model_name": "openai/*", "litellm_params": {"model": "openai/*", "api_key": "k"}},
        ],
    }));
    let p = "/v1/chat/completions";
    for evil in ["azure/../../../admin", "azure/x?api-version=evil&", "azure/a#b", "azure/a/b", "azure/a b", "azure/%2e%2e", "azure/.."] {
        let body = json!({"model": evil}).to_string();
        assert_eq!(code(route(&c, p, &body)), (400, Some("invalid_model")), "{evil}");
    }
    for evil in [r"openai/x\r\nx-injected: 1", "", r"openai/\u0000"] {
        let body = format!(r#"{{"model":"{evil}"}}"#);
        assert_eq!(code(route(&c, p, &body)), (400, Some("invalid_model")), "{evil:?}");
    }
    assert_eq!(code(route(&c, p, r#"{"model":"openai/"}"#)), (400, Some("invalid_model")), "never an empty upstream model");
    let long = json!({"model": format!("openai/{}", "x".repeat(300))}).to_string();
    assert_eq!(code(route(&c, p, &long)), (400, Some("invalid_model")));
    let f = route(&c, p, r#"{"model":"azure/gpt-4o_prod.v2"}"#).unwrap_or_else(|r| panic!("{r:?}"));
    assert_eq!(f.path, "/openai/deployments/gpt-4o_prod.v2/chat/completions?api-version=2024-10-21");
    // Under an OpenAI wildcard the name only reaches the JSON body, escaped by the writer.
    let f = route(&c, p, r#"{"model":"openai/a/b \"c\""}"#).unwrap_or_else(|r| panic!("{r:?}"));
    assert_eq!(body_json(&f)["model"], "a/b \"c\"");
}

#[test]
fn oversized_paths_and_authorities_are_refused_before_buffering() {
    let c = sample();
    let long_path = format!("/v1/chat/completions?{}", "q".repeat(MAX_PATH_BYTES));
    let h = RequestHead { path: &long_path, ..head("POST", "/") };
    assert!(matches!(on_head(&c, &h, &mut replay(0)), HeadDecision::Reject(r) if r.error.status == 414));
    let host = "h".repeat(MAX_AUTHORITY_BYTES + 1);
    let h = RequestHead { authority: &host, ..head("POST", "/v1/chat/completions") };
    assert!(matches!(on_head(&c, &h, &mut replay(0)), HeadDecision::Reject(r) if r.error.status == 400));
}

#[test]
fn without_the_failover_wiring_no_state_header_is_sent() {
    // Retries and fallbacks configured, but envoy_settings.failover is off: the provider
    // must not receive the attempt state (nothing would strip it).
    let c = cfg(json!({
        "model_list": [
            {"model_name": "a", "litellm_params": {"model": "openai/a1", "api_base": "http://h1/v1"}, "model_info": {"id": "a1"}},
            {"model_name": "a", "litellm_params": {"model": "openai/a2", "api_base": "http://h2/v1"}, "model_info": {"id": "a2"}},
        ],
        "router_settings": {"num_retries": 2, "fallbacks": [{"a": ["a"]}]},
        "envoy_settings": {},
    }));
    assert!(!c.envoy.failover);
    let f = pass(&c, br#"{"model":"a"}"#, None, 0).action.unwrap_or_else(|r| panic!("{r:?}"));
    assert_eq!(f.state, None);
    let on = failover_cfg();
    let f = pass(&on, br#"{"model":"a"}"#, None, 0).action.unwrap_or_else(|r| panic!("{r:?}"));
    assert!(f.state.is_some(), "with the wiring declared the state travels");
}

#[test]
fn no_failover_on_a_single_deployment_without_retries_or_fallbacks() {
    let c = sample();
    let f = route(&c, "/v1/chat/completions", r#"{"model":"claude"}"#).unwrap_or_else(|r| panic!("{r:?}"));
    assert_eq!(f.state, None, "no further attempt possible: no state header at all");
    assert_eq!(f.per_try_timeout_ms, None);
}

#[test]
fn litellm_params_request_params_fill_what_the_request_leaves_out() {
    let c = cfg(json!({"model_list": [{"model_name": "m", "litellm_params": {"model": "openai/x", "api_base": "http://h/v1",
        "temperature": 0.1, "max_tokens": 256, "extra_body": {"top_k": 5, "temperature": 0.9, "guided_json": {"type": "object"}},
        "reasoning_effort": "low"}, "model_info": {"default_params": {"seed": 1, "max_tokens": 1}}}]}));
    let f = route(&c, "/v1/chat/completions", r#"{"model":"m","temperature":0.7,"messages":[]}"#).unwrap_or_else(|r| panic!("{r:?}"));
    // The request's temperature wins; litellm_params beat extra_body and model_info.default_params.
    assert_eq!(body_json(&f), json!({"model": "x", "temperature": 0.7, "messages": [], "max_tokens": 256, "reasoning_effort": "low",
        "top_k": 5, "guided_json": {"type": "object"}, "seed": 1}));
}

#[test]
fn stream_timeout_applies_to_streams_and_falls_back_to_timeout() {
    let c = cfg(json!({"model_list": [
        {"model_name": "m", "litellm_params": {"model": "openai/x", "api_base": "http://h/v1", "timeout": 30, "stream_timeout": 5}},
        {"model_name": "n", "litellm_params": {"model": "openai/y", "api_base": "http://h/v1", "timeout": 30}}],
        "router_settings": {"stream_timeout": 7, "timeout": 60}}));
    let t = |body: &str| route(&c, "/v1/chat/completions", body).map(|f| f.per_try_timeout_ms).unwrap_or_else(|r| panic!("{r:?}"));
    assert_eq!(t(r#"{"model":"m","stream":true}"#), Some(5_000));
    assert_eq!(t(r#"{"model":"m"}"#), Some(30_000));
    assert_eq!(t(r#"{"model":"n","stream":true}"#), Some(7_000), "the router's stream_timeout before the deployment's timeout");
    assert_eq!(t(r#"{"model":"n","stream":false}"#), Some(30_000));
}

#[test]
fn extra_headers_go_to_their_deployment_only_and_are_removed_on_failover() {
    let c = cfg(json!({"model_list": [
        {"model_name": "a", "litellm_params": {"model": "openai/a1", "api_base": "http://h1/v1", "api_key": "k1",
            "organization": "org-a", "extra_headers": {"X-Tenant": "t1", "X-Shared": "s1"}, "max_tokens": 64, "top_p": 0.5},
            "model_info": {"id": "a1"}},
        {"model_name": "b", "litellm_params": {"model": "anthropic/b1", "api_base": "http://h2", "api_key": "k2",
            "extra_headers": {"x-shared": "s2", "anthropic-version": "2024-01-01"}, "top_p": 0.9}, "model_info": {"id": "b1"}}],
        "router_settings": {"fallbacks": [{"a": ["b"]}]}}));
    let body = br#"{"model":"a"}"#.to_vec();
    let f1 = pass(&c, &body, None, 1_000).action.unwrap_or_else(|r| panic!("{r:?}"));
    assert_eq!(f1.extra_headers, [("x-shared".to_string(), "s1".to_string()), ("x-tenant".to_string(), "t1".to_string()),
        ("openai-organization".to_string(), "org-a".to_string())]);
    assert!(f1.stale.is_empty());
    let body1 = f1.body.clone().unwrap_or_else(|| body.clone());
    let f2 = pass(&c, &body1, Some((f1.state.as_deref().unwrap_or(""), "status=500")), 1_100).action.unwrap_or_else(|r| panic!("{r:?}"));
    assert_eq!(f2.deployment.id, "b1");
    // a1's auth and headers b1 does not set itself are removed (openai-organization is dropped by the header policy).
    assert_eq!(f2.stale, ["authorization", "x-tenant", "openai-organization"]);
    assert_eq!(f2.anthropic_version, None, "the deployment pins anthropic-version itself");
    // a1's request defaults are not taken for the client's: b1 gets only its own.
    assert_eq!(body_json(&f1), json!({"max_tokens": 64, "top_p": 0.5, "model": "a1"}));
    assert_eq!(body_json(&f2), json!({"top_p": 0.9, "model": "b1"}));
    // A pass that adds nothing still sends the body without the previous pass's insertions.
    let c2 = cfg(json!({"model_list": [
        {"model_name": "a", "litellm_params": {"model": "openai/a1", "api_base": "http://h1/v1", "max_tokens": 8}, "model_info": {"id": "a1"}},
        {"model_name": "a", "litellm_params": {"model": "openai/a1", "api_base": "http://h2/v1"}, "model_info": {"id": "a2"}}],
        "router_settings": {"num_retries": 1}}));
    let first = pass(&c2, &body, None, 1_000).action.unwrap_or_else(|r| panic!("{r:?}"));
    let (first_body, first_state) = (first.body.clone().unwrap_or_else(|| body.clone()), first.state.clone().unwrap_or_default());
    let retry = pass(&c2, &first_body, Some((&first_state, "status=500")), 1_100).action.unwrap_or_else(|r| panic!("{r:?}"));
    let expected = if first.deployment.id == "a1" { json!({"model": "a1"}) } else { json!({"max_tokens": 8, "model": "a1"}) };
    assert_eq!(retry.body.as_deref().map(|b| serde_json::from_slice::<Value>(b).unwrap_or_default()), Some(expected));
}

#[test]
fn a_content_policy_rejection_goes_to_the_content_policy_fallbacks_without_a_failure() {
    // `a` has a second member and `num_retries`, yet a content-policy 400 is neither retried nor
    // counted: LiteLLM raises it straight to `content_policy_fallbacks`, and its status (400) is
    // not one `_is_cooldown_required` cools on.
    let c = cfg(json!({
        "model_list": [
            {"model_name": "a", "litellm_params": {"model": "azure/a1", "api_base": "http://h1", "api_key": "k"}, "model_info": {"id": "a1"}},
            {"model_name": "a", "litellm_params": {"model": "azure/a2", "api_base": "http://h2", "api_key": "k"}, "model_info": {"id": "a2"}},
            {"model_name": "b", "litellm_params": {"model": "openai/b1", "api_base": "http://h3/v1"}, "model_info": {"id": "b1"}},
            {"model_name": "c", "litellm_params": {"model": "anthropic/c1", "api_base": "http://h5", "api_key": "k"}, "model_info": {"id": "c1"}},
            {"model_name": "r", "litellm_params": {"model": "openai/r1", "api_base": "http://h4/v1"}, "model_info": {"id": "r1"}},
        ],
        "router_settings": {"num_retries": 2, "fallbacks": [{"a": ["r"]}], "content_policy_fallbacks": [{"a": ["b", "c"]}]},
    }));
    let body = br#"{"model":"a"}"#.to_vec();
    let f1 = pass(&c, &body, None, 1_000).action.unwrap_or_else(|r| panic!("{r:?}"));
    let s1 = AttemptState::decode(f1.state.as_deref().unwrap_or(""), KEY).unwrap_or_default();
    assert_eq!(s1.policy_failover, Some(crate::provider::Wire::Azure), "the upstream side reads a 400 in Azure's shapes");
    assert!(s1.can_context_failover, "no context_window_fallbacks: a too-long prompt continues `fallbacks` (LiteLLM)");
    let body1 = f1.body.clone().unwrap_or_else(|| body.clone());

    let second = pass(&c, &body1, Some((f1.state.as_deref().unwrap_or(""), "status=400&cp=1")), 1_100);
    assert_eq!(second.failed, None, "the prompt's fault: nothing recorded against the deployment");
    let f2 = second.action.unwrap_or_else(|r| panic!("{r:?}"));
    assert_eq!((f2.deployment.id.as_str(), f2.group, f2.fallback_from.as_deref(), f2.attempts), ("b1", "b", Some("a"), 2));
    let s2 = AttemptState::decode(f2.state.as_deref().unwrap_or(""), KEY).unwrap_or_default();
    assert_eq!((s2.chain, s2.fallback), (crate::failover::Chain::ContentPolicy, 1));
    assert_eq!(s2.policy_failover, Some(crate::provider::Wire::OpenAi), "`c` remains; `b` speaks OpenAI's error shapes");
    // A regular failure of the content-policy fallback continues that list, not `fallbacks`.
    assert!(s2.can_failover);
    let body2 = f2.body.clone().unwrap_or(body1);
    let third = pass(&c, &body2, Some((f2.state.as_deref().unwrap_or(""), "status=500")), 1_200);
    assert_eq!(third.failed.map(|f| f.class), Some(FailureClass::ServerError), "a 500 is the deployment's");
    let f3 = third.action.unwrap_or_else(|r| panic!("{r:?}"));
    assert_eq!((f3.deployment.id.as_str(), f3.attempts), ("c1", 3));
    // Both lists used up for failures and content policy; only a too-long prompt could still
    // continue `fallbacks` (no context_window_fallbacks: LiteLLM defaults to them).
    let s3 = AttemptState::decode(f3.state.as_deref().unwrap_or(""), KEY).unwrap_or_default();
    assert_eq!((s3.can_failover, s3.policy_failover, s3.can_context_failover), (false, None, true));

    // With no fallback of either kind left the upstream side is never asked to read a 400.
    let plain = cfg(json!({
        "model_list": [{"model_name": "a", "litellm_params": {"model": "azure/a1", "api_base": "http://h1", "api_key": "k"}, "model_info": {"id": "a1"}}],
        "router_settings": {"fallbacks": [{"a": ["a"]}]},
    }));
    let f = pass(&plain, &body, None, 1_000).action.unwrap_or_else(|r| panic!("{r:?}"));
    assert_eq!(f.state, None);
}

#[test]
fn without_content_policy_fallbacks_a_content_policy_rejection_continues_the_fallbacks() {
    // LiteLLM: "No content_policy_fallback set. Defaulting to fallbacks, if available" — still no
    // retry in the group and nothing counted against the deployment.
    let c = cfg(json!({
        "model_list": [
            {"model_name": "a", "litellm_params": {"model": "openai/a1", "api_base": "http://h1/v1"}, "model_info": {"id": "a1"}},
            {"model_name": "a", "litellm_params": {"model": "openai/a2", "api_base": "http://h2/v1"}, "model_info": {"id": "a2"}},
            {"model_name": "r", "litellm_params": {"model": "openai/r1", "api_base": "http://h4/v1"}, "model_info": {"id": "r1"}},
        ],
        "router_settings": {"num_retries": 2, "fallbacks": [{"a": ["r"]}]},
    }));
    let body = br#"{"model":"a"}"#.to_vec();
    let f1 = pass(&c, &body, None, 1_000).action.unwrap_or_else(|r| panic!("{r:?}"));
    let s1 = AttemptState::decode(f1.state.as_deref().unwrap_or(""), KEY).unwrap_or_default();
    assert_eq!(s1.policy_failover, Some(crate::provider::Wire::OpenAi));
    let body1 = f1.body.clone().unwrap_or_else(|| body.clone());
    let second = pass(&c, &body1, Some((f1.state.as_deref().unwrap_or(""), "status=400&cp=1")), 1_100);
    assert_eq!(second.failed, None);
    let f2 = second.action.unwrap_or_else(|r| panic!("{r:?}"));
    assert_eq!((f2.deployment.id.as_str(), f2.fallback_from.as_deref(), f2.attempts), ("r1", Some("a"), 2));
}

#[test]
fn a_content_policy_fallback_that_cannot_serve_ends_with_a_content_policy_error() {
    let c = cfg(json!({
        "model_list": [
            {"model_name": "a", "litellm_params": {"model": "openai/a1", "api_base": "http://h1/v1"}, "model_info": {"id": "a1"}},
            {"model_name": "b", "litellm_params": {"model": "openai/b1", "api_base": "http://h3/v1"}, "model_info": {"id": "b1"}},
        ],
        "router_settings": {"content_policy_fallbacks": [{"a": ["b"]}]},
    }));
    let body = br#"{"model":"a"}"#.to_vec();
    let f1 = pass(&c, &body, None, 1_000).action.unwrap_or_else(|r| panic!("{r:?}"));
    let body1 = f1.body.clone().unwrap_or_else(|| body.clone());
    let mut cooling = Cooldowns::default();
    cooling.extend("b1", 60_000, FailureClass::ServerError);
    let view = CooldownView::new(&cooling, &c.table.ids, c.table.deployments.len());
    let mut rng = Rng::from_seed(3);
    let mut env = Env { cooling: &view, stats: &crate::stats::NoStats, now_ms: 1_100, rng: &mut rng, key: KEY };
    let report = FailureReport { status: 400, retry_after_ms: None, context_window: false, content_policy: true };
    let loc = crate::failover::failover_location("gw:10000", f1.state.as_deref().unwrap_or(""), &report);
    let path = loc.split_once("gw:10000").map(|(_, p)| p.to_string()).unwrap_or_default();
    let head = RequestHead { method: "POST", path: &path, authority: "gw:10000", internal_redirect: true, ..Default::default() };
    let HeadDecision::ReadBody(p) = on_head(&c, &head, &mut replay(1_100)) else { panic!("not a failover pass") };
    let d = on_body(&c, &p, &body1, &mut env);
    assert_eq!(d.failed, None);
    let reply = d.action.err().unwrap_or_else(|| panic!("served"));
    assert_eq!((reply.error.status, reply.error.code), (400, Some("content_policy_violation")));
}

#[test]
fn content_policy_violation_error_retries_retry_on_another_member_first() {
    let c = cfg(json!({
        "model_list": [
            {"model_name": "a", "litellm_params": {"model": "openai/a1", "api_base": "http://h1/v1"}, "model_info": {"id": "a1"}},
            {"model_name": "a", "litellm_params": {"model": "openai/a2", "api_base": "http://h2/v1"}, "model_info": {"id": "a2"}},
        ],
        "router_settings": {"retry_policy": {"ContentPolicyViolationErrorRetries": 1}},
    }));
    let body = br#"{"model":"a"}"#.to_vec();
    let f1 = pass(&c, &body, None, 1_000).action.unwrap_or_else(|r| panic!("{r:?}"));
    let s1 = AttemptState::decode(f1.state.as_deref().unwrap_or(""), KEY).unwrap_or_default();
    assert!(s1.policy_failover.is_some() && !s1.can_failover, "only a content-policy retry is possible");
    let body1 = f1.body.clone().unwrap_or_else(|| body.clone());
    let second = pass(&c, &body1, Some((f1.state.as_deref().unwrap_or(""), "status=400&cp=1")), 1_100);
    assert_eq!(second.failed, None);
    let f2 = second.action.unwrap_or_else(|r| panic!("{r:?}"));
    assert_ne!(f2.deployment.id, f1.deployment.id);
    assert_eq!((f2.group, f2.attempts, f2.fallback_from.as_deref()), ("a", 2, None));
    assert_eq!(f2.state, None, "retry used, nothing else left");
}

#[test]
fn without_context_window_fallbacks_a_too_long_prompt_continues_fallbacks() {
    let c = cfg(json!({"model_list": [
        {"model_name": "a", "litellm_params": {"model": "openai/a1", "api_base": "http://h1/v1"}, "model_info": {"id": "a1"}},
        {"model_name": "r", "litellm_params": {"model": "openai/r1", "api_base": "http://h2/v1"}, "model_info": {"id": "r1"}}],
        "router_settings": {"fallbacks": [{"a": ["r"]}]}}));
    let body = br#"{"model":"a"}"#.to_vec();
    let f1 = pass(&c, &body, None, 1_000).action.unwrap_or_else(|r| panic!("{r:?}"));
    let s1 = AttemptState::decode(f1.state.as_deref().unwrap_or(""), KEY).unwrap_or_default();
    assert!(s1.can_context_failover);
    let body1 = f1.body.clone().unwrap_or_else(|| body.clone());
    let second = pass(&c, &body1, Some((f1.state.as_deref().unwrap_or(""), "status=400&cw=1")), 1_100);
    assert_eq!(second.failed, None, "the prompt's fault: nothing recorded");
    let f2 = second.action.unwrap_or_else(|r| panic!("{r:?}"));
    assert_eq!((f2.deployment.id.as_str(), f2.fallback_from.as_deref()), ("r1", Some("a")));
}
