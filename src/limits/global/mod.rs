//! The global mode of the keys' limits: what the router asks a rate limit service (RLS) at
//! admission, what it reports at the end of the stream, and what it makes of the answers.
//!
//! Why this exists: shared data is one Envoy's; a budget kept there resets with Envoy and is
//! granted once per replica. With `envoy_settings.rate_limit_service`, each admission that the
//! local limits let through (they stay the first, cheap gate) is also put to the RLS in one
//! `ShouldRateLimit` call: one descriptor per limit of the plan, each with its own
//! `hits_addend` (the reservation). The stream's end reports the difference between the actual
//! and the reservation (`is_negative_hits` when less), so the RLS's counters end at the truth.
//! The contract, and which servers honour it: `docs/design/global-limits.md`.
//!
//! Pure: bytes in, bytes and verdicts out. `shell/router_stream.rs` sends the admission and
//! holds the request until [`judge`]; `shell/settle_queue.rs` sends settlements from the
//! root context, which outlives the stream.
//!
//! A request's parallel slot belongs to the request, not to a pass: with in-request failover the
//! first pass takes it, a pass that ends in an internal redirect hands it on (its settlement does
//! not release it), and a failover pass peeks instead of taking another (a second slot would be
//! refused while the first pass's release is still on its way — measured, with
//! `max_parallel_requests: 1`). The pass that ends the request releases it, whichever it is
//! ([`Hold::inherited`] for a failover pass that holds nothing else).
//!
//! Units on the wire: requests, tokens, slots, and micro-USD for budgets (nano-USD would put a
//! $4.29 ceiling on envoyproxy/ratelimit's u32 limits and Envoy's 1e9 addend cap at $1). Both the
//! reservation and the actual are rounded up to whole micro-USD, so their difference is exact in
//! those units.

pub mod wire;

use super::admit::{Demand, Kind, Limit, Reason, Refusal, Scope, Status};
use super::Actual;
use crate::config::rate_limit_service::FailureModes;
use crate::limits::OnUnavailable;

/// The entry key naming the limit kind.
pub const LIMIT_ENTRY: &str = "limit";

/// The RLS's name for a limit kind (`rpm`, `tpm`, `parallel`, `budget`).
pub fn kind_value(kind: Kind) -> &'static str {
    kind.tag()
}

/// The RLS's descriptor entry for a scope: LiteLLM's descriptor names (`api_key`, `team`,
/// `user`, `model_per_key`) and the config's ids; key-per-model is `<key hash>:<model>`.
pub fn scope_entry(scope: &Scope) -> (&'static str, String) {
    match scope {
        Scope::Key(k) => ("api_key", k.clone()),
        Scope::Team(t) => ("team", t.clone()),
        Scope::User(u) => ("user", u.clone()),
        Scope::KeyModel { key, model } => ("model_per_key", format!("{key}:{model}")),
    }
}

/// Nano-USD in the RLS's unit, rounded up.
pub fn micro_usd(nanos: u64) -> u64 {
    nanos.div_ceil(1000)
}

/// A limit's count in the RLS's unit (`limit` as the RLS is configured with it).
pub fn remote_limit(limit: &Limit) -> u64 {
    match limit.kind {
        // Down: the RLS never grants more than the budget.
        Kind::Budget => limit.limit / 1000,
        _ => limit.limit,
    }
}

/// What one limit holds at the RLS.
#[derive(Debug, PartialEq, Eq)]
struct Remote {
    kind: Kind,
    scope_key: &'static str,
    scope_value: String,
    reserved: u64,
}

/// An admission's hold at the RLS, settled once by [`settlement`] (not `Clone`).
#[derive(Debug, PartialEq, Eq, Default)]
pub struct Hold {
    remote: Vec<Remote>,
}

impl Hold {
    /// What a failover pass holds when the service did not admit it: only the parallel slots its
    /// first pass took (released when the request ends), or None when the plan has none.
    pub fn inherited(plan: &[Limit]) -> Option<Hold> {
        let remote: Vec<Remote> = plan
            .iter()
            .filter(|l| l.kind == Kind::Parallel)
            .map(|l| {
                let (scope_key, scope_value) = scope_entry(&l.scope);
                Remote { kind: l.kind, scope_key, scope_value, reserved: 0 }
            })
            .collect();
        (!remote.is_empty()).then_some(Hold { remote })
    }
}

/// How a pass ended, for its settlement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassEnd {
    /// The request ends with this pass: its slot is released.
    Last,
    /// An internal redirect: the next pass of the same request inherits the slot.
    FailedOver,
}

/// The admission call: its request bytes and the hold it will have taken if admitted.
pub fn admission(domain: &str, plan: &[Limit], demand: &Demand) -> (Vec<u8>, Hold) {
    let remote: Vec<Remote> = plan
        .iter()
        .map(|l| {
            let (scope_key, scope_value) = scope_entry(&l.scope);
            let reserved = match l.kind {
                Kind::Budget => micro_usd(demand.cost_nanos),
                // A failover pass (no request to count) holds its first pass's slot (module docs).
                Kind::Parallel if demand.requests == 0 => 0,
                _ => l.amount(demand),
            };
            Remote { kind: l.kind, scope_key, scope_value, reserved }
        })
        .collect();
    let descriptors: Vec<wire::Descriptor<'_>> = remote
        .iter()
        .map(|r| wire::Descriptor { entries: [(LIMIT_ENTRY, kind_value(r.kind)), (r.scope_key, &r.scope_value)], addend: r.reserved, negative: false })
        .collect();
    (wire::request(domain, &descriptors), Hold { remote })
}

/// Why an admission call produced no usable answer (a metric label each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The host refused to start the call (no such cluster, …).
    Dispatch,
    /// The call ended with this gRPC status (4: deadline exceeded, 14: unavailable, …).
    Grpc(u32),
    /// The answer did not decode, or its overall code was neither OK nor OVER_LIMIT.
    Malformed,
}

impl Failure {
    /// A bounded metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Failure::Dispatch => "dispatch",
            Failure::Grpc(4) => "timeout",
            Failure::Grpc(14) => "unavailable",
            Failure::Grpc(_) => "grpc_error",
            Failure::Malformed => "malformed",
        }
    }
}

/// What the RLS's answer means for the request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Admitted: per plan position, what the RLS says remains (in the local unit).
    Admitted(Vec<(usize, u64)>),
    Refused(Refusal),
    /// No answer to act on: the failure policy decides ([`on_failure`]).
    Failed(Failure),
}

/// Reads the admission's answer.
pub fn judge(plan: &[Limit], answer: Result<&[u8], Failure>, now_ms: u64) -> Verdict {
    let bytes = match answer {
        Ok(b) => b,
        Err(f) => return Verdict::Failed(f),
    };
    let Ok(r) = wire::response(bytes) else { return Verdict::Failed(Failure::Malformed) };
    let local = |kind: Kind, n: u64| if kind == Kind::Budget { n.saturating_mul(1000) } else { n };
    match r.overall {
        wire::OK => Verdict::Admitted(
            r.statuses
                .iter()
                .zip(plan)
                .enumerate()
                .filter(|(_, (s, _))| s.limit.is_some())
                .map(|(i, (s, l))| (i, local(l.kind, s.remaining)))
                .collect(),
        ),
        wire::OVER_LIMIT => {
            // The first descriptor the RLS marks over its limit; a server that sends no statuses
            // (stock limitador-server) leaves the first limit to name.
            let at = r.statuses.iter().position(|s| s.code == wire::OVER_LIMIT).filter(|&i| i < plan.len()).unwrap_or(0);
            let Some(limit) = plan.get(at) else { return Verdict::Failed(Failure::Malformed) };
            let status = r.statuses.get(at).copied().unwrap_or_default();
            let remaining = local(limit.kind, status.remaining).min(limit.limit);
            let reset_ms = match (limit.kind, status.reset_in_ms) {
                (Kind::Parallel, _) | (_, None) => u64::MAX,
                (_, Some(ms)) => now_ms.saturating_add(ms),
            };
            Verdict::Refused(Refusal {
                index: at,
                scope: limit.scope.clone(),
                kind: limit.kind,
                limit: limit.limit,
                remaining,
                used: limit.limit.saturating_sub(remaining),
                reset_ms,
                reason: Reason::Over,
            })
        }
        _ => Verdict::Failed(Failure::Malformed),
    }
}

/// Under a failed call, the plan position of the first limit whose kind fails closed (the
/// request is refused), or None (it goes on as the local limits admitted it).
pub fn on_failure(plan: &[Limit], modes: &FailureModes) -> Option<usize> {
    plan.iter().position(|l| modes.of(l.kind) == OnUnavailable::FailClosed)
}

/// Lowers the admitted statuses' `remaining` to what the RLS reports (all replicas), so the
/// `x-ratelimit-*` headers tell the global truth.
pub fn merge_remaining(statuses: &mut [Status], remote: &[(usize, u64)]) {
    for &(i, remaining) in remote {
        if let Some(s) = statuses.iter_mut().find(|s| s.index == i) {
            s.remaining = s.remaining.min(remaining);
        }
    }
}

/// The settlement call for `hold` (consumed: a hold is settled once), or None when nothing
/// differs from the reservation. Tokens and cost: actual − reserved (unknown actual: the
/// reservation stands); the parallel slot: released by the request's last pass (whatever this
/// pass reserved: a failover pass inherits it); requests: counted at admission.
pub fn settlement(domain: &str, hold: Hold, actual: Actual, end: PassEnd) -> Option<Vec<u8>> {
    let diffs: Vec<(&Remote, u64, bool)> = hold
        .remote
        .iter()
        .filter_map(|r| {
            let consumed = match r.kind {
                Kind::Requests => return None,
                Kind::Parallel if end == PassEnd::FailedOver => return None,
                Kind::Parallel => return Some((r, 1, true)),
                Kind::Tokens => actual.tokens?,
                Kind::Budget => micro_usd(actual.cost_nanos?),
            };
            match consumed.cmp(&r.reserved) {
                std::cmp::Ordering::Equal => None,
                std::cmp::Ordering::Greater => Some((r, consumed - r.reserved, false)),
                std::cmp::Ordering::Less => Some((r, r.reserved - consumed, true)),
            }
        })
        .collect();
    if diffs.is_empty() {
        return None;
    }
    let descriptors: Vec<wire::Descriptor<'_>> = diffs
        .iter()
        .map(|(r, n, negative)| wire::Descriptor { entries: [(LIMIT_ENTRY, kind_value(r.kind)), (r.scope_key, &r.scope_value)], addend: *n, negative: *negative })
        .collect();
    Some(wire::request(domain, &descriptors))
}

/// The gRPC metadata a settlement call carries: a server that applies it (tools/rls) then applies
/// every descriptor unchecked — the usage happened — instead of admitting all or nothing.
pub const SETTLEMENT_HEADER: &str = "x-llm-router-settlement";

/// The gRPC service and method every call goes to.
pub const SERVICE: &str = "envoy.service.ratelimit.v3.RateLimitService";
pub const METHOD: &str = "ShouldRateLimit";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{Check, Window};

    const NOW: u64 = 1_700_000_000_000;

    fn lim(scope: Scope, kind: Kind, limit: u64) -> Limit {
        Limit { scope, kind, limit, window: Window::FirstHit { len_ms: 60_000 }, check: Check::Fits, soft: None }
    }

    fn plan() -> Vec<Limit> {
        vec![
            lim(Scope::Key("ab".into()), Kind::Parallel, 2),
            lim(Scope::Key("ab".into()), Kind::Requests, 10),
            lim(Scope::Team("eng".into()), Kind::Tokens, 1000),
            lim(Scope::KeyModel { key: "ab".into(), model: "gpt-4o".into() }, Kind::Budget, 5_000_000),
        ]
    }

    /// A descriptor decoded back: (entries, addend, negative).
    type Decoded = (Vec<(String, String)>, Option<u64>, bool);

    /// The descriptors of a request, decoded back.
    fn decode(b: &[u8]) -> Vec<Decoded> {
        fn fields(b: &[u8]) -> Vec<(u64, Vec<u8>, u64)> {
            // (field, bytes for length-delimited, varint value)
            let mut out = Vec::new();
            let mut r = wire_reader(b);
            while let Some(f) = r.pop() {
                out.push(f);
            }
            out.reverse();
            out
        }
        fn wire_reader(b: &[u8]) -> Vec<(u64, Vec<u8>, u64)> {
            let mut i = 0;
            let mut out = Vec::new();
            let varint = |b: &[u8], i: &mut usize| {
                let mut v = 0u64;
                let mut s = 0;
                loop {
                    let x = b[*i];
                    *i += 1;
                    v |= u64::from(x & 0x7f) << s;
                    s += 7;
                    if x & 0x80 == 0 {
                        return v;
                    }
                }
            };
            while i < b.len() {
                let tag = varint(b, &mut i);
                if tag & 7 == 2 {
                    let n = varint(b, &mut i) as usize;
                    out.push((tag >> 3, b[i..i + n].to_vec(), 0));
                    i += n;
                } else {
                    let v = varint(b, &mut i);
                    out.push((tag >> 3, vec![], v));
                }
            }
            out
        }
        fields(b)
            .into_iter()
            .filter(|f| f.0 == 2)
            .map(|(_, d, _)| {
                let mut entries = vec![];
                let mut addend = None;
                let mut negative = false;
                for (f, bytes, v) in fields(&d) {
                    match f {
                        1 => {
                            let kv = fields(&bytes);
                            entries.push((String::from_utf8(kv[0].1.clone()).unwrap(), String::from_utf8(kv[1].1.clone()).unwrap()));
                        }
                        3 => addend = Some(fields(&bytes).first().map_or(0, |x| x.2)),
                        4 => negative = v == 1,
                        _ => {}
                    }
                }
                (entries, addend, negative)
            })
            .collect()
    }

    fn e(k: &str, v: &str) -> (String, String) {
        (k.into(), v.into())
    }

    #[test]
    fn admission_sends_one_descriptor_per_limit_with_its_reservation() {
        let demand = Demand { tokens: 1500, cost_nanos: 2_000_001, requests: 1 };
        let (bytes, hold) = admission("gw", &plan(), &demand);
        let d = decode(&bytes);
        assert_eq!(
            d,
            vec![
                (vec![e("limit", "parallel"), e("api_key", "ab")], Some(1), false),
                (vec![e("limit", "rpm"), e("api_key", "ab")], Some(1), false),
                // Capped at the limit, as locally.
                (vec![e("limit", "tpm"), e("team", "eng")], Some(1000), false),
                // 2.000001 mUSD rounded up to 2001 µUSD.
                (vec![e("limit", "budget"), e("model_per_key", "ab:gpt-4o")], Some(2001), false),
            ]
        );
        assert_eq!(hold.remote.len(), 4);
        // A failover pass counts no request: a peek (Some(0)), not an unset addend (= 1).
        let (bytes, _) = admission("gw", &plan(), &Demand { requests: 0, ..demand });
        assert_eq!(decode(&bytes)[1].1, Some(0));
    }

    #[test]
    fn settlement_reports_the_difference_and_releases_the_slot() {
        let demand = Demand { tokens: 500, cost_nanos: 2_000_000, requests: 1 };
        let (_, hold) = admission("gw", &plan(), &demand);
        let bytes = settlement("gw", hold, Actual { tokens: Some(620), cost_nanos: Some(900_500) }, PassEnd::Last).expect("something to settle");
        assert_eq!(
            decode(&bytes),
            vec![
                (vec![e("limit", "parallel"), e("api_key", "ab")], Some(1), true),
                (vec![e("limit", "tpm"), e("team", "eng")], Some(120), false),
                // 2000 reserved, 901 used.
                (vec![e("limit", "budget"), e("model_per_key", "ab:gpt-4o")], Some(1099), true),
            ],
            "rpm is never settled"
        );
        // Unknown usage keeps the reservation: only the slot goes back.
        let (_, hold) = admission("gw", &plan(), &demand);
        assert_eq!(decode(&settlement("gw", hold, Actual::default(), PassEnd::Last).unwrap()).len(), 1);
        // Exactly as reserved, no slot: nothing to send.
        let (_, hold) = admission("gw", &plan()[1..3], &demand);
        assert_eq!(settlement("gw", hold, Actual { tokens: Some(500), cost_nanos: None }, PassEnd::Last), None);
    }

    #[test]
    fn a_request_s_slot_passes_from_pass_to_pass_and_its_last_pass_releases_it() {
        let first = Demand { tokens: 500, cost_nanos: 2_000_000, requests: 1 };
        let (bytes, hold) = admission("gw", &plan(), &first);
        assert_eq!(decode(&bytes)[0].1, Some(1), "the first pass takes the slot");
        // It failed over: its tokens and cost are refunded, the slot stays for the next pass.
        let zero = Actual { tokens: Some(0), cost_nanos: Some(0) };
        let d = decode(&settlement("gw", hold, zero, PassEnd::FailedOver).unwrap());
        assert!(d.iter().all(|(e, _, negative)| e[0].1 != "parallel" && *negative), "{d:?}");
        // The failover pass peeks at the slot (and at rpm), and releases it at the end.
        let (bytes, hold) = admission("gw", &plan(), &Demand { requests: 0, ..first });
        assert_eq!((decode(&bytes)[0].1, decode(&bytes)[1].1), (Some(0), Some(0)));
        let d = decode(&settlement("gw", hold, zero, PassEnd::Last).unwrap());
        assert_eq!(d[0], (vec![e("limit", "parallel"), e("api_key", "ab")], Some(1), true));
        // Not admitted by the service (it failed open, or refused the pass): only the inherited slot.
        let held = Hold::inherited(&plan()).expect("the plan has a parallel limit");
        assert_eq!(decode(&settlement("gw", held, Actual::default(), PassEnd::Last).unwrap()), vec![(vec![e("limit", "parallel"), e("api_key", "ab")], Some(1), true)]);
        assert_eq!(Hold::inherited(&plan()[1..]), None);
    }

    fn response(overall: u8, statuses: &[&[u8]]) -> Vec<u8> {
        let mut b = vec![0x08, overall];
        for s in statuses {
            b.push(0x12);
            b.push(s.len() as u8);
            b.extend_from_slice(s);
        }
        b
    }

    #[test]
    fn an_over_limit_answer_names_the_refusing_limit() {
        let p = plan();
        // OK, OK, OVER_LIMIT {limit 1000, remaining 0, reset 30 s}, OK.
        let over: &[u8] = &[0x08, 2, 0x12, 3, 0x08, 0xe8, 0x07, 0x18, 0, 0x22, 2, 0x08, 30];
        let b = response(2, &[&[0x08, 1], &[0x08, 1], over, &[0x08, 1]]);
        match judge(&p, Ok(&b), NOW) {
            Verdict::Refused(r) => {
                assert_eq!((r.index, r.kind, r.scope.clone(), r.remaining, r.reset_ms), (2, Kind::Tokens, Scope::Team("eng".into()), 0, NOW + 30_000));
            }
            other => panic!("{other:?}"),
        }
        // No statuses (stock Limitador): the first limit, no reset known.
        match judge(&p, Ok(&response(2, &[])), NOW) {
            Verdict::Refused(r) => assert_eq!((r.index, r.reset_ms), (0, u64::MAX)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_ok_answer_reports_global_remaining_in_local_units() {
        let p = plan();
        let with_limit = |remaining: u8| vec![0x08, 1, 0x12, 2, 0x08, 5, 0x18, remaining];
        let b = response(1, &[&with_limit(1), &with_limit(4), &[0x08, 1], &with_limit(7)]);
        assert_eq!(judge(&p, Ok(&b), NOW), Verdict::Admitted(vec![(0, 1), (1, 4), (3, 7000)]));
        let mut statuses = vec![Status { index: 1, kind: Kind::Requests, limit: 10, remaining: 9, used: 0, reset_ms: 0 }];
        merge_remaining(&mut statuses, &[(1, 4)]);
        assert_eq!(statuses[0].remaining, 4);
    }

    #[test]
    fn failures_and_the_policy() {
        let p = plan();
        assert_eq!(judge(&p, Err(Failure::Grpc(14)), NOW), Verdict::Failed(Failure::Grpc(14)));
        assert_eq!(judge(&p, Ok(&[0xff]), NOW), Verdict::Failed(Failure::Malformed));
        assert_eq!(judge(&p, Ok(&response(0, &[])), NOW), Verdict::Failed(Failure::Malformed), "UNKNOWN is not an answer");
        assert_eq!((Failure::Grpc(4).label(), Failure::Grpc(14).label(), Failure::Grpc(13).label()), ("timeout", "unavailable", "grpc_error"));
        let modes = FailureModes::default();
        assert_eq!(on_failure(&p, &modes), Some(3), "budgets fail closed by default");
        assert_eq!(on_failure(&p[..3], &modes), None, "rate limits fail open");
    }

    #[test]
    fn budgets_are_micro_usd_on_the_wire() {
        assert_eq!((micro_usd(0), micro_usd(1), micro_usd(1000), micro_usd(1001)), (0, 1, 1, 2));
        assert_eq!(remote_limit(&lim(Scope::User("u".into()), Kind::Budget, 5_000_999)), 5_000);
        assert_eq!(remote_limit(&lim(Scope::User("u".into()), Kind::Requests, 7)), 7);
    }
}
