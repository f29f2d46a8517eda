//! Validation with the filter's own loader, and the upstream endpoints a config sends traffic to.

use crate::env::{self, Env};
use crate::source::{Diag, Severity, Source};
use crate::value::Value;
use llm_router::config::{self, Problem, RouterConfig};

/// What secrets read as when generating config: their values are not needed (and never written);
/// only `api_base`/`cluster` references must be real, since they decide the clusters.
pub const PLACEHOLDER: &str = "llm-router-placeholder";

/// Where `os.environ/NAME` values come from while validating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvMode {
    /// As the filter will: a variable that is not set is an error.
    Strict,
    /// Unset variables read as a placeholder, except those an `api_base` or `cluster` uses.
    Placeholders,
}

#[derive(Debug)]
pub struct Validated {
    pub config: Option<RouterConfig>,
    /// The loader's errors and warnings, with positions, in file order.
    pub diags: Vec<Diag>,
    /// The variables the filter reads from its environment for this config (the loader's
    /// `env_names`: references in ignored keys and skipped deployments are not among them).
    pub env_refs: Vec<String>,
    /// Those of `env_refs` read only as the provider key of a deployment without `api_key`
    /// (the loader's `implicit_env_names`): the filter loads without them.
    pub optional_env_refs: Vec<String>,
}

/// Runs the filter's loader (`llm_router::config::load`) on the config's JSON.
pub fn validate(source: &Source, env: &Env, mode: EnvMode) -> Validated {
    let needed = env::upstream_references(&source.value);
    let lookup = |name: &str| -> Option<String> {
        match env.get(name) {
            Some(v) => Some(v),
            // One value per variable: two virtual keys (`key: os.environ/A`, `os.environ/B`), or the
            // master key and a virtual key, must not look like the same key.
            None if mode == EnvMode::Placeholders && !needed.iter().any(|n| n == name) => Some(format!("{PLACEHOLDER}-{name}")),
            None => None,
        }
    };
    let loaded = config::load(source.json().as_bytes(), &lookup);
    let convert = |p: &Problem, severity: Severity| Diag {
        severity,
        loc: source.locate(&p.path),
        field: Some(p.path.clone()),
        message: p.reason.clone(),
        kind: p.kind,
    };
    let mut diags: Vec<Diag> = loaded.diagnostics.errors.iter().map(|p| convert(p, Severity::Error)).collect();
    diags.extend(loaded.diagnostics.warnings.iter().map(|p| convert(p, Severity::Warning)));
    // An unset variable leaves `os.environ/NAME` in place, which the loader then also finds
    // invalid (e.g. "must be an absolute URL"): keep only the first problem of such a field.
    let unset: Vec<String> = diags
        .iter()
        .filter(|d| d.message.starts_with("environment variable "))
        .filter_map(|d| d.field.clone())
        .collect();
    let mut seen: Vec<String> = Vec::new();
    diags.retain(|d| match &d.field {
        Some(f) if unset.contains(f) => {
            let first = !seen.contains(f);
            seen.push(f.clone());
            first
        }
        _ => true,
    });
    if mode == EnvMode::Placeholders {
        // Only api_base/cluster references can be unset here: say why they matter.
        for d in diags.iter_mut().filter(|d| d.message.starts_with("environment variable ")) {
            let name = d.message.trim_start_matches("environment variable ").split(' ').next().unwrap_or("").to_string();
            d.message = format!(
                "environment variable {name} must be set (in the environment or with --env-file): the upstream cluster is derived from this field"
            );
        }
    }
    sort(&mut diags);
    Validated { config: loaded.config, diags, env_refs: loaded.env_names, optional_env_refs: loaded.implicit_env_names }
}

/// File order (unknown positions last), errors before warnings at the same place.
pub fn sort(diags: &mut [Diag]) {
    diags.sort_by_key(|d| match d.loc {
        Some(l) if l.line > 0 => (0, l.file, l.line, l.col),
        _ => (1, 0, 0, 0),
    });
}

/// One upstream cluster: where the filter's cluster name must lead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The cluster name the filter puts in its cluster header.
    pub cluster: String,
    /// `https` api_base: originate TLS (with SNI = host).
    pub tls: bool,
    /// Host name or IP, without IPv6 brackets.
    pub host: String,
    pub port: u16,
    /// Set explicitly with `cluster:` (not derived from api_base).
    pub explicit: bool,
    /// Ids of the deployments that use it.
    pub deployments: Vec<String>,
}

impl Endpoint {
    pub fn url(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        format!("{}://{host}:{}", if self.tls { "https" } else { "http" }, self.port)
    }

    /// Whether `host` is an IP literal (no DNS needed).
    pub fn is_ip(&self) -> bool {
        self.host.parse::<std::net::IpAddr>().is_ok()
    }
}

/// The distinct upstream clusters of a loaded config, in first-use order (from the loaded
/// deployments: `os.environ/` api_bases, `base_url` and credentials are already resolved).
pub fn endpoints(cfg: &RouterConfig, source: &Source) -> Result<Vec<Endpoint>, Vec<Diag>> {
    let entries = source.value.get("model_list").and_then(Value::as_seq).unwrap_or(&[]);
    let mut out: Vec<Endpoint> = Vec::new();
    let mut first_use: Vec<usize> = Vec::new();
    let mut errors = Vec::new();
    // Served deployments only (skipped entries have no cluster); `entry` is the model_list index.
    for dep in &cfg.table.deployments {
        let i = dep.entry;
        let Some(entry) = entries.get(i) else {
            return Err(vec![Diag::error(None, "internal: a loaded deployment has no model_list entry")]);
        };
        let section = if entry.get("litellm_params").is_some() { "litellm_params" } else { "deltallm_params" };
        let params = entry.get(section);
        let field = |k: &str| params.and_then(|p| p.get(k)).and_then(Value::as_str).filter(|s| !s.is_empty());
        let tls = dep.upstream.tls;
        let (host, port) = split_authority(&dep.upstream.authority, if tls { 443 } else { 80 });
        let ep = Endpoint {
            cluster: dep.upstream.cluster.clone(),
            tls,
            host,
            port,
            explicit: field("cluster").is_some(),
            deployments: vec![dep.id.clone()],
        };
        match out.iter_mut().position(|e| e.cluster == ep.cluster) {
            Some(j) => {
                let (Some(existing), Some(&first)) = (out.get_mut(j), first_use.get(j)) else { continue };
                if (existing.tls, &existing.host, existing.port) != (ep.tls, &ep.host, ep.port) {
                    let path = format!("model_list[{i}].{section}.{}", if ep.explicit { "cluster" } else { "api_base" });
                    errors.push(Diag {
                        severity: Severity::Error,
                        loc: source.locate(&path),
                        field: Some(path),
                        message: format!(
                            "cluster `{}` leads to {} here but to {} for model_list[{first}]; one Envoy cluster has one endpoint (use distinct `cluster` names)",
                            ep.cluster,
                            ep.url(),
                            existing.url()
                        ),
                        kind: crate::source::Kind::Problem,
                    });
                } else if !existing.deployments.contains(&dep.id) {
                    existing.deployments.push(dep.id.clone());
                }
            }
            None => {
                out.push(ep);
                first_use.push(i);
            }
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port` → (host without brackets, port).
fn split_authority(authority: &str, default_port: u16) -> (String, u16) {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']').unwrap_or((rest, ""));
        let port = after.strip_prefix(':').and_then(|p| p.parse().ok()).unwrap_or(default_port);
        return (host.to_string(), port);
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => match p.parse() {
            Ok(port) => (h.to_string(), port),
            Err(_) => (authority.to_string(), default_port),
        },
        None => (authority.to_string(), default_port),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities() {
        assert_eq!(split_authority("api.openai.com", 443), ("api.openai.com".into(), 443));
        assert_eq!(split_authority("127.0.0.1:18001", 80), ("127.0.0.1".into(), 18001));
        assert_eq!(split_authority("[::1]:8080", 80), ("::1".into(), 8080));
        assert_eq!(split_authority("[::1]", 443), ("::1".into(), 443));
    }
}
