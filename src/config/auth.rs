//! The upstream auth header of a deployment, validated and rendered once at config time.
//!
//! DeltaLLM's rules: `auth_header_format` contains exactly one `{api_key}` placeholder and no other
//! placeholder, format specifier or conversion; reserved header names are rejected. The rendered
//! value is a secret: [`AuthHeader`]'s `Debug` never prints it.

use std::fmt;

/// Header names a deployment may not claim for its key.
const RESERVED: &[&str] = &[
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "keep-alive",
    "proxy-connection",
];

/// A ready-to-send `name: value` auth header (name lowercased for HTTP/2 header maps).
#[derive(Clone, PartialEq, Eq)]
pub struct AuthHeader {
    pub name: String,
    pub value: String,
}

impl fmt::Debug for AuthHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuthHeader({}: <redacted>)", self.name)
    }
}

/// Checks a custom header name: an HTTP token, not a pseudo-header, not reserved.
pub fn validate_name(name: &str) -> Result<String, String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.starts_with(':') {
        return Err(format!("`{name}` is a pseudo-header and cannot carry the key"));
    }
    let token = name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !token {
        return Err(format!("`{name}` is not a valid HTTP header name"));
    }
    let lower = name.to_ascii_lowercase();
    if RESERVED.contains(&lower.as_str()) {
        return Err(format!("`{name}` is a reserved header and cannot carry the key"));
    }
    Ok(lower)
}

/// Checks a value template: exactly one `{api_key}`, braces otherwise only as `{{`/`}}` escapes.
pub fn validate_format(format: &str) -> Result<(), String> {
    let mut placeholders = 0;
    let mut rest = format;
    while let Some(i) = rest.find(['{', '}']) {
        let tail = rest.get(i..).unwrap_or("");
        if tail.starts_with("{{") || tail.starts_with("}}") {
            rest = tail.get(2..).unwrap_or("");
        } else if tail.starts_with("{api_key}") {
            placeholders += 1;
            rest = tail.get("{api_key}".len()..).unwrap_or("");
        } else {
            let end = tail.find('}').map_or(tail.len(), |e| e + 1);
            let bad = tail.get(..end).unwrap_or(tail);
            return Err(format!(
                "only the placeholder {{api_key}} is allowed (found `{bad}`; no other placeholders, format specifiers or conversions)"
            ));
        }
    }
    match placeholders {
        1 => Ok(()),
        0 => Err("must contain the placeholder {api_key}".into()),
        _ => Err("must contain the placeholder {api_key} exactly once".into()),
    }
}

/// Renders a validated template with the key (unescaping `{{`/`}}`).
pub fn render(format: &str, api_key: &str) -> String {
    format.replace("{api_key}", "\u{0}").replace("{{", "{").replace("}}", "}").replace('\u{0}', api_key)
}

/// A key must be a valid header value: no control characters (which would also hint at a
/// mangled secret). The message never includes the value.
pub fn validate_key(api_key: &str) -> Result<(), String> {
    if api_key.bytes().any(|b| b.is_ascii_control()) {
        return Err("contains control characters (newline, tab, ...) and cannot be sent in a header".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_rules_follow_deltallm() {
        assert!(validate_format("{api_key}").is_ok());
        assert!(validate_format("Token {api_key}").is_ok());
        assert!(validate_format("{{literal}} {api_key}").is_ok());
        assert!(validate_format("Token").is_err());
        assert!(validate_format("{api_key} {api_key}").is_err());
        assert!(validate_format("{api_key} {other}").is_err());
        assert!(validate_format("{api_key!r}").is_err());
        assert!(validate_format("{api_key:>10}").is_err());
        assert!(validate_format("{0}").is_err());
        assert!(validate_format("{api_key} }").is_err());
    }

    #[test]
    fn renders_with_escapes() {
        assert_eq!(render("Token {api_key}", "k1"), "Token k1");
        assert_eq!(render("{{x}} {api_key}", "k"), "{x} k");
    }

    #[test]
    fn names_are_tokens_and_not_reserved() {
        assert_eq!(validate_name("X-API-Key"), Ok("x-api-key".to_string()));
        assert!(validate_name("Content-Type").is_err());
        assert!(validate_name("host").is_err());
        assert!(validate_name(":authority").is_err());
        assert!(validate_name("bad header").is_err());
        assert!(validate_name("").is_err());
    }

    #[test]
    fn debug_redacts_value() {
        let h = AuthHeader { name: "authorization".into(), value: "Bearer sk-secret".into() };
        assert!(!format!("{h:?}").contains("sk-secret"));
    }
}
