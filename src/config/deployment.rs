//! One `model_list` entry → one routable [`Deployment`], with every field validated.
//!
//! Accepts LiteLLM (`litellm_params`) and DeltaLLM (`deltallm_params`) entries. The provider comes
//! from `provider` (DeltaLLM; wins) or `custom_llm_provider` (LiteLLM), else from the model prefix
//! split at the first `/`, else OpenAI-compatible when an `api_base` is given.

use super::auth::{self, AuthHeader};
use super::extra_headers;
use super::fields::{kind, Section};
use super::problems::Diagnostics;
use super::upstream::{self, Upstream};
use crate::provider::{self, Provider, Wire};
use serde_json::Value;

/// Azure `api-version` used when a deployment does not set one (latest GA data-plane version).
pub const DEFAULT_AZURE_API_VERSION: &str = "2024-10-21";
/// Anthropic `anthropic-version` sent unless the client sends its own.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// LiteLLM providers that need request translation, which this router does not do (yet).
const UNSUPPORTED_PROVIDERS: &[&str] = &[
    "bedrock", "bedrock_converse", "sagemaker", "sagemaker_chat", "vertex_ai", "vertex_ai_beta",
    "cohere", "cohere_chat", "huggingface", "replicate", "watsonx", "palm", "ai21", "ai21_chat",
    "cloudflare", "databricks", "predibase", "clarifai", "voyage", "jina_ai", "aleph_alpha",
    "nlp_cloud", "petals", "baseten", "triton", "oobabooga",
];

/// LiteLLM's `model_info.mode` values.
pub const KNOWN_MODES: &[&str] = &[
    "chat", "completion", "embedding", "image_generation", "image_edit", "audio_transcription", "audio_speech",
    "moderation", "rerank", "batch", "responses", "realtime", "video_generation", "ocr", "search",
];

/// Metadata from `model_info` (an open map; only these keys are read).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelInfo {
    /// LiteLLM's `mode` (`chat` when absent): what kind of probe request suits the deployment.
    pub mode: Option<String>,
    /// `health_check_model`: the model to probe with (LiteLLM needs it for wildcard deployments).
    /// As written, possibly with a provider prefix (`openai/gpt-4o-mini`).
    pub health_check_model: Option<String>,
    /// `health_check_timeout` in seconds (LiteLLM's per-model override).
    pub health_check_timeout_secs: Option<f64>,
    pub input_cost_per_token: Option<f64>,
    pub output_cost_per_token: Option<f64>,
    pub max_input_tokens: Option<u64>,
    pub access_groups: Vec<String>,
    /// (key, serialized JSON value) added when the request does not set the key: the request
    /// parameters of `litellm_params` (and `extra_body`'s members), then `default_params`.
    pub default_params: Vec<(String, Vec<u8>)>,
}

/// A routable deployment.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// `model_info.id`, or a stable hash of non-secret fields.
    pub id: String,
    /// Its position in `model_list` (skipped entries leave gaps in the table).
    pub entry: usize,
    /// The public model name (`model_name`), i.e. its model group; may be a wildcard pattern.
    pub group: String,
    pub provider: Provider,
    /// Model id sent upstream (provider prefix stripped); may contain `*` for wildcard groups.
    pub model: String,
    pub upstream: Upstream,
    pub auth: Option<AuthHeader>,
    pub api_version: String,
    pub weight: Option<f64>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub order: Option<u64>,
    pub timeout_secs: Option<f64>,
    /// `stream_timeout`: the per-try budget of a streamed request (else `timeout`).
    pub stream_timeout_secs: Option<f64>,
    pub tags: Vec<String>,
    /// Static upstream headers (`extra_headers`, `headers`, `organization`): lowercase names.
    pub extra_headers: Vec<(String, String)>,
    pub info: ModelInfo,
}

/// A deployment the router cannot serve, but whose config is well-formed: its provider needs
/// request translation, or it names no provider the router knows and no `api_base`. It is
/// skipped (one warning) and never routes; its group answers `model_not_servable`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// `model_name` (its model group).
    pub group: String,
    /// The field the reason is about (`model_list[i].litellm_params.model`).
    pub path: String,
    /// Why, in the router's words (names the provider; never a secret): told to clients.
    pub reason: String,
    /// What the operator can do about it (logged only).
    pub hint: String,
}

/// What one `model_list` entry became.
#[derive(Debug)]
pub enum Parsed {
    Ready(Box<Deployment>),
    Skipped(Skipped),
    /// Errors were recorded in the diagnostics (the config is refused).
    Invalid,
}

impl Parsed {
    #[cfg(test)]
    fn ready(self) -> Option<Deployment> {
        match self {
            Parsed::Ready(d) => Some(*d),
            _ => None,
        }
    }
}

/// Parses entry `index` of `model_list` (already `os.environ`-resolved). `fallback_id` is the
/// id to use when `model_info.id` is absent.
pub fn parse(entry: &Value, index: usize, fallback_id: String, diags: &mut Diagnostics) -> Parsed {
    parse_entry(entry, index, fallback_id, diags).unwrap_or(Parsed::Invalid)
}

fn parse_entry(entry: &Value, index: usize, fallback_id: String, diags: &mut Diagnostics) -> Option<Parsed> {
    let base = format!("model_list[{index}]");
    let root = Section::new(Some(entry), base.clone(), diags);
    root.map?;
    let errors_before = diags.errors.len();

    let group = match root.get("model_name") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::String(_)) => {
            diags.error(root.field_path("model_name"), "must not be empty");
            String::new()
        }
        Some(other) => {
            diags.error(root.field_path("model_name"), format!("must be a string, got {}", kind(other)));
            String::new()
        }
        None => {
            diags.error(root.field_path("model_name"), "is required");
            String::new()
        }
    };

    let params = match (root.get("litellm_params"), root.get("deltallm_params")) {
        (Some(_), Some(_)) => {
            diags.error(&base, "has both litellm_params and deltallm_params; use one");
            return None;
        }
        (Some(_), None) => root.child("litellm_params", diags),
        (None, Some(_)) => root.child("deltallm_params", diags),
        (None, None) => {
            diags.error(root.field_path("litellm_params"), "is required (or deltallm_params)");
            return None;
        }
    };
    params.map?;

    let model_path = params.field_path("model");
    let raw_model = match params.str("model", diags) {
        Some(m) if !m.is_empty() => m,
        Some(_) => {
            diags.error(&model_path, "must not be empty");
            return None;
        }
        None => {
            if params.get("model").is_none() {
                diags.error(&model_path, "is required");
            }
            return None;
        }
    };
    // LiteLLM takes `base_url` as `api_base`; `api_base` wins when both are set.
    let base_url = params.str("base_url", diags).filter(|s| !s.is_empty());
    let api_base = params.str("api_base", diags).filter(|s| !s.is_empty());
    if let (Some(a), Some(b)) = (api_base, base_url) {
        if a != b {
            diags.warn(params.field_path("base_url"), format!("differs from api_base, which wins ({a})"));
        }
    }
    let api_base = api_base.or(base_url);
    let explicit = params.str("provider", diags).or_else(|| params.str("custom_llm_provider", diags));
    let (provider, model) = match resolve_provider(raw_model, explicit, api_base.is_some()) {
        Ok(found) => found,
        Err(reason) => {
            let field = if params.get("provider").is_some() { "provider" } else if explicit.is_some() { "custom_llm_provider" } else { "model" };
            if diags.errors.len() > errors_before || group.is_empty() {
                return None;
            }
            let (reason, hint) = reason.split_once("; ").map_or((reason.clone(), String::new()), |(r, h)| (r.to_string(), h.to_string()));
            return Some(Parsed::Skipped(Skipped { group, path: params.field_path(field), reason, hint }));
        }
    };

    let api_base_path = params.field_path(if params.get("api_base").is_none() && base_url.is_some() { "base_url" } else { "api_base" });
    let base = match api_base.or(provider.default_api_base) {
        Some(b) => b,
        None => {
            diags.error(&api_base_path, format!("is required for provider {}", provider.name));
            return None;
        }
    };
    let cluster = params.str("cluster", diags).filter(|c| !c.is_empty());
    let mut upstream = upstream::parse(base, cluster).map_err(|e| diags.error(&api_base_path, e)).ok()?;
    // LiteLLM configs give Ollama's bare `http://host:11434`; its OpenAI-compatible API is under
    // `/v1` (`/v1/chat/completions`, `/v1/embeddings`, ...), its native one under `/api`.
    if provider.name == "ollama" && !upstream.base_path.ends_with("/v1") {
        upstream.base_path.push_str("/v1");
    }

    let auth = parse_auth(&params, provider, diags);
    let api_version = params.text("api_version", diags).unwrap_or_else(|| DEFAULT_AZURE_API_VERSION.to_string());
    if provider.wire == Wire::Azure && api_version.contains(['&', '#', ' ', '?']) {
        diags.error(params.field_path("api_version"), "must be a plain version string like 2024-10-21");
    }

    let info_section = root.child("model_info", diags);
    let info = parse_model_info(&info_section, &params, diags);
    let id = match info_section.get("id") {
        None => fallback_id,
        Some(Value::String(s)) if valid_id(s) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => {
            diags.error(info_section.field_path("id"), "must be a non-empty string of at most 128 printable characters");
            return None;
        }
    };

    let mut tags = params.string_list("tags", diags);
    for t in info_section.string_list("tags", diags) {
        if !tags.contains(&t) {
            tags.push(t);
        }
    }

    let weight = params.non_negative("weight", diags);
    let rpm = params.count("rpm", diags).or_else(|| root.count("rpm", diags));
    let tpm = params.count("tpm", diags).or_else(|| root.count("tpm", diags));
    let order = params.count("order", diags);
    let timeout_secs = params.non_negative("timeout", diags);
    let stream_timeout_secs = params.non_negative("stream_timeout", diags);
    let extra_headers = extra_headers::parse(&params, provider.wire, auth.as_ref().map(|a| a.name.as_str()), diags);

    if diags.errors.len() > errors_before {
        return None;
    }
    Some(Parsed::Ready(Box::new(Deployment {
        id,
        entry: index,
        group,
        provider,
        model,
        upstream,
        auth,
        api_version,
        weight,
        rpm,
        tpm,
        order,
        timeout_secs,
        stream_timeout_secs,
        tags,
        extra_headers,
        info,
    })))
}

/// The provider a `litellm_params` entry (a map, `os.environ`-resolved) resolves to, by the
/// rules [`parse`] uses; `None` when it names none the router serves (it is then skipped, or
/// its problems are reported by [`parse`]).
pub fn provider_of(params: &serde_json::Map<String, Value>) -> Option<Provider> {
    let text = |k: &str| params.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
    let model = text("model")?;
    let explicit = params.get("provider").or_else(|| params.get("custom_llm_provider")).and_then(Value::as_str);
    let has_api_base = text("api_base").is_some() || text("base_url").is_some();
    resolve_provider(model, explicit, has_api_base).ok().map(|(provider, _)| provider)
}

/// Splits `model` into provider and upstream model id (see module docs for the rules).
fn resolve_provider(model: &str, explicit: Option<&str>, has_api_base: bool) -> Result<(Provider, String), String> {
    let split = model.split_once('/');
    // A LiteLLM provider whose default base URL is not catalogued serves only at its api_base.
    let needing_base = |name: &str| {
        provider::lookup_needing_api_base(name).map(|p| {
            if has_api_base {
                Ok(p)
            } else {
                Err(format!(
                    "provider `{}` has no default base URL in the router; set `api_base` to its OpenAI-compatible URL",
                    p.name
                ))
            }
        })
    };
    let prefix_provider = split.and_then(|(prefix, _)| provider::lookup(prefix).or_else(|| provider::lookup_needing_api_base(prefix)));
    let stripped = match (split, prefix_provider) {
        (Some((_, rest)), Some(_)) => rest.to_string(),
        _ => model.to_string(),
    };
    if let Some(name) = explicit {
        if let Some(found) = needing_base(name) {
            return Ok((found?, stripped));
        }
        let provider = provider::lookup(name).ok_or_else(|| unsupported(name))?;
        return Ok((provider, stripped));
    }
    if let Some(found) = split.and_then(|(prefix, _)| needing_base(prefix)) {
        return Ok((found?, stripped));
    }
    if let Some(provider) = prefix_provider {
        return Ok((provider, stripped));
    }
    if let Some((prefix, _)) = split {
        if UNSUPPORTED_PROVIDERS.iter().any(|u| u.eq_ignore_ascii_case(prefix)) {
            return Err(unsupported(prefix));
        }
    }
    // No catalogued provider: the operator's `api_base` names the host. Without one, a key may
    // only go to a provider's own documented host, so only names that are unmistakably
    // OpenAI's or Anthropic's (LiteLLM infers those from its model map) get a default host;
    // anything else (`zhipu/...`, `mistralai/...`, bare Bedrock ids, custom
    // names) would otherwise send its key to api.openai.com.
    let default = if has_api_base {
        "openai_compatible"
    } else if split.is_none() && model.starts_with("claude") {
        "anthropic"
    } else if split.is_none() && is_openai_model_name(model) {
        "openai"
    } else {
        let what = split.map_or_else(|| format!("model `{model}`"), |(prefix, _)| format!("provider prefix `{prefix}`"));
        return Err(format!(
            "{what} names no provider the router knows and no `api_base` is set; set `api_base` to the provider's \
             OpenAI-compatible URL (its key is sent only to a host the config names), or use a known prefix ({})",
            known_names()
        ));
    };
    let provider = provider::lookup(default).ok_or_else(|| unsupported(default))?;
    Ok((provider, model.to_string()))
}

/// OpenAI's own model families (as LiteLLM's model map lists them), which LiteLLM routes to
/// OpenAI without a prefix.
fn is_openai_model_name(model: &str) -> bool {
    const FAMILIES: &[&str] = &[
        "gpt-", "chatgpt-", "o1", "o3", "o4", "text-embedding-", "text-davinci-", "davinci-", "babbage-", "whisper-",
        "tts-", "dall-e-", "omni-moderation-", "text-moderation-", "computer-use-", "codex-",
    ];
    FAMILIES.iter().any(|f| model.starts_with(f)) && !model.starts_with("gpt-oss")
}

fn known_names() -> String {
    let mut names: Vec<&str> = provider::KNOWN_PROVIDERS.iter().map(|(n, _)| *n).collect();
    names.dedup();
    names.join(", ")
}

fn unsupported(name: &str) -> String {
    format!("provider `{name}` is not supported (it needs request translation); supported: {}", known_names())
}

fn parse_auth(params: &Section<'_>, provider: Provider, diags: &mut Diagnostics) -> Option<AuthHeader> {
    let key_path = params.field_path("api_key");
    let key = params.str("api_key", diags).filter(|k| !k.is_empty());
    if let Some(k) = key {
        if let Err(e) = auth::validate_key(k) {
            diags.error(&key_path, e);
        }
    }
    let custom_name = params.str("auth_header_name", diags);
    let custom_format = params.str("auth_header_format", diags);
    if (custom_name.is_some() || custom_format.is_some()) && provider.wire != Wire::OpenAi {
        let field = if custom_name.is_some() { "auth_header_name" } else { "auth_header_format" };
        diags.error(
            params.field_path(field),
            format!("custom auth headers are only supported for OpenAI-compatible providers, not {}", provider.name),
        );
        return None;
    }
    let name = match custom_name {
        Some(n) => match auth::validate_name(n) {
            Ok(n) => n,
            Err(e) => {
                diags.error(params.field_path("auth_header_name"), e);
                return None;
            }
        },
        None => match provider.wire {
            Wire::OpenAi => "authorization".to_string(),
            Wire::Azure => "api-key".to_string(),
            Wire::Anthropic => "x-api-key".to_string(),
        },
    };
    let format = match custom_format {
        Some(f) => {
            if let Err(e) = auth::validate_format(f) {
                diags.error(params.field_path("auth_header_format"), e);
                return None;
            }
            f
        }
        None if provider.wire == Wire::OpenAi && custom_name.is_none() => "Bearer {api_key}",
        None => "{api_key}",
    };
    let key = key?;
    Some(AuthHeader { name, value: auth::render(format, key) })
}

/// What the deployment adds to requests that do not set a key themselves, as LiteLLM sends a
/// deployment's `litellm_params` request parameters with every call (the request's own value
/// wins): those parameters, `extra_body`'s members, then `model_info.default_params` (DeltaLLM)
/// for keys neither sets.
fn request_defaults(info: &Section<'_>, params: &Section<'_>, diags: &mut Diagnostics) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |key: &str, value: &Value, path: String, diags: &mut Diagnostics| {
        if out.iter().any(|(k, _)| k == key) {
            return;
        }
        match serde_json::to_vec(value) {
            Ok(raw) => out.push((key.to_string(), raw)),
            Err(e) => diags.error(path, format!("cannot be serialized: {e}")),
        }
    };
    for key in super::schema::REQUEST_PARAMS {
        if let Some(v) = params.get(key) {
            add(key, v, params.field_path(key), diags);
        }
    }
    let extra_body = params.child("extra_body", diags);
    for section in [&extra_body, &info.child("default_params", diags)] {
        for (k, v) in section.map.into_iter().flatten() {
            if k == "model" || k == "stream" || k == "messages" {
                diags.error(section.field_path(k), "is the request's own field and cannot be set per deployment");
                continue;
            }
            add(k, v, section.field_path(k), diags);
        }
    }
    out
}

fn parse_model_info(info: &Section<'_>, params: &Section<'_>, diags: &mut Diagnostics) -> ModelInfo {
    let default_params = request_defaults(info, params, diags);
    let mut access_groups = info.string_list("access_groups", diags);
    for g in access_groups.iter_mut() {
        *g = g.to_ascii_lowercase();
    }
    let mode = info.str("mode", diags).map(str::to_string);
    if let Some(m) = mode.as_deref().filter(|m| !KNOWN_MODES.contains(m)) {
        diags.warn(info.field_path("mode"), format!("`{m}` is not a LiteLLM mode ({})", KNOWN_MODES.join(", ")));
    }
    // LiteLLM reads health_check_model from model_info; litellm_params is accepted as well.
    let hc_section = if info.get("health_check_model").is_some() { info } else { params };
    let health_check_model = match hc_section.str("health_check_model", diags) {
        Some("") => {
            diags.error(hc_section.field_path("health_check_model"), "must not be empty");
            None
        }
        other => other.map(str::to_string),
    };
    let health_check_timeout_secs = match info.non_negative("health_check_timeout", diags) {
        Some(t) if t <= 0.0 => {
            diags.error(info.field_path("health_check_timeout"), "must be > 0 (seconds)");
            None
        }
        other => other,
    };
    ModelInfo {
        mode,
        health_check_model,
        health_check_timeout_secs,
        input_cost_per_token: info
            .non_negative("input_cost_per_token", diags)
            .or_else(|| params.non_negative("input_cost_per_token", diags)),
        output_cost_per_token: info
            .non_negative("output_cost_per_token", diags)
            .or_else(|| params.non_negative("output_cost_per_token", diags)),
        max_input_tokens: info.count("max_input_tokens", diags),
        access_groups,
        default_params,
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && !id.chars().any(|c| c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse_ok(entry: Value) -> Deployment {
        let mut d = Diagnostics::default();
        let dep = parse(&entry, 0, "generated".into(), &mut d).ready();
        assert!(d.errors.is_empty(), "{:?}", d.errors);
        match dep {
            Some(dep) => dep,
            None => panic!("no deployment"),
        }
    }

    fn errors(entry: Value) -> Vec<String> {
        let mut d = Diagnostics::default();
        let dep = parse(&entry, 1, "generated".into(), &mut d);
        assert!(matches!(dep, Parsed::Invalid), "{dep:?}");
        d.errors.iter().map(|p| p.to_string()).collect()
    }

    fn skipped(entry: Value) -> Skipped {
        let mut d = Diagnostics::default();
        let dep = parse(&entry, 1, "generated".into(), &mut d);
        assert!(d.errors.is_empty(), "{:?}", d.errors);
        match dep {
            Parsed::Skipped(s) => s,
            other => panic!("not skipped: {other:?}"),
        }
    }

    #[test]
    fn openai_prefix_is_stripped_and_bearer_auth_rendered() {
        let d = parse_ok(json!({"model_name": "gpt-4o", "litellm_params": {"model": "openai/gpt-4o", "api_key": "sk-1"}}));
        assert_eq!(d.provider.name, "openai");
        assert_eq!(d.model, "gpt-4o");
        assert_eq!(d.upstream.cluster, "outbound|443||api.openai.com");
        assert_eq!(d.upstream.base_path, "/v1");
        assert_eq!(d.auth, Some(AuthHeader { name: "authorization".into(), value: "Bearer sk-1".into() }));
        assert_eq!(d.id, "generated");
    }

    #[test]
    fn prefix_splits_at_first_slash_only() {
        let d = parse_ok(json!({"model_name": "x", "litellm_params": {"model": "together_ai/meta-llama/Llama-3-8b"}}));
        assert_eq!(d.provider.name, "together_ai");
        assert_eq!(d.model, "meta-llama/Llama-3-8b");
    }

    #[test]
    fn deltallm_provider_wins_and_unknown_prefix_is_kept() {
        let d = parse_ok(json!({"model_name": "llama", "deltallm_params": {"provider": "vllm",
            "model": "meta-llama/Llama-3.1-8B-Instruct", "api_base": "https://vllm.example/v1"}}));
        assert_eq!(d.provider.name, "vllm");
        assert_eq!(d.model, "meta-llama/Llama-3.1-8B-Instruct");
        let d = parse_ok(json!({"model_name": "llama", "deltallm_params": {"provider": "vllm",
            "model": "vllm/meta-llama/Llama-3.1-8B-Instruct", "api_base": "https://vllm.example/v1"}}));
        assert_eq!(d.model, "meta-llama/Llama-3.1-8B-Instruct");
    }

    #[test]
    fn no_prefix_with_api_base_is_openai_compatible() {
        let d = parse_ok(json!({"model_name": "m", "litellm_params": {"model": "my-model", "api_base": "http://h:8000/v1"}}));
        assert_eq!(d.provider.name, "openai_compatible");
        assert_eq!(d.model, "my-model");
        assert_eq!(d.auth, None);
        let d = parse_ok(json!({"model_name": "m", "litellm_params": {"model": "claude-3-haiku", "api_key": "k"}}));
        assert_eq!(d.provider.wire, Wire::Anthropic);
        let d = parse_ok(json!({"model_name": "m", "litellm_params": {"model": "gpt-4"}}));
        assert_eq!(d.provider.name, "openai");
    }

    #[test]
    fn a_key_never_goes_to_a_host_the_config_does_not_name() {
        for model in ["novita/meta-llama/x", "litellm_proxy/gpt-4o", "zhipu/glm-4", "mistralai/mistral-large", "mycorp/x",
                      "anthropic.claude-3-sonnet-20240229-v1:0", "meta.llama3-70b-instruct-v1:0", "my-model", "gpt-oss-120b"] {
            let entry = json!({"model_name": "m", "litellm_params": {"model": model, "api_key": "secret-key"}});
            // Skipped (it never routes), not refused.
            let s = skipped(entry);
            assert_eq!(s.path, "model_list[1].litellm_params.model", "{model}");
            assert!((s.reason.contains("api_base") || s.hint.contains("api_base")) && !s.reason.contains("secret-key"), "{model}: {s:?}");
            assert_eq!(s.group, "m");
            // With an api_base the operator named the host: accepted.
            let d = parse_ok(json!({"model_name": "m", "litellm_params": {"model": model, "api_key": "k", "api_base": "https://llm.example/v1"}}));
            assert_eq!(d.upstream.authority, "llm.example");
        }
        // A LiteLLM provider without a catalogued base URL serves at its api_base, prefix stripped.
        let d = parse_ok(json!({"model_name": "m", "litellm_params": {"model": "litellm_proxy/gpt-4o", "api_base": "http://proxy:4000"}}));
        assert_eq!((d.provider.name, d.upstream.authority.as_str(), d.model.as_str()), ("litellm_proxy", "proxy:4000", "gpt-4o"));
        let d = parse_ok(json!({"model_name": "m", "litellm_params": {"model": "x", "custom_llm_provider": "novita", "api_base": "https://n.example/v3/openai"}}));
        assert_eq!((d.provider.name, d.model.as_str()), ("novita", "x"));
        // Catalogued OpenAI-compatible providers go to the host LiteLLM documents.
        let d = parse_ok(json!({"model_name": "m", "litellm_params": {"model": "nebius/meta-llama/x", "api_key": "k"}}));
        assert_eq!((d.upstream.authority.as_str(), d.model.as_str()), ("api.studio.nebius.ai", "meta-llama/x"));
        let d = parse_ok(json!({"model_name": "m", "litellm_params": {"model": "github/gpt-5-nano", "api_key": "k"}}));
        assert_eq!((d.provider.name, d.upstream.authority.as_str(), d.model.as_str()), ("github", "models.inference.ai.azure.com", "gpt-5-nano"));
        for (model, provider) in [("gpt-4o-mini", "openai"), ("o3-mini", "openai"), ("text-embedding-3-small", "openai"), ("claude-3-5-haiku", "anthropic")] {
            let d = parse_ok(json!({"model_name": "m", "litellm_params": {"model": model, "api_key": "k"}}));
            assert_eq!(d.provider.name, provider, "{model}");
        }
    }

    #[test]
    fn ollama_reaches_its_openai_compatible_v1_api() {
        for (base, path) in [("http://gpu:11434", "/v1"), ("http://gpu:11434/", "/v1"), ("http://gpu:11434/v1", "/v1"), ("http://gpu:11434/x/v1/", "/x/v1")] {
            for prefix in ["ollama", "ollama_chat"] {
                let d = parse_ok(json!({"model_name": "m", "litellm_params": {"model": format!("{prefix}/llama3"), "api_base": base}}));
                assert_eq!((d.upstream.authority.as_str(), d.upstream.base_path.as_str()), ("gpu:11434", path), "{base}");
                assert_eq!((d.model.as_str(), d.auth.as_ref()), ("llama3", None));
            }
        }
        // No api_base: LiteLLM's default, http://localhost:11434.
        let d = parse_ok(json!({"model_name": "m", "litellm_params": {"model": "ollama_chat/llama3"}}));
        assert_eq!((d.upstream.cluster.as_str(), d.upstream.base_path.as_str()), ("outbound|11434||localhost", "/v1"));
        let d = parse_ok(json!({"model_name": "m", "litellm_params": {"model": "ollama/llama3", "api_key": "k"}}));
        assert_eq!(d.auth.map(|a| a.value), Some("Bearer k".to_string()));
    }

    #[test]
    fn base_url_is_api_base_and_api_base_wins() {
        let d = parse_ok(json!({"model_name": "m", "litellm_params": {"model": "openai/x", "base_url": "https://b.example/v1"}}));
        assert_eq!((d.upstream.authority.as_str(), d.upstream.base_path.as_str()), ("b.example", "/v1"));
        let d = parse_ok(json!({"model_name": "m", "litellm_params": {"model": "mycorp/x", "base_url": "https://b.example/v1"}}));
        assert_eq!(d.provider.name, "openai_compatible");
        let mut diags = Diagnostics::default();
        let d = parse(&json!({"model_name": "m", "litellm_params": {"model": "openai/x", "api_base": "https://a.example",
            "base_url": "https://b.example"}}), 0, "x".into(), &mut diags).ready();
        assert_eq!(d.map(|d| d.upstream.authority), Some("a.example".to_string()));
        assert_eq!(diags.warnings.len(), 1, "{:?}", diags.warnings);
        assert!(diags.warnings[0].to_string().starts_with("model_list[0].litellm_params.base_url: differs from api_base"));
        let e = errors(json!({"model_name": "m", "litellm_params": {"model": "openai/x", "base_url": "nope"}}));
        assert!(e[0].starts_with("model_list[1].litellm_params.base_url: must be an absolute URL"), "{e:?}");
    }

    #[test]
    fn azure_gets_api_key_header_and_default_version() {
        let d = parse_ok(json!({"model_name": "gpt-4o", "deltallm_params": {"provider": "azure_openai",
            "model": "azure/gpt-4o-deployment", "api_key": "az", "api_base": "https://r.openai.azure.com"}}));
        assert_eq!(d.provider.wire, Wire::Azure);
        assert_eq!(d.model, "gpt-4o-deployment");
        assert_eq!(d.api_version, DEFAULT_AZURE_API_VERSION);
        assert_eq!(d.auth, Some(AuthHeader { name: "api-key".into(), value: "az".into() }));
    }

    #[test]
    fn custom_auth_header() {
        let d = parse_ok(json!({"model_name": "v", "deltallm_params": {"provider": "vllm", "model": "m",
            "api_key": "k", "api_base": "https://v/v1", "auth_header_name": "X-API-Key", "auth_header_format": "Token {api_key}"}}));
        assert_eq!(d.auth, Some(AuthHeader { name: "x-api-key".into(), value: "Token k".into() }));
        let d = parse_ok(json!({"model_name": "v", "deltallm_params": {"provider": "vllm", "model": "m",
            "api_key": "k", "api_base": "https://v/v1", "auth_header_name": "X-API-Key"}}));
        assert_eq!(d.auth.map(|a| a.value), Some("k".to_string()));
    }

    #[test]
    fn errors_name_the_field() {
        let e = errors(json!({"model_name": "v", "litellm_params": {"model": "openai/m", "api_key": "k",
            "auth_header_format": "Token"}}));
        assert_eq!(e, ["model_list[1].litellm_params.auth_header_format: must contain the placeholder {api_key}"]);
        let e = errors(json!({"model_name": "v", "litellm_params": {"model": "openai/m", "auth_header_name": "Content-Type"}}));
        assert!(e[0].starts_with("model_list[1].litellm_params.auth_header_name: `Content-Type` is a reserved header"), "{e:?}");
        let s = skipped(json!({"model_name": "v", "litellm_params": {"model": "bedrock/anthropic.claude"}}));
        assert_eq!(s.path, "model_list[1].litellm_params.model");
        assert!(s.reason.starts_with("provider `bedrock` is not supported"), "{s:?}");
        let s = skipped(json!({"model_name": "v", "litellm_params": {"model": "x", "custom_llm_provider": "sagemaker"}}));
        assert_eq!(s.path, "model_list[1].litellm_params.custom_llm_provider");
        // A skipped entry's malformed name is still an error.
        let e = errors(json!({"model_name": "", "litellm_params": {"model": "bedrock/x"}}));
        assert_eq!(e, ["model_list[1].model_name: must not be empty"]);
        let e = errors(json!({"model_name": "v", "litellm_params": {"model": "vllm/x"}}));
        assert_eq!(e, ["model_list[1].litellm_params.api_base: is required for provider vllm"]);
        let e = errors(json!({"model_name": "v", "litellm_params": {"model": "openai/x", "weight": -1}}));
        assert_eq!(e, ["model_list[1].litellm_params.weight: must be >= 0"]);
        let e = errors(json!({"litellm_params": {"model": "openai/x"}}));
        assert_eq!(e, ["model_list[1].model_name: is required"]);
        let e = errors(json!({"model_name": "x", "litellm_params": {"model": "azure/x", "api_key": "k", "api_base": "https://a", "auth_header_name": "x-k"}}));
        assert!(e[0].starts_with("model_list[1].litellm_params.auth_header_name: custom auth headers are only supported"), "{e:?}");
        let e = errors(json!({"model_name": "x", "litellm_params": {"model": "openai/x", "api_key": "a\nb"}}));
        assert!(e[0].starts_with("model_list[1].litellm_params.api_key: contains control characters"), "{e:?}");
        assert!(!e[0].contains("a\nb"));
    }

    #[test]
    fn health_check_fields_from_model_info() {
        let d = parse_ok(json!({"model_name": "openai/*", "litellm_params": {"model": "openai/*"},
            "model_info": {"mode": "embedding", "health_check_model": "openai/text-embedding-3-small", "health_check_timeout": "2.5"}}));
        assert_eq!(d.info.mode.as_deref(), Some("embedding"));
        assert_eq!(d.info.health_check_model.as_deref(), Some("openai/text-embedding-3-small"));
        assert_eq!(d.info.health_check_timeout_secs, Some(2.5));
        let d = parse_ok(json!({"model_name": "g", "litellm_params": {"model": "openai/*", "health_check_model": "gpt-4o-mini"}}));
        assert_eq!(d.info.health_check_model.as_deref(), Some("gpt-4o-mini"));
        assert_eq!((d.info.mode, d.info.health_check_timeout_secs), (None, None));
    }

    #[test]
    fn bad_health_check_fields_name_the_field() {
        let e = errors(json!({"model_name": "g", "litellm_params": {"model": "openai/x"},
            "model_info": {"health_check_model": "", "health_check_timeout": 0}}));
        assert_eq!(e, ["model_list[1].model_info.health_check_model: must not be empty",
            "model_list[1].model_info.health_check_timeout: must be > 0 (seconds)"]);
        let e = errors(json!({"model_name": "g", "litellm_params": {"model": "openai/x"}, "model_info": {"mode": 3}}));
        assert!(e[0].starts_with("model_list[1].model_info.mode: must be a string"), "{e:?}");
        let mut diags = Diagnostics::default();
        let dep = parse(&json!({"model_name": "g", "litellm_params": {"model": "openai/x"}, "model_info": {"mode": "chatty"}}), 0, "x".into(), &mut diags);
        assert!(matches!(dep, Parsed::Ready(_)));
        assert!(diags.warnings[0].to_string().starts_with("model_list[0].model_info.mode: `chatty` is not a LiteLLM mode"), "{:?}", diags.warnings);
    }

    #[test]
    fn rpm_tpm_from_entry_top_level_and_tags_merged() {
        let d = parse_ok(json!({"model_name": "g", "rpm": 10, "tpm": "1000",
            "litellm_params": {"model": "openai/x", "tags": ["a"]}, "model_info": {"tags": ["a", "b"], "id": 7,
            "default_params": {"temperature": 0.2}, "mode": "chat", "access_groups": ["Beta"]}}));
        assert_eq!((d.rpm, d.tpm), (Some(10), Some(1000)));
        assert_eq!(d.tags, ["a", "b"]);
        assert_eq!(d.id, "7");
        assert_eq!(d.info.default_params, vec![("temperature".to_string(), b"0.2".to_vec())]);
        assert_eq!(d.info.access_groups, ["beta"]);
    }
}
