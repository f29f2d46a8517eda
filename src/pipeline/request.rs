//! The request side: decide from the headers whether the router handles the request, then —
//! once the body is buffered — resolve its model, pick a deployment and plan the rewrite.
//!
//! The body is never parsed into a tree: one validating scan finds the top-level `model`
//! (and the keys `default_params` may add), and one splice writes the new body.

use super::auth::{is_authorized, ClientCredentials};
use crate::config::{AuthHeader, Deployment, RouterConfig, ANTHROPIC_VERSION};
use crate::health::CooldownView;
use crate::openai::{json_scan, rewrite, ApiError};
use crate::provider::{upstream_path, Endpoint, Wire};
use crate::routing::{simple_shuffle, Pick, Rng};

/// Client headers that may carry credentials; none of them is ever forwarded upstream.
pub const CLIENT_AUTH_HEADERS: [&str; 3] = ["authorization", "api-key", "x-api-key"];

/// What the shell reads from the request headers.
#[derive(Debug, Default, Clone, Copy)]
pub struct RequestHead<'a> {
    pub method: &'a str,
    /// `:path`, query included.
    pub path: &'a str,
    pub content_type: Option<&'a str>,
    pub content_length: Option<&'a str>,
    pub credentials: ClientCredentials<'a>,
    pub has_anthropic_version: bool,
}

/// A request the router will handle once its body is buffered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub endpoint: Endpoint,
    pub query: String,
    pub has_anthropic_version: bool,
}

/// A local reply: an OpenAI-shaped error plus any extra headers (`retry-after`, `allow`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub error: ApiError,
    pub headers: Vec<(&'static str, String)>,
}

impl From<ApiError> for Reply {
    fn from(error: ApiError) -> Reply {
        Reply { error, headers: Vec::new() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadDecision {
    /// Not a routed endpoint: leave the request alone.
    PassThrough,
    Reject(Reply),
    ReadBody(Pending),
}

/// Header-time checks: endpoint, method, gateway key, content type, declared size.
pub fn on_head(cfg: &RouterConfig, head: &RequestHead<'_>) -> HeadDecision {
    let (path, query) = head.path.split_once('?').unwrap_or((head.path, ""));
    let Some(endpoint) = Endpoint::from_path(path) else { return HeadDecision::PassThrough };
    if head.method != "POST" {
        return HeadDecision::Reject(Reply {
            error: ApiError::method_not_allowed(head.method),
            headers: vec![("allow", "POST".to_string())],
        });
    }
    if let Some(key) = &cfg.master_key {
        if !is_authorized(key, &head.credentials) {
            return HeadDecision::Reject(ApiError::invalid_api_key().into());
        }
    }
    if let Some(ct) = head.content_type {
        if !is_json(ct) {
            return HeadDecision::Reject(ApiError::unsupported_media_type(ct).into());
        }
    }
    let limit = cfg.envoy.max_request_body_bytes;
    if head.content_length.and_then(|v| v.trim().parse::<u64>().ok()).is_some_and(|n| n > limit) {
        return HeadDecision::Reject(ApiError::body_too_large(limit as usize).into());
    }
    HeadDecision::ReadBody(Pending {
        endpoint,
        query: query.to_string(),
        has_anthropic_version: head.has_anthropic_version,
    })
}

/// `application/json`, `application/json; charset=utf-8`, `application/*+json`.
fn is_json(content_type: &str) -> bool {
    let mime = content_type.split(';').next().unwrap_or("").trim();
    mime.eq_ignore_ascii_case("application/json")
        || (mime.len() > 5 && mime.get(..12).is_some_and(|p| p.eq_ignore_ascii_case("application/")) && mime.to_ascii_lowercase().ends_with("+json"))
}

/// The planned upstream request. Borrowed from the config, which outlives the request.
#[derive(Debug)]
pub struct Forward<'c> {
    pub deployment: &'c Deployment,
    pub deployment_index: usize,
    pub group: &'c str,
    pub cluster_header: &'c str,
    pub cluster: &'c str,
    pub authority: &'c str,
    pub path: String,
    pub auth: Option<&'c AuthHeader>,
    /// `anthropic-version` to add (Anthropic deployments, when the client sent none).
    pub anthropic_version: Option<&'static str>,
    /// The rewritten body, or None when the body goes upstream unchanged.
    pub body: Option<Vec<u8>>,
    pub stream: bool,
}

/// Body-time decision: resolve the model, pick a healthy deployment, plan the rewrite.
pub fn on_body<'c>(
    cfg: &'c RouterConfig,
    pending: &Pending,
    body: &[u8],
    cooling: &CooldownView,
    now_ms: u64,
    rng: &mut Rng,
) -> Result<Forward<'c>, Reply> {
    let limit = cfg.envoy.max_request_body_bytes;
    if body.len() as u64 > limit {
        return Err(ApiError::body_too_large(limit as usize).into());
    }
    let wanted: Vec<&str> = cfg.table.default_param_keys.iter().map(String::as_str).collect();
    let scan = json_scan::scan_request(body, &wanted).map_err(|e| Reply::from(ApiError::from_scan_error(&e)))?;
    let model_member = scan.model.as_ref().ok_or_else(|| Reply::from(ApiError::missing_model()))?;
    let requested = model_member.as_str().ok_or_else(|| Reply::from(ApiError::missing_model()))?;
    if scan.duplicate_model {
        return Err(ApiError::new(
            400,
            crate::openai::error::INVALID_REQUEST,
            Some("model"),
            Some("duplicate_model"),
            "Request body has more than one \"model\" field",
        )
        .into());
    }

    let resolved = cfg.table.resolve(&requested).ok_or_else(|| Reply::from(ApiError::model_not_found(&requested)))?;
    let group = cfg.table.groups.get(resolved.group).ok_or_else(|| Reply::from(ApiError::model_not_found(&requested)))?;
    let index = match simple_shuffle(group, cooling, now_ms, rng) {
        Some(Pick::Deployment(i)) => i,
        Some(Pick::AllCooling { retry_after_ms }) => {
            let secs = retry_after_ms.div_ceil(1000).max(1);
            return Err(Reply {
                error: ApiError::all_cooling(&group.name, group.members.len(), secs),
                headers: vec![("retry-after", secs.to_string())],
            });
        }
        None => return Err(ApiError::model_not_found(&requested).into()),
    };
    let dep = cfg.table.deployments.get(index).ok_or_else(|| Reply::from(ApiError::model_not_found(&requested)))?;

    let upstream_model = substitute_wildcard(&dep.model, resolved.capture.unwrap_or(&requested));
    let path = upstream_path(dep.provider.wire, &dep.upstream.base_path, pending.endpoint, &upstream_model, &dep.api_version, &pending.query)
        .ok_or_else(|| Reply::from(ApiError::unsupported_endpoint(pending.endpoint.public_path(), dep.provider.name)))?;

    let defaults: Vec<(&str, &[u8])> = dep
        .info
        .default_params
        .iter()
        .filter(|(k, _)| !wanted.iter().position(|w| w == k).is_some_and(|i| scan.has(i)))
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    let new_body = if upstream_model != requested || !defaults.is_empty() {
        let model_edit = (upstream_model != requested).then(|| (model_member.value.clone(), upstream_model.as_str()));
        Some(rewrite(body, model_edit, &scan.object, &defaults))
    } else {
        None
    };

    Ok(Forward {
        deployment: dep,
        deployment_index: index,
        group: &group.name,
        cluster_header: &cfg.envoy.cluster_header,
        cluster: &dep.upstream.cluster,
        authority: &dep.upstream.authority,
        path,
        auth: dep.auth.as_ref(),
        anthropic_version: (dep.provider.wire == Wire::Anthropic && !pending.has_anthropic_version).then_some(ANTHROPIC_VERSION),
        body: new_body,
        stream: scan.stream.unwrap_or(false),
    })
}

/// A `*` in the deployment's model takes what the group's wildcard matched.
fn substitute_wildcard(model: &str, capture: &str) -> String {
    match model.split_once('*') {
        Some((head, tail)) => format!("{head}{capture}{tail}"),
        None => model.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::health::{Cooldowns, FailureClass};
    use serde_json::{json, Value};

    fn cfg(v: Value) -> RouterConfig {
        let env = |n: &str| (n == "OPENAI_API_KEY").then(|| "sk-up".to_string());
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

    fn pending(cfg: &RouterConfig, path: &str) -> Pending {
        match on_head(cfg, &head("POST", path)) {
            HeadDecision::ReadBody(p) => p,
            other => panic!("{other:?}"),
        }
    }

    fn route<'c>(cfg: &'c RouterConfig, path: &str, body: &str) -> Result<Forward<'c>, Reply> {
        let view = CooldownView::new(&Cooldowns::default(), &cfg.table.ids, cfg.table.deployments.len());
        on_body(cfg, &pending(cfg, path), body.as_bytes(), &view, 0, &mut Rng::from_seed(1))
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
        assert_eq!(on_head(&c, &head("POST", "/healthz")), HeadDecision::PassThrough);
        assert_eq!(on_head(&c, &head("GET", "/v1/models")), HeadDecision::PassThrough);
        let reject = |h: &RequestHead<'_>| match on_head(&c, h) {
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
        assert!(matches!(on_head(&c, &h), HeadDecision::ReadBody(_)));
        h.content_type = Some("application/vnd.api+json");
        assert!(matches!(on_head(&c, &h), HeadDecision::ReadBody(_)));
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
        let r = on_body(&c, &pending(&c, "/v1/chat/completions"), br#"{"model":"gpt-4o"}"#, &view, 1_000, &mut Rng::from_seed(1));
        let Err(reply) = r else { panic!("forwarded") };
        assert_eq!((reply.error.status, reply.error.code), (429, Some("no_healthy_deployments")));
        assert_eq!(reply.headers, vec![("retry-after", "2".to_string())]);
        assert!(reply.error.message.contains("gpt-4o"));
    }
}
