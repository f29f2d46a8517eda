//! The immutable routing table: model groups, aliases and wildcard patterns, indexed once at
//! configuration time so resolving a request's model is a hash lookup (wildcards only when no
//! exact name or alias matches).

use super::deployment::{Deployment, Skipped};
use std::collections::HashMap;

/// Deployments sharing one public model name.
#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    /// Indices into [`Table::deployments`], in config order.
    pub members: Vec<usize>,
    /// Selection weight per member (same order): LiteLLM's simple-shuffle uses `weight` when any
    /// member sets it, else `rpm`, else `tpm`; members without the chosen field weigh 0; all-zero
    /// means uniform.
    pub weights: Vec<f64>,
}

/// Whether the group named `name` is a wildcard group: it serves names the client makes up
/// (`openai/*`), so what the provider says about such a name (404) is the client's doing, not
/// the deployment's. Takes the name (every deployment carries its group's), so the request
/// path needs no table lookup to ask.
pub fn is_wildcard_group(name: &str) -> bool {
    name.contains('*')
}

/// The result of resolving a requested model name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved<'a> {
    pub group: usize,
    /// For wildcard groups, the text the pattern's first `*` matched (substituted into the
    /// deployment's `model`).
    pub capture: Option<&'a str>,
}

#[derive(Debug, Clone, Default)]
pub struct Table {
    pub deployments: Vec<Deployment>,
    pub groups: Vec<Group>,
    by_name: HashMap<String, usize>,
    aliases: HashMap<String, usize>,
    /// (pattern, group), most specific first.
    wildcards: Vec<(String, usize)>,
    /// Deployment id → index, to map shared health state onto the table.
    pub ids: HashMap<String, usize>,
    /// Every key any deployment's `default_params` sets (the request scan looks for these).
    pub default_param_keys: Vec<String>,
    /// Groups whose every deployment was skipped: (name, reason of the first skipped one).
    /// Known, so a request names why (`model_not_servable`), but never routed or listed.
    unservable: Vec<(String, String)>,
    /// Aliases pointing at an unservable group → index into `unservable`.
    unservable_aliases: HashMap<String, usize>,
}

impl Table {
    /// Builds the index; `aliases` are (alias, target group) pairs already validated to exist.
    pub fn new(deployments: Vec<Deployment>) -> Table {
        let mut groups: Vec<Group> = Vec::new();
        let mut by_name: HashMap<String, usize> = HashMap::new();
        for (i, d) in deployments.iter().enumerate() {
            let g = *by_name.entry(d.group.clone()).or_insert_with(|| {
                groups.push(Group { name: d.group.clone(), members: Vec::new(), weights: Vec::new() });
                groups.len() - 1
            });
            if let Some(group) = groups.get_mut(g) {
                group.members.push(i);
            }
        }
        for group in groups.iter_mut() {
            group.weights = weights(&deployments, &group.members);
        }
        let mut wildcards: Vec<(String, usize)> =
            by_name.iter().filter(|(name, _)| name.contains('*')).map(|(n, g)| (n.clone(), *g)).collect();
        wildcards.sort_by(|(a, ga), (b, gb)| {
            let literal = |p: &str| p.len() - p.matches('*').count();
            literal(b).cmp(&literal(a)).then(a.matches('*').count().cmp(&b.matches('*').count())).then(ga.cmp(gb))
        });
        let ids = deployments.iter().enumerate().map(|(i, d)| (d.id.clone(), i)).collect();
        let mut default_param_keys: Vec<String> = Vec::new();
        for (k, _) in deployments.iter().flat_map(|d| d.info.default_params.iter()) {
            if !default_param_keys.contains(k) {
                default_param_keys.push(k.clone());
            }
        }
        Table {
            deployments,
            groups,
            by_name,
            aliases: HashMap::new(),
            wildcards,
            ids,
            default_param_keys,
            unservable: Vec::new(),
            unservable_aliases: HashMap::new(),
        }
    }

    /// Records the groups of `skipped` deployments that have no servable deployment.
    pub fn set_unservable(&mut self, skipped: &[Skipped]) {
        for s in skipped {
            if !self.by_name.contains_key(&s.group) && !self.unservable.iter().any(|(g, _)| *g == s.group) {
                self.unservable.push((s.group.clone(), s.reason.clone()));
            }
        }
    }

    /// Adds `alias` for an unservable `group`; false when `group` is not one.
    pub fn add_unservable_alias(&mut self, alias: &str, group: &str) -> bool {
        match self.unservable.iter().position(|(g, _)| g == group) {
            Some(i) => {
                self.unservable_aliases.insert(alias.to_string(), i);
                true
            }
            None => false,
        }
    }

    /// For a model [`Table::resolve`] does not find: the unservable group it names (exactly, by
    /// alias, or by wildcard pattern) and why, as (group, reason).
    pub fn unservable(&self, model: &str) -> Option<(&str, &str)> {
        let found = self
            .unservable
            .iter()
            .find(|(g, _)| g == model)
            .or_else(|| self.unservable_aliases.get(model).and_then(|&i| self.unservable.get(i)))
            .or_else(|| self.unservable.iter().find(|(g, _)| g.contains('*') && glob_capture(g, model).is_some()));
        found.map(|(g, r)| (g.as_str(), r.as_str()))
    }

    pub fn group_index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    pub fn add_alias(&mut self, alias: String, group: usize) {
        self.aliases.insert(alias, group);
    }

    /// Exact model name, then alias, then the most specific wildcard pattern.
    pub fn resolve<'m>(&self, model: &'m str) -> Option<Resolved<'m>> {
        if let Some(&group) = self.by_name.get(model) {
            return Some(Resolved { group, capture: None });
        }
        if let Some(&group) = self.aliases.get(model) {
            return Some(Resolved { group, capture: None });
        }
        self.wildcards
            .iter()
            .find_map(|(pattern, group)| glob_capture(pattern, model).map(|capture| Resolved { group: *group, capture }))
    }
}

fn weights(deployments: &[Deployment], members: &[usize]) -> Vec<f64> {
    let field = |f: &dyn Fn(&Deployment) -> Option<f64>| -> Option<Vec<f64>> {
        let values: Vec<Option<f64>> = members.iter().map(|&i| deployments.get(i).and_then(f)).collect();
        values.iter().any(Option::is_some).then(|| values.iter().map(|v| v.unwrap_or(0.0)).collect())
    };
    field(&|d| d.weight)
        .or_else(|| field(&|d| d.rpm.map(|v| v as f64)))
        .or_else(|| field(&|d| d.tpm.map(|v| v as f64)))
        .unwrap_or_else(|| vec![1.0; members.len()])
}

/// Matches `text` against a `*` glob; returns what the first `*` matched (`Some(None)`-free:
/// an empty capture is `Some("")`), or `None` when it does not match.
pub fn glob_capture<'t>(pattern: &str, text: &'t str) -> Option<Option<&'t str>> {
    let mut parts = pattern.split('*');
    let head = parts.next().unwrap_or("");
    let rest = text.strip_prefix(head)?;
    let tail: Vec<&str> = parts.collect();
    if tail.is_empty() {
        return (rest.is_empty()).then_some(None);
    }
    // The first `*` is followed by tail[0]; try every split so later literals still match.
    let first_lit = tail.first().copied().unwrap_or("");
    let remaining = tail.get(1..).unwrap_or(&[]);
    for (start, _) in rest.char_indices().chain(std::iter::once((rest.len(), ' '))) {
        let (captured, after) = rest.split_at(start);
        if let Some(after_lit) = after.strip_prefix(first_lit) {
            let ok = if remaining.is_empty() { after_lit.is_empty() } else { matches_rest(remaining, after_lit) };
            if ok {
                return Some(Some(captured));
            }
        }
    }
    None
}

/// Greedy-free match of `*lit*lit...` segments (each segment preceded by a `*`).
fn matches_rest(segments: &[&str], text: &str) -> bool {
    match segments.split_first() {
        None => true,
        Some((lit, more)) => {
            if more.is_empty() {
                return text.ends_with(lit);
            }
            let mut from = 0;
            while let Some(pos) = text.get(from..).and_then(|t| t.find(lit)) {
                let after = from + pos + lit.len();
                if matches_rest(more, text.get(after..).unwrap_or("")) {
                    return true;
                }
                from += pos + 1;
                while !text.is_char_boundary(from) {
                    from += 1;
                }
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unservable_groups_are_known_but_never_resolve() {
        let skip = |g: &str| Skipped { group: g.into(), path: "p".into(), reason: format!("why {g}"), hint: String::new() };
        let mut t = Table::new(Vec::new());
        t.set_unservable(&[skip("sm"), skip("sm"), skip("bedrock/*")]);
        assert!(t.add_unservable_alias("alias", "sm"));
        assert!(!t.add_unservable_alias("alias2", "nope"));
        assert_eq!(t.resolve("sm"), None);
        assert_eq!(t.unservable("sm"), Some(("sm", "why sm")));
        assert_eq!(t.unservable("alias"), Some(("sm", "why sm")));
        assert_eq!(t.unservable("bedrock/claude"), Some(("bedrock/*", "why bedrock/*")));
        assert_eq!(t.unservable("other"), None);
        assert!(t.groups.is_empty());
    }

    #[test]
    fn glob_captures_first_star() {
        assert_eq!(glob_capture("*", "gpt-4o"), Some(Some("gpt-4o")));
        assert_eq!(glob_capture("openai/*", "openai/gpt-4.1"), Some(Some("gpt-4.1")));
        assert_eq!(glob_capture("openai/*", "anthropic/x"), None);
        assert_eq!(glob_capture("claude-*", "claude-3-haiku"), Some(Some("3-haiku")));
        assert_eq!(glob_capture("a*b*c", "aXbYbc"), Some(Some("X")));
        assert_eq!(glob_capture("a*b*c", "aXbY"), None);
        assert_eq!(glob_capture("exact", "exact"), Some(None));
        assert_eq!(glob_capture("*-mini", "gpt-4o-mini"), Some(Some("gpt-4o")));
        assert_eq!(glob_capture("é*", "éü"), Some(Some("ü")));
    }
}
