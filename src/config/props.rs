//! Property tests (proptest) for the config loader ([`super::load`]).
//!
//! Inputs: arbitrary JSON values and bytes, and plugin configs shaped like real ones — the
//! sections, keys and typical values of LiteLLM/DeltaLLM configs (provider prefixes, URLs,
//! `os.environ/` references that do and do not resolve, numeric strings, fallback shapes),
//! mixed with arbitrary values anywhere. Properties:
//!
//! * `load` never panics;
//! * a config is returned exactly when there is no error;
//! * every error names a field path that leads into the input: the path's parent exists there
//!   (so the operator can find the line to fix), `configuration` only for the document itself.
//!
//! Case count: proptest's default (256), or `PROPTEST_CASES`.

use proptest::prelude::*;
use serde_json::{json, Map, Value};

use super::{load, Loaded};

const TOP_LEVEL_KEYS: &[&str] = &["model_list", "router_settings", "litellm_settings", "general_settings", "envoy_settings", "credential_list"];
use crate::openai::props::{config, json_value, short_string};

fn env(name: &str) -> Option<String> {
    match name {
        "KEY" => Some("sk-test".to_string()),
        "RPM" => Some("60".to_string()),
        "BASE" => Some("https://api.example.com/v1".to_string()),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------------

const ENTRY_KEYS: &[&str] = &["model_name", "litellm_params", "deltallm_params", "model_info", "rpm", "tpm", "weight", "order", "tags"];
const PARAM_KEYS: &[&str] = &[
    "model", "provider", "custom_llm_provider", "api_key", "api_base", "api_version", "weight", "rpm", "tpm", "order", "tags",
    "timeout", "stream_timeout", "max_retries", "auth_header_name", "auth_header_format", "cluster", "temperature",
    "health_check_model",
];
const INFO_KEYS: &[&str] = &[
    "id", "mode", "input_cost_per_token", "output_cost_per_token", "max_input_tokens", "access_groups", "tags",
    "default_params", "health_check_model", "health_check_timeout",
];
const ROUTER_KEYS: &[&str] = &[
    "routing_strategy", "routing_strategy_args", "model_group_alias", "allowed_fails", "allowed_fails_policy",
    "cooldown_time", "disable_cooldowns", "num_retries", "timeout", "request_timeout", "stream_timeout", "retry_policy",
    "model_group_retry_policy", "fallbacks", "context_window_fallbacks", "content_policy_fallbacks", "default_fallbacks",
    "max_fallbacks", "enable_tag_filtering", "enable_pre_call_checks", "drop_params", "retry_after",
    "background_health_checks", "health_check_interval", "optional_pre_call_checks", "success_callback",
];
const GENERAL_KEYS: &[&str] = &["master_key", "background_health_checks", "health_check_interval", "database_url"];
const ENVOY_KEYS: &[&str] = &[
    "cluster_header", "max_cooldown_time", "max_request_body_bytes", "models_paths", "health_path", "access_log_properties",
    "access_log_tokens", "failover", "metrics",
];

const GROUPS: &[&str] = &["gpt-4o", "claude-*", "*", "openai/*", "gpt4", "", "a.b", "missing"];

const STRINGS: &[&str] = &[
    // models and providers
    "openai/gpt-4o", "azure/gpt-4o-prod", "anthropic/claude-*", "openai/*", "gpt-4o", "groq/llama-3", "bedrock/claude",
    "vertex_ai/gemini", "openai/", "/x", "", "azure_openai", "anthropic", "openai", "nope",
    // endpoints and clusters
    "https://api.example.com", "http://127.0.0.1:8080/v1", "https://r.openai.azure.com/", "https://", "ftp://x",
    "https://h:99999", "https://host/p?q=1#f", "not a url", "outbound|443||api.openai.com",
    // secrets and env
    "os.environ/KEY", "os.environ/MISSING", "os.environ/RPM", "os.environ/BASE", "os.environ/", "sk-123", "bad\nkey",
    // auth headers
    "Token {api_key}", "{api_key}", "Bearer", "x-api-key", "bad header", "Authorization", "api-key",
    // numbers and switches as strings
    "30", "-1", "2.5", "abc", "true", "False", "yes",
    // strategies, modes, versions, paths
    "simple-shuffle", "least-busy", "usage-based-routing-v2", "latency-based-routing", "cost-based-routing", "fastest",
    "chat", "embedding", "completion", "image_generation", "2024-10-21", "2024 10", "/v1/models", "models", "/llm-router/health",
    "x-llm-router-cluster", "X Bad",
];

fn plausible_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => prop::sample::select(STRINGS).prop_map(Value::from),
        2 => prop::sample::select(&[0.0, 1.0, 3.0, -1.0, 0.5, 2.5, 30.0, 1e10, 4_294_967_296.0, 1e300][..]).prop_map(Value::from),
        2 => (0u64..1000).prop_map(Value::from),
        1 => any::<bool>().prop_map(Value::from),
        1 => Just(Value::Null),
        1 => short_string().prop_map(Value::from),
    ]
}

fn group_list() -> impl Strategy<Value = Value> {
    prop::collection::vec(prop::sample::select(GROUPS).prop_map(Value::from), 0..3).prop_map(Value::Array)
}

/// Values shaped like the structured settings (fallbacks, aliases, retry policies, lists).
fn plausible_structured() -> impl Strategy<Value = Value> {
    let group = || prop::sample::select(GROUPS).prop_map(str::to_string);
    prop_oneof![
        // [{"gpt-4o": ["claude-*"]}] and {"gpt-4o": [...]}
        prop::collection::vec(prop::collection::vec((group(), group_list()), 0..2).prop_map(|m| Value::Object(m.into_iter().collect())), 0..3)
            .prop_map(Value::Array),
        prop::collection::vec((group(), prop_oneof![group_list(), plausible_leaf()]), 0..3).prop_map(|m| Value::Object(m.into_iter().collect())),
        // model_group_alias targets: "group" or {"model": "group", "hidden": true}
        prop::collection::vec((group(), prop_oneof![group().prop_map(Value::from), (group(), plausible_leaf()).prop_map(|(g, h)| json!({"model": g, "hidden": h}))]), 0..3)
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        // retry policies and per-class counts
        prop::collection::vec(
            (prop::sample::select(&["RateLimitErrorRetries", "TimeoutErrorRetries", "BadRequestError", "Nope", "AuthenticationErrorAllowedFails"][..]).prop_map(str::to_string),
             prop_oneof![plausible_leaf(), (0u64..5).prop_map(|n| json!({"max_retries": n}))]),
            0..3,
        )
        .prop_map(|m| Value::Object(m.into_iter().collect())),
        // default_params, routing_strategy_args
        prop::collection::vec((prop::sample::select(&["temperature", "max_tokens", "ttl", "lowest_latency_buffer", "seed"][..]).prop_map(str::to_string), plausible_leaf()), 0..3)
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        group_list(),
    ]
}

// The composed strategies are boxed: unboxed, their value trees are large nested structs, and
// building them overflowed the 1 MiB stack of the wasm32 test run (debug build).
fn plausible() -> BoxedStrategy<Value> {
    prop_oneof![6 => plausible_leaf(), 3 => plausible_structured(), 1 => json_value()].boxed()
}

/// A section: keys from `known` (mostly) or anything, with plausible values.
fn section(known: &'static [&'static str], value: BoxedStrategy<Value>) -> BoxedStrategy<Value> {
    let key = prop_oneof![5 => prop::sample::select(known).prop_map(str::to_string), 1 => short_string()];
    prop::collection::vec((key, value), 0..6).prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())).boxed()
}

fn params() -> BoxedStrategy<Value> {
    section(PARAM_KEYS, plausible())
}

fn entry() -> BoxedStrategy<Value> {
    let name = prop_oneof![4 => prop::sample::select(GROUPS).prop_map(Value::from), 1 => plausible()];
    (
        proptest::option::of(name),
        prop_oneof![4 => params().prop_map(|p| vec![("litellm_params", p)]), 2 => params().prop_map(|p| vec![("deltallm_params", p)]),
                    1 => (params(), params()).prop_map(|(a, b)| vec![("litellm_params", a), ("deltallm_params", b)]), 1 => Just(Vec::new()),
                    1 => plausible().prop_map(|p| vec![("litellm_params", p)])],
        proptest::option::of(prop_oneof![4 => section(INFO_KEYS, plausible()), 1 => plausible()]),
        section(ENTRY_KEYS, plausible()),
    )
        .prop_map(|(name, params, info, extra)| {
            let Value::Object(mut m) = extra else { unreachable!() };
            if let Some(name) = name {
                m.insert("model_name".into(), name);
            }
            for (k, p) in params {
                m.insert(k.into(), p);
            }
            if let Some(info) = info {
                m.insert("model_info".into(), info);
            }
            Value::Object(m)
        })
        .boxed()
}

/// A whole plugin config, mostly shaped like a real one.
fn plugin_config() -> BoxedStrategy<Value> {
    let model_list = prop_oneof![6 => prop::collection::vec(entry(), 0..4).prop_map(Value::Array), 1 => plausible()];
    let top = (
        proptest::option::of(model_list),
        proptest::option::of(prop_oneof![5 => section(ROUTER_KEYS, plausible()), 1 => plausible()]),
        proptest::option::of(prop_oneof![5 => section(ROUTER_KEYS, plausible()), 1 => plausible()]),
        proptest::option::of(prop_oneof![5 => section(GENERAL_KEYS, plausible()), 1 => plausible()]),
        proptest::option::of(prop_oneof![5 => section(ENVOY_KEYS, plausible()), 1 => plausible()]),
        prop::collection::vec((short_string(), plausible()), 0..2),
    )
        .prop_map(|(models, router, litellm, general, envoy, extra)| {
            let mut m: Map<String, Value> = extra.into_iter().collect();
            for (k, v) in [("model_list", models), ("router_settings", router), ("litellm_settings", litellm), ("general_settings", general), ("envoy_settings", envoy)] {
                if let Some(v) = v {
                    m.insert(k.to_string(), v);
                }
            }
            Value::Object(m)
        });
    prop_oneof![9 => top.boxed(), 1 => json_value()].boxed()
}

/// A config that loads: two fixed groups (`gpt-4o`, `claude-*`) and a few more deployments of
/// every provider kind, with settings that refer to those groups.
fn valid_config() -> impl Strategy<Value = Value> {
    let key = prop_oneof![Just("os.environ/KEY"), Just("sk-123")];
    let openai = (prop::sample::select(&["gpt-4o", "gpt-4o-mini", "openai/*", "*"][..]), key.clone(), proptest::option::of(0u64..5))
        .prop_map(|(name, key, weight)| {
            let model = if name.contains('*') { "openai/*".to_string() } else { format!("openai/{name}") };
            let mut p = json!({"model": model, "api_key": key});
            if let Some(w) = weight {
                p["weight"] = json!(w);
            }
            json!({"model_name": name, "litellm_params": p})
        });
    let azure = (key.clone(), any::<bool>()).prop_map(|(key, info)| {
        let mut e = json!({"model_name": "gpt-4o", "deltallm_params": {"provider": "azure_openai", "model": "azure/gpt-4o-prod",
            "api_base": "https://r.openai.azure.com", "api_key": key, "api_version": "2024-10-21"}, "rpm": 100});
        if info {
            e["model_info"] = json!({"id": "az-1", "mode": "chat", "max_input_tokens": 128000, "default_params": {"temperature": 0.2}});
        }
        e
    });
    let compatible = (prop::sample::select(&["http://127.0.0.1:8080/v1", "https://api.example.com", "os.environ/BASE"][..]), key.clone())
        .prop_map(|(base, key)| json!({"model_name": "llama", "litellm_params": {"model": "groq/llama-3", "api_base": base, "api_key": key, "tpm": "os.environ/RPM"}}));
    let fixed = json!([
        {"model_name": "gpt-4o", "litellm_params": {"model": "openai/gpt-4o", "api_key": "os.environ/KEY"}},
        {"model_name": "claude-*", "litellm_params": {"model": "anthropic/claude-*", "api_key": "os.environ/KEY"}, "model_info": {"health_check_model": "anthropic/claude-3-haiku"}},
    ]);
    let entries = prop::collection::vec(prop_oneof![openai, azure, compatible], 0..4);
    let router = (
        prop::sample::select(&["simple-shuffle", "least-busy", "usage-based-routing-v2", "latency-based-routing", "cost-based-routing"][..]),
        0u64..5,
        any::<bool>(),
    )
        .prop_map(|(strategy, n, extras)| {
            let mut r = json!({"routing_strategy": strategy, "allowed_fails": n, "cooldown_time": 30, "model_group_alias": {"gpt4": "gpt-4o"}});
            if extras {
                r["fallbacks"] = json!([{"gpt-4o": ["claude-*"]}]);
                r["num_retries"] = json!(n);
                r["retry_policy"] = json!({"RateLimitErrorRetries": 2});
            }
            r
        });
    (entries, router, any::<bool>(), any::<bool>()).prop_map(move |(entries, router, general, envoy)| {
        let Value::Array(mut list) = fixed.clone() else { unreachable!() };
        list.extend(entries);
        for (i, entry) in list.iter_mut().enumerate() {
            if let Some(id) = entry.pointer_mut("/model_info/id") {
                *id = json!(format!("id-{i}"));
            }
        }
        let mut c = json!({"model_list": list, "router_settings": router});
        if general {
            c["general_settings"] = json!({"master_key": "os.environ/KEY", "background_health_checks": true, "health_check_interval": 60});
        }
        if envoy {
            c["envoy_settings"] = json!({"failover": true, "max_request_body_bytes": 1048576, "models_paths": ["/v1/models"]});
        }
        c
    })
}

/// Every place in `v` a value sits at (object members and array elements), as a path of steps.
#[derive(Debug, Clone)]
enum Step {
    Key(String),
    At(usize),
}

fn places(v: &Value, here: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    out.push(here.clone());
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                here.push(Step::Key(k.clone()));
                places(child, here, out);
                here.pop();
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                here.push(Step::At(i));
                places(child, here, out);
                here.pop();
            }
        }
        _ => {}
    }
}

fn at_mut<'v>(v: &'v mut Value, path: &[Step]) -> Option<&'v mut Value> {
    path.iter().try_fold(v, |v, step| match step {
        Step::Key(k) => v.get_mut(k.as_str()),
        Step::At(i) => v.get_mut(*i),
    })
}

/// One edit of a config tree: replace a value, remove it, or add a member to an object.
#[derive(Debug, Clone)]
enum Edit {
    Replace(Value),
    Remove,
    Add(String, Value),
}

fn edit() -> impl Strategy<Value = (prop::sample::Index, Edit)> {
    let all_keys: Vec<&'static str> =
        [ENTRY_KEYS, PARAM_KEYS, INFO_KEYS, ROUTER_KEYS, GENERAL_KEYS, ENVOY_KEYS, TOP_LEVEL_KEYS].concat();
    let edit = prop_oneof![
        4 => plausible().prop_map(Edit::Replace),
        1 => Just(Edit::Remove),
        2 => (prop::sample::select(all_keys), plausible()).prop_map(|(k, v)| Edit::Add(k.to_string(), v)),
    ];
    (any::<prop::sample::Index>(), edit)
}

fn apply(config: &mut Value, place: &prop::sample::Index, edit: &Edit) {
    let mut all = Vec::new();
    places(config, &mut Vec::new(), &mut all);
    let path = all.swap_remove(place.index(all.len()));
    match edit {
        Edit::Replace(v) => {
            if let Some(slot) = at_mut(config, &path) {
                *slot = v.clone();
            }
        }
        Edit::Remove => {
            let Some((last, parent)) = path.split_last() else { return };
            match (at_mut(config, parent), last) {
                (Some(Value::Object(m)), Step::Key(k)) => {
                    m.remove(k.as_str());
                }
                (Some(Value::Array(items)), Step::At(i)) if *i < items.len() => {
                    items.remove(*i);
                }
                _ => {}
            }
        }
        Edit::Add(k, v) => {
            if let Some(Value::Object(m)) = at_mut(config, &path) {
                m.insert(k.clone(), v.clone());
            }
        }
    }
}

/// A valid config with 0–3 edits anywhere in it.
fn edited_config() -> impl Strategy<Value = (Value, usize)> {
    (valid_config(), prop::collection::vec(edit(), 0..4)).prop_map(|(mut config, edits)| {
        for (place, e) in &edits {
            apply(&mut config, place, e);
        }
        (config, edits.len())
    })
}

// ---------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------

/// Whether `path` (`a.b[2].c`, `[*]` for any element) leads into `root`: every segment but the
/// last exists, and the last names a member of (or an index into) what its parent is. Keys may
/// contain `.`, so at each object the longest key that matches the rest of the path is tried
/// first.
fn leads_into(v: &Value, rest: &str) -> bool {
    if rest.is_empty() {
        return true;
    }
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().filter(|k| rest.starts_with(k.as_str())).collect();
            keys.sort_by_key(|k| std::cmp::Reverse(k.len()));
            for k in keys {
                let after = &rest[k.len()..];
                let deeper = if let Some(a) = after.strip_prefix('.') {
                    Some(a)
                } else if after.is_empty() || after.starts_with('[') {
                    Some(after)
                } else {
                    None
                };
                if let Some(after) = deeper {
                    if leads_into(&map[k.as_str()], after) {
                        return true;
                    }
                }
            }
            // A missing member: only as the last segment (a required field).
            !rest.contains(['.', '['])
        }
        Value::Array(items) => {
            let Some(inner) = rest.strip_prefix('[') else { return false };
            let Some((index, after)) = inner.split_once(']') else { return false };
            let after = after.strip_prefix('.').unwrap_or(after);
            if index == "*" {
                return items.is_empty() || items.iter().any(|item| leads_into(item, after));
            }
            index.parse::<usize>().ok().and_then(|i| items.get(i)).is_some_and(|item| leads_into(item, after))
        }
        _ => false,
    }
}

fn check(input: &[u8], loaded: &Loaded) -> Result<(), TestCaseError> {
    let errors = &loaded.diagnostics.errors;
    prop_assert_eq!(loaded.config.is_some(), errors.is_empty(), "errors: {:?}", errors);
    let root: Option<Value> = serde_json::from_slice(input).ok();
    for e in errors {
        prop_assert!(!e.path.is_empty() && !e.reason.is_empty(), "{:?}", e);
    }
    for e in errors {
        match &root {
            Some(Value::Object(map)) => {
                let first = e.path.split(['.', '[']).next().unwrap_or("");
                prop_assert!(
                    TOP_LEVEL_KEYS.contains(&first) || map.keys().any(|k| e.path.starts_with(k.as_str())),
                    "error outside the config's sections: {}", e
                );
                prop_assert!(leads_into(&Value::Object(map.clone()), &e.path), "path not in the input: {}\ninput: {}", e, String::from_utf8_lossy(input));
            }
            Some(Value::Null) => prop_assert!(false, "null reads as an empty config, got {}", e),
            _ => prop_assert_eq!(e.path.as_str(), "configuration"),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// Configs shaped like real ones: never a panic; refused exactly when an error is reported;
    /// every error names a path into the input.
    #[test]
    fn shaped_configs_load_or_name_the_field(value in plugin_config()) {
        let input = serde_json::to_vec(&value).unwrap();
        let loaded = load(&input, &env);
        check(&input, &loaded)?;
    }

    /// Valid configs load without errors; with a few edits anywhere they load or name the field.
    #[test]
    fn edited_valid_configs_load_or_name_the_field((value, edits) in edited_config()) {
        let input = serde_json::to_vec(&value).unwrap();
        let loaded = load(&input, &env);
        if edits == 0 {
            prop_assert!(loaded.diagnostics.errors.is_empty(), "{:?}", loaded.diagnostics.errors);
            prop_assert!(loaded.config.as_ref().is_some_and(|c| c.table.deployments.len() >= 2));
        }
        check(&input, &loaded)?;
    }

    /// Any JSON value at all, and any bytes.
    #[test]
    fn arbitrary_values_never_panic(value in json_value()) {
        let input = serde_json::to_vec(&value).unwrap();
        check(&input, &load(&input, &env))?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(input in prop::collection::vec(any::<u8>(), 0..64)) {
        check(&input, &load(&input, &env))?;
    }
}

/// Regression (found by `arbitrary_values_never_panic`): `{"": "os.environ/MISSING"}` was
/// refused with an empty field path. Top-level keys the router ignores are no longer resolved,
/// so a variable named there cannot refuse the config.
#[test]
fn ignored_top_level_keys_are_not_resolved() {
    let input = json!({
        "": "os.environ/MISSING",
        "environment_variables": {"OPENAI_API_KEY": "os.environ/MISSING"},
        "model_list": [{"model_name": "m", "litellm_params": {"model": "openai/m", "api_key": "os.environ/KEY"}}],
    });
    let loaded = load(input.to_string().as_bytes(), &env);
    assert!(loaded.diagnostics.errors.is_empty(), "{:?}", loaded.diagnostics.errors);
    assert!(loaded.config.is_some());
    let warned: Vec<&str> = loaded.diagnostics.warnings.iter().map(|w| w.path.as_str()).collect();
    assert!(warned.contains(&"environment_variables") && warned.contains(&""), "{warned:?}");
    // Known sections are still resolved.
    let loaded = load(br#"{"general_settings": {"master_key": "os.environ/MISSING"}}"#, &env);
    assert_eq!(loaded.diagnostics.errors.len(), 1);
    assert_eq!(loaded.diagnostics.errors[0].path, "general_settings.master_key");
}

/// Regression (found by `shaped_configs_load_or_name_the_field`): an alias read from
/// `litellm_settings.model_group_alias` was reported under `router_settings`.
#[test]
fn alias_errors_name_the_section_the_alias_came_from() {
    let loaded = load(br#"{"litellm_settings": {"model_group_alias": {"gpt4": "nope"}}}"#, &env);
    let paths: Vec<&str> = loaded.diagnostics.errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["litellm_settings.model_group_alias.gpt4"]);
    let loaded = load(br#"{"router_settings": {"model_group_alias": {"gpt4": "nope"}}, "litellm_settings": {"model_group_alias": {"x": "y"}}}"#, &env);
    let paths: Vec<&str> = loaded.diagnostics.errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["router_settings.model_group_alias.gpt4"]);
}

#[test]
fn leads_into_follows_keys_with_dots_and_indexes() {
    let v = json!({"router_settings": {"model_group_alias": {"a.b": "x"}}, "model_list": [{"m": 1}]});
    assert!(leads_into(&v, "router_settings.model_group_alias.a.b"));
    assert!(leads_into(&v, "model_list[0].m"));
    assert!(leads_into(&v, "model_list[0].missing"));
    assert!(!leads_into(&v, "model_list[*].model_info.default_params"));
    assert!(!leads_into(&v, "model_list[1].m"));
    assert!(!leads_into(&v, "litellm_settings.model_group_alias.x"));
    assert!(leads_into(&v, "litellm_settings"));
}
