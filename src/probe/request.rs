//! The probe request for one deployment: the cheapest call its `model_info.mode` allows, shaped
//! and addressed exactly like a routed request to that deployment — the same cluster,
//! `:authority`, provider path ([`upstream_path`]), rendered auth header and
//! `anthropic-version` the router's rewrite uses — so a probe fails when live traffic would.
//!
//! Built once per configuration; the shell only dispatches them.

use crate::config::{Deployment, RouterConfig, ANTHROPIC_VERSION, DEFAULT_HEALTH_CHECK_TIMEOUT_SECS};
use crate::provider::{self, upstream_path, Endpoint, Wire};
use crate::pipeline::json_out::Obj;
use std::fmt;

const PING_MESSAGES: &[u8] = br#"[{"role":"user","content":"ping"}]"#;

/// `{"model": <model>, ...members}`, written without serde's serializer (kept out of the wasm).
fn body(model: &str, members: impl FnOnce(&mut Obj<'_>)) -> Vec<u8> {
    let mut out = Vec::with_capacity(96 + model.len());
    let mut obj = Obj::begin(&mut out);
    obj.str("model", model);
    members(&mut obj);
    obj.end();
    out
}

/// A ready-to-dispatch probe. Holds the provider key in `headers`: never log it whole.
pub struct ProbeRequest {
    /// Index into the config's deployments.
    pub index: usize,
    pub id: String,
    pub cluster: String,
    /// `:method`, `:path`, `:authority`, `content-type`, the auth header, `anthropic-version`.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout_ms: u64,
}

impl fmt::Debug for ProbeRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("ProbeRequest")
            .field("id", &self.id)
            .field("cluster", &self.cluster)
            .field("header_names", &names)
            .field("body", &String::from_utf8_lossy(&self.body))
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

/// A deployment's probe, or why it has none (logged once at configure time).
#[derive(Debug)]
pub enum Planned {
    Probe(ProbeRequest),
    Skip { id: String, reason: String },
}

/// Plans one probe per deployment, in deployment order.
pub fn plan(cfg: &RouterConfig) -> Vec<Planned> {
    cfg.table.deployments.iter().enumerate().map(|(index, dep)| plan_one(index, dep)).collect()
}

fn plan_one(index: usize, dep: &Deployment) -> Planned {
    let skip = |reason: String| Planned::Skip { id: dep.id.clone(), reason };
    let model = match &dep.info.health_check_model {
        Some(m) => strip_provider(m).to_string(),
        None if dep.model.contains('*') => {
            return skip("is a wildcard deployment without model_info.health_check_model".to_string());
        }
        None => dep.model.clone(),
    };
    let mode = dep.info.mode.as_deref().unwrap_or("chat");
    let anthropic = dep.provider.wire == Wire::Anthropic;
    let (endpoint, body) = match mode {
        "chat" if anthropic => (
            Endpoint::Messages,
            body(&model, |o| {
                o.num("max_tokens", 1).raw("messages", PING_MESSAGES);
            }),
        ),
        "chat" => (
            Endpoint::ChatCompletions,
            body(&model, |o| {
                o.raw("messages", PING_MESSAGES).num("max_tokens", 1);
            }),
        ),
        "completion" => (
            Endpoint::Completions,
            body(&model, |o| {
                o.str("prompt", "ping").num("max_tokens", 1);
            }),
        ),
        "embedding" => (
            Endpoint::Embeddings,
            body(&model, |o| {
                o.str("input", "ping");
            }),
        ),
        other => return skip(format!("has mode `{other}`, which has no cheap probe request (chat, completion, embedding)")),
    };
    let Some(path) = upstream_path(dep.provider.wire, &dep.upstream.base_path, endpoint, &model, &dep.api_version, "") else {
        return skip(format!("has mode `{mode}`, which provider {} does not serve", dep.provider.name));
    };
    let mut headers = vec![
        (":method".to_string(), "POST".to_string()),
        (":path".to_string(), path),
        (":authority".to_string(), dep.upstream.authority.clone()),
        ("content-type".to_string(), "application/json".to_string()),
    ];
    if let Some(auth) = &dep.auth {
        headers.push((auth.name.clone(), auth.value.clone()));
    }
    if anthropic {
        headers.push(("anthropic-version".to_string(), ANTHROPIC_VERSION.to_string()));
    }
    let timeout_secs = dep.info.health_check_timeout_secs.unwrap_or(DEFAULT_HEALTH_CHECK_TIMEOUT_SECS);
    Planned::Probe(ProbeRequest {
        index,
        id: dep.id.clone(),
        cluster: dep.upstream.cluster.clone(),
        headers,
        body,
        timeout_ms: ((timeout_secs * 1000.0).round() as u64).max(1),
    })
}

/// `openai/gpt-4o-mini` → `gpt-4o-mini` when the prefix names a known provider (LiteLLM writes
/// health_check_model with its provider prefix); anything else is the model id as is.
fn strip_provider(model: &str) -> &str {
    match model.split_once('/') {
        Some((prefix, rest)) if provider::lookup(prefix).is_some() => rest,
        _ => model,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use serde_json::{json, Value};

    fn planned(model_list: Value) -> Vec<Planned> {
        let raw = json!({"model_list": model_list}).to_string();
        let loaded = config::load(raw.as_bytes(), &|_| None);
        assert!(loaded.diagnostics.errors.is_empty(), "{:?}", loaded.diagnostics.errors);
        match loaded.config {
            Some(cfg) => plan(&cfg),
            None => panic!("config refused"),
        }
    }

    fn probe(p: &Planned) -> &ProbeRequest {
        match p {
            Planned::Probe(r) => r,
            Planned::Skip { id, reason } => panic!("{id} skipped: {reason}"),
        }
    }

    fn header<'a>(r: &'a ProbeRequest, name: &str) -> Option<&'a str> {
        r.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn body(r: &ProbeRequest) -> Value {
        serde_json::from_slice(&r.body).unwrap_or(Value::Null)
    }

    #[test]
    fn chat_probe_is_a_one_token_request_to_the_routed_target() {
        let p = planned(json!([{"model_name": "g", "litellm_params": {"model": "openai/gpt-4o",
            "api_base": "http://127.0.0.1:18001/v1", "api_key": "sk-up"}, "model_info": {"id": "a"}}]));
        let r = probe(&p[0]);
        assert_eq!((r.index, r.id.as_str(), r.cluster.as_str()), (0, "a", "outbound|18001||127.0.0.1"));
        assert_eq!(header(r, ":path"), Some("/v1/chat/completions"));
        assert_eq!(header(r, ":authority"), Some("127.0.0.1:18001"));
        assert_eq!(header(r, ":method"), Some("POST"));
        assert_eq!(header(r, "authorization"), Some("Bearer sk-up"));
        assert_eq!(body(r), json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}));
        assert_eq!(r.timeout_ms, 10_000);
        assert!(!format!("{r:?}").contains("sk-up"), "Debug must not show the key");
    }

    #[test]
    fn completion_embedding_azure_and_anthropic_shapes() {
        let p = planned(json!([
            {"model_name": "c", "litellm_params": {"model": "openai/davinci", "api_base": "http://h/v1"}, "model_info": {"mode": "completion"}},
            {"model_name": "e", "litellm_params": {"model": "azure/emb-prod", "api_base": "https://x.openai.azure.com", "api_key": "az"},
             "model_info": {"mode": "embedding", "health_check_timeout": 2}},
            {"model_name": "a", "litellm_params": {"model": "anthropic/claude-3-5-haiku", "api_key": "ant"}},
        ]));
        let c = probe(&p[0]);
        assert_eq!(header(c, ":path"), Some("/v1/completions"));
        assert_eq!(body(c), json!({"model": "davinci", "prompt": "ping", "max_tokens": 1}));
        assert_eq!(header(c, "authorization"), None);
        let e = probe(&p[1]);
        assert_eq!(header(e, ":path"), Some("/openai/deployments/emb-prod/embeddings?api-version=2024-10-21"));
        assert_eq!(header(e, "api-key"), Some("az"));
        assert_eq!(body(e), json!({"model": "emb-prod", "input": "ping"}));
        assert_eq!(e.timeout_ms, 2_000);
        let a = probe(&p[2]);
        assert_eq!(header(a, ":path"), Some("/v1/messages"));
        assert_eq!(header(a, ":authority"), Some("api.anthropic.com"));
        assert_eq!(header(a, "x-api-key"), Some("ant"));
        assert_eq!(header(a, "anthropic-version"), Some("2023-06-01"));
        assert_eq!(body(a), json!({"model": "claude-3-5-haiku", "max_tokens": 1, "messages": [{"role": "user", "content": "ping"}]}));
    }

    #[test]
    fn wildcards_use_health_check_model_or_are_skipped() {
        let p = planned(json!([
            {"model_name": "openai/*", "litellm_params": {"model": "openai/*", "api_base": "http://h/v1"},
             "model_info": {"id": "w1", "health_check_model": "openai/gpt-4o-mini"}},
            {"model_name": "x/*", "litellm_params": {"model": "openai/*", "api_base": "http://h/v1"}, "model_info": {"id": "w2"}},
        ]));
        assert_eq!(body(probe(&p[0]))["model"], "gpt-4o-mini");
        assert!(matches!(&p[1], Planned::Skip { id, reason } if id == "w2" && reason.contains("health_check_model")), "{:?}", p[1]);
    }

    #[test]
    fn modes_without_a_cheap_request_are_skipped() {
        let p = planned(json!([
            {"model_name": "img", "litellm_params": {"model": "openai/dall-e-3"}, "model_info": {"mode": "image_generation"}},
            {"model_name": "emb", "litellm_params": {"model": "anthropic/claude"}, "model_info": {"mode": "embedding"}},
        ]));
        assert!(matches!(&p[0], Planned::Skip { reason, .. } if reason.contains("`image_generation`")), "{:?}", p[0]);
        assert!(matches!(&p[1], Planned::Skip { reason, .. } if reason.contains("does not serve")), "{:?}", p[1]);
    }
}
