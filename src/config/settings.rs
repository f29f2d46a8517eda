//! `router_settings`, `litellm_settings`, `general_settings` and the Envoy-specific
//! `envoy_settings` section.
//!
//! LiteLLM reads several settings from either `router_settings` or `litellm_settings`
//! (`num_retries`, `fallbacks`, `timeout`, ...); so does this router, `router_settings` winning.
//! Keys the router does not act on never reach these readers: `schema` warns about them and
//! removes them first.

use super::fields::{kind, Section};
use super::problems::Diagnostics;
use serde_json::Value;

/// LiteLLM's defaults (`litellm.allowed_fails`, `DEFAULT_COOLDOWN_TIME_SECONDS`).
pub const DEFAULT_ALLOWED_FAILS: u64 = 3;
pub const DEFAULT_COOLDOWN_SECS: f64 = 5.0;
/// LiteLLM counts failures per deployment over one minute.
pub const FAILURE_WINDOW_SECS: f64 = 60.0;
pub const DEFAULT_MAX_COOLDOWN_SECS: f64 = 300.0;
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024;
pub const DEFAULT_CLUSTER_HEADER: &str = "x-llm-router-cluster";
pub const DEFAULT_MAX_FALLBACKS: u64 = 5;
/// LiteLLM answers the model list on both paths.
pub const DEFAULT_MODELS_PATHS: [&str; 2] = ["/v1/models", "/models"];
pub const DEFAULT_HEALTH_PATH: &str = "/llm-router/health";
/// LiteLLM's `health_check_interval` default (seconds).
pub const DEFAULT_HEALTH_CHECK_INTERVAL_SECS: f64 = 300.0;
/// Probe timeout unless `model_info.health_check_timeout` says otherwise. LiteLLM waits 60 s; a
/// probe is a one-token request, so 10 s already means "unhealthy".
pub const DEFAULT_HEALTH_CHECK_TIMEOUT_SECS: f64 = 10.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    SimpleShuffle,
    LeastBusy,
    UsageBased,
    UsageBasedV2,
    LatencyBased,
    CostBased,
}

impl Strategy {
    fn parse(s: &str) -> Option<Strategy> {
        Some(match s {
            "simple-shuffle" => Strategy::SimpleShuffle,
            "least-busy" => Strategy::LeastBusy,
            "usage-based-routing" => Strategy::UsageBased,
            "usage-based-routing-v2" => Strategy::UsageBasedV2,
            "latency-based-routing" => Strategy::LatencyBased,
            "cost-based-routing" => Strategy::CostBased,
            _ => return None,
        })
    }
}

/// Per-error-class counts (`retry_policy`, `allowed_fails_policy`), in LiteLLM's class names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PerClass {
    pub bad_request: Option<u64>,
    pub authentication: Option<u64>,
    pub timeout: Option<u64>,
    pub rate_limit: Option<u64>,
    pub content_policy: Option<u64>,
    pub internal_server: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Alias {
    pub alias: String,
    pub group: String,
    /// LiteLLM `{"model": ..., "hidden": true}`: routable, but left out of model listings.
    pub hidden: bool,
}

/// Routing behaviour, merged from `router_settings` and `litellm_settings`.
#[derive(Debug, Clone, PartialEq)]
pub struct RouterSettings {
    pub routing_strategy: Strategy,
    pub latency_ttl_secs: Option<f64>,
    pub lowest_latency_buffer: Option<f64>,
    pub model_group_alias: Vec<Alias>,
    pub allowed_fails: u64,
    pub allowed_fails_policy: PerClass,
    pub cooldown_time_secs: f64,
    pub disable_cooldowns: bool,
    pub num_retries: Option<u64>,
    pub timeout_secs: Option<f64>,
    /// `stream_timeout`: per-try budget of streamed requests (LiteLLM: deployment's, then this,
    /// then the non-stream timeouts).
    pub stream_timeout_secs: Option<f64>,
    pub retry_policy: PerClass,
    /// `model_group_retry_policy`: group name → the retry policy used for that group instead of
    /// `retry_policy` (LiteLLM's `get_num_retries_from_retry_policy`).
    pub model_group_retry_policy: Vec<(String, PerClass)>,
    pub fallbacks: Vec<(String, Vec<String>)>,
    pub context_window_fallbacks: Vec<(String, Vec<String>)>,
    pub content_policy_fallbacks: Vec<(String, Vec<String>)>,
    pub default_fallbacks: Vec<String>,
    pub max_fallbacks: u64,
    pub enable_tag_filtering: bool,
    pub enable_pre_call_checks: bool,
}

/// Envoy-specific knobs (not part of LiteLLM's schema).
#[derive(Debug, Clone, PartialEq)]
pub struct EnvoySettings {
    pub cluster_header: String,
    pub max_cooldown_secs: f64,
    pub max_request_body_bytes: u64,
    /// `failover`: the Envoy config carries the in-request failover wiring (upstream filter role on
    /// the deployment clusters, redirector, internal redirects). Off by default: without the
    /// wiring the signed attempt state would reach the provider, and no retry could happen anyway.
    pub failover: bool,
    /// Paths answered locally with the model list (`models_paths`; empty: disabled).
    pub models_paths: Vec<String>,
    /// Path answered locally with the deployments' health (`health_path`; None: disabled).
    pub health_path: Option<String>,
    /// Set the `llm_router.*` filter-state properties access logs can print (`access_log_properties`,
    /// off by default: 3–4 host calls per pass that only pay off when an access log prints them).
    pub access_log_properties: bool,
    /// Read every JSON/SSE response's token usage for the access log (`access_log_tokens`), even
    /// when the routing strategy does not need it.
    pub access_log_tokens: bool,
    /// `metrics` (default true): emit the `llm_router_*` Envoy stats (see `crate::metrics`).
    pub metrics: bool,
    /// `rate_limit_service`: the keys' limits are also admitted by this RLS (global mode).
    pub rate_limit_service: Option<super::rate_limit_service::RateLimitService>,
}

/// Background health probes (`background_health_checks`, `health_check_interval`).
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheckSettings {
    pub enabled: bool,
    pub interval_secs: f64,
}

impl Default for HealthCheckSettings {
    fn default() -> Self {
        HealthCheckSettings { enabled: false, interval_secs: DEFAULT_HEALTH_CHECK_INTERVAL_SECS }
    }
}

/// `general_settings` keys read here (LiteLLM documents them there).
pub const HEALTH_CHECK_KEYS: &[&str] = &["background_health_checks", "health_check_interval"];

/// Reads the health-check settings from `general_settings` (LiteLLM's documented home; wins) or
/// `router_settings`. A key set to different values in both is warned about.
pub fn parse_health_checks(general: &Section<'_>, router: &Section<'_>, diags: &mut Diagnostics) -> HealthCheckSettings {
    for key in HEALTH_CHECK_KEYS {
        if let (Some(g), Some(r)) = (general.get(key), router.get(key)) {
            if g != r {
                diags.warn(router.field_path(key), format!("differs from {}; general_settings wins", general.field_path(key)));
            }
        }
    }
    let pick = |key: &str| if general.get(key).is_some() { general } else { router };
    let enabled = pick("background_health_checks").bool("background_health_checks", diags).unwrap_or(false);
    let section = pick("health_check_interval");
    let interval_secs = match section.non_negative("health_check_interval", diags) {
        Some(s) if s >= 1.0 => s,
        Some(_) => {
            diags.error(section.field_path("health_check_interval"), "must be at least 1 (seconds)");
            DEFAULT_HEALTH_CHECK_INTERVAL_SECS
        }
        None => DEFAULT_HEALTH_CHECK_INTERVAL_SECS,
    };
    HealthCheckSettings { enabled, interval_secs }
}

/// Reads the router settings, `router_settings` first, then `litellm_settings`.
pub fn parse_router(router: &Section<'_>, litellm: &Section<'_>, diags: &mut Diagnostics) -> RouterSettings {
    // A setting from router_settings if present there, else from litellm_settings.
    let pick = |key: &str| if router.get(key).is_some() { router } else { litellm };

    let routing_strategy = match pick("routing_strategy").str("routing_strategy", diags) {
        None => Strategy::SimpleShuffle,
        Some(s) => Strategy::parse(s).unwrap_or_else(|| {
            diags.error(
                pick("routing_strategy").field_path("routing_strategy"),
                format!("unknown strategy `{s}` (simple-shuffle, least-busy, usage-based-routing, usage-based-routing-v2, latency-based-routing, cost-based-routing)"),
            );
            Strategy::SimpleShuffle
        }),
    };
    let args = pick("routing_strategy_args").child("routing_strategy_args", diags);
    let timeout_key = if pick("timeout").get("timeout").is_some() { "timeout" } else { "request_timeout" };

    RouterSettings {
        routing_strategy,
        latency_ttl_secs: args.non_negative("ttl", diags),
        lowest_latency_buffer: args.non_negative("lowest_latency_buffer", diags),
        model_group_alias: parse_aliases(pick("model_group_alias"), diags),
        allowed_fails: pick("allowed_fails").count("allowed_fails", diags).unwrap_or(DEFAULT_ALLOWED_FAILS),
        allowed_fails_policy: parse_per_class(&pick("allowed_fails_policy").child("allowed_fails_policy", diags), "AllowedFails", diags),
        cooldown_time_secs: pick("cooldown_time").non_negative("cooldown_time", diags).unwrap_or(DEFAULT_COOLDOWN_SECS),
        disable_cooldowns: pick("disable_cooldowns").bool("disable_cooldowns", diags).unwrap_or(false),
        num_retries: pick("num_retries").count("num_retries", diags),
        timeout_secs: pick(timeout_key).non_negative(timeout_key, diags),
        stream_timeout_secs: pick("stream_timeout").non_negative("stream_timeout", diags),
        retry_policy: parse_per_class(&pick("retry_policy").child("retry_policy", diags), "Retries", diags),
        model_group_retry_policy: {
            let section = pick("model_group_retry_policy").child("model_group_retry_policy", diags);
            section.keys().map(|group| (group.clone(), parse_per_class(&section.child(group, diags), "Retries", diags))).collect()
        },
        fallbacks: parse_fallbacks(pick("fallbacks"), "fallbacks", diags),
        context_window_fallbacks: parse_fallbacks(pick("context_window_fallbacks"), "context_window_fallbacks", diags),
        content_policy_fallbacks: parse_fallbacks(pick("content_policy_fallbacks"), "content_policy_fallbacks", diags),
        default_fallbacks: pick("default_fallbacks").string_list("default_fallbacks", diags),
        max_fallbacks: pick("max_fallbacks").count("max_fallbacks", diags).unwrap_or(DEFAULT_MAX_FALLBACKS),
        enable_tag_filtering: pick("enable_tag_filtering").bool("enable_tag_filtering", diags).unwrap_or(false),
        enable_pre_call_checks: pick("enable_pre_call_checks").bool("enable_pre_call_checks", diags).unwrap_or(false),
    }
}

/// The first configured setting that needs in-request failover, if any.
pub fn needs_failover(r: &RouterSettings) -> Option<&'static str> {
    let retries = |p: &PerClass| {
        [p.bad_request, p.authentication, p.timeout, p.rate_limit, p.content_policy, p.internal_server].iter().any(|n| n.is_some_and(|n| n > 0))
    };
    if r.num_retries.is_some_and(|n| n > 0) || retries(&r.retry_policy) || r.model_group_retry_policy.iter().any(|(_, p)| retries(p)) {
        Some("router_settings.num_retries / retry_policy / model_group_retry_policy")
    } else if !r.fallbacks.is_empty() || !r.default_fallbacks.is_empty() {
        Some("router_settings.fallbacks")
    } else if !r.context_window_fallbacks.is_empty() {
        Some("router_settings.context_window_fallbacks (after an upstream context-length error)")
    } else if !r.content_policy_fallbacks.is_empty() {
        Some("router_settings.content_policy_fallbacks (after an upstream content-policy rejection)")
    } else {
        None
    }
}

const ENVOY_KEYS: &[&str] = &[
    "cluster_header", "max_cooldown_time", "max_request_body_bytes", "models_paths", "health_path",
    "access_log_properties", "access_log_tokens", "failover", "metrics", "rate_limit_service",
];

pub fn parse_envoy(section: &Section<'_>, diags: &mut Diagnostics) -> EnvoySettings {
    for key in section.keys() {
        if !ENVOY_KEYS.contains(&key.as_str()) {
            diags.warn(section.field_path(key), "is not a known envoy_settings key and is ignored");
        }
    }
    let cluster_header = match section.str("cluster_header", diags) {
        None => DEFAULT_CLUSTER_HEADER.to_string(),
        Some(h) => match super::auth::validate_name(h) {
            Ok(h) => h,
            Err(e) => {
                diags.error(section.field_path("cluster_header"), e);
                DEFAULT_CLUSTER_HEADER.to_string()
            }
        },
    };
    let (models_paths, health_path) = parse_local_paths(section, diags);
    EnvoySettings {
        cluster_header,
        max_cooldown_secs: section.non_negative("max_cooldown_time", diags).unwrap_or(DEFAULT_MAX_COOLDOWN_SECS),
        max_request_body_bytes: section.count("max_request_body_bytes", diags).unwrap_or(DEFAULT_MAX_BODY_BYTES),
        failover: section.bool("failover", diags).unwrap_or(false),
        models_paths,
        health_path,
        access_log_properties: section.bool("access_log_properties", diags).unwrap_or(false),
        access_log_tokens: section.bool("access_log_tokens", diags).unwrap_or(false),
        metrics: section.bool("metrics", diags).unwrap_or(true),
        rate_limit_service: super::rate_limit_service::parse(&section.child("rate_limit_service", diags), diags),
    }
}

/// `models_paths` (absent: LiteLLM's two paths; `[]` or null: off) and `health_path` (absent:
/// the default; null or "": off). A local path must not shadow a routed endpoint or the
/// failover path, and the two settings must not share a path.
fn parse_local_paths(section: &Section<'_>, diags: &mut Diagnostics) -> (Vec<String>, Option<String>) {
    let raw = |key: &str| section.map.and_then(|m| m.get(key));
    let list_path = section.field_path("models_paths");
    let candidates: Vec<String> = match raw("models_paths") {
        None => DEFAULT_MODELS_PATHS.iter().map(|p| p.to_string()).collect(),
        Some(Value::Null) => Vec::new(),
        Some(Value::String(_)) => {
            diags.error(&list_path, "must be a list of paths, e.g. [\"/v1/models\"]");
            Vec::new()
        }
        Some(_) => section.string_list("models_paths", diags),
    };
    let mut models_paths: Vec<String> = Vec::new();
    for (i, p) in candidates.into_iter().enumerate() {
        let problem = if models_paths.contains(&p) { Some("is listed twice") } else { local_path_problem(&p) };
        match problem {
            Some(why) => diags.error(format!("{list_path}[{i}]"), why),
            None => models_paths.push(p),
        }
    }
    let health_path = match raw("health_path") {
        None => Some(DEFAULT_HEALTH_PATH.to_string()),
        Some(Value::Null) => None,
        Some(Value::String(p)) if p.is_empty() => None,
        Some(_) => section.str("health_path", diags).and_then(|p| {
            let problem = if models_paths.iter().any(|m| m == p) { Some("is also in models_paths") } else { local_path_problem(p) };
            match problem {
                Some(why) => {
                    diags.error(section.field_path("health_path"), why);
                    None
                }
                None => Some(p.to_string()),
            }
        }),
    };
    (models_paths, health_path)
}

/// Why `p` cannot be a local endpoint's path, if it cannot.
fn local_path_problem(p: &str) -> Option<&'static str> {
    if !p.starts_with('/') {
        Some("must start with /")
    } else if p.bytes().any(|b| b == b'?' || b == b'#' || b.is_ascii_whitespace() || b.is_ascii_control()) {
        Some("must be a plain path (no query, spaces or control characters)")
    } else if crate::provider::Endpoint::from_path(p).is_some() {
        Some("is a routed endpoint; a local reply there would hide it")
    } else if p == crate::failover::FAILOVER_PATH {
        Some("is the router's failover path")
    } else {
        None
    }
}

/// `general_settings.master_key`, the one gateway key clients must present.
pub fn parse_master_key(general: &Section<'_>, diags: &mut Diagnostics) -> Option<String> {
    let key = general.str("master_key", diags).filter(|k| !k.is_empty())?;
    if key.bytes().any(|b| b.is_ascii_control()) {
        diags.error(general.field_path("master_key"), "contains control characters");
        return None;
    }
    Some(key.to_string())
}

fn parse_aliases(section: &Section<'_>, diags: &mut Diagnostics) -> Vec<Alias> {
    let aliases = section.child("model_group_alias", diags);
    let mut out = Vec::new();
    let Some(map) = aliases.map else { return out };
    for (alias, target) in map {
        let path = aliases.field_path(alias);
        match target {
            Value::String(group) => out.push(Alias { alias: alias.clone(), group: group.clone(), hidden: false }),
            Value::Object(_) => {
                let t = Section::new(Some(target), path.clone(), diags);
                match t.str("model", diags) {
                    Some(group) => out.push(Alias {
                        alias: alias.clone(),
                        group: group.to_string(),
                        hidden: t.bool("hidden", diags).unwrap_or(false),
                    }),
                    None => diags.error(format!("{path}.model"), "is required"),
                }
            }
            other => diags.error(path, format!("must be a model group name, got {}", kind(other))),
        }
    }
    out
}

/// `[{"gpt-4": ["gpt-3.5"]}, ...]`, also accepting one mapping `{"gpt-4": [...], ...}`.
fn parse_fallbacks(section: &Section<'_>, key: &str, diags: &mut Diagnostics) -> Vec<(String, Vec<String>)> {
    let path = section.field_path(key);
    let mut out = Vec::new();
    let mut read_map = |value: &Value, path: String, diags: &mut Diagnostics| {
        let m = Section::new(Some(value), path, diags);
        for group in m.keys() {
            out.push((group.clone(), m.string_list(group, diags)));
        }
    };
    match section.get(key) {
        None => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                read_map(item, format!("{path}[{i}]"), diags);
            }
        }
        Some(v @ Value::Object(_)) => read_map(v, path, diags),
        Some(other) => diags.error(path, format!("must be a list of {{group: [fallback groups]}}, got {}", kind(other))),
    }
    out
}

/// Accepts LiteLLM's `RateLimitErrorRetries: 3` and the `RateLimitError: {max_retries: 3}` form.
fn parse_per_class(section: &Section<'_>, suffix: &str, diags: &mut Diagnostics) -> PerClass {
    let mut out = PerClass::default();
    for key in section.keys() {
        let class = key.strip_suffix(suffix).unwrap_or(key);
        let slot = match class {
            "BadRequestError" => &mut out.bad_request,
            "AuthenticationError" => &mut out.authentication,
            "TimeoutError" | "Timeout" => &mut out.timeout,
            "RateLimitError" => &mut out.rate_limit,
            "ContentPolicyViolationError" => &mut out.content_policy,
            "InternalServerError" => &mut out.internal_server,
            _ => {
                diags.ignored(section.field_path(key), "is not a known error class and is ignored");
                continue;
            }
        };
        // Never look honoured: 400s never count against a deployment, and the only 400 the
        // router retries is a content-policy rejection.
        match (class, suffix) {
            ("BadRequestError" | "ContentPolicyViolationError", "AllowedFails") => {
                diags.ignored(section.field_path(key), "is ignored: a 400 never counts against a deployment");
                continue;
            }
            ("BadRequestError", "Retries") => {
                diags.warn(section.field_path(key), "applies to content-policy rejections only: the router retries no other 400")
            }
            _ => {}
        }
        *slot = match section.get(key) {
            Some(Value::Object(_)) => {
                let inner = section.child(key, diags);
                inner.count("max_retries", diags).or_else(|| inner.count("allowed_fails", diags))
            }
            _ => section.count(key, diags),
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings(router: Value, litellm: Value) -> (RouterSettings, Diagnostics) {
        let mut d = Diagnostics::default();
        let r = Section::new(Some(&router), "router_settings", &mut d);
        let l = Section::new(Some(&litellm), "litellm_settings", &mut d);
        let s = parse_router(&r, &l, &mut d);
        (s, d)
    }

    #[test]
    fn per_class_entries_without_effect_are_warned() {
        let (s, d) = settings(
            json!({"retry_policy": {"BadRequestErrorRetries": 2, "RateLimitErrorRetries": 1},
                   "allowed_fails_policy": {"BadRequestErrorAllowedFails": 5, "ContentPolicyViolationErrorAllowedFails": 1, "TimeoutErrorAllowedFails": 4}}),
            Value::Null,
        );
        assert!(d.errors.is_empty(), "{:?}", d.errors);
        let mut lines: Vec<String> = d.warnings.iter().map(|p| p.to_string()).collect();
        lines.sort();
        assert_eq!(lines, [
            "router_settings.allowed_fails_policy.BadRequestErrorAllowedFails: is ignored: a 400 never counts against a deployment",
            "router_settings.allowed_fails_policy.ContentPolicyViolationErrorAllowedFails: is ignored: a 400 never counts against a deployment",
            "router_settings.retry_policy.BadRequestErrorRetries: applies to content-policy rejections only: the router retries no other 400",
        ]);
        assert_eq!((s.retry_policy.bad_request, s.retry_policy.rate_limit), (Some(2), Some(1)));
        assert_eq!((s.allowed_fails_policy.bad_request, s.allowed_fails_policy.timeout), (None, Some(4)));
    }

    #[test]
    fn defaults_follow_litellm() {
        let (s, d) = settings(Value::Null, Value::Null);
        assert!(d.errors.is_empty() && d.warnings.is_empty());
        assert_eq!(s.routing_strategy, Strategy::SimpleShuffle);
        assert_eq!(s.allowed_fails, 3);
        assert_eq!(s.cooldown_time_secs, 5.0);
    }

    #[test]
    fn settings_come_from_either_section_router_first() {
        let (s, d) = settings(
            json!({"num_retries": 2, "fallbacks": [{"gpt-4": ["gpt-3.5", "claude"]}]}),
            json!({"num_retries": 9, "request_timeout": 300, "fallbacks": [{"x": "y"}],
                   "context_window_fallbacks": [{"gpt-3.5": ["gpt-3.5-16k"]}], "success_callback": ["langfuse"]}),
        );
        assert!(d.errors.is_empty(), "{:?}", d.errors);
        assert_eq!(s.num_retries, Some(2));
        assert_eq!(s.timeout_secs, Some(300.0));
        assert_eq!(s.fallbacks, vec![("gpt-4".to_string(), vec!["gpt-3.5".to_string(), "claude".to_string()])]);
        assert_eq!(s.context_window_fallbacks.len(), 1);
        assert!(d.warnings.is_empty(), "{:?}", d.warnings);
    }

    #[test]
    fn aliases_plain_and_hidden() {
        let (s, _) = settings(json!({"model_group_alias": {"gpt4": "gpt-4o", "old": {"model": "gpt-4o", "hidden": true}}}), Value::Null);
        assert_eq!(s.model_group_alias.len(), 2);
        assert!(s.model_group_alias.iter().any(|a| a.alias == "old" && a.hidden));
    }

    #[test]
    fn retry_policy_both_forms() {
        let (s, d) = settings(json!({"retry_policy": {"RateLimitErrorRetries": 5, "Timeout": {"max_retries": 2}, "Bogus": 1}}), Value::Null);
        assert_eq!(s.retry_policy.rate_limit, Some(5));
        assert_eq!(s.retry_policy.timeout, Some(2));
        assert_eq!(d.warnings.len(), 1);
    }

    #[test]
    fn model_group_retry_policy_per_group() {
        let (s, d) = settings(
            json!({"model_group_retry_policy": {"gpt-4o": {"RateLimitErrorRetries": 0, "TimeoutErrorRetries": 4}, "claude": {"Nope": 1}}}),
            Value::Null,
        );
        assert_eq!(s.model_group_retry_policy.len(), 2);
        let gpt = s.model_group_retry_policy.iter().find(|(g, _)| g == "gpt-4o").map(|(_, p)| p.clone()).unwrap_or_default();
        assert_eq!((gpt.rate_limit, gpt.timeout, gpt.internal_server), (Some(0), Some(4), None));
        assert_eq!(d.warnings.len(), 1, "{:?}", d.warnings);
        assert_eq!(d.warnings[0].path, "router_settings.model_group_retry_policy.claude.Nope");
        assert!(needs_failover(&s).is_some_and(|w| w.contains("model_group_retry_policy")));
    }

    fn envoy(v: Value) -> (EnvoySettings, Diagnostics) {
        let mut d = Diagnostics::default();
        let s = parse_envoy(&Section::new(Some(&v), "envoy_settings", &mut d), &mut d);
        (s, d)
    }

    fn health(general: Value, router: Value) -> (HealthCheckSettings, Diagnostics) {
        let mut d = Diagnostics::default();
        let g = Section::new(Some(&general), "general_settings", &mut d);
        let r = Section::new(Some(&router), "router_settings", &mut d);
        let s = parse_health_checks(&g, &r, &mut d);
        (s, d)
    }

    #[test]
    fn local_paths_default_disable_and_custom() {
        let (s, d) = envoy(Value::Null);
        assert!(d.errors.is_empty() && d.warnings.is_empty());
        assert_eq!(s.models_paths, ["/v1/models", "/models"]);
        assert_eq!(s.health_path.as_deref(), Some("/llm-router/health"));
        assert!(!s.access_log_properties && !s.access_log_tokens);
        let (s, d) = envoy(json!({"models_paths": [], "health_path": null}));
        assert!(d.errors.is_empty());
        assert!(s.models_paths.is_empty() && s.health_path.is_none());
        let (s, _) = envoy(json!({"models_paths": null, "health_path": ""}));
        assert!(s.models_paths.is_empty() && s.health_path.is_none());
        let (s, d) = envoy(json!({"models_paths": ["/gw/models"], "health_path": "/gw/health", "access_log_tokens": true}));
        assert!(d.errors.is_empty(), "{:?}", d.errors);
        assert_eq!((s.models_paths, s.health_path.as_deref(), s.access_log_tokens), (vec!["/gw/models".to_string()], Some("/gw/health"), true));
    }

    #[test]
    fn bad_local_paths_name_the_field() {
        let errors = |v: Value| envoy(v).1.errors.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        let e = errors(json!({"models_paths": ["models", "/v1/chat/completions", "/m", "/m"], "health_path": "/m"}));
        assert_eq!(e.len(), 4, "{e:?}");
        assert!(e[0].starts_with("envoy_settings.models_paths[0]: must start with /"), "{e:?}");
        assert!(e[1].starts_with("envoy_settings.models_paths[1]: is a routed endpoint"), "{e:?}");
        assert!(e[2].starts_with("envoy_settings.models_paths[3]: is listed twice"), "{e:?}");
        assert!(e[3].starts_with("envoy_settings.health_path: is also in models_paths"), "{e:?}");
        let e = errors(json!({"models_paths": "/v1/models", "health_path": 5}));
        assert!(e[0].starts_with("envoy_settings.models_paths: must be a list"), "{e:?}");
        assert!(e[1].starts_with("envoy_settings.health_path: must be a string"), "{e:?}");
        let e = errors(json!({"health_path": "/chat/completions/"}));
        assert!(e[0].contains("routed endpoint"), "{e:?}");
        let e = errors(json!({"health_path": "/h?x=1"}));
        assert!(e[0].contains("plain path"), "{e:?}");
        let e = errors(json!({"health_path": "/__llm_router/failover"}));
        assert!(e[0].contains("failover path"), "{e:?}");
    }

    #[test]
    fn health_checks_default_off_every_300_s() {
        let (s, d) = health(Value::Null, Value::Null);
        assert!(d.errors.is_empty() && d.warnings.is_empty());
        assert_eq!(s, HealthCheckSettings { enabled: false, interval_secs: 300.0 });
    }

    #[test]
    fn health_checks_from_either_section_general_wins() {
        let (s, d) = health(json!({"background_health_checks": true}), json!({"health_check_interval": "30"}));
        assert!(d.errors.is_empty() && d.warnings.is_empty(), "{:?}", d);
        assert_eq!(s, HealthCheckSettings { enabled: true, interval_secs: 30.0 });
        let (s, d) = health(json!({"health_check_interval": 60}), json!({"health_check_interval": 5, "background_health_checks": true}));
        assert_eq!(s, HealthCheckSettings { enabled: true, interval_secs: 60.0 });
        assert_eq!(d.warnings.len(), 1);
        assert!(d.warnings[0].to_string().starts_with("router_settings.health_check_interval: differs from general_settings"), "{:?}", d.warnings);
    }

    #[test]
    fn bad_health_check_values_name_the_field() {
        let (_, d) = health(json!({"background_health_checks": "yes", "health_check_interval": 0}), Value::Null);
        let e: Vec<String> = d.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].starts_with("general_settings.background_health_checks: must be true or false"), "{e:?}");
        assert!(e[1].starts_with("general_settings.health_check_interval: must be at least 1"), "{e:?}");
        let (_, d) = health(Value::Null, json!({"health_check_interval": -5}));
        assert!(d.errors[0].to_string().starts_with("router_settings.health_check_interval: must be >= 0"), "{:?}", d.errors);
    }

    #[test]
    fn unknown_strategy_is_an_error_with_path() {
        let (_, d) = settings(json!({"routing_strategy": "fastest"}), Value::Null);
        assert!(d.errors[0].to_string().starts_with("router_settings.routing_strategy: unknown strategy `fastest`"));
    }

    #[test]
    fn failover_switch_is_off_by_default_and_named_when_retries_need_it() {
        let load = |v: Value| crate::config::load(v.to_string().as_bytes(), &|_| None);
        let list = json!([{"model_name": "a", "litellm_params": {"model": "openai/a", "api_key": "k"}}]);
        let off = load(json!({"model_list": list, "router_settings": {"num_retries": 2}}));
        assert_eq!(off.config.as_ref().map(|c| c.envoy.failover), Some(false));
        let w: Vec<String> = off.diagnostics.warnings.iter().map(ToString::to_string).collect();
        assert!(w.iter().any(|w| w.starts_with("envoy_settings.failover: is off, so router_settings.num_retries")), "{w:?}");
        let on = load(json!({"model_list": list, "router_settings": {"num_retries": 2}, "envoy_settings": {"failover": true}}));
        assert_eq!(on.config.as_ref().map(|c| c.envoy.failover), Some(true));
        assert!(on.diagnostics.warnings.is_empty(), "{:?}", on.diagnostics.warnings);
        let quiet = load(json!({"model_list": list}));
        assert!(quiet.diagnostics.warnings.is_empty(), "no retries, no fallbacks: nothing to warn about");
        let bad = load(json!({"model_list": list, "envoy_settings": {"failover": "yes"}}));
        assert!(bad.diagnostics.errors.iter().any(|e| e.path == "envoy_settings.failover"), "{:?}", bad.diagnostics.errors);
    }
}

#[cfg(test)]
mod envoy_tests {
    use super::*;
    use serde_json::json;

    fn envoy(v: Value) -> (EnvoySettings, Diagnostics) {
        let mut d = Diagnostics::default();
        let s = Section::new(Some(&v), "envoy_settings", &mut d);
        let e = parse_envoy(&s, &mut d);
        (e, d)
    }

    #[test]
    fn metrics_default_on_and_can_be_turned_off() {
        assert!(envoy(Value::Null).0.metrics);
        let (e, d) = envoy(json!({"metrics": false}));
        assert!(!e.metrics && d.warnings.is_empty() && d.errors.is_empty());
        let (_, d) = envoy(json!({"metrics": "sometimes"}));
        assert!(d.errors.iter().any(|p| p.to_string().contains("envoy_settings.metrics")), "{:?}", d.errors);
    }
}
