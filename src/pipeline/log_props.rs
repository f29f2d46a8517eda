//! What the router tells Envoy's access log: filter-state properties named `llm_router.*`.
//!
//! The shell sets each with one `set_property([name], value)`; Envoy 1.40 stores it as filter
//! state `wasm.<name>`, so an access log prints it with `%FILTER_STATE(wasm.llm_router.deployment:PLAIN)%`
//! (or `%CEL(filter_state['wasm.llm_router.deployment'])%`). A single-element path is required:
//! Envoy joins a multi-element path with NUL bytes into the key, which no format can name.
//! Routing values are set once per pass when the request is forwarded, so with failover every
//! pass's own log line names its own deployment; token counts are set at the end of the
//! response (`on_log`, which Envoy runs before the access loggers). See envoy/access-log.md.

use super::request::Forward;
use crate::config::EnvoySettings;
use crate::openai::Usage;

pub const DEPLOYMENT: &str = "llm_router.deployment";
pub const MODEL_GROUP: &str = "llm_router.model_group";
pub const ATTEMPTS: &str = "llm_router.attempts";
pub const FALLBACK_FROM: &str = "llm_router.fallback_from";
pub const PROMPT_TOKENS: &str = "llm_router.prompt_tokens";
pub const COMPLETION_TOKENS: &str = "llm_router.completion_tokens";

/// The access-log line shipped in envoy/demo.yaml and the CLI's bootstrap (the e2e harness has
/// the same, tests/e2e/support/envoy.py): Envoy's usual request fields, then the router's.
/// `-` where a value is unset (not routed; tokens unknown; no fallback).
pub const ACCESS_LOG_FORMAT: &str = concat!(
    "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% ",
    "%DURATION%ms deployment=%FILTER_STATE(wasm.llm_router.deployment:PLAIN)% ",
    "group=%FILTER_STATE(wasm.llm_router.model_group:PLAIN)% attempts=%FILTER_STATE(wasm.llm_router.attempts:PLAIN)% ",
    "fallback_from=%FILTER_STATE(wasm.llm_router.fallback_from:PLAIN)% ",
    "prompt_tokens=%FILTER_STATE(wasm.llm_router.prompt_tokens:PLAIN)% ",
    "completion_tokens=%FILTER_STATE(wasm.llm_router.completion_tokens:PLAIN)% ",
    "upstream=%UPSTREAM_CLUSTER% request_id=%REQ(X-REQUEST-ID)%\n",
);

/// The JSON access-log line (`log_format.json_format`; envoy/access-log-json.yaml, `llm-router
/// envoy --access-log json`, read back by `llm-router spend`): field → Envoy command, in order.
/// Measured on Envoy 1.40: a value that is exactly one command of Envoy's own typed operators
/// (`%RESPONSE_CODE%`, `%DURATION%`) prints as a JSON number; the router's filter state prints
/// as a string with `:PLAIN` (`:TYPED` gives the `BytesValue` object with base64, and CEL
/// cannot turn the bytes into a number: `int(string(...))` refuses the config), and as `null`
/// when unset. Envoy escapes every string.
pub const ACCESS_LOG_JSON: &[(&str, &str)] = &[
    ("start_time", "%START_TIME%"),
    ("method", "%REQ(:METHOD)%"),
    ("path", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"),
    ("protocol", "%PROTOCOL%"),
    ("status", "%RESPONSE_CODE%"),
    ("response_flags", "%RESPONSE_FLAGS%"),
    ("duration_ms", "%DURATION%"),
    ("deployment", "%FILTER_STATE(wasm.llm_router.deployment:PLAIN)%"),
    ("model_group", "%FILTER_STATE(wasm.llm_router.model_group:PLAIN)%"),
    ("attempts", "%FILTER_STATE(wasm.llm_router.attempts:PLAIN)%"),
    ("fallback_from", "%FILTER_STATE(wasm.llm_router.fallback_from:PLAIN)%"),
    ("prompt_tokens", "%FILTER_STATE(wasm.llm_router.prompt_tokens:PLAIN)%"),
    ("completion_tokens", "%FILTER_STATE(wasm.llm_router.completion_tokens:PLAIN)%"),
    ("cost_usd", "%FILTER_STATE(wasm.llm_router.cost_usd:PLAIN)%"),
    ("key_alias", "%FILTER_STATE(wasm.llm_router.key_alias:PLAIN)%"),
    ("team_id", "%FILTER_STATE(wasm.llm_router.team_id:PLAIN)%"),
    ("user_id", "%FILTER_STATE(wasm.llm_router.user_id:PLAIN)%"),
    ("tags", "%FILTER_STATE(wasm.llm_router.tags:PLAIN)%"),
    ("upstream", "%UPSTREAM_CLUSTER%"),
    ("request_id", "%REQ(X-REQUEST-ID)%"),
];

/// The properties of a forwarded attempt (`fallback_from` only when a fallback group serves).
pub fn routing(fwd: &Forward<'_>) -> Vec<(&'static str, String)> {
    let mut out = vec![
        (DEPLOYMENT, fwd.deployment.id.clone()),
        (MODEL_GROUP, fwd.group.to_string()),
        (ATTEMPTS, fwd.attempts.to_string()),
    ];
    if let Some(from) = &fwd.fallback_from {
        out.push((FALLBACK_FROM, from.clone()));
    }
    out
}

/// The token-count properties, once the response's usage is known.
pub fn tokens(usage: &Usage) -> [(&'static str, String); 2] {
    [(PROMPT_TOKENS, usage.input_tokens.to_string()), (COMPLETION_TOKENS, usage.output_tokens.to_string())]
}

/// The one decision whether a response body is fed to a usage tracker: when the routing
/// strategy needs token counts or latency per token, the token metrics are on
/// (`envoy_settings.metrics`), or the operator wants tokens in the access log. The shell asks
/// this first and reads `content-encoding` only then: a compressed body is never read (the
/// tracker cannot see the JSON).
pub fn wants_usage(envoy: &EnvoySettings, strategy_reads_body: bool) -> bool {
    strategy_reads_body || envoy.metrics || (envoy.access_log_properties && envoy.access_log_tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_format_names_every_property() {
        let names = [DEPLOYMENT, MODEL_GROUP, ATTEMPTS, FALLBACK_FROM, PROMPT_TOKENS, COMPLETION_TOKENS];
        let spend = [super::super::spend::KEY_ALIAS, super::super::spend::TEAM_ID, super::super::spend::USER_ID, super::super::spend::TAGS, super::super::spend::COST_USD];
        for n in names.iter().chain(&spend) {
            let cmd = format!("%FILTER_STATE(wasm.{n}:PLAIN)%");
            assert!(ACCESS_LOG_JSON.iter().any(|(_, v)| *v == cmd), "{n}");
            assert!(n.starts_with("llm_router.") && n.matches('.').count() == 1, "{n}");
        }
    }

    #[test]
    fn usage_is_read_only_when_someone_needs_it() {
        let mut e = crate::config::load(b"{}", &|_| None).config.map(|c| c.envoy).unwrap_or_else(|| panic!("config"));
        assert!(e.metrics, "on by default");
        assert!(wants_usage(&e, false), "the token metrics need it");
        e.metrics = false;
        assert!(!wants_usage(&e, false));
        assert!(wants_usage(&e, true));
        e.access_log_tokens = true;
        assert!(!wants_usage(&e, false), "tokens need the properties on");
        e.access_log_properties = true;
        assert!(wants_usage(&e, false));
    }

    #[test]
    fn the_shipped_format_prints_every_property() {
        for name in [DEPLOYMENT, MODEL_GROUP, ATTEMPTS, FALLBACK_FROM, PROMPT_TOKENS, COMPLETION_TOKENS] {
            assert!(ACCESS_LOG_FORMAT.contains(&format!("%FILTER_STATE(wasm.{name}:PLAIN)%")), "{name}");
        }
        assert!(ACCESS_LOG_FORMAT.ends_with('\n'));
    }

    #[test]
    fn token_properties() {
        let t = tokens(&Usage { input_tokens: 12, output_tokens: 5 });
        assert_eq!(t, [(PROMPT_TOKENS, "12".to_string()), (COMPLETION_TOKENS, "5".to_string())]);
    }
}
