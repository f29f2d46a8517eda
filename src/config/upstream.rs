//! Where a deployment's requests go: Envoy cluster, `:authority` and base path, from `api_base`.
//!
//! The cluster defaults to Istio's ServiceEntry naming, `outbound|<port>||<host>`: the cluster a
//! ServiceEntry for the host gives an Istio gateway (`llm-router istio` emits those and the routes
//! to them); plain Envoy users either name their clusters that way or set `cluster` on the
//! deployment.

/// The parts of an `api_base` URL the router needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Envoy cluster named in the cluster header.
    pub cluster: String,
    /// `host` or `host:port` (port only when not the scheme's default).
    pub authority: String,
    /// The URL path without a trailing `/` (`/openai/v1`, or empty).
    pub base_path: String,
    /// `https`: the cluster originates TLS (the generated Envoy / Istio config reads this).
    pub tls: bool,
}

/// Parses `scheme://host[:port][/path]`; `cluster` overrides the derived cluster name.
pub fn parse(api_base: &str, cluster: Option<&str>) -> Result<Upstream, String> {
    let (scheme, rest) = api_base
        .split_once("://")
        .ok_or_else(|| "must be an absolute URL like https://host[:port][/path]".to_string())?;
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "https" => 443,
        "http" => 80,
        other => return Err(format!("unsupported URL scheme `{other}` (use http or https)")),
    };
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let (hostport, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if hostport.contains('@') {
        return Err("must not contain credentials (user:password@)".to_string());
    }
    let (host, port) = split_host_port(hostport)?;
    let port = port.unwrap_or(default_port);
    let host = host.to_ascii_lowercase();
    let authority = if port == default_port { host.clone() } else { format!("{host}:{port}") };
    let cluster = match cluster {
        Some(c) => c.to_string(),
        None => format!("outbound|{port}||{}", host.trim_start_matches('[').trim_end_matches(']')),
    };
    Ok(Upstream { cluster, authority, base_path: path.trim_end_matches('/').to_string(), tls: default_port == 443 })
}

fn split_host_port(hostport: &str) -> Result<(&str, Option<u16>), String> {
    let (host, port) = if let Some(end) = hostport.strip_prefix('[').and_then(|_| hostport.find(']')) {
        // IPv6 literal: [::1]:8080
        let (host, rest) = hostport.split_at(end + 1);
        (host, rest.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("has no valid host".to_string());
    }
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => Some(n),
            _ => return Err(format!("has an invalid port `{p}`")),
        },
    };
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(url: &str) -> Upstream {
        match parse(url, None) {
            Ok(u) => u,
            Err(e) => panic!("{url}: {e}"),
        }
    }

    #[test]
    fn derives_istio_cluster_names_with_default_ports() {
        let u = up("https://api.groq.com/openai/v1");
        assert_eq!(u.cluster, "outbound|443||api.groq.com");
        assert_eq!(u.authority, "api.groq.com");
        assert_eq!(u.base_path, "/openai/v1");
        let u = up("http://127.0.0.1:18001/v1/");
        assert_eq!(u.cluster, "outbound|18001||127.0.0.1");
        assert_eq!(u.authority, "127.0.0.1:18001");
        assert_eq!(u.base_path, "/v1");
        let u = up("http://vllm.internal");
        assert_eq!(u.cluster, "outbound|80||vllm.internal");
        assert_eq!(u.base_path, "");
        let u = up("HTTPS://Example.OpenAI.Azure.com:443/");
        assert_eq!(u.authority, "example.openai.azure.com");
    }

    #[test]
    fn explicit_cluster_wins() {
        assert_eq!(parse("https://a.b", Some("openai")).map(|u| u.cluster), Ok("openai".to_string()));
    }

    #[test]
    fn ipv6_literals() {
        let u = up("http://[::1]:8080/v1");
        assert_eq!(u.authority, "[::1]:8080");
        assert_eq!(u.cluster, "outbound|8080||::1");
    }

    #[test]
    fn rejects_bad_urls() {
        for bad in ["api.openai.com/v1", "ftp://x", "http://:80", "http://h:0", "http://h:99999", "http://u:p@h"] {
            assert!(parse(bad, None).is_err(), "{bad}");
        }
    }
}
