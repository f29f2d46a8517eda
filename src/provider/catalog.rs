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
    ("vllm", p("vllm", Wire::OpenAi, None)),
    ("hosted_vllm", p("vllm", Wire::OpenAi, None)),
    ("lmstudio", p("lmstudio", Wire::OpenAi, None)),
    ("lm_studio", p("lmstudio", Wire::OpenAi, None)),
    ("ollama", p("ollama", Wire::OpenAi, None)),
    ("ollama_chat", p("ollama", Wire::OpenAi, None)),
    ("azure_ai", p("azure_ai", Wire::OpenAi, None)),
    ("openai_compatible", p("openai_compatible", Wire::OpenAi, None)),
    ("custom_openai", p("openai_compatible", Wire::OpenAi, None)),
    ("openai_like", p("openai_compatible", Wire::OpenAi, None)),
];

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
}
