//! The access policy of one config: virtual keys by hash, their teams, each key's compiled
//! grants and `/v1/models` body, all built at configure time so a request costs one SHA-256 of
//! the presented key, one hash-map lookup and a few set lookups, whatever the number of keys.
//!
//! Order of the checks, as LiteLLM runs them (`litellm/proxy/auth/user_api_key_auth.py`, then
//! `common_checks` in `auth_checks.py`): the master key (full access); else the key by hash
//! (unknown → 401); blocked key → 401; expired key (`expires` before now) → 401; its team
//! blocked → 401; then, once the model is known, the key's `models` (unless it holds
//! `all-team-models`), then the team's `models` → 401 `key_model_access_denied` /
//! `team_model_access_denied`.

use super::grant::{AccessGroups, Grant, ALL_TEAM_MODELS};
use super::hash::{key_hash, same, KeyHash};
use crate::config::keys::Identities;
use crate::config::{Alias, Diagnostics, Table};
use crate::openai::ApiError;
use crate::pipeline::auth::{is_authorized, presented, ClientCredentials};
use crate::pipeline::listing;
use std::collections::HashMap;

/// Who is calling, as the header phase established it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Caller {
    /// Neither a master key nor virtual keys are configured: the gateway is open.
    #[default]
    Open,
    /// `general_settings.master_key`: every model.
    Master,
    /// The virtual key at this index of [`Policy::keys`].
    Key(usize),
    /// A verified failover pass: its first pass was identified and checked (the client's
    /// credentials are gone from the replayed request: the router put the provider's there).
    Replay,
}

#[derive(Debug, Clone)]
pub struct Key {
    pub hash: KeyHash,
    pub alias: Option<String>,
    pub team: Option<usize>,
    /// The key's own `models` as written (for the denial message).
    pub models: Vec<String>,
    pub grant: Grant,
    /// The key's own aliases (alias, target) in the config's order, and alias → position.
    pub aliases: Vec<(String, String)>,
    alias_index: HashMap<String, usize>,
    pub expires_ms: Option<u64>,
    pub blocked: bool,
    /// Index into [`Policy::listings`].
    pub listing: usize,
    /// Attribution (`user_id`, `tags`, `metadata` as compact JSON).
    pub user_id: Option<String>,
    pub tags: Vec<String>,
    pub metadata: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Team {
    pub team_id: String,
    pub alias: Option<String>,
    pub models: Vec<String>,
    pub grant: Grant,
    pub blocked: bool,
    /// `metadata` as compact JSON (attribution).
    pub metadata: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub keys: Vec<Key>,
    pub teams: Vec<Team>,
    by_hash: HashMap<KeyHash, usize>,
    /// Distinct `/v1/models` bodies (keys with the same access share one).
    listings: Vec<Vec<u8>>,
    /// Some key has `expires`: the header phase needs the clock.
    needs_clock: bool,
}

impl Policy {
    /// Compiles `ids` against the routing table. Warns about model groups whose deployments
    /// disagree on access groups, and about `models` entries that name nothing in the config.
    pub fn build(ids: Identities, table: &Table, aliases: &[Alias], diags: &mut Diagnostics) -> Policy {
        let access = AccessGroups::from_table(table, &mut |g| {
            let Some(group) = table.groups.get(g) else { return };
            let entry = group.members.first().and_then(|&i| table.deployments.get(i)).map_or(0, |d| d.entry);
            diags.warn(
                format!("model_list[{entry}].model_info.access_groups"),
                format!("the deployments of `{}` list different access groups, so no access group grants it (give them all the same list)", group.name),
            );
        });
        let names_nothing = |m: &str| {
            !(m == "*"
                || m == super::grant::ALL_PROXY_MODELS
                || m == ALL_TEAM_MODELS
                || m.contains('*')
                || access.contains(m)
                || table.resolve(m).is_some()
                || table.unservable(m).is_some())
        };
        let teams: Vec<Team> = ids
            .teams
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                for (j, m) in t.models.iter().enumerate().filter(|(_, m)| names_nothing(m)) {
                    diags.warn(format!("teams[{i}].models[{j}]"), format!("`{m}` names no model group, alias, wildcard or access group"));
                }
                Team { grant: Grant::compile(&t.models, &access, false), team_id: t.team_id, alias: t.alias, models: t.models, blocked: t.blocked, metadata: t.metadata }
            })
            .collect();
        let mut policy = Policy { teams, ..Policy::default() };
        // JSON is UTF-8: keyed as text, a map type the table already uses.
        let mut bodies: HashMap<String, usize> = HashMap::new();
        for (i, k) in ids.keys.into_iter().enumerate() {
            for (j, m) in k.models.iter().enumerate().filter(|(_, m)| names_nothing(m)) {
                diags.warn(format!("keys[{i}].models[{j}]"), format!("`{m}` names no model group, alias, wildcard or access group"));
            }
            let mut key = Key {
                hash: k.hash,
                alias: k.alias,
                team: k.team,
                grant: Grant::compile(&k.models, &access, true),
                models: k.models,
                alias_index: k.aliases.iter().enumerate().map(|(j, (a, _))| (a.clone(), j)).collect(),
                aliases: k.aliases,
                expires_ms: k.expires_ms,
                blocked: k.blocked,
                listing: 0,
                user_id: k.user_id,
                tags: k.tags,
                metadata: k.metadata,
            };
            let body = String::from_utf8_lossy(&policy.listing_body(&key, table, aliases)).into_owned();
            key.listing = match bodies.get(&body) {
                Some(&i) => i,
                None => {
                    policy.listings.push(body.clone().into_bytes());
                    bodies.insert(body, policy.listings.len() - 1);
                    policy.listings.len() - 1
                }
            };
            policy.needs_clock |= key.expires_ms.is_some();
            policy.by_hash.insert(key.hash, policy.keys.len());
            policy.keys.push(key);
        }
        policy
    }

    /// Whether identifying a caller needs the clock (a key has `expires`).
    pub fn needs_clock(&self) -> bool {
        self.needs_clock
    }

    /// The index of the key whose hash is `hash` (constant-time confirmation of the match).
    pub fn lookup(&self, hash: &KeyHash) -> Option<usize> {
        let i = *self.by_hash.get(hash)?;
        self.keys.get(i).filter(|k| same(&k.hash, hash)).map(|_| i)
    }

    /// The caller behind the request's credentials, or the 401 LiteLLM answers.
    pub fn identify(&self, master_key: Option<&str>, creds: &ClientCredentials<'_>, now_ms: u64) -> Result<Caller, ApiError> {
        if let Some(master) = master_key {
            if is_authorized(master, creds) {
                return Ok(Caller::Master);
            }
        }
        if self.keys.is_empty() {
            return if master_key.is_some() { Err(ApiError::invalid_api_key()) } else { Ok(Caller::Open) };
        }
        let index = presented(creds).into_iter().flatten().find_map(|c| self.lookup(&key_hash(c))).ok_or_else(ApiError::invalid_api_key)?;
        let Some(key) = self.keys.get(index) else { return Err(ApiError::invalid_api_key()) };
        if key.blocked {
            return Err(ApiError::key_blocked());
        }
        if let Some(expires) = key.expires_ms.filter(|&e| e < now_ms) {
            return Err(ApiError::key_expired(&crate::config::format_time_ms(expires), &crate::config::format_time_ms(now_ms)));
        }
        if let Some(team) = key.team.and_then(|t| self.teams.get(t)).filter(|t| t.blocked) {
            return Err(ApiError::team_blocked(&team.team_id));
        }
        Ok(Caller::Key(index))
    }

    /// The model name to route: the key's own alias for `model` when it has one.
    pub fn resolve_alias<'a>(&'a self, caller: Caller, model: &'a str) -> &'a str {
        match caller {
            Caller::Key(i) => self
                .keys
                .get(i)
                .and_then(|k| k.alias_index.get(model).and_then(|&j| k.aliases.get(j)))
                .map_or(model, |(_, target)| target.as_str()),
            _ => model,
        }
    }

    /// Whether `caller` may call `model` (after aliases), which resolves to `group` (index,
    /// name) if it exists. The key's list first, then its team's, as LiteLLM checks them.
    pub fn check_model(&self, caller: Caller, model: &str, group: Option<(usize, &str)>) -> Result<(), ApiError> {
        let Caller::Key(i) = caller else { return Ok(()) };
        let Some(key) = self.keys.get(i) else { return Err(ApiError::invalid_api_key()) };
        if !key.grant.allows(model, group) {
            return Err(ApiError::model_access_denied("key", model, &key.models));
        }
        if let Some(team) = key.team.and_then(|t| self.teams.get(t)) {
            if !team.grant.allows(model, group) {
                return Err(ApiError::model_access_denied("team", model, &team.models));
            }
        }
        Ok(())
    }

    /// How log lines name a key caller: its `key_alias` (else its position in `keys`) and its
    /// team's `team_alias` (else `team_id`); never the key or its hash.
    pub fn describe(&self, caller: Caller) -> Option<String> {
        let Caller::Key(i) = caller else { return None };
        let key = self.keys.get(i)?;
        let mut out = match &key.alias {
            Some(a) => format!("key `{a}`"),
            None => format!("keys[{i}]"),
        };
        if let Some(team) = key.team.and_then(|t| self.teams.get(t)) {
            out.push_str(&format!(" (team `{}`)", team.alias.as_deref().unwrap_or(&team.team_id)));
        }
        Some(out)
    }

    /// The `/v1/models` body for a key (None: the caller sees the whole list).
    pub fn listing(&self, caller: Caller) -> Option<&[u8]> {
        let Caller::Key(i) = caller else { return None };
        self.keys.get(i).and_then(|k| self.listings.get(k.listing)).map(Vec::as_slice)
    }

    /// The key's own model list: the groups and visible router aliases it may call, its own
    /// aliases whose targets it may call, and names from its (and its team's) `models` that a
    /// wildcard group serves (`openai/gpt-4o` under `openai/*`), as LiteLLM lists a key's models.
    fn listing_body(&self, key: &Key, table: &Table, aliases: &[Alias]) -> Vec<u8> {
        let team = key.team.and_then(|t| self.teams.get(t));
        let may = |name: &str, group: Option<(usize, &str)>| key.grant.allows(name, group) && team.is_none_or(|t| t.grant.allows(name, group));
        let named = |name: &str| table.resolve(name).and_then(|r| table.groups.get(r.group).map(|g| (r.group, g.name.as_str())));
        let mut extra: Vec<(&str, usize)> = Vec::new();
        for (alias, target) in &key.aliases {
            if let Some(g) = named(target).filter(|g| may(target, Some(*g))) {
                extra.push((alias.as_str(), g.0));
            }
        }
        for m in key.models.iter().chain(team.map(|t| t.models.as_slice()).unwrap_or(&[])) {
            if m.contains('*') || table.group_index(m).is_some() {
                continue;
            }
            if let Some(g) = named(m).filter(|g| may(m, Some(*g))) {
                extra.push((m.as_str(), g.0));
            }
        }
        listing::models_body_where(table, aliases, &extra, &|name, g| {
            table.groups.get(g).is_some_and(|group| may(name, Some((g, group.name.as_str()))))
        })
    }
}
