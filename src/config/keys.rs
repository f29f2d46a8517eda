//! `keys` and `teams`: LiteLLM's virtual keys and teams, written into the plugin config
//! (GitOps: no database on the request path), with LiteLLM's field names so an entry exported
//! from `LiteLLM_VerificationToken` / `LiteLLM_TeamTable` reads the same here.
//!
//! A key is stored only as LiteLLM stores it, the SHA-256 hex of the raw key (`token`), or read
//! raw from the VM environment (`key: os.environ/NAME`) and hashed at load; a raw key written into
//! the config is refused, so the file never holds a credential. Whatever is wrong (a token that is
//! not 64 hex digits, the same key twice, an unknown `team_id`, an `expires` that does not parse)
//! refuses the config with the field path; no message repeats a key or its hash.
//!
//! Which fields are read (rate limits included) and which are only accepted (budgets: "not
//! enforced yet") is
//! `schema.rs` (`KEY_FIELDS`, `TEAM_FIELDS`); those keys are removed before this parser runs.

use super::fields::{kind, Section};
use super::iso8601;
use super::problems::Diagnostics;
use crate::access::{key_hash, parse_hex, KeyHash};
use crate::limits::{is_none as no_duration, parse as parse_duration, usd_to_nanos, Duration};
use serde_json::Value;
use std::collections::HashMap;

/// One virtual key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    pub hash: KeyHash,
    /// `key_alias`: the name operators know the key by (logs; never the key or its hash).
    pub alias: Option<String>,
    /// Index into [`Identities::teams`].
    pub team: Option<usize>,
    /// `models`: model groups, aliases, wildcards, access groups, `all-proxy-models`,
    /// `all-team-models`; empty = every model (or the team's).
    pub models: Vec<String>,
    /// `aliases`: the key's own model names → the model they stand for, in the config's order.
    pub aliases: Vec<(String, String)>,
    /// `expires`, epoch ms.
    pub expires_ms: Option<u64>,
    pub blocked: bool,
    /// `rpm_limit`, `tpm_limit`, `max_parallel_requests` (enforced: `crate::limits::plan`).
    pub rates: Rates,
    /// `model_rpm_limit` / `model_tpm_limit` (top level or in `metadata`, as LiteLLM stores
    /// them): model name → limit, in the config's order.
    pub model_rpm: Vec<(String, u64)>,
    pub model_tpm: Vec<(String, u64)>,
    /// `model_max_parallel_requests` (in `metadata` as LiteLLM stores it, or top level).
    pub model_parallel: Vec<(String, u64)>,
    /// `max_budget` / `budget_duration` / `soft_budget` (enforced: `crate::limits::plan`).
    pub budget: Budget,
    /// `model_max_budget`: model name → its budget, in the config's order.
    pub model_budgets: Vec<(String, Budget)>,
    /// `user_id`: whose spend this is (attribution; the user's budget when the key has no team).
    pub user_id: Option<String>,
    /// `tags` (attribution).
    pub tags: Vec<String>,
    /// `metadata` as compact JSON (attribution: department, cost center, ...), at most
    /// [`MAX_METADATA_BYTES`].
    pub metadata: Option<String>,
}

/// The longest `metadata` a key or team may carry (it is copied into access-log lines).
pub const MAX_METADATA_BYTES: usize = 2048;

/// A spend budget: `max_budget` (refuse once spend reaches it), `soft_budget` (flag only), both
/// in nano-USD, over `budget_duration` (none: spend never resets).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Budget {
    pub max_nanos: Option<u64>,
    pub soft_nanos: Option<u64>,
    pub duration: Option<Duration>,
}

impl Budget {
    /// Reads `max_budget`, `soft_budget` and `budget_duration` of an entry.
    fn parse(s: &Section<'_>, diags: &mut Diagnostics) -> Budget {
        let max_nanos = s.non_negative("max_budget", diags).map(usd_to_nanos);
        let soft_nanos = s.non_negative("soft_budget", diags).map(usd_to_nanos);
        let duration = duration(s, "budget_duration", diags);
        if duration.is_some() && max_nanos.is_none() && soft_nanos.is_none() {
            diags.ignored(s.field_path("budget_duration"), "has no effect without max_budget or soft_budget");
        }
        Budget { max_nanos, soft_nanos, duration }
    }

    pub fn any(&self) -> bool {
        self.max_nanos.is_some() || self.soft_nanos.is_some()
    }
}

/// A LiteLLM duration string (`30s`, `1h`, `1d`, `30d`, `1mo`); `none`/`null`/empty: none.
fn duration(s: &Section<'_>, key: &str, diags: &mut Diagnostics) -> Option<Duration> {
    let text = s.text(key, diags)?;
    if no_duration(&text) {
        return None;
    }
    match parse_duration(text.trim()) {
        Ok(d) => Some(d),
        Err(e) => {
            diags.error(s.field_path(key), e.to_string());
            None
        }
    }
}

/// `model_max_budget`: `{model: {budget_limit: USD, time_period: "1d"}}` as LiteLLM's
/// `/key/generate` takes it, or `{model: USD}` (no window).
fn model_budgets(s: &Section<'_>, diags: &mut Diagnostics) -> Vec<(String, Budget)> {
    let mut out = Vec::new();
    let m = match s.get("model_max_budget") {
        None | Some(Value::Null) => return out,
        Some(Value::Object(m)) => m,
        Some(other) => {
            diags.error(s.field_path("model_max_budget"), format!("must be a mapping of model names to budgets, got {}", kind(other)));
            return out;
        }
    };
    let inner = s.child("model_max_budget", diags);
    for (model, v) in m {
        let budget = match v {
            Value::Object(_) => {
                let b = inner.child(model, diags);
                for k in b.keys().filter(|k| !matches!(k.as_str(), "budget_limit" | "time_period" | "max_budget" | "budget_duration")) {
                    diags.ignored(b.field_path(k), "is not used by llm-router and is ignored");
                }
                let limit = b.non_negative("budget_limit", diags).or_else(|| b.non_negative("max_budget", diags));
                let period = duration(&b, "time_period", diags).or_else(|| duration(&b, "budget_duration", diags));
                if limit.is_none() {
                    diags.error(b.field_path("budget_limit"), "is required (the model's budget in USD)");
                    continue;
                }
                Budget { max_nanos: limit.map(usd_to_nanos), soft_nanos: None, duration: period }
            }
            _ => match inner.non_negative(model, diags) {
                Some(usd) => Budget { max_nanos: Some(usd_to_nanos(usd)), soft_nanos: None, duration: None },
                None => continue,
            },
        };
        out.push((model.clone(), budget));
    }
    out
}

/// `metadata` as compact JSON (a mapping), bounded.
fn metadata(s: &Section<'_>, diags: &mut Diagnostics) -> Option<String> {
    match s.get("metadata")? {
        Value::Null => None,
        Value::Object(m) if m.is_empty() => None,
        v @ Value::Object(_) => {
            let text = v.to_string();
            if text.len() > MAX_METADATA_BYTES {
                diags.error(s.field_path("metadata"), format!("is {} bytes as JSON; at most {MAX_METADATA_BYTES} (it is copied into access-log lines)", text.len()));
                return None;
            }
            Some(text)
        }
        other => {
            diags.error(s.field_path("metadata"), format!("must be a mapping, got {}", kind(other)));
            None
        }
    }
}

/// The rate limits of a key or a team.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rates {
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub parallel: Option<u64>,
}

impl Rates {
    fn parse(s: &Section<'_>, diags: &mut Diagnostics) -> Rates {
        Rates { rpm: s.count("rpm_limit", diags), tpm: s.count("tpm_limit", diags), parallel: s.count("max_parallel_requests", diags) }
    }

    pub fn any(&self) -> bool {
        self.rpm.is_some() || self.tpm.is_some() || self.parallel.is_some()
    }
}

/// One team.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeamEntry {
    pub team_id: String,
    pub alias: Option<String>,
    pub models: Vec<String>,
    pub blocked: bool,
    pub rates: Rates,
    pub budget: Budget,
    /// `metadata` as compact JSON (attribution).
    pub metadata: Option<String>,
}

/// One user (`users[i]`): a budget shared by the user's keys that have no team (LiteLLM: a key
/// in a team spends the team's budget, not its user's personal one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEntry {
    pub user_id: String,
    pub budget: Budget,
}

/// The parsed `keys`, `teams` and `users`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identities {
    pub keys: Vec<KeyEntry>,
    pub teams: Vec<TeamEntry>,
    pub users: Vec<UserEntry>,
}

const ENV_PREFIX: &str = "os.environ/";

/// Before `os.environ/` resolution: a `key` must be an environment reference. A raw key in the
/// file is an error (the message does not repeat it).
pub fn refuse_literal_keys(root: &serde_json::Map<String, Value>, diags: &mut Diagnostics) {
    let Some(Value::Array(items)) = root.get("keys") else { return };
    for (i, item) in items.iter().enumerate() {
        if let Some(Value::String(k)) = item.get("key") {
            if !k.trim_start().starts_with(ENV_PREFIX) {
                diags.error(
                    format!("keys[{i}].key"),
                    "must be an os.environ/NAME reference: a raw key is never written into the config (or give its SHA-256 hex as `token`)",
                );
            }
        }
    }
}

/// Parses `teams` and `users`, then `keys` (keys name teams).
pub fn parse(keys: Option<&Value>, teams: Option<&Value>, users: Option<&Value>, diags: &mut Diagnostics) -> Identities {
    let teams = parse_teams(teams, diags);
    let users = parse_users(users, diags);
    let mut out = Identities { keys: Vec::new(), teams, users };
    let items = match keys {
        None | Some(Value::Null) => return out,
        Some(Value::Array(items)) => items,
        Some(other) => {
            diags.error("keys", format!("must be a list of keys, got {}", kind(other)));
            return out;
        }
    };
    let mut seen: HashMap<KeyHash, usize> = HashMap::new();
    let mut aliases: HashMap<String, usize> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("keys[{i}]");
        if !item.is_object() {
            diags.error(&path, format!("must be a mapping, got {}", kind(item)));
            continue;
        }
        let s = Section::new(Some(item), &path, diags);
        // Every field is checked even when the key itself is bad: all problems at once.
        let digest = key_digest(&s, diags);
        let duplicate = digest.and_then(|(hash, field)| seen.insert(hash, i).map(|first| (first, field)));
        if let Some((first, field)) = duplicate {
            diags.error(s.field_path(field), format!("is the same key as keys[{first}]"));
        }
        let alias = s.str("key_alias", diags).map(str::to_string);
        if let Some(a) = &alias {
            if let Some(first) = aliases.insert(a.clone(), i) {
                diags.error(s.field_path("key_alias"), format!("`{a}` is already the key_alias of keys[{first}]"));
            }
        }
        let team = s.str("team_id", diags).and_then(|id| match out.teams.iter().position(|t| t.team_id == id) {
            Some(t) => Some(t),
            None => {
                diags.error(s.field_path("team_id"), format!("team `{id}` is not defined in teams"));
                None
            }
        });
        let expires_ms = s.get("expires").and_then(|v| match v {
            Value::String(t) => iso8601::parse_ms(t).or_else(|| {
                diags.error(s.field_path("expires"), "must be an ISO 8601 time such as 2026-12-31T23:59:59Z");
                None
            }),
            other => {
                diags.error(s.field_path("expires"), format!("must be an ISO 8601 time string, got {}", kind(other)));
                None
            }
        });
        let models = s.string_list("models", diags);
        let key_aliases = string_map(&s, "aliases", diags);
        let blocked = s.bool("blocked", diags).unwrap_or(false);
        let rates = Rates::parse(&s, diags);
        let model_rpm = count_map(&s, "model_rpm_limit", diags);
        let model_tpm = count_map(&s, "model_tpm_limit", diags);
        let model_parallel = count_map(&s, "model_max_parallel_requests", diags);
        let budget = Budget::parse(&s, diags);
        let model_budgets = model_budgets(&s, diags);
        let user_id = s.text("user_id", diags).filter(|u| !u.is_empty());
        let tags = s.string_list("tags", diags);
        let metadata = metadata(&s, diags);
        let Some((hash, _)) = digest.filter(|_| duplicate.is_none()) else { continue };
        out.keys.push(KeyEntry {
            hash,
            alias,
            team,
            models,
            aliases: key_aliases,
            expires_ms,
            blocked,
            rates,
            model_rpm,
            model_tpm,
            model_parallel,
            budget,
            model_budgets,
            user_id,
            tags,
            metadata,
        });
    }
    out
}

/// The key's digest, from `token` (LiteLLM's stored hash) or `key` (resolved from the
/// environment), and which field it came from.
fn key_digest(s: &Section<'_>, diags: &mut Diagnostics) -> Option<(KeyHash, &'static str)> {
    let token = s.str("token", diags);
    let raw = s.str("key", diags);
    match (token, raw) {
        (Some(_), Some(_)) => {
            diags.error(s.field_path("token"), "set either token (the key's SHA-256 hex) or key (os.environ/NAME), not both");
            None
        }
        (Some(t), None) => match parse_hex(t.trim()) {
            Some(h) => Some((h, "token")),
            None => {
                diags.error(
                    s.field_path("token"),
                    "must be the key's SHA-256 as 64 hex digits, as LiteLLM stores it (a raw key goes in `key: os.environ/NAME`)",
                );
                None
            }
        },
        (None, Some("")) => {
            diags.error(s.field_path("key"), "is empty");
            None
        }
        // Still a reference: its variable was missing (already reported by the resolution).
        (None, Some(k)) if k.starts_with(ENV_PREFIX) => None,
        (None, Some(k)) => Some((key_hash(k), "key")),
        (None, None) => {
            diags.error(&s.path, "needs token (the key's SHA-256 hex, as LiteLLM stores it) or key (os.environ/NAME)");
            None
        }
    }
}

fn parse_teams(value: Option<&Value>, diags: &mut Diagnostics) -> Vec<TeamEntry> {
    entries(value, "teams", "team_id", diags, |team_id, s, diags| TeamEntry {
        team_id,
        alias: s.str("team_alias", diags).map(str::to_string),
        models: s.string_list("models", diags),
        blocked: s.bool("blocked", diags).unwrap_or(false),
        rates: Rates::parse(s, diags),
        budget: Budget::parse(s, diags),
        metadata: metadata(s, diags),
    })
}

fn parse_users(value: Option<&Value>, diags: &mut Diagnostics) -> Vec<UserEntry> {
    entries(value, "users", "user_id", diags, |user_id, s, diags| UserEntry { user_id, budget: Budget::parse(s, diags) })
}

/// A list of mappings (`teams`, `users`), each with a required, unique `id_field`.
fn entries<T>(
    value: Option<&Value>,
    name: &str,
    id_field: &str,
    diags: &mut Diagnostics,
    build: impl Fn(String, &Section<'_>, &mut Diagnostics) -> T,
) -> Vec<T> {
    let items = match value {
        None | Some(Value::Null) => return Vec::new(),
        Some(Value::Array(items)) => items,
        Some(other) => {
            diags.error(name, format!("must be a list of {name}, got {}", kind(other)));
            return Vec::new();
        }
    };
    let mut out = Vec::with_capacity(items.len());
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("{name}[{i}]");
        if !item.is_object() {
            diags.error(&path, format!("must be a mapping, got {}", kind(item)));
            continue;
        }
        let s = Section::new(Some(item), &path, diags);
        let Some(id) = s.text(id_field, diags).filter(|t| !t.is_empty()) else {
            diags.error(s.field_path(id_field), "is required");
            continue;
        };
        if let Some(first) = seen.get(&id) {
            diags.error(s.field_path(id_field), format!("`{id}` is already {name}[{first}]"));
            continue;
        }
        seen.insert(id.clone(), i);
        out.push(build(id, &s, diags));
    }
    out
}

/// A mapping of model names to counts (`model_rpm_limit`), in the config's order.
fn count_map(s: &Section<'_>, key: &str, diags: &mut Diagnostics) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    match s.get(key) {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            let inner = s.child(key, diags);
            for k in m.keys() {
                if let Some(n) = inner.count(k, diags) {
                    out.push((k.clone(), n));
                }
            }
        }
        Some(other) => diags.error(s.field_path(key), format!("must be a mapping of model names to limits, got {}", kind(other))),
    }
    out
}

/// A mapping of strings to strings (`aliases`), in the config's order.
fn string_map(s: &Section<'_>, key: &str, diags: &mut Diagnostics) -> Vec<(String, String)> {
    let mut out = Vec::new();
    match s.get(key) {
        None => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                match v {
                    Value::String(t) => out.push((k.clone(), t.clone())),
                    other => diags.error(format!("{}.{k}", s.field_path(key)), format!("must be a model name, got {}", kind(other))),
                }
            }
        }
        Some(other) => diags.error(s.field_path(key), format!("must be a mapping of model names, got {}", kind(other))),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const H1: &str = "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b"; // sha256("sk-1234")

    fn run(keys: Value, teams: Value) -> (Identities, Vec<String>) {
        let mut d = Diagnostics::default();
        let ids = parse(Some(&keys), Some(&teams), None, &mut d);
        (ids, d.errors.iter().map(|p| p.to_string()).collect())
    }

    #[test]
    fn rate_limits_are_read_with_field_paths_for_bad_values() {
        let (ids, errors) = run(
            json!([{"token": H1, "team_id": "t", "rpm_limit": 10, "tpm_limit": "500", "max_parallel_requests": 2,
                    "model_rpm_limit": {"gpt-4o": 3, "mini": 1}, "model_tpm_limit": {"gpt-4o": 100}}]),
            json!([{"team_id": "t", "rpm_limit": 7}]),
        );
        assert!(errors.is_empty(), "{errors:?}");
        let k = &ids.keys[0];
        assert_eq!(k.rates, Rates { rpm: Some(10), tpm: Some(500), parallel: Some(2) });
        assert_eq!(k.model_rpm, [("gpt-4o".to_string(), 3), ("mini".to_string(), 1)]);
        assert_eq!(k.model_tpm, [("gpt-4o".to_string(), 100)]);
        assert_eq!(ids.teams[0].rates, Rates { rpm: Some(7), tpm: None, parallel: None });

        let (_, errors) = run(json!([{"token": H1, "rpm_limit": -1, "tpm_limit": 1.5, "model_rpm_limit": [1], "model_tpm_limit": {"m": "x"}}]), json!([]));
        for want in ["keys[0].rpm_limit:", "keys[0].tpm_limit: must be a whole number", "keys[0].model_rpm_limit: must be a mapping", "keys[0].model_tpm_limit.m:"] {
            assert!(errors.iter().any(|e| e.starts_with(want)), "{want} not in {errors:?}");
        }
    }

    #[test]
    fn reads_litellm_fields() {
        let (ids, errors) = run(
            json!([{"token": H1, "key_alias": "finance", "team_id": "t1", "models": ["gpt-4o", "beta"],
                    "aliases": {"fast": "gpt-4o-mini"}, "expires": "2026-12-31T00:00:00Z", "blocked": false},
                   {"key": "sk-other"}]),
            json!([{"team_id": "t1", "team_alias": "Finance", "models": "gpt-4o", "blocked": "true"}]),
        );
        assert!(errors.is_empty(), "{errors:?}");
        let k = &ids.keys[0];
        assert_eq!(Some(k.hash), parse_hex(H1));
        assert_eq!((k.alias.as_deref(), k.team, k.expires_ms), (Some("finance"), Some(0), Some(1_798_675_200_000)));
        assert_eq!(k.models, ["gpt-4o", "beta"]);
        assert_eq!(k.aliases, [("fast".to_string(), "gpt-4o-mini".to_string())]);
        assert_eq!(ids.keys[1].hash, key_hash("sk-other"));
        assert_eq!(ids.teams[0], TeamEntry { team_id: "t1".into(), alias: Some("Finance".into()), models: vec!["gpt-4o".into()], blocked: true, rates: Rates::default(), budget: Budget::default(), metadata: None });
    }

    #[test]
    fn bad_values_refuse_with_the_field_path_and_never_the_key() {
        let (_, errors) = run(
            json!([
                {"token": "abc"},
                {"token": H1},
                {"key": "sk-1234"},
                {"token": H1.to_uppercase().replace('8', "9"), "team_id": "nope"},
                {"key": "sk-x", "expires": "tomorrow"},
                {"key": "sk-y", "expires": 5},
                {"key": "sk-z", "token": H1},
                {"key_alias": "lonely"},
                {"key": "sk-a", "key_alias": "dup"},
                {"key": "sk-b", "key_alias": "dup", "aliases": {"x": 1}},
                "sk-raw",
            ]),
            json!([{"team_id": "t"}, {"team_id": "t"}, {"team_alias": "no id"}]),
        );
        let want = [
            "teams[1].team_id: `t` is already teams[0]",
            "teams[2].team_id: is required",
            "keys[0].token: must be the key's SHA-256",
            "keys[2].key: is the same key as keys[1]",
            "keys[3].team_id: team `nope` is not defined in teams",
            "keys[4].expires: must be an ISO 8601 time",
            "keys[5].expires: must be an ISO 8601 time string, got a number",
            "keys[6].token: set either token",
            "keys[7]: needs token",
            "keys[9].key_alias: `dup` is already the key_alias of keys[8]",
            "keys[9].aliases.x: must be a model name",
            "keys[10]: must be a mapping, got a string",
        ];
        assert_eq!(errors.len(), want.len(), "{errors:#?}");
        for (e, w) in errors.iter().zip(want) {
            assert!(e.starts_with(w), "{e} / {w}");
            assert!(!e.contains(H1) && !e.contains("sk-1234") && !e.contains("sk-raw"), "{e}");
        }
    }

    #[test]
    fn literal_raw_keys_are_refused_before_resolution() {
        let root = json!({"keys": [{"key": "os.environ/K"}, {"key": "sk-live-123"}, {"token": H1}]});
        let mut d = Diagnostics::default();
        refuse_literal_keys(root.as_object().unwrap_or(&serde_json::Map::new()), &mut d);
        let errors: Vec<String> = d.errors.iter().map(|p| p.to_string()).collect();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with("keys[1].key: must be an os.environ/NAME reference") && !errors[0].contains("sk-live"));
    }

    #[test]
    fn budgets_users_and_attribution_fields_are_read_with_field_paths() {
        let mut d = Diagnostics::default();
        let ids = parse(
            Some(&json!([{"token": H1, "max_budget": 0.5, "soft_budget": "0.25", "budget_duration": "1mo", "user_id": "ann",
                           "tags": ["prod", "eu"], "metadata": {"department": "finance"},
                           "model_max_budget": {"gpt-4o": {"budget_limit": 0.1, "time_period": "1d"}, "mini": 0.02}}])),
            Some(&json!([{"team_id": "t", "max_budget": 10, "budget_duration": "none"}])),
            Some(&json!([{"user_id": "ann", "max_budget": 1}, {"user_id": "ann"}, {"max_budget": 1}, {"user_id": "bo", "budget_duration": "30"},
                         {"user_id": "cy", "budget_duration": "1d"}])),
            &mut d,
        );
        let errors: Vec<String> = d.errors.iter().map(|p| p.to_string()).collect();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].starts_with("users[1].user_id: `ann` is already users[0]"), "{errors:?}");
        assert!(errors[1].starts_with("users[2].user_id: is required"), "{errors:?}");
        assert!(errors[2].starts_with("users[3].budget_duration: unknown duration unit"), "{errors:?}");
        assert!(d.warnings.iter().any(|w| w.path == "users[4].budget_duration" && w.reason.starts_with("has no effect")), "{:?}", d.warnings);
        let k = &ids.keys[0];
        assert_eq!(k.budget.max_nanos, Some(500_000_000));
        assert_eq!(k.budget.soft_nanos, Some(250_000_000));
        assert_eq!(k.budget.duration, crate::limits::parse("1mo").ok());
        assert_eq!((k.user_id.as_deref(), k.tags.as_slice(), k.metadata.as_deref()), (Some("ann"), ["prod".to_string(), "eu".to_string()].as_slice(), Some(r#"{"department":"finance"}"#)));
        assert_eq!(k.model_budgets.len(), 2);
        assert_eq!(k.model_budgets[1], ("mini".to_string(), Budget { max_nanos: Some(20_000_000), soft_nanos: None, duration: None }));
        assert_eq!(ids.teams[0].budget, Budget { max_nanos: Some(10_000_000_000), soft_nanos: None, duration: None }, "`none`: never resets");
        assert_eq!(ids.users.iter().map(|u| u.user_id.as_str()).collect::<Vec<_>>(), ["ann", "bo", "cy"]);
    }

    #[test]
    fn absent_sections_are_empty_and_wrong_shapes_are_errors() {
        let mut d = Diagnostics::default();
        assert_eq!(parse(None, None, None, &mut d), Identities::default());
        assert!(d.errors.is_empty());
        let (_, errors) = run(json!({"a": 1}), json!("t"));
        assert_eq!(errors, ["teams: must be a list of teams, got a string", "keys: must be a list of keys, got a mapping"]);
    }
}
