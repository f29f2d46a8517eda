//! Tests of [`super::select`] over real configurations: each filter of the chain, each
//! strategy, and the cost guarantees (statistics read only when needed, once, and only for the
//! group's members).

use super::*;
use crate::config::{self, RouterConfig};
use crate::health::{CooldownView, Cooldowns, FailureClass};
use crate::stats::{DeploymentStats, NoStats, StatsSource};
use serde_json::{json, Value};
use std::cell::RefCell;
use std::collections::HashMap;

/// Deployment `id` of group `g`; `params` are merged into `litellm_params`, `info` into
/// `model_info`.
fn dep(id: &str, params: Value, info: Value) -> Value {
    let mut p = json!({"model": format!("openai/{id}"), "api_key": "k"});
    let mut i = json!({"id": id});
    if let (Some(p), Value::Object(extra)) = (p.as_object_mut(), params) {
        p.extend(extra);
    }
    if let (Some(i), Value::Object(extra)) = (i.as_object_mut(), info) {
        i.extend(extra);
    }
    json!({"model_name": "g", "litellm_params": p, "model_info": i})
}

fn plain(id: &str) -> Value {
    dep(id, json!({}), json!({}))
}

fn cfg(deployments: Vec<Value>, router_settings: Value) -> RouterConfig {
    let v = json!({"model_list": deployments, "router_settings": router_settings});
    match config::load(v.to_string().as_bytes(), &|_| None).config {
        Some(c) => c,
        None => panic!("config refused"),
    }
}

fn cooling(cfg: &RouterConfig, until: &[(&str, u64)]) -> CooldownView {
    let mut c = Cooldowns::default();
    for (id, until_ms) in until {
        c.extend(id, *until_ms, FailureClass::ServerError);
    }
    CooldownView::new(&c, &cfg.table.ids, cfg.table.deployments.len())
}

/// A stats source that remembers what it was asked.
#[derive(Default)]
struct Recording {
    map: HashMap<usize, DeploymentStats>,
    asked: RefCell<Vec<usize>>,
}

impl StatsSource for Recording {
    fn stats(&self, index: usize) -> DeploymentStats {
        self.asked.borrow_mut().push(index);
        self.map.get(&index).copied().unwrap_or_default()
    }
}

struct Case<'a> {
    cfg: &'a RouterConfig,
    tags: Vec<String>,
    input_tokens: u64,
    stream: bool,
    cooling: CooldownView,
    exclude: Vec<usize>,
}

impl<'a> Case<'a> {
    fn new(cfg: &'a RouterConfig) -> Case<'a> {
        Case { cfg, tags: Vec::new(), input_tokens: 10, stream: false, cooling: cooling(cfg, &[]), exclude: Vec::new() }
    }

    fn tags(mut self, tags: &[&str]) -> Self {
        self.tags = tags.iter().map(|t| t.to_string()).collect();
        self
    }

    fn run(&self, stats: &dyn StatsSource, rng: &mut Rng) -> Selection {
        let facts = RequestFacts { tags: &self.tags, input_tokens: self.input_tokens, stream: self.stream };
        select(&self.cfg.table, &self.cfg.router, 0, &facts, &self.cooling, stats, &self.exclude, 1_000, rng)
    }

    fn once(&self, stats: &dyn StatsSource) -> Selection {
        self.run(stats, &mut Rng::from_seed(5))
    }

    /// Ids picked over `n` runs with their counts; panics on anything but a deployment.
    fn picks(&self, stats: &dyn StatsSource, n: usize) -> HashMap<String, usize> {
        let mut rng = Rng::from_seed(11);
        let mut out = HashMap::new();
        for _ in 0..n {
            match self.run(stats, &mut rng) {
                Selection::Deployment(i) => *out.entry(self.cfg.table.deployments[i].id.clone()).or_insert(0) += 1,
                other => panic!("{other:?}"),
            }
        }
        out
    }

    fn picked_ids(&self, stats: &dyn StatsSource) -> Vec<String> {
        let mut ids: Vec<String> = self.picks(stats, 400).into_keys().collect();
        ids.sort();
        ids
    }
}

fn stats(entries: &[(usize, DeploymentStats)]) -> Recording {
    Recording { map: entries.iter().copied().collect(), asked: RefCell::default() }
}

fn busy(in_flight: u64) -> DeploymentStats {
    DeploymentStats { in_flight, ..DeploymentStats::default() }
}

fn used(rpm_used: u64, tpm_used: u64) -> DeploymentStats {
    DeploymentStats { rpm_used, tpm_used, ..DeploymentStats::default() }
}

fn lat(latency_ms: Option<f64>, ttft_ms: Option<f64>) -> DeploymentStats {
    DeploymentStats { latency_ms, ttft_ms, ..DeploymentStats::default() }
}

#[test]
fn simple_shuffle_reads_no_stats_and_keeps_weights() {
    let c = cfg(vec![dep("a", json!({"weight": 3}), json!({})), dep("b", json!({"weight": 1}), json!({}))], json!({}));
    let rec = Recording::default();
    let p = Case::new(&c).picks(&rec, 20_000);
    assert!((p["a"] as f64 / 20_000.0 - 0.75).abs() < 0.02, "{p:?}");
    assert!(rec.asked.borrow().is_empty());
}

#[test]
fn tried_deployments_are_excluded() {
    let c = cfg(vec![plain("a"), plain("b")], json!({}));
    let mut case = Case::new(&c);
    case.exclude = vec![0];
    assert_eq!(case.picked_ids(&NoStats), ["b"]);
    case.exclude = vec![1, 0];
    assert_eq!(case.once(&NoStats), Selection::NoneEligible(Ineligible::AllTried));
    // An unknown group is nothing to try.
    let facts = RequestFacts::default();
    let sel = select(&c.table, &c.router, 9, &facts, &case.cooling, &NoStats, &[], 0, &mut Rng::from_seed(1));
    assert_eq!(sel, Selection::NoneEligible(Ineligible::AllTried));
}

#[test]
fn cooling_is_skipped_and_all_cooling_reports_the_soonest() {
    let c = cfg(vec![plain("a"), plain("b"), plain("c")], json!({}));
    let mut case = Case::new(&c);
    case.cooling = cooling(&c, &[("a", 5_000)]);
    assert_eq!(case.picked_ids(&NoStats), ["b", "c"]);
    case.cooling = cooling(&c, &[("a", 5_000), ("b", 3_000), ("c", 9_000)]);
    assert_eq!(case.once(&NoStats), Selection::AllCooling { retry_after_ms: 2_000 });
    // Only the untried ones count for the expiry.
    case.exclude = vec![1];
    assert_eq!(case.once(&NoStats), Selection::AllCooling { retry_after_ms: 4_000 });
}

fn tagged() -> RouterConfig {
    cfg(
        vec![
            dep("free", json!({"tags": ["free"]}), json!({})),
            dep("paid", json!({"tags": ["paid", "eu"]}), json!({})),
            dep("dflt", json!({"tags": ["default"]}), json!({})),
            plain("untagged"),
        ],
        json!({"enable_tag_filtering": true}),
    )
}

#[test]
fn tags_match_any_else_default_else_no_match() {
    let c = tagged();
    assert_eq!(Case::new(&c).tags(&["paid"]).picked_ids(&NoStats), ["paid"]);
    assert_eq!(Case::new(&c).tags(&["free", "eu"]).picked_ids(&NoStats), ["free", "paid"]);
    assert_eq!(Case::new(&c).tags(&["unknown"]).picked_ids(&NoStats), ["dflt"]);
    let no_default = cfg(vec![dep("free", json!({"tags": ["free"]}), json!({})), plain("untagged")], json!({"enable_tag_filtering": true}));
    assert_eq!(Case::new(&no_default).tags(&["paid"]).once(&NoStats), Selection::NoneEligible(Ineligible::NoTagMatch));
}

#[test]
fn tagged_match_that_is_cooling_or_tried_does_not_fall_back_to_default() {
    let c = tagged();
    let mut case = Case::new(&c).tags(&["paid"]);
    case.cooling = cooling(&c, &[("paid", 4_000)]);
    assert_eq!(case.once(&NoStats), Selection::AllCooling { retry_after_ms: 3_000 });
    case.cooling = cooling(&c, &[]);
    case.exclude = vec![1];
    assert_eq!(case.once(&NoStats), Selection::NoneEligible(Ineligible::AllTried));
}

#[test]
fn untagged_requests_prefer_available_default_deployments() {
    let c = tagged();
    let mut case = Case::new(&c);
    assert_eq!(case.picked_ids(&NoStats), ["dflt"]);
    case.cooling = cooling(&c, &[("dflt", 4_000)]);
    assert_eq!(case.picked_ids(&NoStats), ["free", "paid", "untagged"]);
    let no_default = cfg(vec![dep("free", json!({"tags": ["free"]}), json!({})), plain("untagged")], json!({"enable_tag_filtering": true}));
    assert_eq!(Case::new(&no_default).picked_ids(&NoStats), ["free", "untagged"]);
}

#[test]
fn tags_are_ignored_without_tag_filtering() {
    let c = cfg(vec![dep("free", json!({"tags": ["free"]}), json!({})), dep("dflt", json!({"tags": ["default"]}), json!({}))], json!({}));
    assert_eq!(Case::new(&c).tags(&["nope"]).picked_ids(&NoStats), ["dflt", "free"]);
    assert_eq!(Case::new(&c).picked_ids(&NoStats), ["dflt", "free"]);
}

#[test]
fn context_window_is_a_pre_call_check() {
    let deps = || {
        vec![
            dep("small", json!({}), json!({"max_input_tokens": 100})),
            dep("large", json!({}), json!({"max_input_tokens": 1000})),
            plain("unknown"),
        ]
    };
    let c = cfg(deps(), json!({"enable_pre_call_checks": true}));
    let mut case = Case::new(&c);
    case.input_tokens = 100;
    assert_eq!(case.picked_ids(&NoStats), ["large", "small", "unknown"]);
    case.input_tokens = 101;
    assert_eq!(case.picked_ids(&NoStats), ["large", "unknown"]);
    case.exclude = vec![1, 2];
    assert_eq!(case.once(&NoStats), Selection::NoneEligible(Ineligible::ContextWindow));
    let off = cfg(deps(), json!({}));
    let mut case = Case::new(&off);
    case.input_tokens = 5_000;
    assert_eq!(case.picked_ids(&NoStats), ["large", "small", "unknown"]);
}

#[test]
fn caps_skip_full_deployments_for_usage_strategies_and_pre_call_checks() {
    let deps = || vec![dep("a", json!({"rpm": 5, "tpm": 1000}), json!({})), dep("b", json!({"tpm": 500}), json!({})), plain("c")];
    for (settings, both_fit) in [
        (json!({"routing_strategy": "usage-based-routing-v2"}), vec!["a", "b"]),
        (json!({"routing_strategy": "latency-based-routing"}), vec!["a", "b"]),
        (json!({"routing_strategy": "cost-based-routing"}), vec!["a", "b"]),
        // simple-shuffle weighs by rpm here, and b has none.
        (json!({"enable_pre_call_checks": true}), vec!["a"]),
    ] {
        let c = cfg(deps(), settings.clone());
        let mut case = Case::new(&c);
        case.input_tokens = 100;
        // a: rpm full; b: 450 + 100 > 500.
        let full = stats(&[(0, used(5, 0)), (1, used(0, 450))]);
        assert_eq!(case.picked_ids(&full), ["c"], "{settings}");
        // Exactly at the limit still fits.
        let edge = stats(&[(0, used(4, 400)), (1, used(0, 400)), (2, used(1_000_000, 1_000_000))]);
        case.exclude = vec![2];
        assert_eq!(case.picked_ids(&edge), both_fit, "{settings}");
        case.exclude = vec![2];
        assert_eq!(case.once(&full), Selection::NoneEligible(Ineligible::RateLimited), "{settings}");
    }
    // Without usage strategy or pre-call checks, rpm/tpm are only weights: the full `a` (the
    // only one with an rpm weight) is still picked, and no stats are read.
    let c = cfg(deps(), json!({}));
    let full = stats(&[(0, used(5, 0)), (1, used(0, 450))]);
    assert_eq!(Case::new(&c).picked_ids(&full), ["a"]);
    assert!(full.asked.borrow().is_empty());
}

#[test]
fn lowest_order_wins_and_unordered_come_last() {
    let c = cfg(
        vec![
            dep("o2", json!({"order": 2}), json!({})),
            dep("o1a", json!({"order": 1}), json!({})),
            dep("o1b", json!({"order": 1}), json!({})),
            plain("none"),
        ],
        json!({}),
    );
    let mut case = Case::new(&c);
    assert_eq!(case.picked_ids(&NoStats), ["o1a", "o1b"]);
    case.cooling = cooling(&c, &[("o1a", 9_000), ("o1b", 9_000)]);
    assert_eq!(case.picked_ids(&NoStats), ["o2"]);
    case.exclude = vec![0];
    assert_eq!(case.picked_ids(&NoStats), ["none"]);
}

#[test]
fn least_busy_picks_fewest_in_flight_ties_random() {
    let c = cfg(vec![plain("a"), plain("b"), plain("c")], json!({"routing_strategy": "least-busy"}));
    let case = Case::new(&c);
    assert_eq!(case.picked_ids(&stats(&[(0, busy(3)), (1, busy(1)), (2, busy(2))])), ["b"]);
    assert_eq!(case.picked_ids(&stats(&[(0, busy(1)), (1, busy(1)), (2, busy(2))])), ["a", "b"]);
    assert_eq!(case.picked_ids(&NoStats), ["a", "b", "c"]);
}

#[test]
fn usage_based_picks_lowest_tpm_this_minute() {
    for strategy in ["usage-based-routing", "usage-based-routing-v2"] {
        let c = cfg(vec![plain("a"), plain("b"), plain("c")], json!({"routing_strategy": strategy}));
        let case = Case::new(&c);
        assert_eq!(case.picked_ids(&stats(&[(0, used(1, 900)), (1, used(9, 100)), (2, used(0, 300))])), ["b"]);
        assert_eq!(case.picked_ids(&stats(&[(0, used(1, 900))])), ["b", "c"]);
    }
}

#[test]
fn latency_based_tries_unseen_first_then_lowest_within_buffer() {
    let c = cfg(vec![plain("a"), plain("b"), plain("c"), plain("d")], json!({"routing_strategy": "latency-based-routing"}));
    let case = Case::new(&c);
    let seen = |a: f64, b: f64, c: f64, d: f64| stats(&[(0, lat(Some(a), None)), (1, lat(Some(b), None)), (2, lat(Some(c), None)), (3, lat(Some(d), None))]);
    assert_eq!(case.picked_ids(&stats(&[(0, lat(Some(1.0), None)), (1, lat(Some(2.0), None))])), ["c", "d"]);
    assert_eq!(case.picked_ids(&seen(70.0, 100.0, 100.0, 4660.0)), ["a"]);
    assert_eq!(case.picked_ids(&seen(70.0, 70.0, 100.0, 4660.0)), ["a", "b"]);
    let buffered = cfg(
        vec![plain("a"), plain("b"), plain("c"), plain("d")],
        json!({"routing_strategy": "latency-based-routing", "routing_strategy_args": {"lowest_latency_buffer": 0.5}}),
    );
    assert_eq!(Case::new(&buffered).picked_ids(&seen(70.0, 100.0, 105.0, 4660.0)), ["a", "b", "c"]);
}

#[test]
fn latency_based_streams_rank_on_ttft_when_all_have_it() {
    let c = cfg(vec![plain("a"), plain("b")], json!({"routing_strategy": "latency-based-routing"}));
    let mut case = Case::new(&c);
    case.stream = true;
    let both = stats(&[(0, lat(Some(10.0), Some(900.0))), (1, lat(Some(50.0), Some(200.0)))]);
    assert_eq!(case.picked_ids(&both), ["b"]);
    // b has no ttft sample: compare whole latency for everyone.
    let mixed = stats(&[(0, lat(Some(10.0), Some(900.0))), (1, lat(Some(50.0), None))]);
    assert_eq!(case.picked_ids(&mixed), ["a"]);
    case.stream = false;
    assert_eq!(case.picked_ids(&both), ["a"]);
}

#[test]
fn cost_based_picks_cheapest_unpriced_last() {
    let c = cfg(
        vec![
            dep("pricey", json!({"input_cost_per_token": 0.00003, "output_cost_per_token": 0.00006}), json!({})),
            dep("cheap", json!({}), json!({"input_cost_per_token": 0.000001, "output_cost_per_token": 0.000002})),
            dep("cheap2", json!({"input_cost_per_token": 0.000001, "output_cost_per_token": 0.000002}), json!({})),
            plain("unpriced"),
            dep("half", json!({"input_cost_per_token": 0.0}), json!({})),
        ],
        json!({"routing_strategy": "cost-based-routing"}),
    );
    let mut case = Case::new(&c);
    assert_eq!(case.picked_ids(&NoStats), ["cheap", "cheap2"]);
    case.exclude = vec![0, 1, 2];
    // `half` lacks an output price (5.0) but still beats fully unpriced (10.0).
    assert_eq!(case.picked_ids(&NoStats), ["half"]);
}

#[test]
fn stats_are_read_once_per_candidate_and_only_for_the_group() {
    // 500 deployments in 13 groups; route group "g" (its 39 members are interleaved).
    let mut deployments = Vec::new();
    for i in 0..500 {
        let group = if i % 13 == 0 { "g".to_string() } else { format!("other{}", i % 12) };
        deployments.push(json!({"model_name": group, "litellm_params": {"model": format!("openai/m{i}"), "api_key": "k", "rpm": 100},
            "model_info": {"id": format!("d{i}")}}));
    }
    let c = cfg(deployments, json!({"routing_strategy": "usage-based-routing-v2"}));
    let g = c.table.group_index("g").unwrap_or(usize::MAX);
    let members = c.table.groups[g].members.clone();
    assert_eq!(members.len(), 39);
    let rec = Recording::default();
    let facts = RequestFacts::default();
    let view = cooling(&c, &[]);
    let sel = select(&c.table, &c.router, g, &facts, &view, &rec, &[], 0, &mut Rng::from_seed(3));
    assert!(matches!(sel, Selection::Deployment(i) if members.contains(&i)));
    let mut asked = rec.asked.borrow().clone();
    asked.sort();
    assert_eq!(asked, members, "each member exactly once, nothing else");
}
