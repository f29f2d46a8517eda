//! Property tests (proptest): many concurrent requests as interleavings of CAS steps.
//!
//! Each request is an [`Admitting`] state machine and, once admitted, a [`Settling`] one; every
//! `step` is one read or one conditional write of the in-memory store ([`MemCas`], keys created
//! empty as configure does). A generated schedule picks which request moves next — so every
//! order in which the workers of one Envoy can interleave their shared-data calls is reachable —
//! and injects CAS conflicts (a write lost to a phantom worker) on top. Properties:
//!
//! * rpm: requests admitted per window ≤ every rpm limit they pass; with one plan shared by all
//!   requests, exactly `min(demand, limits)` are admitted in a window (compensation leaves no
//!   phantom holds), also when the clock advances and workers read it out of order;
//! * parallel: the slots held never exceed `max_parallel_requests` at any step, and return to 0
//!   once everything has settled;
//! * budgets and tpm: `used + reserved ≤ limit` at every step (`Check::Fits`, actual ≤
//!   reserved), so spend ≤ `max_budget`; with `Check::BelowLimit` spend < limit + the largest
//!   reservation; the final spend is exactly the sum of the admitted requests' actual costs
//!   (each settlement applied once despite conflicts);
//! * after everything settled, nothing is reserved anywhere.
//!
//! Case count: proptest's default (256), or `PROPTEST_CASES`.

use proptest::prelude::*;
use proptest::sample::Index;

use super::admit::{Actual, Admitting, Demand, Kind, Limit, OnUnavailable, Progress, Reason, Reservation, Scope, Settling};
use super::counter::{Check, Record};
use super::store::{Fault, MemCas};
use super::window::{Duration, Unit, Window, MINUTE_MS};

const NOW: u64 = 1_700_000_000_000;

fn lim(scope: Scope, kind: Kind, limit: u64, check: Check) -> Limit {
    let window = match kind {
        Kind::Parallel => Window::Epoch { len_ms: super::window::PARALLEL_EPOCH_MS },
        Kind::Budget => Window::Calendar(Duration { value: 1, unit: Unit::Minutes }),
        _ => Window::FirstHit { len_ms: MINUTE_MS },
    };
    Limit { scope, kind, limit, window, check, soft: None }
}

fn key(i: usize) -> Scope {
    Scope::Key(format!("k{i}"))
}

fn team() -> Scope {
    Scope::Team("t".into())
}

/// One simulated request.
struct Req {
    plan: Vec<Limit>,
    demand: Demand,
    actual: Actual,
    now_ms: u64,
}

/// What happened to one request.
#[derive(Debug, Default, Clone)]
struct Outcome {
    admitted: bool,
    /// Window end of each status (by plan index) at admission.
    resets: Vec<(usize, u64)>,
    settled: bool,
}

enum Machine {
    Admit(usize, Admitting),
    Settle(usize, Settling),
}

/// Runs `reqs` concurrently: `schedule` picks the next machine, `conflicts` injects a CAS
/// conflict on a request's first limit before the step; `check` runs after every step.
fn run(reqs: &[Req], settle: bool, schedule: &[(Index, bool)], store: &MemCas, mut check: impl FnMut(&MemCas)) -> Vec<Outcome> {
    let mut out = vec![Outcome::default(); reqs.len()];
    let mut active: Vec<Machine> = reqs.iter().enumerate().map(|(i, r)| Machine::Admit(i, Admitting::new(r.plan.clone(), r.demand, r.now_ms, OnUnavailable::FailClosed))).collect();
    let mut injected = 0;
    let mut turn = 0usize;
    while !active.is_empty() {
        let pick = match schedule.get(turn) {
            Some((ix, conflict)) => {
                let at = ix.index(active.len());
                // A phantom worker's write, at most a few per run (below MAX_CAS_RETRIES).
                if *conflict && injected < 8 {
                    let id = match &active[at] {
                        Machine::Admit(id, _) | Machine::Settle(id, _) => *id,
                    };
                    if let Some(l) = reqs[id].plan.first() {
                        store.inject(&l.key(), Fault::Conflict);
                        injected += 1;
                    }
                }
                at
            }
            None => turn % active.len(),
        };
        turn += 1;
        let m = active.swap_remove(pick);
        match m {
            Machine::Admit(id, a) => match a.step(store) {
                Progress::Pending(a) => active.push(Machine::Admit(id, a)),
                Progress::Done(Ok(res)) => {
                    out[id].admitted = true;
                    out[id].resets = res.statuses.iter().map(|s| (s.index, s.reset_ms)).collect();
                    assert!(res.unchecked.is_empty(), "a limit was skipped");
                    if settle {
                        active.push(Machine::Settle(id, Settling::new(res, reqs[id].actual)));
                    } else {
                        held(res);
                    }
                }
                Progress::Done(Err(refusal)) => assert_eq!(refusal.reason, Reason::Over, "{refusal:?}"),
            },
            Machine::Settle(id, s) => match s.step(store) {
                Progress::Pending(s) => active.push(Machine::Settle(id, s)),
                Progress::Done(report) => {
                    assert_eq!(report.failed, 0, "a settlement was given up");
                    out[id].settled = true;
                }
            },
        }
        check(store);
    }
    out
}

/// Keeps an unsettled reservation alive until the end of the run (it is simply dropped: the
/// test then reads what it still holds).
fn held(_r: Reservation) {}

fn rec(store: &MemCas, l: &Limit) -> Record {
    store.value(&l.key()).and_then(|v| Record::decode(&v)).unwrap_or(Record { window: super::window::Span::FOREVER, used: 0, reserved: 0 })
}

fn store_for(reqs: &[Req]) -> MemCas {
    let mut keys: Vec<String> = reqs.iter().flat_map(|r| r.plan.iter().map(Limit::key)).collect();
    keys.sort();
    keys.dedup();
    MemCas::with_keys(keys.iter().map(String::as_str))
}

fn schedule() -> impl Strategy<Value = Vec<(Index, bool)>> {
    prop::collection::vec((any::<Index>(), prop::bool::weighted(0.1)), 0..400)
}

proptest! {
    #![proptest_config(crate::openai::props::config())]

    /// One plan for every request (key rpm, key-per-model rpm, team rpm) at one instant:
    /// exactly min(n, limits) admitted, each record counts exactly the admitted requests.
    #[test]
    fn rpm_admits_exactly_the_limit(n in 1usize..14, ks in prop::collection::vec(1u64..10, 3), sched in schedule()) {
        let plan = vec![
            lim(key(0), Kind::Requests, ks[0], Check::Fits),
            lim(Scope::KeyModel { key: "k0".into(), model: "m".into() }, Kind::Requests, ks[1], Check::Fits),
            lim(team(), Kind::Requests, ks[2], Check::Fits),
        ];
        let reqs: Vec<Req> = (0..n).map(|_| Req { plan: plan.clone(), demand: Demand::default(), actual: Actual::default(), now_ms: NOW }).collect();
        let store = store_for(&reqs);
        let out = run(&reqs, true, &sched, &store, |s| {
            for l in &plan {
                prop_assert_le(rec(s, l).used, l.limit);
            }
        });
        let admitted = out.iter().filter(|o| o.admitted).count() as u64;
        let want = (n as u64).min(ks[0]).min(ks[1]).min(ks[2]);
        prop_assert_eq!(admitted, want);
        for l in &plan {
            prop_assert_eq!(rec(&store, l).used, admitted);
            prop_assert_eq!(rec(&store, l).reserved, 0);
        }
    }

    /// Several keys sharing a team, the clock advancing while requests are in flight (and
    /// workers acting on older clock reads): per window, admissions ≤ each key's rpm and ≤ the
    /// team's rpm.
    #[test]
    fn rpm_per_window_across_keys_and_time(
        reqs_spec in prop::collection::vec((0usize..3, 0u64..150_000), 1..16),
        key_limits in prop::collection::vec(1u64..6, 3),
        team_limit in 1u64..10,
        calendar in any::<bool>(),
        sched in schedule(),
    ) {
        // LiteLLM's first-hit windows, or clock-aligned ones (a `1m` budget_duration's).
        let rpm = |scope: Scope, n: u64| {
            let mut l = lim(scope, Kind::Requests, n, Check::Fits);
            if calendar {
                l.window = Window::Calendar(Duration { value: 1, unit: Unit::Minutes });
            }
            l
        };
        let reqs: Vec<Req> = reqs_spec.iter().map(|&(k, dt)| Req {
            plan: vec![rpm(key(k), key_limits[k]), rpm(team(), team_limit)],
            demand: Demand::default(),
            actual: Actual::default(),
            now_ms: NOW + dt,
        }).collect();
        let store = store_for(&reqs);
        let out = run(&reqs, true, &sched, &store, |_| {});
        // Admissions per (record, window end).
        let mut per: std::collections::BTreeMap<(String, u64), u64> = Default::default();
        for (r, o) in reqs.iter().zip(&out) {
            if o.admitted {
                for &(i, reset) in &o.resets {
                    *per.entry((r.plan[i].key(), reset)).or_default() += 1;
                }
            }
        }
        for ((k, _), count) in &per {
            let limit = reqs.iter().flat_map(|r| r.plan.iter()).find(|l| &l.key() == k).map(|l| l.limit).unwrap_or(0);
            prop_assert!(*count <= limit, "{k}: {count} > {limit}");
        }
    }

    /// max_parallel_requests per key and team under admissions and settlements interleaved, with
    /// requests spread over three epochs (holds carried into the next epoch, older ones dropped):
    /// a record never holds more than its limit, and nothing once every request has settled.
    #[test]
    fn parallel_slots_never_exceed_and_return_to_zero(
        spec in prop::collection::vec((0usize..3, 0u64..(5 * super::window::PARALLEL_EPOCH_MS / 2)), 1..14),
        limits in prop::collection::vec(1u64..5, 3),
        team_limit in 1u64..6,
        sched in schedule(),
    ) {
        let reqs: Vec<Req> = spec.iter().map(|&(k, dt)| Req {
            plan: vec![lim(key(k), Kind::Parallel, limits[k], Check::Fits), lim(team(), Kind::Parallel, team_limit, Check::Fits)],
            demand: Demand::default(),
            actual: Actual::default(),
            now_ms: NOW + dt,
        }).collect();
        let store = store_for(&reqs);
        let all: Vec<Limit> = reqs.iter().flat_map(|r| r.plan.clone()).collect();
        let out = run(&reqs, true, &sched, &store, |s| {
            for l in &all {
                let r = rec(s, l);
                prop_assert_le(r.used + r.reserved, l.limit);
            }
        });
        prop_assert!(out.iter().any(|o| o.admitted));
        prop_assert!(out.iter().all(|o| o.admitted == o.settled));
        for l in &all {
            let r = rec(&store, l);
            prop_assert_eq!((r.used, r.reserved), (0, 0));
        }
    }

    /// Budgets (and tpm, the same arithmetic) with worst-case reservations and actual ≤
    /// reserved: never over the limit at any step; spend is exactly the admitted actuals.
    #[test]
    fn budget_spend_stays_within_max_budget(
        costs in prop::collection::vec((1u64..400, 0u64..=100), 1..14),
        max_budget in 1u64..2_000,
        below_limit in any::<bool>(),
        sched in schedule(),
    ) {
        let check = if below_limit { Check::BelowLimit } else { Check::Fits };
        let plan = vec![
            lim(key(0), Kind::Tokens, 1_000_000, Check::Fits),
            lim(key(0), Kind::Budget, max_budget, check),
            lim(team(), Kind::Budget, max_budget.saturating_mul(2) / 3 + 1, check),
        ];
        let reqs: Vec<Req> = costs.iter().map(|&(worst, pct)| Req {
            plan: plan.clone(),
            demand: Demand { tokens: worst * 10, cost_nanos: worst, requests: 1 },
            // actual ≤ reserved
            actual: Actual { tokens: Some(worst * 10 * pct / 100), cost_nanos: Some(worst * pct / 100) },
            now_ms: NOW,
        }).collect();
        let max_worst = costs.iter().map(|c| c.0).max().unwrap_or(0);
        let store = store_for(&reqs);
        let out = run(&reqs, true, &sched, &store, |s| {
            for l in &plan[1..] {
                let r = rec(s, l);
                let bound = if below_limit { l.limit - 1 + max_worst } else { l.limit };
                prop_assert_le(r.used + r.reserved, bound);
            }
        });
        let spent: u64 = reqs.iter().zip(&out).filter(|(_, o)| o.admitted).map(|(r, _)| r.actual.cost_nanos.unwrap_or(0)).sum();
        let tokens: u64 = reqs.iter().zip(&out).filter(|(_, o)| o.admitted).map(|(r, _)| r.actual.tokens.unwrap_or(0)).sum();
        // No liveness claim here: with unequal amounts a request that a later limit refuses can
        // hold room on an earlier one for a moment and make others refused (admit.rs docs).
        if below_limit {
            prop_assert!(out.iter().any(|o| o.admitted));
        }
        prop_assert_eq!(rec(&store, &plan[0]).used, tokens);
        for l in &plan[1..] {
            let r = rec(&store, l);
            prop_assert_eq!((r.used, r.reserved), (spent, 0));
            if !below_limit {
                prop_assert!(r.used <= l.limit);
            }
        }
    }

    /// Parsing never panics; what parses has a window containing any instant, stable across it.
    #[test]
    fn durations_and_windows(s in "[0-9]{0,12}(mo|[smhdwx ]?)[a-z0-9 ]{0,3}", now in any::<u64>()) {
        if let Ok(d) = super::window::parse(&s) {
            let w = d.window(now);
            prop_assert!(w.start_ms <= now && (now < w.end_ms || w.end_ms == u64::MAX));
            prop_assert_eq!(d.window(w.start_ms), w);
            prop_assert_eq!(d.window(w.end_ms.saturating_sub(1)), w);
        }
    }
}

/// `prop_assert!(a <= b)` usable inside the per-step closures (they return `()`): a failure is a
/// panic, which proptest reports and shrinks like any failed assertion.
fn prop_assert_le(a: u64, b: u64) {
    assert!(a <= b, "{a} > {b}");
}

#[test]
fn run_reports_admissions_and_settlements() {
    let plan = vec![lim(key(0), Kind::Parallel, 1, Check::Fits)];
    let reqs: Vec<Req> = (0..3).map(|_| Req { plan: plan.clone(), demand: Demand::default(), actual: Actual::default(), now_ms: NOW }).collect();
    // Without settlement, the first admitted request keeps the only slot.
    let store = store_for(&reqs);
    let out = run(&reqs, false, &[], &store, |_| {});
    assert_eq!(out.iter().filter(|o| o.admitted).count(), 1);
    assert_eq!(rec(&store, &plan[0]).reserved, 1);
}

