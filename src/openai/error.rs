//! OpenAI-shaped error responses for requests the router answers itself.
//!
//! Why this exists: clients (OpenAI SDKs, LiteLLM, LangChain) parse
//! `{"error":{"message","type","param","code"}}` to raise typed exceptions.
//! When the router rejects a request locally (bad JSON, unknown model, every
//! deployment cooling down, ...) its reply must have the same shape and
//! status as an upstream error so those clients behave identically.
//! Constructors pin the exact status/type/code/message contract.

use std::fmt;

use super::json_scan::ScanError;
use super::json_write::write_string;

/// `type` for malformed or unroutable requests.
pub const INVALID_REQUEST: &str = "invalid_request_error";
/// `type` for missing or wrong credentials.
pub const AUTHENTICATION: &str = "authentication_error";
/// `type` for throttling / no capacity.
pub const RATE_LIMIT: &str = "rate_limit_error";
/// `type` for the router's own failures.
pub const API_ERROR: &str = "api_error";

/// LiteLLM's `type` for authentication failures of virtual keys (`ProxyErrorTypes.auth_error`).
pub const LITELLM_AUTH: &str = "auth_error";
/// At most this many allowed models are named in an access denial.
const MAX_LISTED_MODELS: usize = 32;

/// Longest model or group name echoed back, in characters.
const MAX_NAME_CHARS: usize = 256;
/// Longest Content-Type echoed back, in characters.
const MAX_CONTENT_TYPE_CHARS: usize = 128;
/// Longest HTTP method echoed back, in characters.
const MAX_METHOD_CHARS: usize = 32;

/// An error reply: HTTP status plus the OpenAI error object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    /// Serialised as `type`.
    pub kind: &'static str,
    pub param: Option<&'static str>,
    pub code: Option<&'static str>,
}

/// How the last attempt of an exhausted failover chain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exhausted {
    RateLimited,
    TimedOut,
    Unavailable,
    Failed,
}

impl ApiError {
    /// Content-Type of [`ApiError::body`].
    #[cfg(test)]
    pub const CONTENT_TYPE: &'static str = "application/json";

    pub fn new(
        status: u16,
        kind: &'static str,
        param: Option<&'static str>,
        code: Option<&'static str>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            param,
            code,
        }
    }

    /// `{"error":{"message":..,"type":..,"param":..|null,"code":..|null}}`
    #[must_use]
    pub fn body(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.message.len() + self.kind.len());
        out.extend_from_slice(b"{\"error\":{\"message\":");
        write_string(&mut out, &self.message);
        out.extend_from_slice(b",\"type\":");
        write_string(&mut out, self.kind);
        out.extend_from_slice(b",\"param\":");
        write_opt(&mut out, self.param);
        out.extend_from_slice(b",\"code\":");
        write_opt(&mut out, self.code);
        out.extend_from_slice(b"}}");
        out
    }

    /// 400: the body failed to parse; `detail` says where/why.
    pub fn invalid_json(detail: impl fmt::Display) -> Self {
        Self::new(
            400,
            INVALID_REQUEST,
            None,
            Some("invalid_json"),
            format!("Request body is not valid JSON: {detail}"),
        )
    }

    /// 400: maps a scan failure to [`Self::not_an_object`] or
    /// [`Self::invalid_json`] (detail: `"{reason} at byte {offset}"`).
    #[must_use]
    pub fn from_scan_error(e: &ScanError) -> Self {
        if e.is_not_object() {
            Self::not_an_object()
        } else {
            Self::invalid_json(format_args!("{} at byte {}", e.reason, e.offset))
        }
    }

    /// 400: valid JSON, but not an object.
    #[must_use]
    pub fn not_an_object() -> Self {
        Self::new(
            400,
            INVALID_REQUEST,
            None,
            Some("invalid_json"),
            "Request body must be a JSON object",
        )
    }

    /// 400: no top-level string `model`.
    #[must_use]
    pub fn missing_model() -> Self {
        Self::new(
            400,
            INVALID_REQUEST,
            Some("model"),
            Some("missing_model"),
            "Request body must contain a string \"model\" field",
        )
    }

    /// 404: no model group with that name (name truncated to 256 chars).
    #[must_use]
    pub fn model_not_found(model: &str) -> Self {
        Self::new(
            404,
            INVALID_REQUEST,
            Some("model"),
            Some("model_not_found"),
            format!(
                "The model `{}` does not exist or you do not have access to it.",
                truncate(model, MAX_NAME_CHARS)
            ),
        )
    }

    /// 400: the model name cannot be routed as given (`why` is the router's own text: the
    /// client's name is never echoed here, it may hold anything).
    #[must_use]
    pub fn invalid_model(why: &str) -> Self {
        Self::new(400, INVALID_REQUEST, Some("model"), Some("invalid_model"), format!("Invalid \"model\": {why}"))
    }

    /// 414: the request path (with its query) is longer than the router carries across a failover.
    #[must_use]
    pub fn uri_too_long(limit: usize) -> Self {
        Self::new(414, INVALID_REQUEST, None, Some("uri_too_long"), format!("Request path and query exceed the {limit}-byte limit"))
    }

    /// 400: the `:authority` (Host) is longer than any host name.
    #[must_use]
    pub fn invalid_authority(limit: usize) -> Self {
        Self::new(400, INVALID_REQUEST, None, Some("invalid_authority"), format!("The Host header exceeds {limit} bytes"))
    }

    /// 502: Envoy replayed a routed request after a redirect the router did not issue (a
    /// provider's own 3xx, or a forged, expired, reused or re-bodied failover state). It is
    /// answered here so the request never leaves again with the provider's credentials.
    #[must_use]
    pub fn redirect_refused() -> Self {
        Self::new(
            502,
            API_ERROR,
            None,
            Some("upstream_redirect_refused"),
            "llm-router refused a redirect it did not issue (an upstream's own redirect, or a failover state that is forged, expired, reused or from before a restart); retry the request",
        )
    }

    /// 400 `model_not_servable`: the model group is configured, but every deployment of it was
    /// skipped at load (`reason`: the router's own text, e.g. its provider needs request
    /// translation). 400 as LiteLLM answers a provider it cannot call (BadRequestError), not
    /// 404: the name exists, the config cannot serve it.
    #[must_use]
    pub fn model_not_servable(group: &str, reason: &str) -> Self {
        Self::new(
            400,
            INVALID_REQUEST,
            Some("model"),
            Some("model_not_servable"),
            format!(
                "Model group `{}` is configured, but llm-router cannot serve any of its deployments: {}",
                truncate(group, MAX_NAME_CHARS),
                truncate(reason, 512)
            ),
        )
    }

    /// 429: every deployment of the group is at its rpm/tpm cap until the next minute.
    #[must_use]
    pub fn all_rate_limited(group: &str, retry_after_secs: u64) -> Self {
        Self::new(
            429,
            RATE_LIMIT,
            None,
            Some("rate_limited"),
            format!("Every deployment of model group `{group}` is at its rpm/tpm limit. Retry after {retry_after_secs}s."),
        )
    }

    /// 400: the prompt is longer than every deployment's context window (and no fallback took it).
    #[must_use]
    pub fn context_too_long(group: &str) -> Self {
        Self::new(
            400,
            INVALID_REQUEST,
            Some("messages"),
            Some("context_length_exceeded"),
            format!("The request is longer than the context window of every deployment of model group `{group}`"),
        )
    }

    /// 400: no deployment of the group carries the request's tags.
    #[must_use]
    pub fn no_tag_match(group: &str) -> Self {
        Self::new(
            400,
            INVALID_REQUEST,
            Some("tags"),
            Some("no_matching_deployment"),
            format!("No deployment of model group `{group}` matches the request's tags"),
        )
    }

    /// 400: two top-level `model` members (the router rewrites the first; an upstream may read the last).
    #[must_use]
    pub fn duplicate_model() -> Self {
        Self::new(400, INVALID_REQUEST, Some("model"), Some("duplicate_model"), "Request body has more than one \"model\" field")
    }

    /// 400: the context-window fallbacks were tried and the prompt fit none.
    #[must_use]
    pub fn context_fallbacks_exhausted(group: &str, attempts: u32) -> Self {
        Self::new(
            400,
            INVALID_REQUEST,
            Some("messages"),
            Some("context_length_exceeded"),
            format!("The request is longer than the context window of model group `{group}` and its context-window fallbacks ({attempts} attempt(s))"),
        )
    }

    /// A content-policy rejection whose `content_policy_fallbacks` could not serve either.
    #[must_use]
    pub fn content_policy_fallbacks_exhausted(group: &str, attempts: u32) -> Self {
        Self::new(
            400,
            INVALID_REQUEST,
            None,
            Some("content_policy_violation"),
            format!("The request was rejected by the content policy of model group `{group}`, and its content-policy fallbacks could not serve it ({attempts} attempt(s))"),
        )
    }

    /// Every attempt of a failover chain failed; `kind` is the last failure's, `last` says how it ended.
    #[must_use]
    pub fn attempts_exhausted(group: &str, attempts: u32, kind: Exhausted, last: &str) -> Self {
        let (status, kind, code) = match kind {
            Exhausted::RateLimited => (429, RATE_LIMIT, "rate_limited"),
            Exhausted::TimedOut => (504, API_ERROR, "upstream_timeout"),
            Exhausted::Unavailable => (503, API_ERROR, "upstream_unavailable"),
            Exhausted::Failed => (502, API_ERROR, "upstream_error"),
        };
        Self::new(
            status,
            kind,
            None,
            Some(code),
            format!("All {attempts} attempt(s) for model group `{group}` failed; the last one ended with {last}"),
        )
    }

    /// 500: the router itself failed (a host call); `what` is the router's own text.
    #[must_use]
    pub fn internal(what: &str) -> Self {
        Self::new(500, API_ERROR, None, Some("internal_error"), what.to_string())
    }

    /// 413: body larger than the configured limit.
    #[must_use]
    pub fn body_too_large(limit: usize) -> Self {
        Self::new(
            413,
            INVALID_REQUEST,
            None,
            Some("request_too_large"),
            format!("Request body exceeds the {limit}-byte limit"),
        )
    }

    /// 415: Content-Type is not JSON (echoed value truncated to 128 chars).
    #[must_use]
    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            INVALID_REQUEST,
            None,
            Some("unsupported_media_type"),
            format!(
                "Content-Type must be application/json (got `{}`)",
                truncate(content_type, MAX_CONTENT_TYPE_CHARS)
            ),
        )
    }

    /// 405: only POST is routed (echoed method truncated to 32 chars).
    #[must_use]
    pub fn method_not_allowed(method: &str) -> Self {
        Self::method_not_allowed_use(method, "POST")
    }

    /// 405 naming the allowed method(s), e.g. `GET` for the filter's own endpoints.
    #[must_use]
    pub fn method_not_allowed_use(method: &str, allowed: &str) -> Self {
        Self::new(
            405,
            INVALID_REQUEST,
            None,
            Some("method_not_allowed"),
            format!(
                "Method {} is not allowed on this endpoint; use {allowed}",
                truncate(method, MAX_METHOD_CHARS)
            ),
        )
    }

    /// 401: missing or unknown API key.
    #[must_use]
    pub fn invalid_api_key() -> Self {
        Self::new(
            401,
            AUTHENTICATION,
            None,
            Some("invalid_api_key"),
            "Missing or invalid API key: send it as `Authorization: Bearer <key>`",
        )
    }

    /// 401: a virtual key with `blocked: true` (LiteLLM's message and `type`).
    #[must_use]
    pub fn key_blocked() -> Self {
        Self::new(401, LITELLM_AUTH, None, Some("key_blocked"), "Authentication Error, Key is blocked. Unblock it in the gateway's configuration (keys[].blocked).")
    }

    /// 401: a virtual key past its `expires` (LiteLLM's message and `type`; times as UTC).
    #[must_use]
    pub fn key_expired(expired: &str, now: &str) -> Self {
        Self::new(
            401,
            "expired_key",
            None,
            Some("expired_key"),
            format!("Authentication Error - Expired Key. Key Expiry time {expired} and current time {now}"),
        )
    }

    /// 401: the key's team has `blocked: true` (LiteLLM's message and `type`).
    #[must_use]
    pub fn team_blocked(team_id: &str) -> Self {
        Self::new(
            401,
            LITELLM_AUTH,
            None,
            Some("team_blocked"),
            format!("Authentication Error, Team={} is blocked.", truncate(team_id, MAX_NAME_CHARS)),
        )
    }

    /// 401: the key (`who` = "key") or its team ("team") may not call `model`; `allowed` is
    /// that list as configured. LiteLLM's message, `type` `key_model_access_denied` /
    /// `team_model_access_denied` and `param` `model`; `code` repeats the type (LiteLLM's is the
    /// status as a string, which says nothing the status does not).
    #[must_use]
    pub fn model_access_denied(who: &'static str, model: &str, allowed: &[String]) -> Self {
        let kind = if who == "team" { "team_model_access_denied" } else { "key_model_access_denied" };
        let mut list = String::from("[");
        for (i, m) in allowed.iter().take(MAX_LISTED_MODELS).enumerate() {
            if i > 0 {
                list.push_str(", ");
            }
            list.push('\'');
            list.push_str(truncate(m, MAX_NAME_CHARS));
            list.push('\'');
        }
        if allowed.len() > MAX_LISTED_MODELS {
            list.push_str(", ...");
        }
        list.push(']');
        Self::new(
            401,
            kind,
            Some("model"),
            Some(kind),
            format!(
                "{who} not allowed to access model. This {who} can only access models={list}. Tried to access {}",
                truncate(model, MAX_NAME_CHARS)
            ),
        )
    }

    /// 401: the endpoint answers only the master key (the gateway's health report).
    #[must_use]
    pub fn admin_only(path: &str) -> Self {
        Self::new(
            401,
            AUTHENTICATION,
            None,
            Some("admin_only"),
            format!("Only the gateway's master key may call {}", truncate(path, MAX_NAME_CHARS)),
        )
    }

    /// 429: every deployment of `group` is cooling down. The caller should
    /// also send a `Retry-After: {retry_after_secs}` header.
    #[must_use]
    pub fn all_cooling(group: &str, deployments: usize, retry_after_secs: u64) -> Self {
        Self::new(
            429,
            RATE_LIMIT,
            None,
            Some("no_healthy_deployments"),
            format!(
                "No healthy deployment for model group `{}`: all {deployments} deployments are cooling down. Retry after {retry_after_secs}s.",
                truncate(group, MAX_NAME_CHARS)
            ),
        )
    }

    /// 400: the chosen model's provider cannot serve this endpoint.
    #[must_use]
    pub fn unsupported_endpoint(endpoint: &str, provider: &str) -> Self {
        Self::new(
            400,
            INVALID_REQUEST,
            None,
            Some("unsupported_endpoint"),
            format!(
                "Endpoint {} is not supported by provider {} for this model",
                truncate(endpoint, MAX_NAME_CHARS),
                truncate(provider, MAX_NAME_CHARS)
            ),
        )
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.kind, self.message)
    }
}

fn write_opt(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        Some(s) => write_string(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// First `max_chars` characters of `s` (never splits a UTF-8 sequence).
fn truncate(s: &str, max_chars: usize) -> &str {
    match s.char_indices().nth(max_chars) {
        Some((end, _)) => s.get(..end).unwrap_or(s),
        None => s,
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// Parses the body and checks the envelope has exactly the four fields.
    fn parsed(e: &ApiError) -> Value {
        let v: Value = serde_json::from_slice(&e.body()).unwrap();
        let outer = v.as_object().unwrap();
        assert_eq!(outer.len(), 1);
        let inner = outer["error"].as_object().unwrap();
        let mut keys: Vec<_> = inner.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["code", "message", "param", "type"]);
        v["error"].clone()
    }

    fn expect(
        e: &ApiError,
        status: u16,
        kind: &str,
        param: Option<&str>,
        code: &str,
        message: &str,
    ) {
        assert_eq!(e.status, status);
        assert_eq!(
            parsed(e),
            json!({"message": message, "type": kind, "param": param, "code": code})
        );
    }

    #[test]
    fn constructors_follow_the_contract() {
        expect(
            &ApiError::invalid_json("bad thing"),
            400,
            "invalid_request_error",
            None,
            "invalid_json",
            "Request body is not valid JSON: bad thing",
        );
        expect(
            &ApiError::not_an_object(),
            400,
            "invalid_request_error",
            None,
            "invalid_json",
            "Request body must be a JSON object",
        );
        expect(
            &ApiError::missing_model(),
            400,
            "invalid_request_error",
            Some("model"),
            "missing_model",
            "Request body must contain a string \"model\" field",
        );
        expect(
            &ApiError::model_not_found("gpt-9"),
            404,
            "invalid_request_error",
            Some("model"),
            "model_not_found",
            "The model `gpt-9` does not exist or you do not have access to it.",
        );
        expect(
            &ApiError::body_too_large(1048576),
            413,
            "invalid_request_error",
            None,
            "request_too_large",
            "Request body exceeds the 1048576-byte limit",
        );
        expect(
            &ApiError::unsupported_media_type("text/plain"),
            415,
            "invalid_request_error",
            None,
            "unsupported_media_type",
            "Content-Type must be application/json (got `text/plain`)",
        );
        expect(
            &ApiError::method_not_allowed("GET"),
            405,
            "invalid_request_error",
            None,
            "method_not_allowed",
            "Method GET is not allowed on this endpoint; use POST",
        );
        expect(
            &ApiError::invalid_api_key(),
            401,
            "authentication_error",
            None,
            "invalid_api_key",
            "Missing or invalid API key: send it as `Authorization: Bearer <key>`",
        );
        expect(&ApiError::all_cooling("gpt-4o", 3, 17), 429, "rate_limit_error", None, "no_healthy_deployments", "No healthy deployment for model group `gpt-4o`: all 3 deployments are cooling down. Retry after 17s.");
        expect(
            &ApiError::unsupported_endpoint("/v1/embeddings", "anthropic"),
            400,
            "invalid_request_error",
            None,
            "unsupported_endpoint",
            "Endpoint /v1/embeddings is not supported by provider anthropic for this model",
        );
    }

    #[test]
    fn scan_errors_map_to_the_right_constructor() {
        use super::super::json_scan::scan_object;
        let e = scan_object(b"[1]", |_| {}).unwrap_err();
        assert_eq!(ApiError::from_scan_error(&e), ApiError::not_an_object());
        let e = scan_object(b"{\"a\":1,}", |_| {}).unwrap_err();
        let api = ApiError::from_scan_error(&e);
        assert_eq!(api.code, Some("invalid_json"));
        assert_eq!(
            api.message,
            "Request body is not valid JSON: expected a string key at byte 7"
        );
        // Display of ScanError works as a detail too.
        assert_eq!(
            ApiError::invalid_json(&e).message,
            "Request body is not valid JSON: invalid JSON at byte 7: expected a string key"
        );
    }

    #[test]
    fn user_text_is_escaped() {
        let hostile = "x\"},\"injected\":{\"a\":\"\\\n\t\u{0}\u{1F600}";
        for e in [
            ApiError::model_not_found(hostile),
            ApiError::unsupported_media_type(hostile),
            ApiError::method_not_allowed(hostile),
            ApiError::all_cooling(hostile, 1, 0),
            ApiError::unsupported_endpoint(hostile, hostile),
            ApiError::invalid_json(hostile),
        ] {
            let v = parsed(&e);
            assert!(
                v["message"].as_str().unwrap().contains(hostile),
                "{}",
                e.message
            );
        }
    }

    #[test]
    fn long_user_text_is_truncated_on_char_boundaries() {
        let long = "\u{e9}".repeat(300);
        let e = ApiError::model_not_found(&long);
        let msg = parsed(&e)["message"].as_str().unwrap().to_owned();
        assert_eq!(
            msg,
            format!(
                "The model `{}` does not exist or you do not have access to it.",
                "\u{e9}".repeat(256)
            )
        );
        let e = ApiError::unsupported_media_type(&"a".repeat(500));
        assert_eq!(
            e.message,
            format!(
                "Content-Type must be application/json (got `{}`)",
                "a".repeat(128)
            )
        );
        let e = ApiError::all_cooling(&"g".repeat(1000), 2, 5);
        assert!(e.message.contains(&format!("`{}`", "g".repeat(256))));
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("abcd", 3), "abc");
        assert_eq!(truncate("", 3), "");
        assert_eq!(truncate("\u{1F600}\u{1F600}", 1), "\u{1F600}");
    }

    #[test]
    fn body_layout_and_display() {
        let e = ApiError::new(500, API_ERROR, None, None, "boom");
        assert_eq!(
            e.body(),
            br#"{"error":{"message":"boom","type":"api_error","param":null,"code":null}}"#
        );
        assert_eq!(e.to_string(), "500 api_error: boom");
        assert_eq!(ApiError::CONTENT_TYPE, "application/json");
        let e = ApiError::new(404, "not_found_error", Some("p"), Some("c"), String::from("m"));
        assert_eq!(
            e.body(),
            br#"{"error":{"message":"m","type":"not_found_error","param":"p","code":"c"}}"#
        );
        let _ = (RATE_LIMIT, AUTHENTICATION, INVALID_REQUEST);
    }
}
