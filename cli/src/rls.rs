//! `llm-router rls`: the rate limit service's own limit configuration for every limit of a
//! config's plans (issue 13, `docs/design/global-limits.md`), as Limitador's limits file or as
//! envoyproxy/ratelimit's config.
//!
//! The filter sends one descriptor per limit, `("limit", rpm|tpm|parallel|budget)` then
//! `(api_key|team|user|model_per_key, value)`, with the values the config holds (a key's SHA-256
//! hex, never the key): `llm_router::cli_api::{kind_value, scope_entry}` name them here exactly
//! as the filter does, and `remote_limit` gives the amount (budgets in micro-USD). A limit that
//! many keys share (a team's) is written once; the order is sorted, so diffs are stable.

use crate::value::Value;
use llm_router::cli_api::{kind_rank, kind_value, remote_limit, scope_entry, Kind, Limit, Scope, Unit, Window, LIMIT_ENTRY};
use llm_router::config::RouterConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Limitador's limits file.
    Limitador,
    EnvoyRatelimit,
}

/// A parallel slot's window at the RLS, in Limitador's first-hit seconds: the filter's own
/// epoch (`limits::window::PARALLEL_EPOCH_MS`), so a slot whose release was lost comes back.
pub const PARALLEL_SECONDS: u64 = 900;
/// rpm and tpm: LiteLLM's 60 s window.
pub const RATE_SECONDS: u64 = 60;
/// A budget without `budget_duration` never resets: 10 years stands for that.
pub const NO_DURATION_SECONDS: u64 = 315_360_000;
const DAY_SECONDS: u64 = 86_400;

/// How long a budget's window is at the RLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Period {
    /// rpm and tpm: 60 s.
    Rate,
    /// max_parallel_requests: the counter's window (see [`PARALLEL_SECONDS`]).
    Parallel,
    /// A budget over `budget_duration`, in seconds (a month as 30 days).
    Seconds(u64),
    /// A budget without `budget_duration`.
    Forever,
}

/// One limit as the RLS counts it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    /// Sort key: the plan's kind order (parallel, rpm, tpm, budget).
    rank: u8,
    pub kind: &'static str,
    pub scope_key: &'static str,
    pub scope_value: String,
    /// In the RLS's unit (`remote_limit`: micro-USD for budgets).
    pub max: u64,
    pub period: Period,
    /// Who the limit belongs to and the config field it comes from (for refusals).
    pub owner: String,
    pub field: &'static str,
}

fn seconds(value: u32, unit: Unit) -> u64 {
    let per = match unit {
        Unit::Seconds => 1,
        Unit::Minutes => 60,
        Unit::Hours => 3_600,
        Unit::Days => DAY_SECONDS,
        Unit::Weeks => 7 * DAY_SECONDS,
        Unit::Months => 30 * DAY_SECONDS,
    };
    u64::from(value).saturating_mul(per)
}

/// The owner (`key <hash>`, `team eng`, ...) and config field of a limit.
fn origin(l: &Limit) -> (String, &'static str) {
    let owner = match &l.scope {
        Scope::Key(k) => format!("key {k}"),
        Scope::Team(t) => format!("team {t}"),
        Scope::User(u) => format!("user {u}"),
        Scope::KeyModel { key, model } => format!("key {key} model {model}"),
    };
    let per_model = matches!(l.scope, Scope::KeyModel { .. });
    let field = match (l.kind, per_model) {
        (Kind::Requests, false) => "rpm_limit",
        (Kind::Tokens, false) => "tpm_limit",
        (Kind::Parallel, false) => "max_parallel_requests",
        (Kind::Budget, false) => "max_budget",
        (Kind::Requests, true) => "model_rpm_limit",
        (Kind::Tokens, true) => "model_tpm_limit",
        (Kind::Parallel, true) => "model_max_parallel_requests",
        (Kind::Budget, true) => "model_max_budget",
    };
    (owner, field)
}

/// Every limit of every key's plans, deduplicated and sorted. A budget with only a
/// `soft_budget` (no maximum) has nothing to enforce and is left out.
pub fn entries(cfg: &RouterConfig) -> Vec<Entry> {
    let mut out: Vec<Entry> = cfg
        .limits
        .keys
        .iter()
        .flat_map(|k| k.base.iter().chain(k.per_model.iter().flat_map(|(_, l)| l.iter())))
        .filter(|l| !(l.kind == Kind::Budget && l.limit == u64::MAX))
        .map(|l| {
            let (scope_key, scope_value) = scope_entry(&l.scope);
            let period = match (l.kind, l.window) {
                (Kind::Requests | Kind::Tokens, _) => Period::Rate,
                (Kind::Parallel, _) => Period::Parallel,
                (Kind::Budget, Window::Calendar(d)) => Period::Seconds(seconds(d.value, d.unit)),
                (Kind::Budget, _) => Period::Forever,
            };
            let (owner, field) = origin(l);
            Entry { rank: kind_rank(l.kind), kind: kind_value(l.kind), scope_key, scope_value, max: remote_limit(l), period, owner, field }
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// `s` as a CEL string literal in single quotes: `\`, `'` and control characters escaped.
pub fn cel_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// The CEL condition `descriptors[0]['<key>'] == '<value>'`.
fn condition(key: &str, value: &str) -> String {
    format!("descriptors[0][{}] == {}", cel_string(key), cel_string(value))
}

/// Limitador's limits file: one limit per entry, counted in first-hit windows of `seconds`.
pub fn limitador(domain: &str, entries: &[Entry]) -> Value {
    Value::seq(entries.iter().map(|e| {
        let seconds = match e.period {
            Period::Rate => RATE_SECONDS,
            Period::Parallel => PARALLEL_SECONDS,
            Period::Seconds(s) => s,
            Period::Forever => NO_DURATION_SECONDS,
        };
        Value::map([
            ("namespace", Value::from(domain)),
            ("name", Value::from(format!("{}.{}.{}", e.kind, e.scope_key, e.scope_value))),
            ("max_value", Value::from(e.max)),
            ("seconds", Value::from(seconds)),
            ("conditions", Value::seq([Value::from(condition(LIMIT_ENTRY, e.kind)), Value::from(condition(e.scope_key, &e.scope_value))])),
            ("variables", Value::seq([])),
        ])
    }))
}

/// The header comment of the Limitador file.
pub fn limitador_header(config: &str, domain: &str) -> String {
    format!(
        "# Limitador limits file for llm-router's global limits, generated by `llm-router rls --format limitador` from {config}.\n\
         # Regenerate it when the config changes. namespace = the RLS domain ({domain}).\n\
         # max_value: requests (rpm), tokens (tpm), requests in flight (parallel), micro-USD (budget).\n\
         # seconds: rpm/tpm {RATE_SECONDS}; parallel {PARALLEL_SECONDS} (the filter's slot epoch: a lost release comes back);\n\
         # budgets: budget_duration in seconds, a month (mo) counted as 30 days; a budget without budget_duration\n\
         # {NO_DURATION_SECONDS} (10 years: it never resets). Limitador's windows start at the first hit, not on the calendar.\n\
         # Budgets with only a soft_budget have no maximum and are not listed.\n\
         # For llm-router-rls (tools/rls), which matches each descriptor of a request on its own. Stock limitador-server\n\
         # binds all of a request's descriptors as one list, so there descriptors[0] is only the request's first limit.\n"
    )
}

/// envoyproxy/ratelimit's unit for a period, if it is exactly one unit.
fn unit(period: Period) -> Option<&'static str> {
    match period {
        Period::Rate => Some("minute"),
        Period::Parallel => Some("hour"),
        Period::Forever => Some("year"),
        Period::Seconds(s) => match s {
            1 => Some("second"),
            60 => Some("minute"),
            3_600 => Some("hour"),
            DAY_SECONDS => Some("day"),
            604_800 => Some("week"),
            2_592_000 => Some("month"),
            31_536_000 => Some("year"),
            _ => None,
        },
    }
}

/// envoyproxy/ratelimit's config: per kind one `limit` descriptor holding its scopes' limits.
/// Errors: a budget duration that is not exactly one unit, a limit above u32 (its
/// `requests_per_unit`), a value ending in `*` (a wildcard there), each naming its owner.
pub fn envoy_ratelimit(domain: &str, entries: &[Entry]) -> Result<Value, Vec<String>> {
    let mut errors = Vec::new();
    let mut kinds: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for e in entries {
        let Some(unit) = unit(e.period) else {
            let field = if e.field == "model_max_budget" { "model_max_budget.budget_duration" } else { "budget_duration" };
            errors.push(format!(
                "{}: {field} is not one envoyproxy/ratelimit unit (1s, 1m, 1h, 1d/24h, 7d/1w, 30d/1mo, 365d): its windows are fixed units",
                e.owner
            ));
            continue;
        };
        let Ok(requests) = u32::try_from(e.max) else {
            let what = if e.kind == "budget" { " micro-USD (at most $4294.967295)" } else { "" };
            errors.push(format!("{}: {} is {}{what}, above envoyproxy/ratelimit's requests_per_unit maximum {}", e.owner, e.field, e.max, u32::MAX));
            continue;
        };
        if e.scope_value.ends_with('*') {
            errors.push(format!("{}: `{}` ends with `*`, which envoyproxy/ratelimit reads as a wildcard", e.owner, e.scope_value));
            continue;
        }
        let scope = Value::map([
            ("key", Value::from(e.scope_key)),
            ("value", Value::from(e.scope_value.as_str())),
            ("rate_limit", Value::map([("unit", Value::from(unit)), ("requests_per_unit", Value::from(u64::from(requests)))])),
        ]);
        match kinds.iter_mut().find(|(k, _)| *k == e.kind) {
            Some((_, list)) => list.push(scope),
            None => kinds.push((e.kind, vec![scope])),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let descriptors = kinds.into_iter().map(|(kind, scopes)| {
        Value::map([("key", Value::from(LIMIT_ENTRY)), ("value", Value::from(kind)), ("descriptors", Value::Seq(scopes))])
    });
    Ok(Value::map([("domain", Value::from(domain)), ("descriptors", Value::seq(descriptors))]))
}

/// The header comment of the envoyproxy/ratelimit file.
pub fn envoy_ratelimit_header(config: &str) -> String {
    format!(
        "# envoyproxy/ratelimit config for llm-router's global limits, generated by `llm-router rls --format envoy-ratelimit`\n\
         # from {config}. Regenerate it when the config changes. Needs envoyproxy/ratelimit with per-descriptor hits_addend\n\
         # and is_negative_hits (master). requests_per_unit: requests (rpm), tokens (tpm), requests in flight (parallel),\n\
         # micro-USD (budget). Windows are fixed and aligned to the Unix epoch: day at 00:00 UTC, week from Thursday\n\
         # 00:00 UTC, month = 30 days from the epoch (not calendar months), year = 365 days. parallel counts in hour windows\n\
         # (a slot whose release was lost comes back at the next hour). Budgets with only a soft_budget are not listed.\n"
    )
}

/// How many budgets have no `budget_duration` (counted per year by envoyproxy/ratelimit).
pub fn forever_budgets(entries: &[Entry]) -> usize {
    entries.iter().filter(|e| e.period == Period::Forever).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: &'static str, scope_key: &'static str, value: &str, max: u64, period: Period) -> Entry {
        let r = match kind {
            "parallel" => 0,
            "rpm" => 1,
            "tpm" => 2,
            _ => 3,
        };
        Entry {
            rank: r,
            kind,
            scope_key,
            scope_value: value.into(),
            max,
            period,
            owner: format!("{scope_key} {value}"),
            field: if kind == "budget" { "max_budget" } else { "rpm_limit" },
        }
    }

    #[test]
    fn cel_strings_are_escaped() {
        assert_eq!(cel_string("eng"), "'eng'");
        assert_eq!(cel_string("o'brien"), r"'o\'brien'");
        assert_eq!(cel_string(r"a\b"), r"'a\\b'");
        assert_eq!(cel_string("a\nb\u{1}"), r"'a\nb\u0001'");
        assert_eq!(cel_string(r#"say "x""#), r#"'say "x"'"#);
        assert_eq!(condition("team", r"it's\"), r"descriptors[0]['team'] == 'it\'s\\'");
    }

    #[test]
    fn units_are_exact_or_refused() {
        assert_eq!(unit(Period::Rate), Some("minute"));
        assert_eq!(unit(Period::Parallel), Some("hour"));
        assert_eq!(unit(Period::Forever), Some("year"));
        for (value, u, name) in [
            (1, Unit::Days, "day"),
            (24, Unit::Hours, "day"),
            (7, Unit::Days, "week"),
            (1, Unit::Weeks, "week"),
            (30, Unit::Days, "month"),
            (1, Unit::Months, "month"),
            (1, Unit::Hours, "hour"),
            (1, Unit::Minutes, "minute"),
            (365, Unit::Days, "year"),
        ] {
            assert_eq!(unit(Period::Seconds(seconds(value, u))), Some(name), "{value} {u:?}");
        }
        assert_eq!(unit(Period::Seconds(seconds(2, Unit::Days))), None);
        assert_eq!(unit(Period::Seconds(seconds(2, Unit::Months))), None);
        assert_eq!(seconds(1, Unit::Months), 2_592_000);
    }

    #[test]
    fn limitador_entries() {
        let es = [entry("rpm", "team", "o'x", 60, Period::Rate), entry("budget", "api_key", "ab", 5_000_000, Period::Seconds(2_592_000))];
        let v = limitador("llm_router", &es);
        let first = v.as_seq().and_then(|s| s.first()).unwrap_or_else(|| panic!("empty"));
        assert_eq!(first.get("name").and_then(Value::as_str), Some("rpm.team.o'x"));
        assert_eq!(first.get("seconds"), Some(&Value::from(60u64)));
        let conds: Vec<&str> = first.get("conditions").and_then(Value::as_seq).unwrap_or(&[]).iter().filter_map(Value::as_str).collect();
        assert_eq!(conds, ["descriptors[0]['limit'] == 'rpm'", r"descriptors[0]['team'] == 'o\'x'"]);
        let second = v.as_seq().and_then(|s| s.get(1)).unwrap_or_else(|| panic!("one entry"));
        assert_eq!(second.get("max_value"), Some(&Value::from(5_000_000u64)));
        assert_eq!(second.get("seconds"), Some(&Value::from(2_592_000u64)));
        assert_eq!(second.get("variables"), Some(&Value::seq([])));
        let forever = limitador("d", &[entry("budget", "user", "u", 1, Period::Forever)]);
        assert_eq!(forever.as_seq().and_then(|s| s.first()).and_then(|e| e.get("seconds")), Some(&Value::from(NO_DURATION_SECONDS)));
        let par = limitador("d", &[entry("parallel", "api_key", "ab", 2, Period::Parallel)]);
        assert_eq!(par.as_seq().and_then(|s| s.first()).and_then(|e| e.get("seconds")), Some(&Value::from(PARALLEL_SECONDS)));
    }

    #[test]
    fn envoy_ratelimit_groups_by_kind() {
        let es = [
            entry("rpm", "api_key", "ab", 60, Period::Rate),
            entry("rpm", "team", "eng", 100, Period::Rate),
            entry("budget", "team", "eng", 5_000_000, Period::Seconds(DAY_SECONDS)),
        ];
        let v = envoy_ratelimit("llm_router", &es).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            v.to_yaml(),
            "domain: llm_router\ndescriptors:\n  - key: limit\n    value: rpm\n    descriptors:\n      - key: api_key\n        value: ab\n        rate_limit:\n          unit: minute\n          requests_per_unit: 60\n      - key: team\n        value: eng\n        rate_limit:\n          unit: minute\n          requests_per_unit: 100\n  - key: limit\n    value: budget\n    descriptors:\n      - key: team\n        value: eng\n        rate_limit:\n          unit: day\n          requests_per_unit: 5000000\n"
        );
    }

    #[test]
    fn envoy_ratelimit_refusals_name_the_owner_and_field() {
        let es = [
            entry("budget", "team", "eng", 1, Period::Seconds(2 * DAY_SECONDS)),
            entry("budget", "api_key", "ab", 5_000_000_000, Period::Seconds(DAY_SECONDS)),
            entry("rpm", "team", "t*", 1, Period::Rate),
            entry("rpm", "team", "ok", 1, Period::Rate),
        ];
        let errors = envoy_ratelimit("d", &es).err().unwrap_or_default();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].starts_with("team eng: budget_duration is not one envoyproxy/ratelimit unit"), "{}", errors[0]);
        assert!(errors[1].starts_with("api_key ab: max_budget is 5000000000 micro-USD"), "{}", errors[1]);
        assert!(errors[2].contains("`t*` ends with `*`"), "{}", errors[2]);
    }
}
