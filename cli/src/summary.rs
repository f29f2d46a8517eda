//! What a loaded config will serve, for `llm-router check`: the model groups and their
//! deployments, deployments per provider, the `model_list` entries that are skipped and why, the
//! settings accepted without effect, the upstream clusters and the environment variables read.
//!
//! The problem lines say what is wrong one field at a time; a config of 300 deployments can load
//! with 40 warnings and still not serve what its author thinks. This is the other view: what
//! Envoy will actually route, short enough to read (long lists are cut), and the same facts as
//! JSON for CI (`--format json`).

use crate::plan::Endpoint;
use crate::source::{Diag, Kind, Severity};
use crate::value::Value;
use llm_router::config::RouterConfig;

/// At most this many items of a list are printed in the text form (the JSON has them all).
pub const TEXT_LIMIT: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSummary {
    pub name: String,
    pub deployments: usize,
    /// The providers of its deployments, distinct, in config order.
    pub providers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedEntry {
    pub path: String,
    pub group: String,
    pub reason: String,
    pub hint: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    pub name: String,
    pub url: String,
    pub deployments: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub deployments: usize,
    pub groups: Vec<GroupSummary>,
    /// (provider, deployments), most deployments first (ties in config order).
    pub by_provider: Vec<(String, usize)>,
    pub skipped: Vec<SkippedEntry>,
    /// Field paths of the keys accepted without effect (the loader's [`Kind::Ignored`] warnings).
    pub ignored: Vec<String>,
    pub clusters: Vec<Cluster>,
    /// The variables the filter reads from its environment.
    pub env: Vec<String>,
    /// `envoy_settings.rate_limit_service` (the global mode of the keys' limits).
    pub rls: Option<Rls>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rls {
    pub cluster: String,
    pub domain: String,
    pub timeout_ms: u64,
    /// Per limit kind (rpm, tpm, parallel, budget): `open` or `closed` when it cannot answer.
    pub failure_mode: Vec<(&'static str, &'static str)>,
}

impl Rls {
    fn new(r: &llm_router::config::rate_limit_service::RateLimitService) -> Rls {
        use llm_router::cli_api::OnUnavailable;
        let mode = |m: OnUnavailable| if m == OnUnavailable::FailClosed { "closed" } else { "open" };
        let f = &r.failure_mode;
        Rls {
            cluster: r.cluster.clone(),
            domain: r.domain.clone(),
            timeout_ms: r.timeout_ms,
            failure_mode: vec![("rpm", mode(f.rpm)), ("tpm", mode(f.tpm)), ("parallel", mode(f.parallel)), ("budget", mode(f.budget))],
        }
    }
}

impl Summary {
    pub fn new(cfg: &RouterConfig, endpoints: &[Endpoint], diags: &[Diag], env: &[String]) -> Summary {
        let deps = &cfg.table.deployments;
        let groups = cfg
            .table
            .groups
            .iter()
            .map(|g| {
                let mut providers: Vec<String> = Vec::new();
                for d in g.members.iter().filter_map(|&i| deps.get(i)) {
                    if !providers.iter().any(|p| p == d.provider.name) {
                        providers.push(d.provider.name.to_string());
                    }
                }
                GroupSummary { name: g.name.clone(), deployments: g.members.len(), providers }
            })
            .collect();
        let mut by_provider: Vec<(String, usize)> = Vec::new();
        for d in deps {
            match by_provider.iter_mut().find(|(p, _)| p == d.provider.name) {
                Some((_, n)) => *n += 1,
                None => by_provider.push((d.provider.name.to_string(), 1)),
            }
        }
        // Stable: equal counts keep config order.
        by_provider.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        Summary {
            deployments: deps.len(),
            groups,
            by_provider,
            skipped: cfg
                .skipped
                .iter()
                .map(|s| SkippedEntry { path: s.path.clone(), group: s.group.clone(), reason: s.reason.clone(), hint: s.hint.clone() })
                .collect(),
            ignored: diags
                .iter()
                .filter(|d| d.severity == Severity::Warning && d.kind == Kind::Ignored)
                .filter_map(|d| d.field.clone())
                .collect(),
            clusters: endpoints.iter().map(|e| Cluster { name: e.cluster.clone(), url: e.url(), deployments: e.deployments.len() }).collect(),
            env: env.to_vec(),
            rls: cfg.envoy.rate_limit_service.as_ref().map(Rls::new),
        }
    }

    /// The text form: a few lines, each starting with `at` (the config's name), lists indented
    /// below them and cut at [`TEXT_LIMIT`] items.
    pub fn text(&self, at: &str) -> String {
        let mut t = String::new();
        match self.groups.len() {
            0 => t.push_str(&format!("{at}: serves no model group\n")),
            n => {
                t.push_str(&format!("{at}: serves {}:\n", plural(n, "model group", "model groups")));
                let lines: Vec<String> = self
                    .groups
                    .iter()
                    .map(|g| format!("{}: {} ({})", g.name, plural(g.deployments, "deployment", "deployments"), g.providers.join(", ")))
                    .collect();
                push_list(&mut t, &lines, "model groups");
            }
        }
        if !self.by_provider.is_empty() {
            let list: Vec<String> = self.by_provider.iter().map(|(p, n)| format!("{p} {n}")).collect();
            t.push_str(&format!("{at}: deployments by provider: {}\n", list.join(", ")));
        }
        if !self.skipped.is_empty() {
            t.push_str(&format!("{at}: not served, {} skipped:\n", plural(self.skipped.len(), "model_list entry", "model_list entries")));
            let lines: Vec<String> = self.skipped.iter().map(|s| format!("{} (model group {}): {}", s.path, s.group, s.reason)).collect();
            push_list(&mut t, &lines, "skipped entries");
        }
        if !self.ignored.is_empty() {
            t.push_str(&format!("{at}: accepted without effect, {} ignored:\n", plural(self.ignored.len(), "setting", "settings")));
            push_list(&mut t, &collapse(&self.ignored), "ignored settings");
        }
        if let Some(r) = &self.rls {
            let modes: Vec<String> = r.failure_mode.iter().map(|(k, m)| format!("{k} {m}")).collect();
            t.push_str(&format!(
                "{at}: rate limit service: cluster {}, domain {}, timeout {} ms; when it cannot answer: {} (its limits: `llm-router rls`)\n",
                r.cluster,
                r.domain,
                r.timeout_ms,
                modes.join(", ")
            ));
        }
        t
    }

    pub fn to_value(&self) -> Value {
        let strings = |v: &[String]| Value::seq(v.iter().map(|s| Value::from(s.as_str())));
        Value::map([
            ("deployments", Value::from(self.deployments as u64)),
            (
                "groups",
                Value::seq(self.groups.iter().map(|g| {
                    Value::map([
                        ("name", Value::from(g.name.as_str())),
                        ("deployments", Value::from(g.deployments as u64)),
                        ("providers", strings(&g.providers)),
                    ])
                })),
            ),
            ("deployments_by_provider", Value::map(self.by_provider.iter().map(|(p, n)| (p.clone(), Value::from(*n as u64))))),
            (
                "skipped",
                Value::seq(self.skipped.iter().map(|s| {
                    Value::map([
                        ("path", Value::from(s.path.as_str())),
                        ("group", Value::from(s.group.as_str())),
                        ("reason", Value::from(s.reason.as_str())),
                        ("hint", Value::from(s.hint.as_str())),
                    ])
                })),
            ),
            ("ignored", strings(&self.ignored)),
            (
                "clusters",
                Value::seq(self.clusters.iter().map(|c| {
                    Value::map([
                        ("name", Value::from(c.name.as_str())),
                        ("url", Value::from(c.url.as_str())),
                        ("deployments", Value::from(c.deployments as u64)),
                    ])
                })),
            ),
            ("env", strings(&self.env)),
            (
                "rate_limit_service",
                self.rls.as_ref().map_or(Value::Null, |r| {
                    Value::map([
                        ("cluster", Value::from(r.cluster.as_str())),
                        ("domain", Value::from(r.domain.as_str())),
                        ("timeout_ms", Value::from(r.timeout_ms)),
                        ("failure_mode", Value::map(r.failure_mode.iter().map(|(k, m)| (*k, Value::from(*m))))),
                    ])
                }),
            ),
        ])
    }
}

pub fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Indented lines, at most [`TEXT_LIMIT`], then `... and N more <what>`.
fn push_list(t: &mut String, lines: &[String], what: &str) {
    for l in lines.iter().take(TEXT_LIMIT) {
        t.push_str(&format!("  {l}\n"));
    }
    if lines.len() > TEXT_LIMIT {
        t.push_str(&format!("  ... and {} more {what}\n", lines.len() - TEXT_LIMIT));
    }
}

/// Paths that differ only in list indices read as one (`model_list[*].litellm_params.max_budget
/// (23 entries)`): a big config repeats the same ignored key on many deployments.
fn collapse(paths: &[String]) -> Vec<String> {
    // (shape, first path of that shape, count)
    let mut out: Vec<(String, &str, usize)> = Vec::new();
    for p in paths {
        let shape = without_indices(p);
        match out.iter_mut().find(|(s, _, _)| *s == shape) {
            Some((_, _, n)) => *n += 1,
            None => out.push((shape, p, 1)),
        }
    }
    out.into_iter().map(|(shape, first, n)| if n == 1 { first.to_string() } else { format!("{shape} ({n} entries)") }).collect()
}

/// `model_list[12].x[3]` → `model_list[*].x[*]`.
fn without_indices(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(open) = rest.find('[') {
        let (before, after) = rest.split_at(open);
        out.push_str(before);
        match after.find(']') {
            Some(close) if close > 1 && after.get(1..close).is_some_and(|d| d.bytes().all(|b| b.is_ascii_digit())) => {
                out.push_str("[*]");
                rest = after.get(close + 1..).unwrap_or("");
            }
            _ => {
                out.push('[');
                rest = after.get(1..).unwrap_or("");
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_collapse_and_keys_do_not() {
        assert_eq!(without_indices("model_list[12].litellm_params.max_budget"), "model_list[*].litellm_params.max_budget");
        assert_eq!(without_indices("a[1].b[22]"), "a[*].b[*]");
        assert_eq!(without_indices("a[x].b[]"), "a[x].b[]");
        let paths: Vec<String> =
            ["model_list[0].litellm_params.max_budget", "router_settings.retry_after", "model_list[3].litellm_params.max_budget"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        assert_eq!(collapse(&paths), ["model_list[*].litellm_params.max_budget (2 entries)", "router_settings.retry_after"]);
        assert_eq!(collapse(&paths[1..2]), ["router_settings.retry_after"]);
    }

    #[test]
    fn long_lists_are_cut() {
        let lines: Vec<String> = (0..TEXT_LIMIT + 3).map(|i| format!("g{i}")).collect();
        let mut t = String::new();
        push_list(&mut t, &lines, "model groups");
        assert_eq!(t.lines().count(), TEXT_LIMIT + 1);
        assert!(t.ends_with("  ... and 3 more model groups\n"), "{t}");
        let mut t = String::new();
        push_list(&mut t, &lines[..TEXT_LIMIT], "model groups");
        assert!(!t.contains("more"), "{t}");
    }
}
