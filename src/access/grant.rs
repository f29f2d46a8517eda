//! One `models` list (a key's or a team's) compiled once per config into what it allows, and the
//! request-time question "may this caller call that model" as set lookups.
//!
//! LiteLLM's rules (`_check_model_access_helper` / `_can_object_call_model` in
//! `litellm/proxy/auth/auth_checks.py`): an empty list, `*` or `all-proxy-models` allows every
//! model; an entry with `*` is a pattern over the requested name (`openai/*`); an entry that
//! names an access group allows the model groups in it; otherwise the requested name (or the
//! router alias's target, LiteLLM's `potential_models`) must be in the list. Access groups come
//! from `model_info.access_groups` (lowercased, DeltaLLM's rule); a model group whose
//! deployments disagree on their access groups gets no group expansion (DeltaLLM's rule: a
//! grant must not depend on which deployment a request lands on).

use crate::config::{glob_capture, Table};
use std::collections::{HashMap, HashSet};

/// LiteLLM's name for "every model on the proxy" (`SpecialModelNames.all_proxy_models`).
pub const ALL_PROXY_MODELS: &str = "all-proxy-models";
/// LiteLLM's name for "whatever the key's team may call" (keys only).
pub const ALL_TEAM_MODELS: &str = "all-team-models";

/// Access group name (lowercase) → the model groups (table indices) it grants.
#[derive(Debug, Clone, Default)]
pub struct AccessGroups {
    groups: HashMap<String, Vec<usize>>,
}

impl AccessGroups {
    /// From the table; `disagree` receives each model group whose deployments list different
    /// access groups (its index), which is then left out of every access group.
    pub fn from_table(table: &Table, disagree: &mut dyn FnMut(usize)) -> AccessGroups {
        let mut groups: HashMap<String, Vec<usize>> = HashMap::new();
        for (g, group) in table.groups.iter().enumerate() {
            let sets: Vec<Vec<&str>> = group
                .members
                .iter()
                .filter_map(|&i| table.deployments.get(i))
                .map(|d| {
                    let mut s: Vec<&str> = d.info.access_groups.iter().map(String::as_str).collect();
                    s.sort_unstable();
                    s.dedup();
                    s
                })
                .collect();
            let Some(first) = sets.first() else { continue };
            if sets.iter().any(|s| s != first) {
                disagree(g);
                continue;
            }
            for name in first {
                groups.entry((*name).to_string()).or_default().push(g);
            }
        }
        AccessGroups { groups }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.groups.contains_key(&name.to_ascii_lowercase())
    }

    fn members(&self, name: &str) -> &[usize] {
        self.groups.get(&name.to_ascii_lowercase()).map_or(&[], Vec::as_slice)
    }
}

/// What one `models` list allows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    all: bool,
    /// Exact model names (groups, aliases, or names a wildcard group serves).
    names: HashSet<String>,
    /// Entries with `*`, matched against the requested name and its group's name.
    patterns: Vec<String>,
    /// Model groups granted through access groups.
    groups: HashSet<usize>,
}

impl Grant {
    /// Every model.
    pub fn everything() -> Grant {
        Grant { all: true, ..Grant::default() }
    }

    /// Compiles `entries`; `all_team_models` says whether that entry means "everything" here
    /// (for a key: the team's list decides).
    pub fn compile(entries: &[String], access: &AccessGroups, all_team_models: bool) -> Grant {
        let mut g = Grant { all: entries.is_empty(), ..Grant::default() };
        for e in entries {
            if e == "*" || e == ALL_PROXY_MODELS || (all_team_models && e == ALL_TEAM_MODELS) {
                g.all = true;
            } else if access.contains(e) {
                g.groups.extend(access.members(e).iter().copied());
            } else if e.contains('*') {
                g.patterns.push(e.clone());
            } else {
                g.names.insert(e.clone());
            }
        }
        g
    }

    pub fn is_all(&self) -> bool {
        self.all
    }

    /// Whether `requested` (after the key's aliases) may be called; `group` is the model group it
    /// resolves to (index and name), if any.
    pub fn allows(&self, requested: &str, group: Option<(usize, &str)>) -> bool {
        if self.all || self.names.contains(requested) {
            return true;
        }
        if let Some((index, name)) = group {
            if self.groups.contains(&index) || self.names.contains(name) {
                return true;
            }
        }
        self.patterns.iter().any(|p| {
            glob_capture(p, requested).is_some() || group.is_some_and(|(_, name)| glob_capture(p, name).is_some())
        })
    }
}
