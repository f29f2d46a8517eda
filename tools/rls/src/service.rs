//! `ShouldRateLimit` over Limitador: the contract of `docs/design/global-limits.md`.
//!
//! Why not limitador-server's handler: it ignores per-descriptor addends and negative hits,
//! answers no statuses, and uses `check_rate_limited_and_update`, which on Redis reads then
//! increments in two round trips (concurrent callers can both take the last unit). Here:
//!
//! * every positive descriptor is `reserve`d (one atomic Lua script: value + held + amount >
//!   max → limited), all concurrently; if none is limited all are committed in one Lua script
//!   (counter += amount, hold released: `decrement::commit_all`, atomic where limitador's
//!   `commit_reservation` takes two round trips), else every hold is released and nothing is
//!   charged;
//! * a per-descriptor `hits_addend` of `Some(0)` is a peek (`is_rate_limited` with 0);
//! * a negative descriptor is a clamped decrement (`decrement.rs`), applied whatever the
//!   others answer, never refused;
//! * a settlement (the call carries the gRPC metadata [`SETTLEMENT_HEADER`], which the router sets
//!   on the calls it makes at the end of a stream) applies every descriptor unchecked: a positive
//!   one is added (`update_counters`) even past the limit — the usage happened — and a negative one
//!   decremented, as envoyproxy/ratelimit applies a call whose answer nobody reads;
//! * storage errors are gRPC `UNAVAILABLE`, so the router's failure policy applies.

use crate::decrement::{self, Left};
use crate::index::Index;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    rate_limit::Unit, Code, DescriptorStatus, RateLimit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitService;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::Duration as PbDuration;
use futures::future::join_all;
use limitador::counter::Counter;
use limitador::errors::LimitadorError;
use limitador::limit::{Context, Limit, Namespace};
use limitador::reservation::ReservationId;
use limitador::AsyncRateLimiter;
use redis::aio::ConnectionManager;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tonic::{Request, Response, Status};

/// The gRPC metadata that marks a settlement (`docs/design/global-limits.md`).
pub const SETTLEMENT_HEADER: &str = "x-llm-router-settlement";

/// What a call is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// May refuse: all or nothing, atomic.
    Admission,
    /// Reports what happened: applied, never refused.
    Settlement,
}

/// The server's state: Limitador, the index of its limits, and the Redis connection that
/// decrements share with Limitador's storage.
pub struct Rls {
    limiter: AsyncRateLimiter,
    index: RwLock<Arc<Index>>,
    conn: ConnectionManager,
    hold_ttl: Duration,
}

impl Rls {
    pub fn new(limiter: AsyncRateLimiter, conn: ConnectionManager, hold_ttl: Duration) -> Self {
        Self {
            limiter,
            index: RwLock::new(Arc::new(Index::default())),
            conn,
            hold_ttl,
        }
    }

    /// Installs a limits file's limits; counters of unchanged limits are kept (`configure_with`).
    pub async fn configure(&self, limits: Vec<Limit>) -> Result<usize, String> {
        let count = limits.len();
        let (index, limits) = Index::build(limits)?;
        self.limiter
            .configure_with(limits)
            .await
            .map_err(|e| e.to_string())?;
        *self.index.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(index);
        Ok(count)
    }

    fn index(&self) -> Arc<Index> {
        Arc::clone(&self.index.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The limits Limitador holds under `ns` (for tests: the index's cost).
    pub fn limits_in(&self, ns: &Namespace) -> usize {
        self.limiter.get_limits(ns).len()
    }

    /// The namespaces one descriptor's entries lead to.
    pub fn namespaces_for(
        &self,
        domain: &str,
        entries: &BTreeMap<String, String>,
    ) -> Vec<Namespace> {
        self.index().namespaces_for(domain, entries)
    }

    /// Answers one admission.
    pub async fn should_rate_limit(
        &self,
        req: RateLimitRequest,
    ) -> Result<RateLimitResponse, Status> {
        self.answer(req, Call::Admission).await
    }

    /// Answers one call (the gRPC handler runs it in its own task).
    pub async fn answer(&self, req: RateLimitRequest, call: Call) -> Result<RateLimitResponse, Status> {
        if req.domain.is_empty() {
            return Err(Status::invalid_argument("domain is required"));
        }
        let index = self.index();
        let default_addend = u64::from(req.hits_addend.max(1));
        let descriptors: Vec<Descriptor> = req
            .descriptors
            .iter()
            .map(|d| Descriptor::new(d, default_addend, &req.domain, &index))
            .collect();

        // Every (descriptor, namespace) unit at once: reservations, peeks and refunds.
        let results = join_all(
            descriptors
                .iter()
                .enumerate()
                .flat_map(|(i, d)| d.namespaces.iter().map(move |ns| self.evaluate(i, d, ns, call))),
        )
        .await;

        let mut outcomes: Vec<Outcome> = Vec::with_capacity(results.len());
        let mut error = None;
        for r in results {
            match r {
                Ok(o) => outcomes.push(o),
                Err(e) => error = Some(e),
            }
        }
        let limited = outcomes.iter().any(|o| o.limited);
        if error.is_some() || limited {
            // Nothing is charged: release every hold taken (best effort; a hold left by a
            // failed release expires after --hold-ttl-secs).
            join_all(
                outcomes
                    .iter()
                    .filter_map(|o| o.release(self, &descriptors)),
            )
            .await;
            if let Some(e) = error {
                eprintln!("llm-router-rls: storage error: {e}");
                return Err(Status::unavailable(format!("rate limit storage: {e}")));
            }
        } else {
            // One script for every counter of the request: increments and hold releases are
            // atomic together (see `decrement::commit_all`).
            let commits: Vec<decrement::Commit> = outcomes
                .iter()
                .flat_map(|o| o.commits.iter().cloned())
                .collect();
            if let Err(e) = decrement::commit_all(&self.conn, &commits).await {
                eprintln!("llm-router-rls: storage error: {e}");
                return Err(Status::unavailable(format!("rate limit storage: {e}")));
            }
        }

        let statuses = (0..descriptors.len())
            .map(|i| status(outcomes.iter().filter(|o| o.descriptor == i)))
            .collect();
        let code = if limited { Code::OverLimit } else { Code::Ok };
        Ok(RateLimitResponse {
            overall_code: code as i32,
            statuses,
            ..Default::default()
        })
    }

    async fn evaluate(&self, i: usize, d: &Descriptor, ns: &Namespace, call: Call) -> Result<Outcome, String> {
        let ctx = d.context();
        let mut outcome = Outcome {
            descriptor: i,
            ns: ns.clone(),
            limited: false,
            reserved: false,
            reservation: None,
            commits: Vec::new(),
            counters: Vec::new(),
        };
        let err = |e: LimitadorError| e.to_string();
        if d.negative {
            outcome.counters = self.refund(ns, &ctx, d.amount).await?;
        } else if call == Call::Settlement {
            if d.amount > 0 {
                self.limiter.update_counters(ns, &ctx, d.amount).await.map_err(err)?;
            }
        } else if d.amount == 0 {
            let r = self
                .limiter
                .is_rate_limited(ns, &ctx, 0)
                .await
                .map_err(err)?;
            outcome.limited = r.limited;
            outcome.counters = r.counters.iter().map(Seen::from).collect();
        } else {
            let r = self
                .limiter
                .reserve(ns, &ctx, d.amount, Some(self.hold_ttl))
                .await
                .map_err(err)?;
            outcome.limited = r.limited;
            outcome.counters = r.counters.iter().map(Seen::from).collect();
            outcome.reserved = !r.limited && !r.counters.is_empty();
            if outcome.reserved {
                for c in &r.counters {
                    let Some(counter_key) = decrement::counter_key(c.limit(), &ctx)? else {
                        continue;
                    };
                    outcome.commits.push(decrement::Commit {
                        counter_key,
                        limit_set_key: decrement::limit_set_key(c.limit())?,
                        window_secs: c.limit().seconds(),
                        amount: d.amount,
                        reservation_id: r.reservation_id.as_ref().map(|id| id.as_str().to_owned()),
                    });
                }
            }
            outcome.reservation = r.reservation_id;
        }
        Ok(outcome)
    }

    /// Decrements every counter of `ns`'s limits that apply to `ctx`.
    async fn refund(
        &self,
        ns: &Namespace,
        ctx: &Context<'_>,
        amount: u64,
    ) -> Result<Vec<Seen>, String> {
        let mut seen = Vec::new();
        for limit in self.limiter.get_limits(ns) {
            if !limit.applies(ctx) {
                continue;
            }
            let Some(key) = decrement::counter_key(&limit, ctx)? else {
                continue;
            };
            let left = decrement::decrement(&self.conn, &key, amount)
                .await
                .map_err(|e| e.to_string())?;
            let Left { value, expires_in } = left.unwrap_or(Left {
                value: 0,
                expires_in: None,
            });
            seen.push(Seen {
                name: limit.name().unwrap_or_default().to_owned(),
                max_value: limit.max_value(),
                seconds: limit.seconds(),
                remaining: limit.max_value().saturating_sub(value),
                expires_in: expires_in.or(Some(Duration::from_secs(limit.seconds()))),
            });
        }
        Ok(seen)
    }
}

/// The gRPC service: `RateLimitServiceServer::new(Handler(rls))`.
pub struct Handler(pub Arc<Rls>);

#[tonic::async_trait]
impl RateLimitService for Handler {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        // Its own task, so that a panic (a CEL condition that errors inside limitador's
        // `Limit::applies`, which unwraps) is one failed call, not a dropped connection.
        let rls = Arc::clone(&self.0);
        let call = if request.metadata().get(SETTLEMENT_HEADER).is_some() { Call::Settlement } else { Call::Admission };
        let req = request.into_inner();
        match tokio::spawn(async move { Rls::answer(&rls, req, call).await }).await {
            Ok(r) => r.map(Response::new),
            Err(e) => {
                eprintln!("llm-router-rls: request failed: {e}");
                Err(Status::internal("rate limit evaluation failed"))
            }
        }
    }
}

/// One request descriptor, parsed.
struct Descriptor {
    entries: HashMap<String, String>,
    amount: u64,
    negative: bool,
    namespaces: Vec<Namespace>,
}

impl Descriptor {
    fn new(d: &RateLimitDescriptor, default_addend: u64, domain: &str, index: &Index) -> Self {
        let sorted: BTreeMap<String, String> = d
            .entries
            .iter()
            .map(|e| (e.key.clone(), e.value.clone()))
            .collect();
        let namespaces = index.namespaces_for(domain, &sorted);
        Descriptor {
            entries: sorted.into_iter().collect(),
            amount: d.hits_addend.as_ref().map_or(default_addend, |v| v.value),
            negative: d.is_negative_hits,
            namespaces,
        }
    }

    /// `descriptors` = this descriptor alone, as limitador-server binds a request's list.
    fn context(&self) -> Context<'static> {
        let mut ctx = Context::default();
        ctx.list_binding("descriptors".to_owned(), vec![self.entries.clone()]);
        ctx
    }
}

/// What one (descriptor, namespace) unit found.
struct Outcome {
    descriptor: usize,
    ns: Namespace,
    limited: bool,
    /// A reservation was admitted: it must be committed or released.
    reserved: bool,
    reservation: Option<ReservationId>,
    /// The counters to commit when the whole request is admitted.
    commits: Vec<decrement::Commit>,
    counters: Vec<Seen>,
}

impl Outcome {
    fn release<'a>(
        &'a self,
        rls: &'a Rls,
        ds: &'a [Descriptor],
    ) -> Option<impl std::future::Future<Output = ()> + 'a> {
        let d = &ds[self.descriptor];
        (self.reserved && self.reservation.is_some()).then_some(async move {
            let ctx = d.context();
            let _ = rls
                .limiter
                .commit_reservation(&self.ns, &ctx, self.reservation.as_ref(), 0)
                .await;
        })
    }
}

/// One counter as the response reports it.
struct Seen {
    name: String,
    max_value: u64,
    seconds: u64,
    remaining: u64,
    expires_in: Option<Duration>,
}

impl From<&Counter> for Seen {
    fn from(c: &Counter) -> Self {
        Seen {
            name: c.limit().name().unwrap_or_default().to_owned(),
            max_value: c.max_value(),
            seconds: c.limit().seconds(),
            remaining: c.remaining().unwrap_or(c.max_value()),
            expires_in: c.expires_in(),
        }
    }
}

/// A descriptor's status: OVER_LIMIT if one of its units was; the limit reported is the
/// counter with the least remaining (a refused unit's, when refused). No counter: OK, no limit.
fn status<'a>(outcomes: impl Iterator<Item = &'a Outcome>) -> DescriptorStatus {
    let outcomes: Vec<&Outcome> = outcomes.collect();
    let limited = outcomes.iter().any(|o| o.limited);
    let tightest = outcomes
        .iter()
        .filter(|o| o.limited == limited)
        .flat_map(|o| o.counters.iter())
        .min_by_key(|c| c.remaining);
    let code = if limited { Code::OverLimit } else { Code::Ok };
    let mut status = DescriptorStatus {
        code: code as i32,
        ..Default::default()
    };
    if let Some(c) = tightest {
        status.current_limit = Some(RateLimit {
            name: c.name.clone(),
            requests_per_unit: saturate(c.max_value),
            unit: unit(c.seconds) as i32,
        });
        status.limit_remaining = saturate(c.remaining);
        status.duration_until_reset = c.expires_in.map(|d| PbDuration {
            seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nanos: d.subsec_nanos() as i32,
        });
    }
    status
}

fn saturate(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// The proto unit of a window, when it is exactly one.
pub fn unit(seconds: u64) -> Unit {
    match seconds {
        1 => Unit::Second,
        60 => Unit::Minute,
        3600 => Unit::Hour,
        86_400 => Unit::Day,
        604_800 => Unit::Week,
        _ => Unit::Unknown,
    }
}
