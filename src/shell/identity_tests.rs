//! Keys bound to a mesh principal or a verified JWT subject, through whole router streams on the
//! fake host: the bound identity selects the key's policy without a token, a presented key stays
//! authoritative, an unbound or missing identity is refused, a header that looks like an
//! identity selects nothing, and configs without bindings make no property read at all.

use super::fake::{gateway_of, hex, two_models, FakeHost, Op};
use super::host::Flow;
use super::vm::Vm;
use super::RouterStream;
use crate::access::key_hash;
use crate::config::{self, RouterConfig};
use crate::metrics::FakeSink;
use crate::routing::Rng;
use serde_json::{json, Value};
use std::rc::Rc;

const CHAT: &str = "/v1/chat/completions";
const RESEARCH: &str = "spiffe://cluster.local/ns/research/sa/app";
const FINANCE: &str = "spiffe://cluster.local/ns/finance/sa/app";
const SAN: &str = "connection.uri_san_peer_certificate";
const ISS: &str = "metadata.filter_metadata.envoy.filters.http.jwt_authn.payload.iss";
const SUB: &str = "metadata.filter_metadata.envoy.filters.http.jwt_authn.payload.sub";


fn gateway(keys: Value) -> (Rc<RouterConfig>, Rc<Vm<FakeSink>>) {
    gateway_of(&json!({"model_list": two_models(), "general_settings": {"master_key": "sk-master"}, "keys": keys}))
}

fn bound() -> (Rc<RouterConfig>, Rc<Vm<FakeSink>>) {
    gateway(json!([
        {"key_alias": "research", "mesh_principals": [RESEARCH], "models": ["gpt-4o"]},
        {"key_alias": "finance", "token": hex("sk-finance"), "mesh_principals": [FINANCE],
         "jwt_subjects": [{"iss": "https://idp.test", "sub": "finance-app"}], "models": ["mini"]},
        {"key_alias": "plain", "token": hex("sk-plain")},
    ]))
}

fn request(model: &str, extra: &[(&str, &str)]) -> FakeHost {
    let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let len = body.len().to_string();
    let mut headers = vec![(":method", "POST"), (":path", CHAT), (":authority", "gw"), ("content-type", "application/json"), ("content-length", len.as_str())];
    headers.extend_from_slice(extra);
    FakeHost::request(&headers, &body)
}

fn run(cfg: &Rc<RouterConfig>, vm: &Rc<Vm<FakeSink>>, host: &FakeHost) -> Option<(u16, Option<String>)> {
    let mut s = RouterStream::new(Some(cfg.clone()), vm.clone());
    if s.on_request_headers(host, false) == Flow::Pause && host.reply().is_some() {
        return host.reply().map(|r| (r.status, r.code()));
    }
    let size = host.request_body.borrow().len();
    let flow = s.on_request_body(host, size, true);
    let reply = host.reply().map(|r| (r.status, r.code()));
    assert_eq!(flow == Flow::Pause, reply.is_some(), "{reply:?}");
    reply
}

#[test]
fn a_bound_principal_gets_its_keys_policy_without_a_token() {
    let (cfg, vm) = bound();
    let ok = request("gpt-4o", &[]);
    ok.set_property_value(SAN, RESEARCH);
    assert_eq!(run(&cfg, &vm, &ok), None);
    assert_eq!(ok.request_header_value("authorization").as_deref(), Some("Bearer sk-provider"));
    assert_eq!(ok.args(Op::Property), [SAN, ISS], "the SAN, then the JWT issuer (absent: no subject read)");

    let denied = request("mini", &[]);
    denied.set_property_value(SAN, RESEARCH);
    assert_eq!(run(&cfg, &vm, &denied), Some((401, Some("key_model_access_denied".into()))), "the key's models apply");

    let finance = request("mini", &[]);
    finance.set_property_value(SAN, FINANCE);
    assert_eq!(run(&cfg, &vm, &finance), None);

    for san in [None, Some(""), Some("spiffe://cluster.local/ns/research/sa/other"), Some("spiffe://cluster.local/ns/research/sa/app ")] {
        let h = request("gpt-4o", &[]);
        if let Some(v) = san {
            h.set_property_value(SAN, v);
        }
        assert_eq!(run(&cfg, &vm, &h), Some((401, Some("invalid_api_key".into()))), "{san:?}");
        assert_eq!(h.count(Op::RequestBody), 0, "refused at the headers");
    }
}

#[test]
fn a_presented_key_is_authoritative() {
    let (cfg, vm) = bound();
    let wrong = request("gpt-4o", &[("authorization", "Bearer sk-guess")]);
    wrong.set_property_value(SAN, RESEARCH);
    assert_eq!(run(&cfg, &vm, &wrong), Some((401, Some("invalid_api_key".into()))), "a wrong key is not rescued by the certificate");
    assert_eq!(wrong.count(Op::Property), 0, "no identity read when a key is presented");

    let plain = request("gpt-4o", &[("x-api-key", "sk-plain")]);
    plain.set_property_value(SAN, FINANCE);
    assert_eq!(run(&cfg, &vm, &plain), None, "the presented key's policy (all models), not the bound one's (mini only)");

    let master = request("gpt-4o", &[("authorization", "Bearer sk-master")]);
    assert_eq!(run(&cfg, &vm, &master), None);
    let token = request("mini", &[("authorization", "Bearer sk-finance")]);
    assert_eq!(run(&cfg, &vm, &token), None, "a key with bindings keeps its token");
}

#[test]
fn a_verified_jwt_subject_selects_its_key_and_a_conflict_selects_none() {
    let (cfg, vm) = bound();
    let ok = request("mini", &[]);
    ok.set_property_value(ISS, "https://idp.test");
    ok.set_property_value(SUB, "finance-app");
    assert_eq!(run(&cfg, &vm, &ok), None);
    assert_eq!(ok.args(Op::Property), [SAN, ISS, SUB]);

    let other_issuer = request("mini", &[]);
    other_issuer.set_property_value(ISS, "https://evil.test");
    other_issuer.set_property_value(SUB, "finance-app");
    assert_eq!(run(&cfg, &vm, &other_issuer), Some((401, Some("invalid_api_key".into()))));

    let both = request("mini", &[]);
    both.set_property_value(SAN, RESEARCH);
    both.set_property_value(ISS, "https://idp.test");
    both.set_property_value(SUB, "finance-app");
    assert_eq!(run(&cfg, &vm, &both), Some((401, Some("invalid_api_key".into()))), "principal and JWT name different keys");
}

#[test]
fn identity_looking_headers_select_nothing() {
    let (cfg, vm) = bound();
    let spoof = request(
        "gpt-4o",
        &[
            ("x-forwarded-client-cert", "By=spiffe://cluster.local/ns/gw/sa/gw;URI=spiffe://cluster.local/ns/research/sa/app"),
            ("x-jwt-sub", "finance-app"),
            ("x-jwt-payload", "eyJzdWIiOiJmaW5hbmNlLWFwcCJ9"),
            ("connection.uri_san_peer_certificate", RESEARCH),
        ],
    );
    assert_eq!(run(&cfg, &vm, &spoof), Some((401, Some("invalid_api_key".into()))));
}

#[test]
fn failing_property_reads_refuse_and_bindings_cost_nothing_when_absent() {
    let (cfg, vm) = bound();
    let failing = request("gpt-4o", &[]);
    failing.set_property_value(SAN, RESEARCH);
    failing.fail(Op::Property);
    assert_eq!(run(&cfg, &vm, &failing), Some((401, Some("invalid_api_key".into()))), "an unreadable identity is no identity");

    let passthrough = FakeHost::request(&[(":method", "GET"), (":path", "/healthz"), (":authority", "gw")], "");
    passthrough.set_property_value(SAN, RESEARCH);
    let mut s = RouterStream::new(Some(cfg.clone()), vm.clone());
    assert_eq!(s.on_request_headers(&passthrough, true), Flow::Continue);
    assert_eq!(passthrough.count(Op::Property), 0, "a pass-through request is not identified: no property read");

    let (plain_cfg, plain_vm) = gateway(json!([{"token": hex("sk-plain")}]));
    let h = request("gpt-4o", &[]);
    h.set_property_value(SAN, RESEARCH);
    assert_eq!(run(&plain_cfg, &plain_vm, &h), Some((401, Some("invalid_api_key".into()))));
    assert_eq!(h.count(Op::Property), 0, "no bindings: no property read");
    let ok = request("gpt-4o", &[("authorization", "Bearer sk-plain")]);
    assert_eq!(run(&plain_cfg, &plain_vm, &ok), None);
    let ops: Vec<Op> = ok.calls.borrow().iter().map(|(o, _)| *o).collect();
    assert_eq!(ops, [Op::RequestHeaders, Op::RequestBody, Op::Now, Op::SetRequestHeaders], "the hot path's host calls are unchanged");
}

#[test]
fn the_model_list_answers_the_bound_keys_own_list() {
    let (cfg, vm) = bound();
    let host = FakeHost::request(&[(":method", "GET"), (":path", "/v1/models"), (":authority", "gw")], "");
    host.set_property_value(SAN, RESEARCH);
    let mut s = RouterStream::new(Some(cfg.clone()), vm.clone());
    assert_eq!(s.on_request_headers(&host, true), Flow::Pause);
    let reply = host.reply().unwrap_or_else(|| panic!("no reply"));
    let ids: Vec<String> = reply.json()["data"].as_array().into_iter().flatten().filter_map(|m| m["id"].as_str().map(str::to_string)).collect();
    assert_eq!((reply.status, ids), (200, vec!["gpt-4o".to_string()]));
}

#[test]
fn bindings_are_validated_with_field_paths() {
    let v = json!({
        "model_list": [{"model_name": "gpt-4o", "litellm_params": {"model": "openai/gpt-4o", "api_key": "sk-p"}}],
        "keys": [
            {"mesh_principals": [RESEARCH]},
            {"token": hex("sk-x"), "mesh_principals": [FINANCE, RESEARCH]},
            {"jwt_subjects": [{"iss": "i", "sub": "s"}]},
            {"jwt_subjects": [{"iss": "i", "sub": "t"}, {"iss": "i", "sub": "s"}]},
            {"mesh_principals": ["spiffe://cluster.local/ns/*/sa/app"]},
            {"key_alias": "nothing"},
        ],
    });
    let loaded = config::load(v.to_string().as_bytes(), &|_| None);
    let errors: Vec<String> = loaded.diagnostics.errors.iter().map(|p| p.to_string()).collect();
    assert!(loaded.config.is_none());
    for want in [
        "keys[1].mesh_principals[1]: is already bound to keys[0]",
        "keys[3].jwt_subjects[1]: is already bound to keys[2]",
        "keys[4].mesh_principals[0]: must be exact",
        "keys[5]: needs token (the key's SHA-256 hex, as LiteLLM stores it), key (os.environ/NAME), mesh_principals or jwt_subjects",
    ] {
        assert!(errors.iter().any(|e| e.starts_with(want)), "{want} not in {errors:#?}");
    }
    assert_eq!(errors.len(), 4, "{errors:#?}");
}

#[test]
fn a_bound_key_is_still_checked_for_blocked_expiry_and_its_rate_limits() {
    let (cfg, vm) = gateway(json!([
        {"key_alias": "blocked", "mesh_principals": [RESEARCH], "blocked": true},
        {"key_alias": "old", "mesh_principals": [FINANCE], "expires": "2000-01-01T00:00:00Z"},
        {"key_alias": "limited", "jwt_subjects": [{"iss": "https://idp.test", "sub": "batch"}], "rpm_limit": 1},
    ]));
    let blocked = request("gpt-4o", &[]);
    blocked.set_property_value(SAN, RESEARCH);
    assert_eq!(run(&cfg, &vm, &blocked), Some((401, Some("key_blocked".into()))));
    let old = request("gpt-4o", &[]);
    old.set_property_value(SAN, FINANCE);
    old.advance(1_800_000_000_000);
    assert_eq!(run(&cfg, &vm, &old), Some((401, Some("expired_key".into()))));
    let first = request("gpt-4o", &[]);
    // The same Envoy: one shared-data store and clock.
    let second = FakeHost::sharing(&first);
    second.set_request(&first.request_headers.borrow().iter().map(|(k, v)| (k.as_str(), v.as_str())).collect::<Vec<_>>(), &first.body_text());
    for h in [&first, &second] {
        h.set_property_value(ISS, "https://idp.test");
        h.set_property_value(SUB, "batch");
    }
    assert_eq!(run(&cfg, &vm, &first), None);
    assert_eq!(run(&cfg, &vm, &second).map(|(s, _)| s), Some(429), "the tokenless key's counter holds across requests");
}
