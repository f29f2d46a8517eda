//! A deployment's static upstream headers: LiteLLM's `extra_headers` / `headers` maps and
//! `organization` (OpenAI's `OpenAI-Organization`), validated once at load.
//!
//! They are operator data sent to the deployment's provider only: a header the router or Envoy
//! gives meaning to (pseudo-headers, framing, `x-envoy-*` controls, the router's own
//! `x-llm-router-*`, the deployment's auth header when `api_key` sets it) cannot be set this way,
//! and values cannot carry line breaks. Values may be secrets: never put into a diagnostic.

use super::auth;
use super::fields::{kind, Section};
use super::problems::Diagnostics;
use crate::provider::Wire;
use serde_json::Value;

/// At most this many per deployment (each is one header on every routed request).
const MAX_HEADERS: usize = 32;
/// Longest value accepted (Envoy's default header limits are 60 KiB for the whole map).
const MAX_VALUE_BYTES: usize = 8 * 1024;

/// The `(lowercase name, value)` pairs to send upstream, in config order (`headers`, then
/// `extra_headers`, whose values win, then `organization`).
pub fn parse(params: &Section<'_>, wire: Wire, auth_name: Option<&str>, diags: &mut Diagnostics) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for key in ["headers", "extra_headers"] {
        let section = params.child(key, diags);
        let Some(map) = section.map else { continue };
        for (name, value) in map {
            let path = section.field_path(name);
            let value = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => {
                    diags.error(path, format!("must be a string, got {}", kind(other)));
                    continue;
                }
            };
            match check(name, &value, auth_name) {
                Ok(name) => {
                    out.retain(|(n, _)| *n != name);
                    out.push((name, value));
                }
                Err(e) => diags.error(path, e),
            }
        }
    }
    if let Some(org) = params.text("organization", diags).filter(|o| !o.is_empty()) {
        let path = params.field_path("organization");
        if wire != Wire::OpenAi {
            diags.ignored(path, "is ignored: OpenAI-Organization is only sent to OpenAI-compatible providers");
        } else if out.iter().any(|(n, _)| n == "openai-organization") {
            diags.warn(path, "is ignored: extra_headers sets OpenAI-Organization");
        } else if let Err(e) = check_value(&org) {
            diags.error(path, e);
        } else {
            out.push(("openai-organization".to_string(), org));
        }
    }
    if out.len() > MAX_HEADERS {
        diags.error(params.field_path("extra_headers"), format!("at most {MAX_HEADERS} headers per deployment"));
    }
    out
}

/// The header's lowercase name if a deployment may set it.
fn check(name: &str, value: &str, auth_name: Option<&str>) -> Result<String, String> {
    let lower = auth::validate_name(name).map_err(|e| e.replace("cannot carry the key", "is set by Envoy"))?;
    if lower.starts_with("x-envoy-") || lower.starts_with("x-llm-router-") {
        return Err(format!("`{name}` is a header Envoy or the router acts on and cannot be set per deployment"));
    }
    if auth_name == Some(lower.as_str()) {
        return Err(format!("`{name}` is the deployment's auth header, set from api_key"));
    }
    check_value(value)?;
    Ok(lower)
}

fn check_value(value: &str) -> Result<(), String> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(format!("is longer than {MAX_VALUE_BYTES} bytes"));
    }
    if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
        return Err("must not contain control characters (line breaks)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(params: Value, wire: Wire, auth: Option<&str>) -> (Vec<(String, String)>, Diagnostics) {
        let mut d = Diagnostics::default();
        let s = Section::new(Some(&params), "p", &mut d);
        (parse(&s, wire, auth, &mut d), d)
    }

    #[test]
    fn headers_then_extra_headers_then_organization_lowercased() {
        let (h, d) = run(
            json!({"headers": {"X-Team": "a", "X-Trace": 1}, "extra_headers": {"x-team": "b"}, "organization": "org-1"}),
            Wire::OpenAi,
            Some("authorization"),
        );
        assert!(d.errors.is_empty() && d.warnings.is_empty(), "{d:?}");
        let pairs: Vec<(&str, &str)> = h.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        assert_eq!(pairs, [("x-trace", "1"), ("x-team", "b"), ("openai-organization", "org-1")]);
    }

    #[test]
    fn headers_with_meaning_to_envoy_or_the_router_are_refused_without_echoing_values() {
        let (h, d) = run(
            json!({"extra_headers": {"x-envoy-max-retries": "5", "x-llm-router-cluster": "evil", ":authority": "x", "Host": "x",
                "Authorization": "Bearer sk-secret", "x-ok": "line\r\nbreak", "content-length": "1"}}),
            Wire::OpenAi,
            Some("authorization"),
        );
        assert!(h.is_empty(), "{h:?}");
        assert_eq!(d.errors.len(), 7, "{:?}", d.errors);
        assert!(d.errors.iter().all(|p| !p.reason.contains("sk-secret") && p.path.starts_with("p.extra_headers.")));
    }

    #[test]
    fn an_auth_header_without_api_key_is_the_operators_and_organization_needs_the_openai_wire() {
        let (h, d) = run(json!({"extra_headers": {"Authorization": "Bearer x"}, "organization": "o"}), Wire::Anthropic, None);
        assert_eq!(h, [("authorization".to_string(), "Bearer x".to_string())]);
        assert_eq!(d.warnings.len(), 1);
        assert!(d.warnings[0].reason.contains("only sent to OpenAI-compatible providers"));
    }
}
