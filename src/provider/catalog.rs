//! The table of known providers (LiteLLM prefixes and DeltaLLM `provider` names).

/// The wire shape a provider speaks, which decides path, auth header and body handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// OpenAI's REST API: `{api_base}/chat/completions`, `Authorization: Bearer`.
    OpenAi,
    /// Azure OpenAI: `/openai/deployments/{deployment}/...?api-version=`, `api-key` header.
    Azure,
    /// Anthropic: `x-api-key` + `anthropic-version`; Messages API or its OpenAI-compatible endpoint.
    Anthropic,
}

/// One known provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Provider {
    /// Canonical name, used in logs, metrics and error messages.
    pub name: &'static str,
    pub wire: Wire,
    /// Used when the deployment has no `api_base`; `None` means `api_base` is required.
    pub default_api_base: Option<&'static str>,
}

const fn p(name: &'static str, wire: Wire, default_api_base: Option<&'static str>) -> Provider {
    Provider { name, wire, default_api_base }
}

/// Every accepted provider name or model prefix, with aliases mapping to the same entry.
pub const KNOWN_PROVIDERS: &[(&str, Provider)] = &[
    ("openai", p("openai", Wire::OpenAi, Some("https://api.openai.com/v1"))),
    ("text-completion-openai", p("openai", Wire::OpenAi, Some("https://api.openai.com/v1"))),
    ("azure", p("azure", Wire::Azure, None)),
    ("azure_openai", p("azure", Wire::Azure, None)),
    ("azure_text", p("azure", Wire::Azure, None)),
    ("anthropic", p("anthropic", Wire::Anthropic, Some("https://api.anthropic.com"))),
    ("groq", p("groq", Wire::OpenAi, Some("https://api.groq.com/openai/v1"))),
    ("together_ai", p("together_ai", Wire::OpenAi, Some("https://api.together.xyz/v1"))),
    ("together", p("together_ai", Wire::OpenAi, Some("https://api.together.xyz/v1"))),
    ("fireworks_ai", p("fireworks_ai", Wire::OpenAi, Some("https://api.fireworks.ai/inference/v1"))),
    ("fireworks", p("fireworks_ai", Wire::OpenAi, Some("https://api.fireworks.ai/inference/v1"))),
    ("deepinfra", p("deepinfra", Wire::OpenAi, Some("https://api.deepinfra.com/v1/openai"))),
    ("perplexity", p("perplexity", Wire::OpenAi, Some("https://api.perplexity.ai"))),
    ("openrouter", p("openrouter", Wire::OpenAi, Some("https://openrouter.ai/api/v1"))),
    ("mistral", p("mistral", Wire::OpenAi, Some("https://api.mistral.ai/v1"))),
    ("deepseek", p("deepseek", Wire::OpenAi, Some("https://api.deepseek.com/v1"))),
    ("xai", p("xai", Wire::OpenAi, Some("https://api.x.ai/v1"))),
    ("cerebras", p("cerebras", Wire::OpenAi, Some("https://api.cerebras.ai/v1"))),
    ("nvidia_nim", p("nvidia_nim", Wire::OpenAi, Some("https://integrate.api.nvidia.com/v1"))),
    ("sambanova", p("sambanova", Wire::OpenAi, Some("https://api.sambanova.ai/v1"))),
    ("gemini", p("gemini", Wire::OpenAi, Some("https://generativelanguage.googleapis.com/v1beta/openai"))),
    // Default bases as LiteLLM sets them (BerriAI/litellm; all OpenAI-compatible, Bearer key):
    // litellm/litellm_core_utils/get_llm_provider_logic.py `_get_openai_compatible_provider_info`
    // (commit 001a933c1c90).
    ("github", p("github", Wire::OpenAi, Some("https://models.inference.ai.azure.com"))),
    ("anyscale", p("anyscale", Wire::OpenAi, Some("https://api.endpoints.anyscale.com/v1"))),
    ("empower", p("empower", Wire::OpenAi, Some("https://app.empower.dev/api/v1"))),
    ("meta_llama", p("meta_llama", Wire::OpenAi, Some("https://api.llama.com/compat/v1"))),
    ("volcengine", p("volcengine", Wire::OpenAi, Some("https://ark.cn-beijing.volces.com/api/v3"))),
    ("codestral", p("codestral", Wire::OpenAi, Some("https://codestral.mistral.ai/v1"))),
    ("friendliai", p("friendliai", Wire::OpenAi, Some("https://api.friendli.ai/serverless/v1"))),
    ("galadriel", p("galadriel", Wire::OpenAi, Some("https://api.galadriel.com/v1"))),
    // litellm/llms/<provider>/chat/transformation.py `_get_openai_compatible_provider_info`.
    ("dashscope", p("dashscope", Wire::OpenAi, Some("https://dashscope-intl.aliyuncs.com/compatible-mode/v1"))),
    ("moonshot", p("moonshot", Wire::OpenAi, Some("https://api.moonshot.ai/v1"))),
    ("hyperbolic", p("hyperbolic", Wire::OpenAi, Some("https://api.hyperbolic.xyz/v1"))),
    ("nscale", p("nscale", Wire::OpenAi, Some("https://inference.api.nscale.com/v1"))),
    ("featherless_ai", p("featherless_ai", Wire::OpenAi, Some("https://api.featherless.ai/v1"))),
    ("lambda_ai", p("lambda_ai", Wire::OpenAi, Some("https://api.lambda.ai/v1"))),
    // litellm/constants.py `openai_compatible_endpoints`.
    ("nebius", p("nebius", Wire::OpenAi, Some("https://api.studio.nebius.ai/v1"))),
    // litellm/llms/openai_like/providers.json `base_url` (JSON-registered OpenAI-compatible providers).
    ("publicai", p("publicai", Wire::OpenAi, Some("https://api.publicai.co/v1"))),
    ("veniceai", p("veniceai", Wire::OpenAi, Some("https://api.venice.ai/api/v1"))),
    ("scaleway", p("scaleway", Wire::OpenAi, Some("https://api.scaleway.ai/v1"))),
    ("synthetic", p("synthetic", Wire::OpenAi, Some("https://api.synthetic.new/openai/v1"))),
    ("poe", p("poe", Wire::OpenAi, Some("https://api.poe.com/v1"))),
    ("chutes", p("chutes", Wire::OpenAi, Some("https://llm.chutes.ai/v1"))),
    ("nano-gpt", p("nano-gpt", Wire::OpenAi, Some("https://nano-gpt.com/api/v1"))),
    ("gmi", p("gmi", Wire::OpenAi, Some("https://api.gmi-serving.com/v1"))),
    ("vllm", p("vllm", Wire::OpenAi, None)),
    ("hosted_vllm", p("vllm", Wire::OpenAi, None)),
    ("lmstudio", p("lmstudio", Wire::OpenAi, None)),
    ("lm_studio", p("lmstudio", Wire::OpenAi, None)),
    // LiteLLM's default is http://localhost:11434 (litellm/llms/ollama/chat/transformation.py
    // `get_complete_url`; Bearer only when an api_key is set); the router does not read OLLAMA_API_BASE implicitly (write
    // `api_base: os.environ/OLLAMA_API_BASE`). The `/v1` of its OpenAI API is added at parse.
    ("ollama", p("ollama", Wire::OpenAi, Some("http://localhost:11434"))),
    ("ollama_chat", p("ollama", Wire::OpenAi, Some("http://localhost:11434"))),
    ("azure_ai", p("azure_ai", Wire::OpenAi, None)),
    ("openai_compatible", p("openai_compatible", Wire::OpenAi, None)),
    ("custom_openai", p("openai_compatible", Wire::OpenAi, None)),
    ("openai_like", p("openai_compatible", Wire::OpenAi, None)),
];

/// LiteLLM's OpenAI-compatible providers (litellm/constants.py `openai_compatible_providers`)
/// whose default base URL the router does not carry: with an `api_base` they serve there (the
/// prefix stripped, as LiteLLM sends the model); without one the deployment is skipped.
const NEEDS_API_BASE: &[Provider] = &[
    p("litellm_proxy", Wire::OpenAi, None),
    p("xinference", Wire::OpenAi, None),
    p("llamafile", Wire::OpenAi, None),
    p("novita", Wire::OpenAi, None),
];

/// A provider of [`NEEDS_API_BASE`] by name or model prefix (case-insensitive).
pub fn lookup_needing_api_base(name: &str) -> Option<Provider> {
    NEEDS_API_BASE.iter().find(|p| p.name.eq_ignore_ascii_case(name)).copied()
}

/// Looks a provider up by name or model prefix (case-insensitive).
pub fn lookup(name: &str) -> Option<Provider> {
    KNOWN_PROVIDERS
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, provider)| *provider)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_map_to_one_canonical_provider() {
        assert_eq!(lookup("azure_openai"), lookup("azure"));
        assert_eq!(lookup("Together"), lookup("together_ai"));
        assert_eq!(lookup("anthropic").map(|p| p.wire), Some(Wire::Anthropic));
        assert_eq!(lookup("bedrock"), None);
    }

    #[test]
    fn every_default_base_is_an_https_url_the_upstream_parser_takes() {
        for (name, provider) in KNOWN_PROVIDERS {
            if let Some(base) = provider.default_api_base {
                let local = provider.name == "ollama" && base == "http://localhost:11434";
                assert!((base.starts_with("https://") || local) && !base.ends_with('/'), "{name}: {base}");
            }
        }
        assert_eq!(lookup("github").and_then(|p| p.default_api_base), Some("https://models.inference.ai.azure.com"));
    }
}
