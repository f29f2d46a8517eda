//! The table of known providers (LiteLLM prefixes and DeltaLLM `provider` names).
//!
//! Each entry also names the environment variables LiteLLM reads the provider's key from when a
//! deployment has no `api_key` ([`Provider::key_env`]): many LiteLLM configs never write one and
//! rely on `OPENAI_API_KEY`, `GROQ_API_KEY`, ... being set. The loader reads that variable the
//! same way (`config::load`), so such a config serves with the key it serves with under LiteLLM.

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
    /// The variables LiteLLM takes the key from when a (`litellm_params`) deployment has no
    /// `api_key`, in the order LiteLLM tries them (the first one set wins); empty where LiteLLM
    /// reads none.
    pub key_env: &'static [&'static str],
}

impl Provider {
    /// Servers that need no key (LiteLLM sends a stub key when the variable is unset): an unset
    /// [`Provider::key_env`] is their normal case and is not warned about.
    pub fn key_optional(&self) -> bool {
        matches!(self.name, "vllm" | "lmstudio" | "ollama" | "xinference" | "llamafile")
    }
}

const fn p(name: &'static str, wire: Wire, default_api_base: Option<&'static str>, key_env: &'static [&'static str]) -> Provider {
    Provider { name, wire, default_api_base, key_env }
}

/// Every accepted provider name or model prefix, with aliases mapping to the same entry.
///
/// Key variables (`key_env`), as LiteLLM (BerriAI/litellm) reads them when `api_key` is unset,
/// all of them in LiteLLM's order (the first one set wins):
/// - openai, text-completion-openai: litellm/main.py, the OpenAI branch of `completion`
///   (`api_key or litellm.api_key or litellm.openai_key or get_secret("OPENAI_API_KEY")`).
/// - azure: litellm/main.py, the Azure branch: `AZURE_OPENAI_API_KEY`, then `AZURE_API_KEY`.
/// - anthropic: litellm/main.py, the Anthropic branch (`os.environ.get("ANTHROPIC_API_KEY")`).
/// - openrouter: litellm/main.py, the OpenRouter branch: `OPENROUTER_API_KEY`, then `OR_API_KEY`.
/// - gemini: the Google AI Studio chat path (`_get_google_ai_studio_api_key`: `GEMINI_API_KEY`);
///   `GeminiModelInfo.get_api_key` (litellm/llms/gemini/common_utils.py) tries `GOOGLE_API_KEY`
///   first, for model listing.
/// - anyscale, empower, nvidia_nim, cerebras, sambanova, meta_llama (`LLAMA_API_KEY`), volcengine,
///   codestral, deepseek, github, galadriel, nebius, ollama (`OLLAMA_API_KEY`), novita,
///   litellm_proxy: litellm/litellm_core_utils/get_llm_provider_logic.py
///   `_get_openai_compatible_provider_info`; there too together_ai (`TOGETHER_API_KEY`, then
///   `TOGETHER_AI_API_KEY`, `TOGETHERAI_API_KEY`, `TOGETHER_AI_TOKEN`) and friendliai
///   (`FRIENDLIAI_API_KEY`, then `FRIENDLI_TOKEN`).
/// - litellm/llms/<provider>/chat/transformation.py `_get_openai_compatible_provider_info`:
///   groq, deepinfra, dashscope, moonshot, hyperbolic, lambda_ai (`LAMBDA_API_KEY`), nscale
///   (`NscaleConfig.get_api_key`), xai (`XAIModelInfo.get_api_key`), perplexity
///   (`PERPLEXITYAI_API_KEY`, then `PERPLEXITY_API_KEY`), fireworks_ai (`FIREWORKS_API_KEY`, then
///   `FIREWORKS_AI_API_KEY`, `FIREWORKSAI_API_KEY`, `FIREWORKS_AI_TOKEN`), mistral
///   (`MISTRAL_AZURE_API_KEY` "for Azure AI Mistral", then `MISTRAL_API_KEY`), featherless_ai (`FEATHERLESS_AI_API_KEY`; releases
///   before LiteLLM's fix 7d21770 read `FEATHERLESS_API_KEY`), azure_ai (`AZURE_AI_API_KEY`,
///   litellm/llms/azure_ai/chat/transformation.py), hosted_vllm (`HOSTED_VLLM_API_KEY`), lm_studio
///   (`LM_STUDIO_API_KEY`), llamafile (`LLAMAFILE_API_KEY`); xinference: litellm/main.py
///   (`XINFERENCE_API_KEY`). The last four fall back to a stub key: their servers need none.
/// - publicai, veniceai (`VENICE_AI_API_KEY`), scaleway (`SCW_SECRET_KEY`), synthetic, poe,
///   chutes, nano-gpt (`NANOGPT_API_KEY`), gmi: litellm/llms/openai_like/providers.json `api_key_env`.
/// - None: `vllm/` (LiteLLM's in-process vllm library, no HTTP key) and the router's
///   openai_compatible (a model without a known prefix, at its `api_base`; LiteLLM has no such
///   provider). LiteLLM sends `custom_openai/` through its OpenAI branch, with `OPENAI_API_KEY`:
///   the router does not send the OpenAI key to such a host unless the config says so.
pub const KNOWN_PROVIDERS: &[(&str, Provider)] = &[
    ("openai", p("openai", Wire::OpenAi, Some("https://api.openai.com/v1"), &["OPENAI_API_KEY"])),
    ("text-completion-openai", p("openai", Wire::OpenAi, Some("https://api.openai.com/v1"), &["OPENAI_API_KEY"])),
    ("azure", p("azure", Wire::Azure, None, &["AZURE_OPENAI_API_KEY", "AZURE_API_KEY"])),
    ("azure_openai", p("azure", Wire::Azure, None, &["AZURE_OPENAI_API_KEY", "AZURE_API_KEY"])),
    ("azure_text", p("azure", Wire::Azure, None, &["AZURE_OPENAI_API_KEY", "AZURE_API_KEY"])),
    ("anthropic", p("anthropic", Wire::Anthropic, Some("https://api.anthropic.com"), &["ANTHROPIC_API_KEY"])),
    ("groq", p("groq", Wire::OpenAi, Some("https://api.groq.com/openai/v1"), &["GROQ_API_KEY"])),
    ("together_ai", p("together_ai", Wire::OpenAi, Some("https://api.together.xyz/v1"), &["TOGETHER_API_KEY", "TOGETHER_AI_API_KEY", "TOGETHERAI_API_KEY", "TOGETHER_AI_TOKEN"])),
    ("together", p("together_ai", Wire::OpenAi, Some("https://api.together.xyz/v1"), &["TOGETHER_API_KEY", "TOGETHER_AI_API_KEY", "TOGETHERAI_API_KEY", "TOGETHER_AI_TOKEN"])),
    ("fireworks_ai", p("fireworks_ai", Wire::OpenAi, Some("https://api.fireworks.ai/inference/v1"), &["FIREWORKS_API_KEY", "FIREWORKS_AI_API_KEY", "FIREWORKSAI_API_KEY", "FIREWORKS_AI_TOKEN"])),
    ("fireworks", p("fireworks_ai", Wire::OpenAi, Some("https://api.fireworks.ai/inference/v1"), &["FIREWORKS_API_KEY", "FIREWORKS_AI_API_KEY", "FIREWORKSAI_API_KEY", "FIREWORKS_AI_TOKEN"])),
    ("deepinfra", p("deepinfra", Wire::OpenAi, Some("https://api.deepinfra.com/v1/openai"), &["DEEPINFRA_API_KEY"])),
    ("perplexity", p("perplexity", Wire::OpenAi, Some("https://api.perplexity.ai"), &["PERPLEXITYAI_API_KEY", "PERPLEXITY_API_KEY"])),
    ("openrouter", p("openrouter", Wire::OpenAi, Some("https://openrouter.ai/api/v1"), &["OPENROUTER_API_KEY", "OR_API_KEY"])),
    ("mistral", p("mistral", Wire::OpenAi, Some("https://api.mistral.ai/v1"), &["MISTRAL_AZURE_API_KEY", "MISTRAL_API_KEY"])),
    ("deepseek", p("deepseek", Wire::OpenAi, Some("https://api.deepseek.com/v1"), &["DEEPSEEK_API_KEY"])),
    ("xai", p("xai", Wire::OpenAi, Some("https://api.x.ai/v1"), &["XAI_API_KEY"])),
    ("cerebras", p("cerebras", Wire::OpenAi, Some("https://api.cerebras.ai/v1"), &["CEREBRAS_API_KEY"])),
    ("nvidia_nim", p("nvidia_nim", Wire::OpenAi, Some("https://integrate.api.nvidia.com/v1"), &["NVIDIA_NIM_API_KEY"])),
    ("sambanova", p("sambanova", Wire::OpenAi, Some("https://api.sambanova.ai/v1"), &["SAMBANOVA_API_KEY"])),
    ("gemini", p("gemini", Wire::OpenAi, Some("https://generativelanguage.googleapis.com/v1beta/openai"), &["GEMINI_API_KEY"])),
    // Default bases as LiteLLM sets them (BerriAI/litellm; all OpenAI-compatible, Bearer key):
    // litellm/litellm_core_utils/get_llm_provider_logic.py `_get_openai_compatible_provider_info`
    // (commit 001a933c1c90).
    ("github", p("github", Wire::OpenAi, Some("https://models.inference.ai.azure.com"), &["GITHUB_API_KEY"])),
    ("anyscale", p("anyscale", Wire::OpenAi, Some("https://api.endpoints.anyscale.com/v1"), &["ANYSCALE_API_KEY"])),
    ("empower", p("empower", Wire::OpenAi, Some("https://app.empower.dev/api/v1"), &["EMPOWER_API_KEY"])),
    ("meta_llama", p("meta_llama", Wire::OpenAi, Some("https://api.llama.com/compat/v1"), &["LLAMA_API_KEY"])),
    ("volcengine", p("volcengine", Wire::OpenAi, Some("https://ark.cn-beijing.volces.com/api/v3"), &["VOLCENGINE_API_KEY"])),
    ("codestral", p("codestral", Wire::OpenAi, Some("https://codestral.mistral.ai/v1"), &["CODESTRAL_API_KEY"])),
    ("friendliai", p("friendliai", Wire::OpenAi, Some("https://api.friendli.ai/serverless/v1"), &["FRIENDLIAI_API_KEY", "FRIENDLI_TOKEN"])),
    ("galadriel", p("galadriel", Wire::OpenAi, Some("https://api.galadriel.com/v1"), &["GALADRIEL_API_KEY"])),
    // litellm/llms/<provider>/chat/transformation.py `_get_openai_compatible_provider_info`.
    ("dashscope", p("dashscope", Wire::OpenAi, Some("https://dashscope-intl.aliyuncs.com/compatible-mode/v1"), &["DASHSCOPE_API_KEY"])),
    ("moonshot", p("moonshot", Wire::OpenAi, Some("https://api.moonshot.ai/v1"), &["MOONSHOT_API_KEY"])),
    ("hyperbolic", p("hyperbolic", Wire::OpenAi, Some("https://api.hyperbolic.xyz/v1"), &["HYPERBOLIC_API_KEY"])),
    ("nscale", p("nscale", Wire::OpenAi, Some("https://inference.api.nscale.com/v1"), &["NSCALE_API_KEY"])),
    ("featherless_ai", p("featherless_ai", Wire::OpenAi, Some("https://api.featherless.ai/v1"), &["FEATHERLESS_AI_API_KEY", "FEATHERLESS_API_KEY"])),
    ("lambda_ai", p("lambda_ai", Wire::OpenAi, Some("https://api.lambda.ai/v1"), &["LAMBDA_API_KEY"])),
    // litellm/constants.py `openai_compatible_endpoints`.
    ("nebius", p("nebius", Wire::OpenAi, Some("https://api.studio.nebius.ai/v1"), &["NEBIUS_API_KEY"])),
    // litellm/llms/openai_like/providers.json `base_url` (JSON-registered OpenAI-compatible providers).
    ("publicai", p("publicai", Wire::OpenAi, Some("https://api.publicai.co/v1"), &["PUBLICAI_API_KEY"])),
    ("veniceai", p("veniceai", Wire::OpenAi, Some("https://api.venice.ai/api/v1"), &["VENICE_AI_API_KEY"])),
    ("scaleway", p("scaleway", Wire::OpenAi, Some("https://api.scaleway.ai/v1"), &["SCW_SECRET_KEY"])),
    ("synthetic", p("synthetic", Wire::OpenAi, Some("https://api.synthetic.new/openai/v1"), &["SYNTHETIC_API_KEY"])),
    ("poe", p("poe", Wire::OpenAi, Some("https://api.poe.com/v1"), &["POE_API_KEY"])),
    ("chutes", p("chutes", Wire::OpenAi, Some("https://llm.chutes.ai/v1"), &["CHUTES_API_KEY"])),
    ("nano-gpt", p("nano-gpt", Wire::OpenAi, Some("https://nano-gpt.com/api/v1"), &["NANOGPT_API_KEY"])),
    ("gmi", p("gmi", Wire::OpenAi, Some("https://api.gmi-serving.com/v1"), &["GMI_API_KEY"])),
    ("vllm", p("vllm", Wire::OpenAi, None, &[])),
    ("hosted_vllm", p("vllm", Wire::OpenAi, None, &["HOSTED_VLLM_API_KEY"])),
    ("lmstudio", p("lmstudio", Wire::OpenAi, None, &["LM_STUDIO_API_KEY"])),
    ("lm_studio", p("lmstudio", Wire::OpenAi, None, &["LM_STUDIO_API_KEY"])),
    // LiteLLM's default is http://localhost:11434 (litellm/llms/ollama/chat/transformation.py
    // `get_complete_url`; Bearer only when an api_key is set); the router does not read OLLAMA_API_BASE implicitly (write
    // `api_base: os.environ/OLLAMA_API_BASE`). The `/v1` of its OpenAI API is added at parse.
    ("ollama", p("ollama", Wire::OpenAi, Some("http://localhost:11434"), &["OLLAMA_API_KEY"])),
    ("ollama_chat", p("ollama", Wire::OpenAi, Some("http://localhost:11434"), &["OLLAMA_API_KEY"])),
    ("azure_ai", p("azure_ai", Wire::OpenAi, None, &["AZURE_AI_API_KEY"])),
    ("openai_compatible", p("openai_compatible", Wire::OpenAi, None, &[])),
    ("custom_openai", p("openai_compatible", Wire::OpenAi, None, &[])),
    ("openai_like", p("openai_compatible", Wire::OpenAi, None, &[])),
];

/// LiteLLM's OpenAI-compatible providers (litellm/constants.py `openai_compatible_providers`)
/// whose default base URL the router does not carry: with an `api_base` they serve there (the
/// prefix stripped, as LiteLLM sends the model); without one the deployment is skipped.
const NEEDS_API_BASE: &[Provider] = &[
    p("litellm_proxy", Wire::OpenAi, None, &["LITELLM_PROXY_API_KEY"]),
    p("xinference", Wire::OpenAi, None, &["XINFERENCE_API_KEY"]),
    p("llamafile", Wire::OpenAi, None, &["LLAMAFILE_API_KEY"]),
    p("novita", Wire::OpenAi, None, &["NOVITA_API_KEY"]),
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

    #[test]
    fn key_variables_are_litellms_and_look_like_variable_names() {
        let key = |n: &str| lookup(n).or_else(|| lookup_needing_api_base(n)).map(|p| p.key_env).unwrap_or_default();
        assert_eq!(key("openai"), ["OPENAI_API_KEY"]);
        assert_eq!(key("groq"), ["GROQ_API_KEY"]);
        assert_eq!(key("anthropic"), ["ANTHROPIC_API_KEY"]);
        assert_eq!(key("azure_openai"), key("azure"));
        assert_eq!(key("azure"), ["AZURE_OPENAI_API_KEY", "AZURE_API_KEY"]);
        assert_eq!(key("mistral"), ["MISTRAL_AZURE_API_KEY", "MISTRAL_API_KEY"]);
        assert_eq!(key("together").first(), Some(&"TOGETHER_API_KEY"));
        assert_eq!(key("scaleway"), ["SCW_SECRET_KEY"]);
        assert_eq!(key("litellm_proxy"), ["LITELLM_PROXY_API_KEY"]);
        assert_eq!(key("hosted_vllm"), ["HOSTED_VLLM_API_KEY"]);
        for none in ["vllm", "openai_compatible", "custom_openai", "openai_like"] {
            assert!(key(none).is_empty(), "{none}");
        }
        let all = KNOWN_PROVIDERS.iter().map(|(_, p)| *p).chain(NEEDS_API_BASE.iter().copied());
        for provider in all {
            for var in provider.key_env {
                assert!(!var.is_empty() && var.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'), "{}: {var}", provider.name);
            }
        }
        // Aliases of one provider read the same variables.
        for (alias, provider) in KNOWN_PROVIDERS {
            let canonical = KNOWN_PROVIDERS.iter().find(|(n, _)| *n == provider.name).map(|(_, p)| p.key_env);
            if provider.name != "vllm" && provider.name != "openai_compatible" {
                assert_eq!(canonical, Some(provider.key_env), "{alias}");
            }
        }
        assert!(lookup("ollama").is_some_and(|p| p.key_optional()) && !lookup("groq").is_some_and(|p| p.key_optional()));
    }
}
