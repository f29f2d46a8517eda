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
use std::collections::HashMap;

/// LiteLLM's name for "every model on the proxy" (`SpecialModelNames.all_proxy_models`).
pub const ALL_PROXY_MODELS: &str = "all-proxy-models";
/// LiteLLM's name for "whatever the key's team may call" (keys only).
pub const ALL_TEAM_MODELS: &str = "all-team-models";

/// Access group name (lowercase) → the model groups (table indices) it grants.
///
/// Maps here and in [`Grant`] are `HashMap<String, usize>`, the type the routing table already
/// uses: each new map type (and each sort) is several kB of wasm.
#[derive(Debug, Clone, Default)]
pub struct AccessGroups {
    /// Name → index into `members`.
    names: HashMap<String, usize>,
    members: Vec<Vec<usize>>,
}

impl AccessGroups {
    /// From the table; `disagree` receives each model group whose deployments list different
    /// access groups (its index), which is then left out of every access group.
    pub fn from_table(table: &Table, disagree: &mut dyn FnMut(usize)) -> AccessGroups {
        let mut out = AccessGroups::default();
        for (g, group) in table.groups.iter().enumerate() {
            let sets: Vec<&[String]> =
                group.members.iter().filter_map(|&i| table.deployments.get(i)).map(|d| d.info.access_groups.as_slice()).collect();
            let Some(first) = sets.first().copied() else { continue };
            // The same set (order and repeats aside) on every deployment.
            let same = |a: &[String], b: &[String]| a.iter().all(|x| b.contains(x)) && b.iter().all(|x| a.contains(x));
            if sets.iter().any(|s| !same(s, first)) {
                disagree(g);
                continue;
            }
            for name in first {
                let next = out.members.len();
                let i = *out.names.entry(name.clone()).or_insert(next);
                if i == next {
                    out.members.push(Vec::new());
                }
                if let Some(m) = out.members.get_mut(i).filter(|m| !m.contains(&g)) {
                    m.push(g);
                }
            }
        }
        out
    }

    pub fn contains(&self, name: &str) -> bool {
        self.names.contains_key(&name.to_ascii_lowercase())
    }

    fn members(&self, name: &str) -> &[usize] {
        self.names.get(&name.to_ascii_lowercase()).and_then(|&i| self.members.get(i)).map_or(&[], Vec::as_slice)
    }
}

/// What one `models` list allows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    all: bool,
    /// Exact model names (groups, aliases, or names a wildcard group serves); values unused.
    names: HashMap<String, usize>,
    /// Entries with `*`, matched against the requested name and its group's name.
    patterns: Vec<String>,
    /// Model groups granted through access groups (table indices).
    groups: Vec<usize>,
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
                for &m in access.members(e) {
                    if !g.groups.contains(&m) {
                        g.groups.push(m);
                    }
                }
            } else if e.contains('*') {
                g.patterns.push(e.clone());
            } else {
                g.names.insert(e.clone(), 0);
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
        if self.all || self.names.contains_key(requested) {
            return true;
        }
        if let Some((index, name)) = group {
            if self.groups.contains(&index) || self.names.contains_key(name) {
                return true;
            }
        }
        self.patterns.iter().any(|p| {
            glob_capture(p, requested).is_some() || group.is_some_and(|(_, name)| glob_capture(p, name).is_some())
        })
    }
}
