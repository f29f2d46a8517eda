//! Upstream `:path` for one attempt: the provider's URL layout under the deployment's api_base.

use super::{Endpoint, Wire};

/// Builds the upstream path, or `None` when the provider does not serve `endpoint`.
///
/// `base_path` is the api_base's path without a trailing `/` (e.g. `/openai/v1`, or empty);
/// `query` is the client's query string without `?` (kept for OpenAI-compatible providers,
/// replaced by `api-version` for Azure).
pub fn upstream_path(
    wire: Wire,
    base_path: &str,
    endpoint: Endpoint,
    model: &str,
    api_version: &str,
    query: &str,
) -> Option<String> {
    let mut out = match (wire, endpoint) {
        (Wire::OpenAi, Endpoint::Messages) => return None,
        (Wire::OpenAi, _) => join(base_path, endpoint.suffix()),
        (Wire::Azure, Endpoint::Messages) => return None,
        (Wire::Azure, Endpoint::Responses) => {
            return Some(format!("{}?api-version={api_version}", join(base_path, "openai/responses")));
        }
        (Wire::Azure, _) => {
            let mut rest = String::with_capacity(32 + model.len());
            rest.push_str("openai/deployments/");
            push_segment(&mut rest, model);
            rest.push('/');
            rest.push_str(endpoint.suffix());
            let path = join(base_path, &rest);
            return Some(format!("{path}?api-version={api_version}"));
        }
        (Wire::Anthropic, Endpoint::Messages) => join(anthropic_root(base_path), "v1/messages"),
        (Wire::Anthropic, Endpoint::ChatCompletions) => join(anthropic_root(base_path), "v1/chat/completions"),
        (Wire::Anthropic, _) => return None,
    };
    if !query.is_empty() {
        out.push('?');
        out.push_str(query);
    }
    Some(out)
}

/// Appends `segment` as one path segment: anything but unreserved characters is
/// percent-encoded, so a name can never add segments (`/`, `..`), a query (`?`) or a fragment.
/// The router already refuses such wildcard captures (400); this keeps the path well-formed for
/// whatever a deployment's configured name holds.
fn push_segment(out: &mut String, segment: &str) {
    match segment {
        "." => out.push_str("%2E"),
        ".." => out.push_str("%2E%2E"),
        _ => crate::percent::encode_into(segment, crate::percent::UNRESERVED, out),
    }
}

fn join(base: &str, rest: &str) -> String {
    let mut out = String::with_capacity(base.len() + rest.len() + 1);
    out.push_str(base);
    out.push('/');
    out.push_str(rest);
    out
}

/// Anthropic api_bases appear as `https://api.anthropic.com`, `.../v1` or `.../v1/messages`.
fn anthropic_root(base: &str) -> &str {
    let base = base.strip_suffix("/messages").unwrap_or(base);
    base.strip_suffix("/v1").unwrap_or(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_compatible_keeps_base_path_prefix_and_query() {
        let p = |base, ep, q| upstream_path(Wire::OpenAi, base, ep, "m", "", q);
        assert_eq!(p("/v1", Endpoint::ChatCompletions, "").as_deref(), Some("/v1/chat/completions"));
        assert_eq!(p("/openai/v1", Endpoint::Embeddings, "").as_deref(), Some("/openai/v1/embeddings"));
        assert_eq!(p("", Endpoint::Completions, "a=1").as_deref(), Some("/completions?a=1"));
        assert_eq!(p("/v1", Endpoint::Messages, ""), None);
    }

    #[test]
    fn azure_uses_deployment_path_and_api_version() {
        let p = |ep| upstream_path(Wire::Azure, "", ep, "gpt-4o-prod", "2024-10-21", "x=1");
        assert_eq!(
            p(Endpoint::ChatCompletions).as_deref(),
            Some("/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21")
        );
        assert_eq!(
            p(Endpoint::Embeddings).as_deref(),
            Some("/openai/deployments/gpt-4o-prod/embeddings?api-version=2024-10-21")
        );
        assert_eq!(p(Endpoint::Responses).as_deref(), Some("/openai/responses?api-version=2024-10-21"));
        assert_eq!(p(Endpoint::Messages), None);
    }

    #[test]
    fn azure_deployment_name_is_one_escaped_segment() {
        let p = |model| upstream_path(Wire::Azure, "", Endpoint::ChatCompletions, model, "v", "").unwrap_or_default();
        assert_eq!(p("../../../admin"), "/openai/deployments/..%2F..%2F..%2Fadmin/chat/completions?api-version=v");
        assert_eq!(p("x?api-version=evil&"), "/openai/deployments/x%3Fapi-version%3Devil%26/chat/completions?api-version=v");
        assert_eq!(p("a#b c\r\n"), "/openai/deployments/a%23b%20c%0D%0A/chat/completions?api-version=v");
        assert_eq!(p(".."), "/openai/deployments/%2E%2E/chat/completions?api-version=v");
    }

    #[test]
    fn anthropic_accepts_any_common_base_form() {
        for base in ["", "/v1", "/v1/messages"] {
            let p = upstream_path(Wire::Anthropic, base, Endpoint::Messages, "c", "", "");
            assert_eq!(p.as_deref(), Some("/v1/messages"), "base {base}");
        }
        let chat = upstream_path(Wire::Anthropic, "", Endpoint::ChatCompletions, "c", "", "");
        assert_eq!(chat.as_deref(), Some("/v1/chat/completions"));
        assert_eq!(upstream_path(Wire::Anthropic, "", Endpoint::Embeddings, "c", "", ""), None);
    }
}
