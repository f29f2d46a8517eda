//! Which LiteLLM keys the router acts on, and what happens to every other key.
//!
//! A pasted LiteLLM config carries many keys for features the router does not have (a database,
//! Redis, callbacks, budgets per deployment...). A config must never *look* honoured when it is
//! not, so every key is either read (listed here as [`Use::Read`]) or warned about once, with
//! the reason when there is one worth giving, and removed from the tree *before* `os.environ/`
//! references are resolved: a variable only an ignored key names need not be set, and is not
//! requested from the VM's environment (`host_env_keys`). The README's lists of honoured and
//! ignored fields are checked against these tables (`readme_lists_every_key` below).

use super::problems::Diagnostics;
use serde_json::{Map, Value};

/// What the router does with one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Read and acted on.
    Read,
    /// Accepted and ignored, with why (the warning's text).
    Ignored(&'static str),
}

use Use::{Ignored, Read};

/// Why keys that need LiteLLM's Redis are ignored.
const REDIS: &str = "the router keeps its state in Envoy's shared data (all workers of one Envoy); Redis is not used";
const LOGGING: &str = "use Envoy's access log (llm_router.* properties) and the llm_router_* metrics instead";

/// Top-level sections.
pub const TOP_LEVEL: &[(&str, Use)] = &[
    ("model_list", Read),
    ("router_settings", Read),
    ("litellm_settings", Read),
    ("general_settings", Read),
    ("envoy_settings", Read),
    ("credential_list", Read),
    ("keys", Read),
    ("teams", Read),
    ("users", Read),
    ("environment_variables", Ignored("set variables in Envoy's environment and list them in vm_config.environment_variables")),
    ("include", Ignored("includes are expanded by `llm-router check/envoy/istio`, not by the filter")),
];

/// OpenAI-style request parameters LiteLLM sends upstream when a deployment's `litellm_params`
/// sets them; the router adds them to the request body unless the request sets the key itself.
pub const REQUEST_PARAMS: &[&str] = &[
    "temperature", "top_p", "top_k", "n", "stop", "max_tokens", "max_completion_tokens", "presence_penalty",
    "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "seed", "response_format", "tools",
    "tool_choice", "parallel_tool_calls", "user", "reasoning_effort", "thinking", "modalities", "audio",
    "prediction", "service_tier", "verbosity", "web_search_options", "dimensions", "encoding_format",
    "functions", "function_call",
];

/// `litellm_params` / `deltallm_params` of a deployment, beyond [`REQUEST_PARAMS`].
pub const DEPLOYMENT_PARAMS: &[(&str, Use)] = &[
    ("model", Read),
    ("provider", Read),
    ("custom_llm_provider", Read),
    ("api_key", Read),
    ("api_base", Read),
    ("base_url", Read),
    ("api_version", Read),
    ("litellm_credential_name", Read),
    ("organization", Read),
    ("extra_headers", Read),
    ("headers", Read),
    ("extra_body", Read),
    ("timeout", Read),
    ("stream_timeout", Read),
    ("rpm", Read),
    ("tpm", Read),
    ("weight", Read),
    ("order", Read),
    ("tags", Read),
    ("auth_header_name", Read),
    ("auth_header_format", Read),
    ("cluster", Read),
    ("input_cost_per_token", Read),
    ("output_cost_per_token", Read),
    ("health_check_model", Read),
    ("max_retries", Ignored("LiteLLM's router sets the provider SDK's retries to 0 too; the router retries across the group (num_retries, retry_policy)")),
    ("max_budget", Ignored("deployment budgets (LiteLLM's provider budget routing) are not enforced")),
    ("budget_duration", Ignored("deployment budgets (LiteLLM's provider budget routing) are not enforced")),
    ("max_parallel_requests", Ignored("per-deployment concurrency limits are not enforced")),
    ("region_name", Ignored("region-based routing (allowed_model_region) is not supported")),
    ("mock_response", Ignored("mock responses are not supported; the request goes to the provider")),
    ("stream", Ignored("whether to stream is the client's choice")),
    ("use_in_pass_through", Ignored("LiteLLM pass-through endpoints are not part of the router")),
    ("merge_reasoning_content_in_choices", Ignored("responses are forwarded as the provider sends them")),
    ("chat_batching", Ignored("not a router feature")),
    ("drop_params", Ignored("requests are forwarded as sent: no per-provider parameter dropping")),
    ("additional_drop_params", Ignored("requests are forwarded as sent: no per-provider parameter dropping")),
];

/// Router settings, read from `router_settings` and (as LiteLLM does) `litellm_settings`.
pub const ROUTER_SETTINGS: &[(&str, Use)] = &[
    ("routing_strategy", Read),
    ("routing_strategy_args", Read),
    ("model_group_alias", Read),
    ("allowed_fails", Read),
    ("allowed_fails_policy", Read),
    ("cooldown_time", Read),
    ("disable_cooldowns", Read),
    ("num_retries", Read),
    ("retry_policy", Read),
    ("model_group_retry_policy", Read),
    ("timeout", Read),
    ("request_timeout", Read),
    ("stream_timeout", Read),
    ("fallbacks", Read),
    ("context_window_fallbacks", Read),
    ("content_policy_fallbacks", Read),
    ("default_fallbacks", Read),
    ("max_fallbacks", Read),
    ("enable_tag_filtering", Read),
    ("enable_pre_call_checks", Read),
    ("background_health_checks", Read),
    ("health_check_interval", Read),
    ("retry_after", Ignored("the router fails over at once; it does not wait within a request")),
    ("drop_params", Ignored("requests are forwarded as sent: no per-provider parameter dropping")),
    ("optional_pre_call_checks", Ignored("only the context-window and rpm/tpm pre-call checks exist (enable_pre_call_checks)")),
    ("redis_host", Ignored(REDIS)),
    ("redis_port", Ignored(REDIS)),
    ("redis_password", Ignored(REDIS)),
    ("redis_url", Ignored(REDIS)),
    ("cache_responses", Ignored("response caching is not supported")),
    ("cache", Ignored("response caching is not supported")),
    ("cache_params", Ignored("response caching is not supported")),
    ("success_callback", Ignored(LOGGING)),
    ("failure_callback", Ignored(LOGGING)),
    ("callbacks", Ignored(LOGGING)),
    ("service_callback", Ignored(LOGGING)),
    ("set_verbose", Ignored("set Envoy's log level instead (--component-log-level wasm:debug)")),
    ("json_logs", Ignored("set Envoy's log format instead")),
    ("provider_budget_config", Ignored("provider budgets are not enforced")),
];

/// `general_settings`.
pub const GENERAL_SETTINGS: &[(&str, Use)] = &[
    ("master_key", Read),
    ("background_health_checks", Read),
    ("health_check_interval", Read),
    ("database_url", Ignored("the router keeps no database: its configuration is the plugin config")),
    ("store_model_in_db", Ignored("the router keeps no database: its configuration is the plugin config")),
    ("alerting", Ignored(LOGGING)),
    ("alerting_threshold", Ignored(LOGGING)),
];

/// Per-model limits LiteLLM reads from a key's `metadata` (`get_key_model_rpm_limit`,
/// `get_key_model_max_parallel_requests` in `litellm/proxy/auth/auth_utils.py`): moved to the
/// entry's top level before parsing, where `/key/generate` takes them; a top-level one wins.
const METADATA_READ: &[&str] = &["model_rpm_limit", "model_tpm_limit", "model_max_parallel_requests"];
/// Why a team's per-model limits in `metadata` are not read.
const TEAM_MODEL_LIMITS: &str = "is ignored: a team's per-model limits are not enforced (a key's are)";

/// A virtual key (`keys[i]`), LiteLLM's `LiteLLM_VerificationToken` / `/key/generate` fields.
pub const KEY_FIELDS: &[(&str, Use)] = &[
    ("token", Read),
    ("key", Read),
    ("key_alias", Read),
    ("models", Read),
    ("team_id", Read),
    ("aliases", Read),
    ("expires", Read),
    ("blocked", Read),
    ("user_id", Read),
    ("metadata", Read),
    ("tags", Read),
    ("rpm_limit", Read),
    ("tpm_limit", Read),
    ("max_parallel_requests", Read),
    ("max_budget", Read),
    ("soft_budget", Read),
    ("budget_duration", Read),
    ("model_rpm_limit", Read),
    ("model_tpm_limit", Read),
    ("model_max_parallel_requests", Read),
    ("model_max_budget", Read),
    ("spend", Ignored(SPEND)),
];

/// Why an exported `spend` is not imported.
const SPEND: &str = "spend starts at 0 in the router's own counters (LiteLLM's spend counter of an exported entry is not imported)";

/// A team (`teams[i]`), LiteLLM's `LiteLLM_TeamTable` fields.
pub const TEAM_FIELDS: &[(&str, Use)] = &[
    ("team_id", Read),
    ("team_alias", Read),
    ("models", Read),
    ("blocked", Read),
    ("metadata", Read),
    ("rpm_limit", Read),
    ("tpm_limit", Read),
    ("max_parallel_requests", Read),
    ("max_budget", Read),
    ("soft_budget", Read),
    ("budget_duration", Read),
    ("model_max_budget", Ignored("a team's per-model budgets are not enforced (a key's model_max_budget is)")),
    ("spend", Ignored(SPEND)),
];

/// A user (`users[i]`), the budget fields of LiteLLM's `LiteLLM_UserTable`.
pub const USER_FIELDS: &[(&str, Use)] = &[
    ("user_id", Read),
    ("max_budget", Read),
    ("soft_budget", Read),
    ("budget_duration", Read),
    ("user_alias", Ignored("")),
    ("user_email", Ignored("")),
    ("spend", Ignored(SPEND)),
];

/// The generic reason for a key no table lists.
const UNKNOWN: &str = "is not used by llm-router and is ignored";

/// How `key` of a table is used; unknown keys are ignored with the generic reason.
fn lookup(table: &[(&str, Use)], key: &str) -> Use {
    table.iter().find(|(k, _)| *k == key).map_or(Ignored(""), |(_, u)| *u)
}

/// Whether `key` of `litellm_params` is read.
pub fn deployment_param_is_read(key: &str) -> bool {
    REQUEST_PARAMS.contains(&key) || lookup(DEPLOYMENT_PARAMS, key) == Read
}

/// Removes from `map` (a section at `path`) every key `is_read` rejects, with one warning each.
fn prune_map(map: &mut Map<String, Value>, path: &str, table: &[(&str, Use)], is_read: &dyn Fn(&str) -> bool, diags: &mut Diagnostics) {
    map.retain(|key, _| {
        if is_read(key) {
            return true;
        }
        let field = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
        match lookup(table, key) {
            // A reason that is a sentence of its own ("is not enforced yet: ...") stands alone.
            Ignored(why) if why.starts_with("is ") => diags.ignored(field, why),
            Ignored(why) if !why.is_empty() => diags.ignored(field, format!("is ignored: {why}")),
            _ => diags.ignored(field, UNKNOWN),
        }
        false
    });
}

/// Prunes the top level and the settings sections (the model list is pruned per entry, by
/// [`prune_deployment`], so a skipped deployment's keys add no warnings of their own).
pub fn prune_sections(root: &mut Map<String, Value>, diags: &mut Diagnostics) {
    prune_map(root, "", TOP_LEVEL, &|k| lookup(TOP_LEVEL, k) == Read, diags);
    for (name, table) in [("router_settings", ROUTER_SETTINGS), ("litellm_settings", ROUTER_SETTINGS), ("general_settings", GENERAL_SETTINGS)] {
        if let Some(Value::Object(section)) = root.get_mut(name) {
            prune_map(section, name, table, &|k| lookup(table, k) == Read, diags);
        }
    }
    for (name, table) in [("keys", KEY_FIELDS), ("teams", TEAM_FIELDS), ("users", USER_FIELDS)] {
        if let Some(Value::Array(items)) = root.get_mut(name) {
            for (i, item) in items.iter_mut().enumerate() {
                if let Value::Object(entry) = item {
                    // LiteLLM keeps per-model limits inside `metadata`: named, so they do not hide
                    // behind the one warning about metadata.
                    if let Some(Value::Object(meta)) = entry.get("metadata") {
                        let found: Vec<(String, Value)> =
                            METADATA_READ.iter().filter_map(|k| meta.get(*k).map(|v| ((*k).to_string(), v.clone()))).collect();
                        for (k, v) in found {
                            if name == "keys" {
                                entry.entry(k).or_insert(v);
                            } else {
                                diags.ignored(format!("{name}[{i}].metadata.{k}"), TEAM_MODEL_LIMITS);
                            }
                        }
                    }
                    prune_map(entry, &format!("{name}[{i}]"), table, &|k| lookup(table, k) == Read, diags);
                }
            }
        }
    }
}

/// Prunes one `model_list` entry's params (`model_list[i].litellm_params`).
pub fn prune_deployment(entry: &mut Value, index: usize, diags: &mut Diagnostics) {
    for name in ["litellm_params", "deltallm_params"] {
        if let Some(Value::Object(params)) = entry.get_mut(name) {
            prune_map(params, &format!("model_list[{index}].{name}"), DEPLOYMENT_PARAMS, &deployment_param_is_read, diags);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ignored_keys_are_removed_with_one_warning_each_and_read_keys_stay() {
        let mut v = json!({"model_list": [], "general_settings": {"master_key": "k", "database_url": "os.environ/DB", "x": 1},
            "router_settings": {"num_retries": 2, "redis_host": "os.environ/REDIS_HOST"}, "litellm_settings": {"success_callback": ["langfuse"]},
            "environment_variables": {"A": "b"}, "nonsense": 1});
        let Value::Object(map) = &mut v else { panic!() };
        let mut d = Diagnostics::default();
        prune_sections(map, &mut d);
        assert_eq!(v, json!({"model_list": [], "general_settings": {"master_key": "k"}, "router_settings": {"num_retries": 2}, "litellm_settings": {}}));
        let lines: Vec<String> = d.warnings.iter().map(|p| p.to_string()).collect();
        assert_eq!(lines.len(), 6, "{lines:?}");
        assert!(lines.iter().any(|l| l.starts_with("general_settings.database_url: is ignored: the router keeps no database")), "{lines:?}");
        assert!(lines.iter().any(|l| l == &format!("general_settings.x: {UNKNOWN}")), "{lines:?}");
        assert!(d.warnings.iter().all(|p| p.kind == super::super::problems::Kind::Ignored));
        assert!(d.errors.is_empty());
    }

    #[test]
    fn deployment_params_keep_routing_fields_and_request_params() {
        let mut entry = json!({"model_name": "m", "litellm_params": {"model": "openai/x", "temperature": 0.2, "extra_body": {"a": 1},
            "region_name": "eu", "aws_region_name": "os.environ/AWS"}});
        let mut d = Diagnostics::default();
        prune_deployment(&mut entry, 3, &mut d);
        assert_eq!(entry["litellm_params"], json!({"model": "openai/x", "temperature": 0.2, "extra_body": {"a": 1}}));
        let mut paths: Vec<&str> = d.warnings.iter().map(|p| p.path.as_str()).collect();
        paths.sort_unstable();
        assert_eq!(paths, ["model_list[3].litellm_params.aws_region_name", "model_list[3].litellm_params.region_name"]);
    }

    #[test]
    fn key_and_team_limits_and_budgets_are_read_and_metadata_limits_warned() {
        let mut v = json!({"keys": [{"token": "t", "rpm_limit": 10, "max_budget": "os.environ/BUDGET", "spend": 3.5,
            "metadata": {"dept": "x", "model_rpm_limit": {"gpt-4o": 5}, "model_max_parallel_requests": {"gpt-4o": 1}}, "odd": 1}],
            "teams": [{"team_id": "a", "tpm_limit": 5, "budget_duration": "30d", "model_max_budget": {}, "metadata": {"model_rpm_limit": {"m": 1}}}],
            "users": [{"user_id": "u", "max_budget": 1, "user_email": "u@x"}]});
        let Value::Object(map) = &mut v else { panic!() };
        let mut d = Diagnostics::default();
        prune_sections(map, &mut d);
        // Limits and budgets stay (enforced); metadata's per-model rpm is lifted to the key.
        assert_eq!(
            v,
            json!({"keys": [{"token": "t", "rpm_limit": 10, "max_budget": "os.environ/BUDGET", "model_rpm_limit": {"gpt-4o": 5},
                "model_max_parallel_requests": {"gpt-4o": 1},
                "metadata": {"dept": "x", "model_rpm_limit": {"gpt-4o": 5}, "model_max_parallel_requests": {"gpt-4o": 1}}}],
                "teams": [{"team_id": "a", "tpm_limit": 5, "budget_duration": "30d", "metadata": {"model_rpm_limit": {"m": 1}}}],
                "users": [{"user_id": "u", "max_budget": 1}]})
        );
        let lines: Vec<String> = d.warnings.iter().map(|p| p.to_string()).collect();
        for want in ["keys[0].spend: is ignored: spend starts at 0", "teams[0].model_max_budget: is ignored: a team's per-model",
            "keys[0].odd: is not used by llm-router", "teams[0].metadata.model_rpm_limit: is ignored: a team's per-model",
            "users[0].user_email: is not used"] {
            assert!(lines.iter().any(|l| l.starts_with(want)), "{want} not in {lines:?}");
        }
        assert_eq!(lines.len(), 5, "{lines:?}");
        assert!(d.warnings.iter().all(|p| p.kind == super::super::problems::Kind::Ignored));
    }

    #[test]
    fn no_key_is_both_a_request_param_and_listed_as_a_deployment_param() {
        for (k, _) in DEPLOYMENT_PARAMS {
            assert!(!REQUEST_PARAMS.contains(k), "{k}");
        }
    }

    /// The README's configuration section names every key of these tables (honoured or ignored).
    #[test]
    fn readme_lists_every_key() {
        let readme = include_str!("../../README.md");
        let tables: [(&str, &[(&str, Use)]); 7] = [
            ("top level", TOP_LEVEL),
            ("litellm_params", DEPLOYMENT_PARAMS),
            ("router_settings", ROUTER_SETTINGS),
            ("general_settings", GENERAL_SETTINGS),
            ("keys", KEY_FIELDS),
            ("teams", TEAM_FIELDS),
            ("users", USER_FIELDS),
        ];
        let mut missing = Vec::new();
        for (table, keys) in tables {
            for (k, _) in keys {
                if !readme.contains(&format!("`{k}`")) {
                    missing.push(format!("{table}.{k}"));
                }
            }
        }
        for k in REQUEST_PARAMS {
            if !readme.contains(&format!("`{k}`")) {
                missing.push(format!("request param {k}"));
            }
        }
        assert!(missing.is_empty(), "README.md does not mention: {missing:?}");
    }
}
