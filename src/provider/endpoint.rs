//! The client-facing endpoints the router handles; everything else passes through untouched.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    Responses,
    /// Anthropic's native Messages API, passed through to Anthropic deployments only.
    Messages,
}

impl Endpoint {
    /// Recognises `/v1/chat/completions` and friends (also without `/v1`); `path` has no query.
    pub fn from_path(path: &str) -> Option<Endpoint> {
        let path = path.strip_suffix('/').unwrap_or(path);
        let rest = path.strip_prefix("/v1").unwrap_or(path);
        match rest {
            "/chat/completions" => Some(Endpoint::ChatCompletions),
            "/completions" => Some(Endpoint::Completions),
            "/embeddings" => Some(Endpoint::Embeddings),
            "/responses" => Some(Endpoint::Responses),
            "/messages" if path.starts_with("/v1/") => Some(Endpoint::Messages),
            _ => None,
        }
    }

    /// The endpoint's path below an OpenAI-style base URL (`{api_base}/{suffix}`).
    pub fn suffix(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat/completions",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Responses => "responses",
            Endpoint::Messages => "messages",
        }
    }

    /// The client-facing path, for messages.
    pub fn public_path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/v1/chat/completions",
            Endpoint::Completions => "/v1/completions",
            Endpoint::Embeddings => "/v1/embeddings",
            Endpoint::Responses => "/v1/responses",
            Endpoint::Messages => "/v1/messages",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_routed_paths_with_and_without_v1() {
        assert_eq!(Endpoint::from_path("/v1/chat/completions"), Some(Endpoint::ChatCompletions));
        assert_eq!(Endpoint::from_path("/chat/completions"), Some(Endpoint::ChatCompletions));
        assert_eq!(Endpoint::from_path("/v1/embeddings/"), Some(Endpoint::Embeddings));
        assert_eq!(Endpoint::from_path("/completions"), Some(Endpoint::Completions));
        assert_eq!(Endpoint::from_path("/v1/responses"), Some(Endpoint::Responses));
        assert_eq!(Endpoint::from_path("/v1/messages"), Some(Endpoint::Messages));
        assert_eq!(Endpoint::from_path("/messages"), None);
        assert_eq!(Endpoint::from_path("/v1/models"), None);
        assert_eq!(Endpoint::from_path("/healthz"), None);
        assert_eq!(Endpoint::from_path("/v2/chat/completions"), None);
    }
}
