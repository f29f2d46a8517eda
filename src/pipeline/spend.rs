//! Spend attribution: whom a request's tokens and cost belong to, for the access log
//! (`llm_router.key_alias`, `team_id`, `user_id`, `tags`, `cost_usd` filter-state properties,
//! next to `pipeline::log_props`) and the `llm_router_spend_*` metrics.
//!
//! Why precomputed: a request must not pay for the number of keys, and metric labels must be
//! config-defined names only. So every key's names are built once per config
//! ([`Attribution::build`]): the alias (or `keys[i]` for a key without one — never the key or its
//! hash), the team id, the user id, the key's tags; each bounded ([`MAX_VALUE_BYTES`],
//! [`MAX_TAGS_BYTES`]) and cleaned of control characters (no newline can end an access-log line,
//! whatever the format; JSON formats are escaped by Envoy). A request looks its names up by key
//! index. Client strings never become a label: the model group label is the serving deployment's
//! configured group.
//!
//! Cost is integer nano-USD (see [`cost_nanos`]) and leaves as an exact decimal string
//! ([`usd`]): sums over access-log lines (`llm-router spend`) and the metric counter agree to the
//! nano-USD.

use crate::access::Caller;
use crate::config::keys::Identities;
use crate::config::ModelInfo;
use crate::failover::Payer;
use crate::openai::Usage;

pub const KEY_ALIAS: &str = "llm_router.key_alias";
pub const TEAM_ID: &str = "llm_router.team_id";
pub const USER_ID: &str = "llm_router.user_id";
pub const TAGS: &str = "llm_router.tags";
pub const COST_USD: &str = "llm_router.cost_usd";

/// Longest alias, team id or user id written (longer ones are cut at a character boundary).
pub const MAX_VALUE_BYTES: usize = 128;
/// Longest tag list written (`a,b,c`); tags that do not fit are left out.
pub const MAX_TAGS_BYTES: usize = 512;
/// The key label of requests made with `general_settings.master_key`.
pub const MASTER_KEY: &str = "master_key";
/// The label of what is unknown: no key (an open gateway, a failover pass), no team.
pub const NONE: &str = "-";

/// One caller's names, as written to the access log and used as metric labels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Who {
    /// `key_alias`, else `keys[<index>]`; [`MASTER_KEY`] for the master key.
    pub key: String,
    pub team: Option<String>,
    pub user: Option<String>,
    /// The key's tags joined with `,` (a `,` inside a tag becomes `_`).
    pub tags: Option<String>,
}

impl Who {
    /// The team label ([`NONE`] without a team).
    pub fn team_label(&self) -> &str {
        self.team.as_deref().unwrap_or(NONE)
    }
}

/// Every key's [`Who`], indexed like `access::Policy::keys`, built once per config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attribution {
    keys: Vec<Who>,
    master: Who,
}

impl Attribution {
    pub fn build(ids: &Identities) -> Attribution {
        let keys = ids
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| Who {
                key: match &k.alias {
                    Some(a) => clean(a, MAX_VALUE_BYTES),
                    None => format!("keys[{i}]"),
                },
                team: k.team.and_then(|t| ids.teams.get(t)).map(|t| clean(&t.team_id, MAX_VALUE_BYTES)),
                user: k.user_id.as_deref().map(|u| clean(u, MAX_VALUE_BYTES)),
                tags: join_tags(k.tags.iter().map(String::as_str)),
            })
            .collect();
        Attribution { keys, master: Who { key: MASTER_KEY.to_string(), ..Who::default() } }
    }

    /// The caller's names; None when there is no key to name (an open gateway, or a failover
    /// pass, which is not re-identified).
    pub fn of(&self, caller: Caller) -> Option<&Who> {
        match caller {
            Caller::Key(i) => self.keys.get(i),
            Caller::Master => Some(&self.master),
            Caller::Open | Caller::Replay => None,
        }
    }
}

/// The payer a first pass writes into its signed failover state (`failover::AttemptState::payer`):
/// nothing without the failover wiring (the state then never reaches another pass). Redirects
/// replay on the same VM, whose generation numbers its configs: a pass after a reload finds
/// another generation and takes nobody rather than the wrong key.
pub fn first_pass_payer(cfg: &crate::config::RouterConfig, caller: Caller) -> Option<Payer> {
    if !cfg.envoy.failover {
        return None;
    }
    match caller {
        Caller::Key(i) => u32::try_from(i).ok().map(|index| Payer::Key { index, generation: cfg.generation }),
        Caller::Master => Some(Payer::Master),
        Caller::Open | Caller::Replay => None,
    }
}

/// Who a pass is for: its caller, or for a verified failover pass the payer its signed state
/// names when that state is of this config `generation`. Access decisions keep `Caller::Replay`;
/// limits (a replay admits on the key's limits) and attribution use this.
pub fn payer(caller: Caller, state_payer: Option<Payer>, generation: u64) -> Caller {
    if caller != Caller::Replay {
        return caller;
    }
    match state_payer {
        Some(Payer::Master) => Caller::Master,
        Some(Payer::Key { index, generation: g }) if g == generation => usize::try_from(index).map_or(Caller::Replay, Caller::Key),
        _ => Caller::Replay,
    }
}

/// `s` without control characters (each becomes `_`), at most `max` bytes (cut at a character
/// boundary).
pub fn clean(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    for c in s.chars() {
        let c = if c.is_control() { '_' } else { c };
        if out.len().saturating_add(c.len_utf8()) > max {
            break;
        }
        out.push(c);
    }
    out
}

/// Tags as one bounded value: each cleaned (`,` → `_`, so the list splits back), duplicates and
/// empty tags dropped, whole tags left out once [`MAX_TAGS_BYTES`] would be passed. None when
/// nothing is left.
pub fn join_tags<'a>(tags: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut out = String::new();
    let mut seen: Vec<String> = Vec::new();
    for t in tags {
        let t = clean(t, MAX_VALUE_BYTES).replace(',', "_");
        if t.is_empty() || seen.contains(&t) {
            continue;
        }
        let extra = t.len().saturating_add(usize::from(!out.is_empty()));
        if out.len().saturating_add(extra) > MAX_TAGS_BYTES {
            continue;
        }
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(&t);
        seen.push(t);
    }
    (!out.is_empty()).then_some(out)
}

/// A response's cost in nano-USD, priced as budgets price it (`limits::cost`: the serving
/// deployment's `input_cost_per_token` / `output_cost_per_token`, an unset one counting 0,
/// rounded up to the nano-USD); None when the deployment sets no price.
pub fn cost_nanos(info: &ModelInfo, usage: &Usage) -> Option<u64> {
    let prices = crate::limits::cost::Prices::of(info)?;
    Some(crate::limits::cost::actual_nanos(Some(prices), usage))
}

pub use crate::limits::cost::usd;

/// The properties `on_log` sets: the caller's names (those it has), the tags — the key's, then
/// the request's (`request_tags`: client strings, cleaned and bounded by [`join_tags`]) — and the
/// cost when known.
pub fn properties(who: Option<&Who>, request_tags: &[String], cost_nanos: Option<u64>) -> Vec<(&'static str, String)> {
    let mut out = Vec::with_capacity(5);
    if let Some(w) = who {
        out.push((KEY_ALIAS, w.key.clone()));
        for (name, value) in [(TEAM_ID, &w.team), (USER_ID, &w.user)] {
            if let Some(v) = value {
                out.push((name, v.clone()));
            }
        }
    }
    let key_tags = who.and_then(|w| w.tags.as_deref());
    let tags = if request_tags.is_empty() {
        key_tags.map(str::to_string)
    } else {
        join_tags(key_tags.into_iter().flat_map(|t| t.split(',')).chain(request_tags.iter().map(String::as_str)))
    };
    if let Some(t) = tags {
        out.push((TAGS, t));
    }
    if let Some(c) = cost_nanos {
        out.push((COST_USD, usd(c)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Diagnostics;
    use serde_json::json;

    fn ids(keys: serde_json::Value, teams: serde_json::Value) -> Identities {
        let mut d = Diagnostics::default();
        let ids = crate::config::keys::parse(Some(&keys), Some(&teams), None, &mut d);
        assert!(d.errors.is_empty(), "{:?}", d.errors);
        ids
    }

    #[test]
    fn names_per_key_never_the_hash() {
        let token = "07".repeat(32);
        let ids = ids(
            json!([
                {"token": token, "key_alias": "finance-app", "team_id": "finance", "user_id": "alice\n", "tags": ["prod", "eu,west", "prod"]},
                {"token": "08".repeat(32)},
            ]),
            json!([{"team_id": "finance"}]),
        );
        let a = Attribution::build(&ids);
        let w = a.of(Caller::Key(0)).cloned().unwrap_or_default();
        assert_eq!((w.key.as_str(), w.team_label()), ("finance-app", "finance"));
        assert_eq!((w.user.as_deref(), w.tags.as_deref()), (Some("alice_"), Some("prod,eu_west")));
        assert_eq!(a.of(Caller::Key(1)).map(|w| (w.key.as_str(), w.team_label())), Some(("keys[1]", NONE)));
        assert_eq!(a.of(Caller::Master).map(|w| w.key.as_str()), Some(MASTER_KEY));
        assert_eq!(a.of(Caller::Open), None);
        assert_eq!(a.of(Caller::Replay), None);
        assert_eq!(a.of(Caller::Key(9)), None);
        let all = format!("{a:?}");
        assert!(!all.contains("0707") && !all.contains("[7, 7"), "no hash in the names: {all}");
    }

    #[test]
    fn a_failover_pass_is_paid_by_the_first_pass_s_caller_within_one_config() {
        let key = Payer::Key { index: 3, generation: 7 };
        assert_eq!(payer(Caller::Replay, Some(key), 7), Caller::Key(3));
        assert_eq!(payer(Caller::Replay, Some(Payer::Master), 7), Caller::Master);
        assert_eq!(payer(Caller::Replay, Some(key), 8), Caller::Replay, "another config");
        assert_eq!(payer(Caller::Replay, None, 7), Caller::Replay);
        assert_eq!(payer(Caller::Key(1), Some(Payer::Master), 7), Caller::Key(1), "only a replay takes the state's payer");
    }

    #[test]
    fn values_are_bounded_and_lose_control_characters() {
        assert_eq!(clean("a\nb\r\tc\u{7f}", 100), "a_b__c_");
        let long = "é".repeat(100);
        let c = clean(&long, MAX_VALUE_BYTES);
        assert_eq!(c.len(), MAX_VALUE_BYTES);
        assert!(c.chars().all(|ch| ch == 'é'));
        assert_eq!(clean("abc", 2), "ab");
        assert_eq!(join_tags(["prod", "eu,west", "", "prod", "x\ny"]).as_deref(), Some("prod,eu_west,x_y"));
        assert_eq!(join_tags(Vec::<&str>::new()), None);
        let many: Vec<String> = (0..200).map(|i| format!("tag-{i:03}")).collect();
        let joined = join_tags(many.iter().map(String::as_str)).unwrap_or_default();
        assert!(joined.len() <= MAX_TAGS_BYTES && joined.starts_with("tag-000,tag-001"), "{joined}");
    }

    #[test]
    fn cost_is_exact_nano_usd() {
        let info = |i: Option<f64>, o: Option<f64>| ModelInfo { input_cost_per_token: i, output_cost_per_token: o, ..ModelInfo::default() };
        let u = Usage { input_tokens: 9, output_tokens: 12 };
        // gpt-4o-mini's prices: 0.15 / 0.6 USD per million tokens.
        assert_eq!(cost_nanos(&info(Some(0.15e-6), Some(0.6e-6)), &u), Some(9 * 150 + 12 * 600));
        assert_eq!(cost_nanos(&info(Some(2.5e-6), None), &u), Some(22_500));
        assert_eq!(cost_nanos(&info(None, None), &u), None);
        assert_eq!(cost_nanos(&info(Some(0.0), Some(0.0)), &u), Some(0));
        assert_eq!(usd(8_550), "0.00000855");
        assert_eq!(usd(0), "0");
        assert_eq!(usd(2_000_000_000), "2");
        assert_eq!(usd(1_000_000_001), "1.000000001");
        assert_eq!(usd(u64::MAX), "18446744073.709551615");
    }

    #[test]
    fn properties_name_what_is_known() {
        let w = Who { key: "k".into(), team: Some("t".into()), user: None, tags: Some("a,b".into()) };
        assert_eq!(
            properties(Some(&w), &[], Some(1_500)),
            vec![(KEY_ALIAS, "k".to_string()), (TEAM_ID, "t".into()), (TAGS, "a,b".into()), (COST_USD, "0.0000015".into())]
        );
        assert_eq!(properties(None, &[], None), vec![]);
        // The request's tags follow the key's, deduplicated, cleaned (a client's newline or comma
        // cannot split the line or the list).
        let req = ["b".to_string(), "x\ny".into(), "p,q".into()];
        assert_eq!(properties(Some(&w), &req, None).last(), Some(&(TAGS, "a,b,x_y,p_q".to_string())));
        assert_eq!(properties(None, &req, None), vec![(TAGS, "b,x_y,p_q".to_string())]);
    }
}
