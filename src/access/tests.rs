//! Identity and model-access decisions on whole loaded configs, table-driven.

use super::{key_hash, Caller};
use crate::config::{self, Kind, RouterConfig};
use crate::pipeline::auth::ClientCredentials;
use serde_json::{json, Value};

fn hex(raw: &str) -> String {
    key_hash(raw).iter().map(|b| format!("{b:02x}")).collect()
}

fn env(name: &str) -> Option<String> {
    match name {
        "OPS_KEY" => Some("sk-ops".into()),
        "MASTER" => Some("sk-master".into()),
        _ => None,
    }
}

fn load(v: &Value) -> config::Loaded {
    config::load(v.to_string().as_bytes(), &env)
}

fn cfg(v: &Value) -> RouterConfig {
    let loaded = load(v);
    match loaded.config {
        Some(c) => c,
        None => panic!("refused: {:?}", loaded.diagnostics.errors),
    }
}

/// Groups: gpt-4o (access group "beta" on both deployments), gpt-4o-mini ("cheap"), claude
/// (deployments disagree: no expansion), openai/* (wildcard); router alias best → gpt-4o.
fn base() -> Value {
    let d = |name: &str, model: &str, groups: Value| {
        json!({"model_name": name, "litellm_params": {"model": model, "api_key": "k"}, "model_info": {"access_groups": groups}})
    };
    json!({
        "model_list": [
            d("gpt-4o", "openai/gpt-4o", json!(["Beta"])),
            d("gpt-4o", "openai/gpt-4o-2", json!(["beta"])),
            d("gpt-4o-mini", "openai/gpt-4o-mini", json!(["cheap"])),
            d("claude", "anthropic/claude-3", json!(["beta"])),
            d("claude", "anthropic/claude-3b", json!([])),
            d("openai/*", "openai/*", json!([])),
        ],
        "router_settings": {"model_group_alias": {"best": "gpt-4o"}},
        "general_settings": {"master_key": "os.environ/MASTER"},
        "teams": [
            {"team_id": "research", "models": ["beta", "openai/*"]},
            {"team_id": "frozen", "blocked": true},
            {"team_id": "anything", "models": ["all-proxy-models"]},
        ],
        "keys": [
            {"token": hex("sk-all"), "key_alias": "all"},
            {"token": hex("sk-mini"), "key_alias": "mini", "models": ["gpt-4o-mini"], "aliases": {"fast": "gpt-4o-mini", "big": "gpt-4o"}},
            {"token": hex("sk-beta"), "key_alias": "beta", "models": ["beta"]},
            {"token": hex("sk-team"), "key_alias": "team", "team_id": "research"},
            {"token": hex("sk-teamall"), "key_alias": "teamall", "team_id": "research", "models": ["all-team-models"]},
            {"token": hex("sk-narrow"), "key_alias": "narrow", "team_id": "research", "models": ["gpt-4o-mini"]},
            {"token": hex("sk-wild"), "key_alias": "wild", "models": ["openai/gpt-4*"]},
            {"token": hex("sk-blocked"), "key_alias": "blocked", "blocked": true},
            {"token": hex("sk-old"), "key_alias": "old", "expires": "2020-01-01T00:00:00Z"},
            {"token": hex("sk-later"), "key_alias": "later", "expires": "2100-01-01"},
            {"token": hex("sk-frozen"), "key_alias": "frozen", "team_id": "frozen"},
            {"key": "os.environ/OPS_KEY", "key_alias": "ops", "models": ["best", "claude"]},
            {"token": hex("sk-proxy"), "key_alias": "proxy", "team_id": "anything", "models": ["*"]},
        ],
    })
}

const NOW: u64 = 1_800_000_000_000; // 2027-01-15

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

/// A refusal as (status, code, type).
type Refusal = (u16, Option<&'static str>, &'static str);

fn identify(c: &RouterConfig, key: Option<&str>) -> Result<Caller, Refusal> {
    let auth = key.map(bearer);
    let creds = ClientCredentials { authorization: auth.as_deref(), ..Default::default() };
    c.access.identify(c.master_key.as_deref(), &creds, NOW).map_err(|e| (e.status, e.code, e.kind))
}

#[test]
fn identifies_master_key_virtual_keys_and_refuses_the_rest_as_litellm_does() {
    let c = cfg(&base());
    let index = |alias: &str| c.access.keys.iter().position(|k| k.alias.as_deref() == Some(alias)).map(Caller::Key);
    let cases: &[(Option<&str>, Result<Caller, Refusal>)] = &[
        (Some("sk-master"), Ok(Caller::Master)),
        (Some("sk-all"), index("all").ok_or((0, None, ""))),
        (Some("sk-ops"), index("ops").ok_or((0, None, ""))),
        (Some("sk-later"), index("later").ok_or((0, None, ""))),
        (None, Err((401, Some("invalid_api_key"), "authentication_error"))),
        (Some("sk-unknown"), Err((401, Some("invalid_api_key"), "authentication_error"))),
        (Some(""), Err((401, Some("invalid_api_key"), "authentication_error"))),
        (Some("sk-blocked"), Err((401, Some("key_blocked"), "auth_error"))),
        (Some("sk-old"), Err((401, Some("expired_key"), "expired_key"))),
        (Some("sk-frozen"), Err((401, Some("team_blocked"), "auth_error"))),
    ];
    for (key, want) in cases {
        assert_eq!(&identify(&c, *key), want, "{key:?}");
    }
    // The other headers SDKs use carry keys too; a wrong bearer does not hide a right api-key.
    let creds = ClientCredentials { authorization: Some("Bearer nope"), x_api_key: Some("sk-all"), ..Default::default() };
    assert_eq!(c.access.identify(c.master_key.as_deref(), &creds, NOW), index("all").ok_or_else(crate::openai::ApiError::invalid_api_key));
    let creds = ClientCredentials { api_key: Some(" sk-all "), ..Default::default() };
    assert!(matches!(c.access.identify(None, &creds, NOW), Ok(Caller::Key(_))));
}

#[test]
fn keys_without_a_master_key_still_refuse_anonymous_callers_and_no_keys_means_open() {
    let mut v = base();
    v["general_settings"] = json!({});
    let c = cfg(&v);
    assert_eq!(identify(&c, None), Err((401, Some("invalid_api_key"), "authentication_error")));
    assert_eq!(identify(&c, Some("sk-master")), Err((401, Some("invalid_api_key"), "authentication_error")));
    let open = cfg(&json!({"model_list": base()["model_list"]}));
    assert_eq!(identify(&open, None), Ok(Caller::Open));
    assert_eq!(identify(&open, Some("anything")), Ok(Caller::Open));
}

#[test]
fn expiry_is_checked_against_the_request_time() {
    let c = cfg(&base());
    let creds = ClientCredentials { authorization: Some("Bearer sk-old"), ..Default::default() };
    let before = config::format_time_ms(0);
    assert_eq!(before, "1970-01-01T00:00:00Z");
    assert!(c.access.identify(None, &creds, 1_577_836_799_999).is_ok(), "a millisecond before expires");
    let e = c.access.identify(None, &creds, 1_577_836_800_001).err();
    assert_eq!(
        e.map(|e| e.message),
        Some("Authentication Error - Expired Key. Key Expiry time 2020-01-01T00:00:00Z and current time 2020-01-01T00:00:00Z".to_string())
    );
    assert!(c.access.needs_clock());
    assert!(!cfg(&json!({"model_list": base()["model_list"], "keys": [{"token": hex("a")}]})).access.needs_clock());
}

/// (key, requested model) → allowed, or the denial's type.
#[test]
fn model_access_per_key_team_access_group_alias_and_wildcard() {
    let c = cfg(&base());
    let check = |key: &str, model: &str| -> Result<String, &'static str> {
        let caller = identify(&c, Some(key)).map_err(|e| e.2)?;
        let routed = c.access.resolve_alias(caller, model);
        let group = c.table.resolve(routed).and_then(|r| c.table.groups.get(r.group).map(|g| (r.group, g.name.as_str())));
        c.access.check_model(caller, routed, group).map(|()| routed.to_string()).map_err(|e| e.kind)
    };
    const KEY: &str = "key_model_access_denied";
    const TEAM: &str = "team_model_access_denied";
    let cases: &[(&str, &str, Result<&str, &str>)] = &[
        ("sk-master", "claude", Ok("claude")),
        ("sk-master", "no-such-model", Ok("no-such-model")),
        ("sk-all", "claude", Ok("claude")),
        ("sk-all", "openai/o3", Ok("openai/o3")),
        // an explicit list
        ("sk-mini", "gpt-4o-mini", Ok("gpt-4o-mini")),
        ("sk-mini", "gpt-4o", Err(KEY)),
        ("sk-mini", "best", Err(KEY)),
        ("sk-mini", "no-such-model", Err(KEY)),
        // the key's own aliases resolve first; the target must be allowed
        ("sk-mini", "fast", Ok("gpt-4o-mini")),
        ("sk-mini", "big", Err(KEY)),
        // an access group: gpt-4o's deployments agree on "beta"; claude's disagree → no expansion
        ("sk-beta", "gpt-4o", Ok("gpt-4o")),
        ("sk-beta", "best", Ok("best")),
        ("sk-beta", "claude", Err(KEY)),
        ("sk-beta", "gpt-4o-mini", Err(KEY)),
        // a key without models gets its team's
        ("sk-team", "gpt-4o", Ok("gpt-4o")),
        ("sk-team", "openai/gpt-4.1", Ok("openai/gpt-4.1")),
        ("sk-team", "gpt-4o-mini", Err(TEAM)),
        ("sk-team", "claude", Err(TEAM)),
        ("sk-teamall", "gpt-4o", Ok("gpt-4o")),
        ("sk-teamall", "gpt-4o-mini", Err(TEAM)),
        // key and team both restrict: the key's list is checked first
        ("sk-narrow", "gpt-4o-mini", Err(TEAM)),
        ("sk-narrow", "gpt-4o", Err(KEY)),
        // wildcard entries match the requested name
        ("sk-wild", "openai/gpt-4.1", Ok("openai/gpt-4.1")),
        ("sk-wild", "openai/o3", Err(KEY)),
        ("sk-wild", "gpt-4o", Err(KEY)),
        // router aliases: the alias or its target may be listed
        ("sk-ops", "best", Ok("best")),
        ("sk-ops", "gpt-4o", Err(KEY)),
        ("sk-ops", "claude", Ok("claude")),
        ("sk-proxy", "claude", Ok("claude")),
    ];
    for (key, model, want) in cases {
        assert_eq!(check(key, model).as_deref().map_err(|e| *e), *want, "{key} → {model}");
    }
}

#[test]
fn denials_read_like_litellm_and_name_no_secret() {
    let c = cfg(&base());
    let Ok(caller) = identify(&c, Some("sk-mini")) else { panic!("sk-mini") };
    let Err(e) = c.access.check_model(caller, "gpt-4o", None) else { panic!("allowed") };
    assert_eq!((e.status, e.param, e.code), (401, Some("model"), Some("key_model_access_denied")));
    assert_eq!(e.message, "key not allowed to access model. This key can only access models=['gpt-4o-mini']. Tried to access gpt-4o");
    let body = String::from_utf8(e.body()).unwrap_or_default();
    assert!(!body.contains("sk-mini") && !body.contains(&hex("sk-mini")), "{body}");
    // Log lines name the key by alias (or position) and team, never by key or hash.
    assert_eq!(c.access.describe(caller).as_deref(), Some("key `mini`"));
    let team = identify(&c, Some("sk-team")).unwrap_or(Caller::Open);
    assert_eq!(c.access.describe(team).as_deref(), Some("key `team` (team `research`)"));
    assert_eq!(c.access.describe(Caller::Master), None);
}

#[test]
fn model_lists_per_key_are_what_the_key_may_call() {
    let c = cfg(&base());
    let ids = |key: &str| -> Vec<String> {
        let caller = identify(&c, Some(key)).unwrap_or(Caller::Open);
        let body = c.access.listing(caller).unwrap_or(&c.models_body);
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        v["data"].as_array().map(|d| d.iter().filter_map(|m| m["id"].as_str().map(str::to_string)).collect()).unwrap_or_default()
    };
    assert_eq!(ids("sk-master"), ["gpt-4o", "gpt-4o-mini", "claude", "openai/*", "best"]);
    assert_eq!(ids("sk-all"), ids("sk-master"));
    assert_eq!(ids("sk-mini"), ["gpt-4o-mini", "fast"]);
    assert_eq!(ids("sk-beta"), ["gpt-4o", "best"]);
    assert_eq!(ids("sk-team"), ["gpt-4o", "openai/*", "best"]);
    assert_eq!(ids("sk-narrow"), Vec::<String>::new());
    assert_eq!(ids("sk-ops"), ["claude", "best"]);
    // keys with the same access share one body
    let all = c.access.keys.iter().find(|k| k.alias.as_deref() == Some("all")).map(|k| k.listing);
    let later = c.access.keys.iter().find(|k| k.alias.as_deref() == Some("later")).map(|k| k.listing);
    assert_eq!(all, later);
}

#[test]
fn a_wildcard_served_name_in_models_is_listed_under_its_own_name() {
    let mut v = base();
    v["keys"] = json!([{"token": hex("sk-one"), "models": ["openai/gpt-4.1"]}]);
    let c = cfg(&v);
    let caller = identify(&c, Some("sk-one")).unwrap_or(Caller::Open);
    let body = String::from_utf8(c.access.listing(caller).map(<[u8]>::to_vec).unwrap_or_default()).unwrap_or_default();
    assert!(body.contains("\"id\":\"openai/gpt-4.1\"") && !body.contains("\"id\":\"openai/*\""), "{body}");
}

#[test]
fn config_problems_with_paths() {
    let mut v = base();
    v["keys"] = json!([{"token": hex("sk-master")}, {"token": hex("a"), "models": ["gtp-4o"]}]);
    let loaded = load(&v);
    let errors: Vec<String> = loaded.diagnostics.errors.iter().map(|p| p.to_string()).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("general_settings.master_key: is also a virtual key"), "{errors:?}");
    let warnings: Vec<String> = loaded.diagnostics.warnings.iter().map(|p| p.to_string()).collect();
    assert!(warnings.iter().any(|w| w.starts_with("keys[1].models[0]: `gtp-4o` names no model group")), "{warnings:?}");
    assert!(
        warnings.iter().any(|w| w.starts_with("model_list[3].model_info.access_groups: the deployments of `claude` list different access groups")),
        "{warnings:?}"
    );
    assert!(!warnings.iter().chain(&errors).any(|l| l.contains(&hex("sk-master")) || l.contains("sk-ops")));
}

#[test]
fn budgets_and_rate_limits_are_enforced_unpriced_deployments_warned_and_raw_keys_come_only_from_the_environment() {
    let mut v = base();
    v["keys"] = json!([{"token": hex("x"), "rpm_limit": 10, "max_budget": 5, "budget_duration": "30d", "metadata": {"dept": "finance"},
                        "user_id": "ann", "tags": ["prod"]}]);
    v["teams"] = json!([{"team_id": "t", "tpm_limit": 100}]);
    let loaded = load(&v);
    assert!(loaded.config.is_some(), "{:?}", loaded.diagnostics.errors);
    let ignored: Vec<&str> = loaded.diagnostics.warnings.iter().filter(|p| p.kind == Kind::Ignored).map(|p| p.path.as_str()).collect();
    assert!(ignored.iter().all(|p| !p.starts_with("keys[")), "every key field is read: {ignored:?}");
    let unpriced = loaded.diagnostics.warnings.iter().filter(|p| p.reason.contains("cost 0 against budgets")).count();
    assert_eq!(unpriced, loaded.config.as_ref().map_or(0, |c| c.table.deployments.len()), "each unpriced deployment is named once");
    let c = loaded.config.as_ref().map(|c| c.limits.for_request(0, "any").iter().map(|l| (l.kind, l.limit)).collect::<Vec<_>>());
    use crate::limits::Kind as L;
    assert_eq!(c, Some(vec![(L::Requests, 10), (L::Budget, 5_000_000_000)]), "the key is in no team: its own rpm and budget");
    let k = loaded.config.as_ref().and_then(|c| c.access.keys.first().cloned());
    assert_eq!(k.as_ref().map(|k| (k.user_id.as_deref(), k.tags.clone(), k.metadata.as_deref())), Some((Some("ann"), vec!["prod".to_string()], Some(r#"{"dept":"finance"}"#))));

    // Limits and in-request failover combine (each pass admits; replays count no request).
    let mut f = v.clone();
    f["envoy_settings"] = json!({"failover": true});
    assert!(load(&f).config.is_some(), "{:?}", load(&f).diagnostics.errors);

    v["keys"] = json!([{"key": "sk-live-in-the-file"}, {"key": "os.environ/UNSET_KEY"}]);
    let loaded = load(&v);
    assert!(loaded.config.is_none());
    let errors: Vec<String> = loaded.diagnostics.errors.iter().map(|p| p.to_string()).collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].starts_with("keys[0].key: must be an os.environ/NAME reference") && !errors[0].contains("sk-live"), "{errors:?}");
    assert!(errors[1].starts_with("keys[1].key: environment variable UNSET_KEY is not set"), "{errors:?}");
    let loaded = load(&base());
    assert!(loaded.env_names.contains(&"OPS_KEY".to_string()), "{:?}", loaded.env_names);
}

#[test]
fn lookup_cost_does_not_depend_on_the_number_of_keys() {
    // Not a benchmark: the lookup is by digest in a hash map, so a config with many keys finds
    // the last one like the first (and a near miss is a miss).
    let keys: Vec<Value> = (0..5000).map(|i| json!({"token": hex(&format!("sk-{i}"))})).collect();
    let c = cfg(&json!({"model_list": base()["model_list"], "keys": keys}));
    assert_eq!(c.access.lookup(&key_hash("sk-4999")), Some(4999));
    assert_eq!(c.access.lookup(&key_hash("sk-0")), Some(0));
    assert_eq!(c.access.lookup(&key_hash("sk-5000")), None);
}
