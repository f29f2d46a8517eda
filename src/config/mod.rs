//! Plugin configuration: LiteLLM/DeltaLLM-shaped JSON → an immutable, indexed [`RouterConfig`].
//!
//! Loading never panics and never stops at the first problem: every problem is collected with
//! its field path so `on_configure` can log one line each and refuse the config (fail closed).

mod auth;
mod credentials;
mod deployment;
mod env;
mod extra_headers;
mod fields;
pub(crate) mod iso8601;
pub(crate) mod identity;
pub(crate) mod keys;
mod problems;
pub mod rate_limit_service;
mod schema;
mod settings;
mod table;
mod upstream;

// Property tests (proptest), in their own file.
#[cfg(test)]
mod props;

pub use auth::AuthHeader;
pub use deployment::{Deployment, ModelInfo, Skipped, ANTHROPIC_VERSION};
use deployment::Parsed;
pub use problems::{Diagnostics, Kind, Problem};
pub use schema::{Use, DEPLOYMENT_PARAMS, GENERAL_SETTINGS, REQUEST_PARAMS, ROUTER_SETTINGS, TOP_LEVEL};
pub use settings::{
    Alias, EnvoySettings, HealthCheckSettings, PerClass, RouterSettings, Strategy, DEFAULT_HEALTH_CHECK_TIMEOUT_SECS,
    FAILURE_WINDOW_SECS,
};
pub use table::{glob_capture, is_wildcard_group, Group, Resolved, Table};
pub use upstream::Upstream;
pub(crate) use iso8601::format_ms as format_time_ms;

use fields::{kind, Section};
use serde_json::Value;

/// Everything the request path needs, built once per `on_configure`.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    pub table: Table,
    pub router: settings::RouterSettings,
    pub envoy: settings::EnvoySettings,
    /// `general_settings.master_key`; a secret, never logged.
    pub master_key: Option<String>,
    /// Virtual keys and teams (`keys`, `teams`): who may call which model (`crate::access`).
    pub access: crate::access::Policy,
    /// Each virtual key's rate limits, indexed like `access.keys` (`crate::limits::plan`).
    pub limits: crate::limits::plan::Plans,
    /// Each virtual key's names for spend attribution (access log, metric labels), indexed like
    /// `access.keys` (`crate::pipeline::spend`).
    pub spend: crate::pipeline::spend::Attribution,
    /// The `GET /v1/models` answer, built once per config (`pipeline::listing`).
    pub models_body: Vec<u8>,
    /// Background health probes (`src/probe/`).
    pub health_checks: settings::HealthCheckSettings,
    /// The `model_list` entries that are not served (each was warned about at load).
    pub skipped: Vec<Skipped>,
    /// Which configuration of this VM this is (set by the shell, 0 from `load`): per-VM caches
    /// built for one config compare it, never the config's address (an address can be reused).
    pub generation: u64,
}

/// The outcome of loading: a config when there were no errors, and all diagnostics.
pub struct Loaded {
    pub config: Option<RouterConfig>,
    pub diagnostics: Diagnostics,
    /// The environment variables the config reads (`os.environ/NAME` in keys the router uses,
    /// and the provider's key variable of a deployment without `api_key` ([`implicit_key`]),
    /// outside skipped deployments), sorted: what the VM's environment must provide.
    pub env_names: Vec<String>,
    /// Those of `env_names` read only as a provider's key variable, never as an `os.environ/`
    /// reference, sorted: the config loads without them (their deployments go without a key),
    /// so the CLI's Kubernetes wiring marks them optional.
    pub implicit_env_names: Vec<String>,
}

/// The request scan tracks default-param keys in a 64-bit mask.
const MAX_DEFAULT_PARAM_KEYS: usize = 64;

/// Parses and validates a plugin configuration. `lookup` reads the VM's environment.
pub fn load(json: &[u8], lookup: &dyn Fn(&str) -> Option<String>) -> Loaded {
    let mut diags = Diagnostics::default();
    let mut env_names = Vec::new();
    let mut implicit = Vec::new();
    let config = build(json, lookup, &mut diags, &mut env_names, &mut implicit);
    let config = if diags.errors.is_empty() { config } else { None };
    implicit.retain(|n| !env_names.contains(n));
    env_names.extend(implicit.iter().cloned());
    for names in [&mut env_names, &mut implicit] {
        names.sort_unstable();
        names.dedup();
    }
    Loaded { config, diagnostics: diags, env_names, implicit_env_names: implicit }
}

/// What one `model_list` entry's preparation found: the problems of its `os.environ/`
/// references and ignored keys, and the variables it reads. Only reported (and requested)
/// when the entry is not skipped.
#[derive(Default)]
struct EntryPrep {
    diags: Diagnostics,
    env_names: Vec<String>,
    /// Provider key variables read for want of an `api_key` ([`implicit_key`]).
    implicit: Vec<String>,
}

fn build(
    json: &[u8],
    lookup: &dyn Fn(&str) -> Option<String>,
    diags: &mut Diagnostics,
    env_names: &mut Vec<String>,
    implicit: &mut Vec<String>,
) -> Option<RouterConfig> {
    let mut root: Value = match serde_json::from_slice(json) {
        Ok(v) => v,
        Err(e) => {
            diags.error("configuration", format!("is not valid JSON: {e}"));
            return None;
        }
    };
    if root.is_null() {
        root = Value::Object(Default::default());
    }
    let Value::Object(map) = &mut root else {
        diags.error("configuration", format!("must be a JSON object, got {}", kind(&root)));
        return None;
    };
    // Keys the router does not act on are warned about and removed first: nothing below reads
    // them, and their `os.environ/` references are neither resolved nor requested.
    schema::prune_sections(map, diags);
    // A raw key must come from the environment, never from the file (checked before resolution).
    keys::refuse_literal_keys(map, diags);

    // `credential_list` values go into the deployments naming them, before anything else reads
    // those deployments (they are then resolved per entry, like the entry's own values).
    let missing_credentials = credentials::apply(map, diags);

    // Ids come from the raw entries, before `os.environ/` resolution, so they never hash secrets.
    let fingerprints: Vec<u64> = match map.get("model_list") {
        Some(Value::Array(items)) => items.iter().map(fingerprint).collect(),
        _ => Vec::new(),
    };
    // Per entry, so a skipped deployment's unset variables (e.g. a Bedrock entry's AWS keys)
    // and ignored keys neither refuse the config nor are requested: they would never be used.
    let mut entries: Vec<EntryPrep> = Vec::new();
    for (key, value) in map.iter_mut() {
        // credential_list is resolved where it is used (in the deployments, above).
        if key == "credential_list" {
            continue;
        }
        if key == "model_list" {
            if let Value::Array(items) = value {
                for (i, item) in items.iter_mut().enumerate() {
                    let name = item.get("model_name").and_then(Value::as_str).unwrap_or("?").to_string();
                    let mut own = EntryPrep::default();
                    schema::prune_deployment(item, i, &mut own.diags);
                    let context = format!("deployment `{name}`");
                    env::resolve(item, &format!("model_list[{i}]"), &context, lookup, &mut own.diags, &mut own.env_names);
                    if !missing_credentials.iter().any(|m| m.index == i) {
                        implicit_key(item, i, lookup, &mut own);
                    }
                    entries.push(own);
                }
                continue;
            }
        }
        env::resolve(value, key, "", lookup, diags, env_names);
    }

    let top = Section::new(Some(&root), "", diags);
    let (deployments, skipped) = parse_model_list(top.get("model_list"), &fingerprints, entries, &missing_credentials, diags, [env_names, implicit]);
    let router_section = top.child("router_settings", diags);
    let router = settings::parse_router(&router_section, &top.child("litellm_settings", diags), diags);
    let envoy = settings::parse_envoy(&top.child("envoy_settings", diags), diags);
    if !envoy.failover {
        if let Some(what) = settings::needs_failover(&router) {
            diags.warn(
                "envoy_settings.failover",
                format!("is off, so {what} cannot act within a request (a failed attempt goes back to the client and feeds cooldowns); set it to true once Envoy has the failover wiring (README: Envoy wiring)"),
            );
        }
    }
    for d in deployments.iter().filter(|d| d.extra_headers.iter().any(|(n, _)| *n == envoy.cluster_header)) {
        diags.error("envoy_settings.cluster_header", format!("`{}` is also in the extra_headers of deployment `{}`", envoy.cluster_header, d.group));
    }
    let general = top.child("general_settings", diags);
    let master_key = settings::parse_master_key(&general, diags);
    let health_checks = settings::parse_health_checks(&general, &router_section, diags);

    let mut table = Table::new(deployments);
    table.set_unservable(&skipped);
    if table.default_param_keys.len() > MAX_DEFAULT_PARAM_KEYS {
        diags.error(
            "model_list[*].litellm_params",
            format!(
                "at most {MAX_DEFAULT_PARAM_KEYS} distinct request parameters (litellm_params, extra_body, model_info.default_params) are supported across all deployments (found {})",
                table.default_param_keys.len()
            ),
        );
    }
    // Aliases come from router_settings when it has them, else from litellm_settings (`pick`).
    let alias_section = if router_section.get("model_group_alias").is_some() { "router_settings" } else { "litellm_settings" };
    for alias in &router.model_group_alias {
        let path = format!("{alias_section}.model_group_alias.{}", alias.alias);
        match table.group_index(&alias.group) {
            Some(g) if table.group_index(&alias.alias).is_some() => {
                diags.warn(path, "shadows a model_name of the same name; the model_name wins");
                table.add_alias(alias.alias.clone(), g);
            }
            Some(g) => table.add_alias(alias.alias.clone(), g),
            None if table.add_unservable_alias(&alias.alias, &alias.group) => {
                diags.warn(path, format!("points at model group `{}`, which has no servable deployment (skipped)", alias.group));
            }
            None => diags.error(path, format!("points at model group `{}`, which no model_list entry defines", alias.group)),
        }
    }
    let retry_section = if router_section.get("model_group_retry_policy").is_some() { "router_settings" } else { "litellm_settings" };
    for (group, _) in &router.model_group_retry_policy {
        if table.group_index(group).is_none() && table.unservable(group).is_none() {
            diags.warn(format!("{retry_section}.model_group_retry_policy.{group}"), "names no model group of model_list; it never applies");
        }
    }
    let models_body = crate::pipeline::listing::models_body(&table, &router.model_group_alias);
    let identities = keys::parse(top.get("keys"), top.get("teams"), top.get("users"), diags);
    let limits = crate::limits::plan::Plans::build(&identities);
    let spend = crate::pipeline::spend::Attribution::build(&identities);
    if envoy.rate_limit_service.is_some() && !limits.any() {
        diags.warn("envoy_settings.rate_limit_service", "no key, team or user has a limit or budget: the rate limit service is never called");
    }
    if limits.any_budget() {
        for d in table.deployments.iter().filter(|d| crate::limits::cost::Prices::of(&d.info).is_none()) {
            diags.warn(
                format!("model_list[{}].model_info", d.entry),
                format!(
                    "deployment `{}` has no input_cost_per_token / output_cost_per_token: its requests cost 0 against budgets \
                     (LiteLLM prices known models from its bundled price map; the router has none)",
                    d.id
                ),
            );
        }
    }
    let access = crate::access::Policy::build(identities, &table, &router.model_group_alias, diags);
    if master_key.as_deref().is_some_and(|m| access.lookup(&crate::access::key_hash(m)).is_some()) {
        diags.error("general_settings.master_key", "is also a virtual key in keys: the master key has full access, so the key's restrictions would never apply");
    }
    Some(RouterConfig { table, router, envoy, master_key, access, limits, spend, models_body, health_checks, skipped, generation: 0 })
}

/// LiteLLM's key fallback: a `litellm_params` deployment without an `api_key` (absent, null or
/// empty, as LiteLLM's `api_key or get_secret_str(...)` treats them; after the credential_list
/// merge and `os.environ/` resolution) takes its provider's key from the provider's variable
/// ([`crate::provider::Provider::key_env`]). The variable is read through `lookup` like an
/// `os.environ/` reference, so it is among the names the VM's environment must pass (the CLI's
/// `host_env_keys`), but only for entries that are served: `prep` is dropped for skipped ones,
/// and entries whose provider the router does not serve never get here with a provider.
///
/// Unset, the deployment is served without a key and one warning says so: LiteLLM starts the
/// same way and its calls then fail with the provider's authentication error (or succeed, for a
/// server that needs no key: no warning for those, [`crate::provider::Provider::key_optional`]).
/// Refusing the config would break configs LiteLLM runs. DeltaLLM entries (`deltallm_params`) are
/// left alone: this is LiteLLM's rule.
fn implicit_key(item: &mut Value, index: usize, lookup: &dyn Fn(&str) -> Option<String>, prep: &mut EntryPrep) {
    let Some(Value::Object(params)) = item.get_mut("litellm_params") else { return };
    let has_key = match params.get("api_key") {
        None | Some(Value::Null) => false,
        Some(Value::String(k)) => !k.is_empty(),
        Some(_) => true,
    };
    if has_key {
        return;
    }
    let Some(provider) = deployment::provider_of(params) else { return };
    if provider.key_env.is_empty() {
        return;
    }
    // LiteLLM's `or` chain: the first variable set wins. Every name is requested from the VM's
    // environment, so whichever one the operator sets reaches the filter.
    prep.implicit.extend(provider.key_env.iter().map(|v| v.to_string()));
    match provider.key_env.iter().find_map(|var| lookup(var).filter(|k| !k.is_empty())) {
        Some(key) => {
            params.insert("api_key".to_string(), Value::String(key));
        }
        None if provider.key_optional() => {}
        None => prep.diags.warn(
            format!("model_list[{index}].litellm_params.api_key"),
            format!("no api_key and {} is not set: requests go without a key", provider.key_env.join(" / ")),
        ),
    }
}

/// Parses every entry: servable deployments, and the skipped ones (one warning each). A list
/// with entries of which none is servable is refused (fail closed).
fn parse_model_list(
    value: Option<&Value>,
    fingerprints: &[u64],
    entries: Vec<EntryPrep>,
    missing_credentials: &[credentials::Missing],
    diags: &mut Diagnostics,
    [env_names, implicit]: [&mut Vec<String>; 2],
) -> (Vec<Deployment>, Vec<Skipped>) {
    let items = match value {
        None => {
            diags.warn("model_list", "is missing: every routed request will get model_not_found");
            return (Vec::new(), Vec::new());
        }
        Some(Value::Array(items)) => items,
        Some(other) => {
            diags.error("model_list", format!("must be a list of deployments, got {}", kind(other)));
            return (Vec::new(), Vec::new());
        }
    };
    let mut out: Vec<Deployment> = Vec::with_capacity(items.len());
    let mut skipped: Vec<Skipped> = Vec::new();
    let mut explicit_ids: std::collections::HashMap<String, usize> = Default::default();
    let mut entries = entries.into_iter();
    for (i, item) in items.iter().enumerate() {
        let generated = format!("{:016x}", fingerprints.get(i).copied().unwrap_or(i as u64));
        let own = entries.next().unwrap_or_default();
        let before = diags.errors.len();
        let parsed = match missing_credentials.iter().find(|m| m.index == i) {
            Some(m) => Parsed::Skipped(m.skipped(item)),
            None => deployment::parse(item, i, generated.clone(), diags),
        };
        if !matches!(parsed, Parsed::Skipped(_)) {
            // An unset variable's error comes before what the loader then finds wrong with
            // the `os.environ/NAME` text left in place (the CLI keeps the first per field).
            let at = before.min(diags.errors.len());
            diags.errors.splice(at..at, own.diags.errors);
            diags.warnings.extend(own.diags.warnings);
            env_names.extend(own.env_names);
            implicit.extend(own.implicit);
        }
        let mut dep = match parsed {
            Parsed::Ready(dep) => *dep,
            Parsed::Invalid => continue,
            Parsed::Skipped(s) => {
                skipped.push(s);
                continue;
            }
        };
        if dep.id != generated {
            if let Some(first) = explicit_ids.insert(dep.id.clone(), i) {
                diags.error(format!("model_list[{i}].model_info.id"), format!("`{}` is already used by model_list[{first}]", dep.id));
                continue;
            }
        } else {
            // Identical non-secret fields (e.g. the same endpoint with two literal keys): keep
            // ids distinct and stable by order of appearance.
            let mut n = 1;
            while out.iter().any(|d| d.id == dep.id) {
                n += 1;
                dep.id = format!("{generated}-{n}");
            }
        }
        out.push(dep);
    }
    // One line per skipped deployment: a warning, or an error when nothing at all is servable
    // (fail closed: the operator sees every reason).
    let nothing_servable = out.is_empty();
    for s in &skipped {
        let hint = if s.hint.is_empty() { String::new() } else { format!("; {}", s.hint) };
        if nothing_servable {
            diags.error(&s.path, format!("{}; no deployment in model_list can be served{hint}", s.reason));
        } else {
            diags.warn_as(
                Kind::Skipped,
                &s.path,
                format!("{}; deployment `{}` is skipped (requests for it get model_not_servable){hint}", s.reason, s.group),
            );
        }
    }
    (out, skipped)
}

/// FNV-1a over the fields that identify an endpoint. `api_key` only counts when it is an
/// `os.environ/` reference (a name, not a secret).
fn fingerprint(entry: &Value) -> u64 {
    let params = entry.get("litellm_params").or_else(|| entry.get("deltallm_params"));
    let field = |k: &str| params.and_then(|p| p.get(k)).map(|v| v.to_string()).unwrap_or_default();
    let key = params
        .and_then(|p| p.get("api_key"))
        .and_then(Value::as_str)
        .filter(|k| k.starts_with("os.environ/"))
        .unwrap_or("");
    let name = entry.get("model_name").map(|v| v.to_string()).unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut parts = vec![name, field("model"), field("provider"), field("api_base"), field("api_version"), field("cluster"), key.to_string()];
    // Only when set, so ids of configs without these fields stay what they were.
    for extra in ["base_url", "litellm_credential_name"] {
        if params.and_then(|p| p.get(extra)).is_some() {
            parts.push(field(extra));
        }
    }
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0xff)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(name: &str) -> Option<String> {
        match name {
            "OPENAI_API_KEY" => Some("sk-openai".into()),
            "AZURE_API_KEY" => Some("az-key".into()),
            "MASTER_KEY" => Some("sk-master".into()),
            _ => None,
        }
    }

    fn load_json(v: Value) -> Loaded {
        load(v.to_string().as_bytes(), &env)
    }

    #[test]
    fn a_rate_limit_service_without_limits_is_warned_as_never_called() {
        let mut v = sample();
        v["envoy_settings"] = json!({"rate_limit_service": {"cluster": "llm_router_rls"}});
        let loaded = load_json(v.clone());
        assert!(loaded.config.as_ref().is_some_and(|c| c.envoy.rate_limit_service.is_some()));
        assert!(loaded.diagnostics.warnings.iter().any(|w| w.path == "envoy_settings.rate_limit_service" && w.reason.contains("never called")));
        v["keys"] = json!([{"token": "ab".repeat(32), "rpm_limit": 5}]);
        let loaded = load_json(v);
        assert!(!loaded.diagnostics.warnings.iter().any(|w| w.path == "envoy_settings.rate_limit_service"));
        let mut v = sample();
        v["envoy_settings"] = json!({"rate_limit_service": {"cluster": "b\u{1}x"}});
        assert!(load_json(v).config.is_none(), "a cluster name Envoy would parse as a GrpcService is refused");
    }

    fn sample() -> Value {
        json!({
            "model_list": [
                {"model_name": "gpt-4o", "litellm_params": {"model": "openai/gpt-4o", "api_key": "os.environ/OPENAI_API_KEY", "weight": 3}},
                {"model_name": "gpt-4o", "deltallm_params": {"provider": "azure_openai", "model": "azure/gpt-4o-prod",
                    "api_base": "https://r.openai.azure.com", "api_key": "os.environ/AZURE_API_KEY", "api_version": "2024-10-21"}},
                {"model_name": "openai/*", "litellm_params": {"model": "openai/*", "api_key": "os.environ/OPENAI_API_KEY"}},
                {"model_name": "*", "litellm_params": {"model": "openai/*", "api_key": "os.environ/OPENAI_API_KEY"}},
            ],
            "router_settings": {"model_group_alias": {"gpt4": "gpt-4o"}},
            "general_settings": {"master_key": "os.environ/MASTER_KEY"},
        })
    }

    #[test]
    fn loads_sample_and_resolves_names() {
        let loaded = load_json(sample());
        assert!(loaded.diagnostics.errors.is_empty(), "{:?}", loaded.diagnostics.errors);
        let Some(cfg) = loaded.config else { panic!("no config") };
        assert_eq!(cfg.master_key.as_deref(), Some("sk-master"));
        let t = &cfg.table;
        let name = |m: &str| t.resolve(m).and_then(|r| t.groups.get(r.group)).map(|g| g.name.clone());
        assert_eq!(name("gpt-4o").as_deref(), Some("gpt-4o"));
        assert_eq!(name("gpt4").as_deref(), Some("gpt-4o"));
        assert_eq!(name("openai/gpt-4.1").as_deref(), Some("openai/*"));
        assert_eq!(name("mistral-large").as_deref(), Some("*"));
        assert_eq!(t.resolve("openai/gpt-4.1").and_then(|r| r.capture), Some("gpt-4.1"));
        let g = t.resolve("gpt-4o").and_then(|r| t.groups.get(r.group)).map(|g| g.weights.clone());
        assert_eq!(g, Some(vec![3.0, 0.0]));
    }

    #[test]
    fn health_check_settings_load_from_general_settings_without_warnings() {
        let mut v = sample();
        v["general_settings"]["background_health_checks"] = json!(true);
        v["general_settings"]["health_check_interval"] = json!(30);
        let loaded = load_json(v);
        assert!(loaded.diagnostics.errors.is_empty() && loaded.diagnostics.warnings.is_empty(), "{:?}", loaded.diagnostics);
        let Some(cfg) = loaded.config else { panic!("no config") };
        assert_eq!(cfg.health_checks, HealthCheckSettings { enabled: true, interval_secs: 30.0 });
        let loaded = load_json(sample());
        assert_eq!(loaded.config.map(|c| c.health_checks), Some(HealthCheckSettings::default()));
    }

    #[test]
    fn ids_are_stable_distinct_and_never_hash_secrets() {
        let a = load_json(sample()).config.map(|c| c.table.deployments.iter().map(|d| d.id.clone()).collect::<Vec<_>>());
        let b = load_json(sample()).config.map(|c| c.table.deployments.iter().map(|d| d.id.clone()).collect::<Vec<_>>());
        assert_eq!(a, b);
        // Same endpoint, two literal keys: distinct ids, independent of the key values.
        let two = |k1: &str, k2: &str| {
            load_json(json!({"model_list": [
                {"model_name": "m", "litellm_params": {"model": "openai/x", "api_key": k1}},
                {"model_name": "m", "litellm_params": {"model": "openai/x", "api_key": k2}}]}))
            .config
            .map(|c| c.table.deployments.iter().map(|d| d.id.clone()).collect::<Vec<_>>())
        };
        let ids = two("key-one", "key-two");
        assert_eq!(ids, two("other-1", "other-2"));
        let ids = ids.unwrap_or_default();
        assert_eq!(ids.len(), 2);
        assert_ne!(ids[0], ids[1]);
    }

    #[test]
    fn missing_env_var_names_variable_and_deployment() {
        let loaded = load_json(json!({"model_list": [
            {"model_name": "gpt-4o", "litellm_params": {"model": "openai/gpt-4o", "api_key": "os.environ/MISSING_KEY"}}]}));
        assert!(loaded.config.is_none());
        let lines: Vec<String> = loaded.diagnostics.errors.iter().map(|p| p.to_string()).collect();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].starts_with("model_list[0].litellm_params.api_key: environment variable MISSING_KEY is not set for deployment `gpt-4o`"));
    }

    #[test]
    fn every_problem_is_reported_not_just_the_first() {
        let loaded = load_json(json!({"model_list": [
            {"model_name": "a", "litellm_params": {"model": "openai/x", "weight": -2}},
            {"model_name": "b", "litellm_params": {"model": "openai/x", "auth_header_format": "{key}"}},
            {"model_name": "c", "litellm_params": {"model": "openai/x"}, "model_info": {"id": "dup"}},
            {"model_name": "d", "litellm_params": {"model": "openai/x"}, "model_info": {"id": "dup"}}],
            "router_settings": {"model_group_alias": {"x": "nope"}, "cooldown_time": "soon"}}));
        let paths: Vec<&str> = loaded.diagnostics.errors.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, [
            "model_list[0].litellm_params.weight",
            "model_list[1].litellm_params.auth_header_format",
            "model_list[3].model_info.id",
            "router_settings.cooldown_time",
            "router_settings.model_group_alias.x",
        ]);
    }

    #[test]
    fn unservable_deployments_are_skipped_with_one_warning_and_nothing_servable_refuses() {
        let loaded = load_json(json!({"model_list": [
            {"model_name": "sm", "litellm_params": {"model": "sagemaker/x", "aws_access_key_id": "os.environ/AWS_UNSET"}},
            {"model_name": "gh", "litellm_params": {"model": "zhipu/glm-4", "api_key": "secret-key"}},
            {"model_name": "gpt-4o", "litellm_params": {"model": "openai/gpt-4o", "api_key": "os.environ/OPENAI_API_KEY"}}],
            "router_settings": {"model_group_alias": {"smalias": "sm"}}}));
        assert!(loaded.diagnostics.errors.is_empty(), "{:?}", loaded.diagnostics.errors);
        let skips: Vec<String> = loaded.diagnostics.warnings.iter().map(|p| p.to_string()).filter(|w| w.contains("is skipped")).collect();
        assert_eq!(skips.len(), 2, "{skips:?}");
        assert!(skips[0].starts_with("model_list[0].litellm_params.model: provider `sagemaker` is not supported"), "{skips:?}");
        assert!(skips[1].contains("deployment `gh` is skipped") && !skips[1].contains("secret-key"), "{skips:?}");
        let Some(cfg) = loaded.config else { panic!("no config") };
        assert_eq!(cfg.table.deployments.len(), 1);
        assert_eq!(cfg.table.resolve("sm"), None);
        assert_eq!(cfg.table.unservable("smalias").map(|(g, _)| g), Some("sm"));
        let (_, why) = cfg.table.unservable("sm").unwrap_or_default();
        assert!(why.starts_with("provider `sagemaker` is not supported") && !why.contains("supported:"), "{why}");
        assert!(!String::from_utf8_lossy(&cfg.models_body).contains("\"sm\""));

        let loaded = load_json(json!({"model_list": [{"model_name": "sm", "litellm_params": {"model": "bedrock/x"}}]}));
        assert!(loaded.config.is_none());
        let e = loaded.diagnostics.errors[0].to_string();
        assert!(e.starts_with("model_list[0].litellm_params.model: provider `bedrock` is not supported (it needs request translation); no deployment in model_list can be served"), "{e}");
        // Malformed values still refuse, even beside a servable deployment.
        let loaded = load_json(json!({"model_list": [
            {"model_name": "a", "litellm_params": {"model": "openai/x", "auth_header_format": "Token"}},
            {"model_name": "b", "litellm_params": {"model": "openai/x", "api_key": "os.environ/MISSING"}},
            {"model_name": "c", "litellm_params": {"model": "openai/x"}}]}));
        assert!(loaded.config.is_none());
        assert_eq!(loaded.diagnostics.errors.len(), 2, "{:?}", loaded.diagnostics.errors);
    }

    #[test]
    fn variables_of_ignored_keys_and_skipped_deployments_are_neither_needed_nor_requested() {
        let loaded = load_json(json!({
            "model_list": [
                {"model_name": "sm", "litellm_params": {"model": "sagemaker/x", "aws_secret_access_key": "os.environ/AWS_UNSET"}},
                {"model_name": "gpt-4o", "litellm_params": {"model": "openai/gpt-4o", "api_key": "os.environ/OPENAI_API_KEY",
                    "region_name": "os.environ/REGION_UNSET"}}],
            "general_settings": {"master_key": "os.environ/MASTER_KEY", "database_url": "os.environ/DATABASE_URL"},
            "router_settings": {"redis_host": "os.environ/REDIS_HOST", "num_retries": 1},
            "litellm_settings": {"success_callback": ["langfuse"], "langfuse_secret": "os.environ/LANGFUSE"},
            "environment_variables": {"X": "os.environ/Y"}}));
        assert!(loaded.diagnostics.errors.is_empty(), "{:?}", loaded.diagnostics.errors);
        assert_eq!(loaded.env_names, ["MASTER_KEY", "OPENAI_API_KEY"]);
        let ignored: Vec<&str> =
            loaded.diagnostics.warnings.iter().filter(|p| p.kind == Kind::Ignored).map(|p| p.path.as_str()).collect();
        for path in ["model_list[1].litellm_params.region_name", "general_settings.database_url", "router_settings.redis_host",
            "litellm_settings.success_callback", "litellm_settings.langfuse_secret", "environment_variables"] {
            assert!(ignored.contains(&path), "{path} not in {ignored:?}");
        }
        // The skipped deployment's own keys add nothing beyond its one skip warning.
        assert!(!loaded.diagnostics.warnings.iter().any(|p| p.path.starts_with("model_list[0]") && p.kind != Kind::Skipped));
        assert_eq!(loaded.config.map(|c| c.skipped.len()), Some(1));
    }

    #[test]
    fn a_model_group_retry_policy_for_no_group_is_warned() {
        let loaded = load_json(json!({
            "model_list": [{"model_name": "a", "litellm_params": {"model": "openai/x"}}],
            "router_settings": {"model_group_retry_policy": {"a": {"TimeoutErrorRetries": 1}, "typo": {"TimeoutErrorRetries": 1}}},
            "envoy_settings": {"failover": true}}));
        let warnings: Vec<String> = loaded.diagnostics.warnings.iter().map(|p| p.to_string()).collect();
        assert_eq!(warnings, ["router_settings.model_group_retry_policy.typo: names no model group of model_list; it never applies"]);
    }

    #[test]
    fn credential_list_fills_deployments_and_an_unknown_name_skips_one() {
        let loaded = load_json(json!({
            "credential_list": [{"credential_name": "oa", "credential_values": {"api_key": "os.environ/OPENAI_API_KEY", "base_url": "https://c.example/v1"}},
                {"credential_name": "unused", "credential_values": {"api_key": "os.environ/NOT_SET"}}],
            "model_list": [
                {"model_name": "a", "litellm_params": {"model": "openai/x", "litellm_credential_name": "oa"}},
                {"model_name": "b", "litellm_params": {"model": "openai/x", "litellm_credential_name": "typo"}}]}));
        assert!(loaded.diagnostics.errors.is_empty(), "{:?}", loaded.diagnostics.errors);
        let warnings: Vec<String> = loaded.diagnostics.warnings.iter().map(|p| p.to_string()).collect();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].starts_with("model_list[1].litellm_params.litellm_credential_name: credential `typo` is not defined"), "{warnings:?}");
        let Some(cfg) = loaded.config else { panic!("no config") };
        let d = &cfg.table.deployments[0];
        assert_eq!(d.auth.as_ref().map(|a| a.value.as_str()), Some("Bearer sk-openai"));
        assert_eq!(d.upstream.authority, "c.example");
        assert_eq!(cfg.table.unservable("b").map(|(_, r)| r), Some("credential `typo` is not defined in credential_list"));
    }

    #[test]
    fn a_deployment_without_api_key_reads_its_providers_variable_as_litellm_does() {
        let loaded = load_json(json!({"model_list": [
            {"model_name": "a", "litellm_params": {"model": "openai/gpt-4o"}},
            {"model_name": "b", "litellm_params": {"model": "openai/gpt-4o", "api_key": ""}},
            {"model_name": "c", "litellm_params": {"model": "openai/gpt-4o", "api_key": null}}]}));
        assert!(loaded.diagnostics.errors.is_empty() && loaded.diagnostics.warnings.is_empty(), "{:?}", loaded.diagnostics);
        assert_eq!(loaded.env_names, ["OPENAI_API_KEY"]);
        let Some(cfg) = loaded.config else { panic!("no config") };
        for d in &cfg.table.deployments {
            assert_eq!(d.auth.as_ref().map(|a| (a.name.as_str(), a.value.as_str())), Some(("authorization", "Bearer sk-openai")), "{}", d.group);
        }
        // Azure's header, and the key variable beside explicit references.
        let loaded = load(
            json!({"model_list": [{"model_name": "z", "litellm_params": {"model": "azure/gpt-4o", "api_base": "https://r.openai.azure.com"}}],
                   "general_settings": {"master_key": "os.environ/MASTER_KEY"}}).to_string().as_bytes(),
            &|n: &str| (n == "AZURE_API_KEY" || n == "MASTER_KEY").then(|| "k".to_string()),
        );
        // LiteLLM's order: AZURE_OPENAI_API_KEY (unset here), then AZURE_API_KEY; both are requested.
        assert_eq!(loaded.env_names, ["AZURE_API_KEY", "AZURE_OPENAI_API_KEY", "MASTER_KEY"]);
        assert_eq!(loaded.implicit_env_names, ["AZURE_API_KEY", "AZURE_OPENAI_API_KEY"]);
        let auth = loaded.config.and_then(|c| c.table.deployments.first().and_then(|d| d.auth.clone()));
        assert_eq!(auth.map(|a| (a.name, a.value)), Some(("api-key".to_string(), "k".to_string())));
        // Both set: the first LiteLLM tries wins.
        let loaded = load(
            json!({"model_list": [{"model_name": "z", "litellm_params": {"model": "azure/gpt-4o", "api_base": "https://r.openai.azure.com"}}]})
                .to_string()
                .as_bytes(),
            &|n: &str| Some(format!("value-of-{n}")),
        );
        let auth = loaded.config.and_then(|c| c.table.deployments.first().and_then(|d| d.auth.clone()));
        assert_eq!(auth.map(|a| a.value), Some("value-of-AZURE_OPENAI_API_KEY".to_string()));
    }

    #[test]
    fn an_explicit_api_key_wins_over_the_providers_variable() {
        let loaded = load_json(json!({"model_list": [
            {"model_name": "a", "litellm_params": {"model": "openai/gpt-4o", "api_key": "literal-key"}},
            {"model_name": "b", "litellm_params": {"model": "openai/gpt-4o", "api_key": "os.environ/AZURE_API_KEY"}}]}));
        assert_eq!(loaded.env_names, ["AZURE_API_KEY"]);
        assert!(loaded.implicit_env_names.is_empty());
        let Some(cfg) = loaded.config else { panic!("no config") };
        let values: Vec<String> = cfg.table.deployments.iter().filter_map(|d| d.auth.as_ref().map(|a| a.value.clone())).collect();
        assert_eq!(values, ["Bearer literal-key", "Bearer az-key"]);
        // A credential_list key is the deployment's own.
        let loaded = load_json(json!({
            "credential_list": [{"credential_name": "c", "credential_values": {"api_key": "os.environ/AZURE_API_KEY"}}],
            "model_list": [{"model_name": "a", "litellm_params": {"model": "openai/gpt-4o", "litellm_credential_name": "c"}}]}));
        assert_eq!(loaded.env_names, ["AZURE_API_KEY"]);
    }

    #[test]
    fn a_variable_also_named_by_a_reference_is_not_implicit() {
        let loaded = load_json(json!({"model_list": [
            {"model_name": "a", "litellm_params": {"model": "openai/gpt-4o"}},
            {"model_name": "b", "litellm_params": {"model": "azure/x", "api_base": "https://r.openai.azure.com", "api_key": "os.environ/OPENAI_API_KEY"}}]}));
        assert_eq!((loaded.env_names.as_slice(), loaded.implicit_env_names.as_slice()), (["OPENAI_API_KEY".to_string()].as_slice(), [].as_slice()));
    }

    #[test]
    fn an_unset_key_variable_serves_without_a_key_and_warns_once() {
        let loaded = load_json(json!({"model_list": [
            {"model_name": "llama", "litellm_params": {"model": "groq/llama-3.1-8b-instant"}},
            {"model_name": "local", "litellm_params": {"model": "ollama/llama3"}},
            {"model_name": "vllm", "litellm_params": {"model": "hosted_vllm/m", "api_base": "http://v:8000/v1"}}]}));
        assert!(loaded.diagnostics.errors.is_empty(), "{:?}", loaded.diagnostics.errors);
        let warnings: Vec<String> = loaded.diagnostics.warnings.iter().map(|p| p.to_string()).collect();
        // Servers that need no key (LiteLLM sends a stub) are not warned about.
        assert_eq!(warnings, ["model_list[0].litellm_params.api_key: no api_key and GROQ_API_KEY is not set: requests go without a key"]);
        // Still requested: the environment may provide it (Envoy passes what is set).
        assert_eq!(loaded.env_names, ["GROQ_API_KEY", "HOSTED_VLLM_API_KEY", "OLLAMA_API_KEY"]);
        assert_eq!(loaded.implicit_env_names, loaded.env_names);
        let Some(cfg) = loaded.config else { panic!("no config") };
        assert!(cfg.table.deployments.iter().all(|d| d.auth.is_none()));
    }

    #[test]
    fn skipped_and_deltallm_deployments_never_read_a_key_variable() {
        let asked = std::cell::RefCell::new(Vec::<String>::new());
        let lookup = |n: &str| {
            asked.borrow_mut().push(n.to_string());
            env(n)
        };
        let loaded = load(
            json!({"model_list": [
                {"model_name": "br", "litellm_params": {"model": "bedrock/anthropic.claude"}},
                {"model_name": "nv", "litellm_params": {"model": "novita/meta-llama/x"}},
                {"model_name": "cr", "litellm_params": {"model": "anthropic/claude", "litellm_credential_name": "typo"}},
                {"model_name": "dl", "deltallm_params": {"provider": "groq", "model": "llama"}},
                {"model_name": "ok", "litellm_params": {"model": "openai/gpt-4o"}}]})
            .to_string()
            .as_bytes(),
            &lookup,
        );
        assert!(loaded.diagnostics.errors.is_empty(), "{:?}", loaded.diagnostics.errors);
        assert_eq!(loaded.env_names, ["OPENAI_API_KEY"]);
        assert_eq!(*asked.borrow(), ["OPENAI_API_KEY"]);
        assert!(!loaded.diagnostics.warnings.iter().any(|p| p.reason.contains("no api_key")), "{:?}", loaded.diagnostics.warnings);
        assert_eq!(loaded.config.map(|c| c.skipped.len()), Some(3));
    }

    #[test]
    fn messy_but_valid_configs_load() {
        for cfg in [
            json!({}),
            json!(null),
            json!({"model_list": [], "router_settings": null, "litellm_settings": {}, "general_settings": null}),
            json!({"model_list": [{"model_name": "a b:c/d", "litellm_params": {"model": "gpt-4"}, "model_info": null}],
                   "litellm_settings": {"drop_params": true, "set_verbose": false}, "environment_variables": {}}),
        ] {
            let loaded = load_json(cfg.clone());
            assert!(loaded.config.is_some(), "{cfg}: {:?}", loaded.diagnostics.errors);
        }
    }

    #[test]
    fn invalid_top_level_shapes() {
        assert!(load(b"{", &env).config.is_none());
        let l = load_json(json!([1]));
        assert_eq!(l.diagnostics.errors[0].to_string(), "configuration: must be a JSON object, got a list");
        let l = load_json(json!({"model_list": {"a": 1}}));
        assert_eq!(l.diagnostics.errors[0].to_string(), "model_list: must be a list of deployments, got a mapping");
    }
}
