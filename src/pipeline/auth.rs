//! Gateway authentication with `general_settings.master_key`.
//!
//! Clients present the key the way OpenAI/Azure/Anthropic SDKs send theirs:
//! `Authorization: Bearer <key>`, `api-key: <key>` or `x-api-key: <key>`. The comparison runs in
//! time independent of where the first difference is.

/// The three headers a client may carry the gateway key in.
#[derive(Debug, Default, Clone, Copy)]
pub struct ClientCredentials<'a> {
    pub authorization: Option<&'a str>,
    pub api_key: Option<&'a str>,
    pub x_api_key: Option<&'a str>,
}

/// The presented keys, in LiteLLM's order: the `Authorization: Bearer` token, `api-key`,
/// `x-api-key` (trimmed; empty values are none).
pub fn presented<'a>(creds: &ClientCredentials<'a>) -> [Option<&'a str>; 3] {
    let bearer = creds.authorization.and_then(|v| {
        let v = v.trim();
        let (scheme, token) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    });
    [bearer, creds.api_key.map(str::trim), creds.x_api_key.map(str::trim)].map(|c| c.filter(|c| !c.is_empty()))
}

/// True when any presented credential equals `master_key`.
pub fn is_authorized(master_key: &str, creds: &ClientCredentials<'_>) -> bool {
    // Evaluate all candidates (no short-circuit) so timing does not reveal which header matched.
    presented(creds).iter().fold(false, |ok, c| ok | c.is_some_and(|c| constant_time_eq(c.as_bytes(), master_key.as_bytes())))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_each_header_form() {
        let k = "sk-master";
        let c = |a, b, x| ClientCredentials { authorization: a, api_key: b, x_api_key: x };
        assert!(is_authorized(k, &c(Some("Bearer sk-master"), None, None)));
        assert!(is_authorized(k, &c(Some("bearer  sk-master "), None, None)));
        assert!(is_authorized(k, &c(None, Some("sk-master"), None)));
        assert!(is_authorized(k, &c(None, None, Some("sk-master"))));
        assert!(is_authorized(k, &c(Some("Bearer wrong"), None, Some("sk-master"))));
        assert!(!is_authorized(k, &c(Some("sk-master"), None, None)));
        assert!(!is_authorized(k, &c(Some("Bearer sk-maste"), None, None)));
        assert!(!is_authorized(k, &c(Some("Bearer sk-master2"), None, None)));
        assert!(!is_authorized(k, &c(None, None, None)));
    }
}
