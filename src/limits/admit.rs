//! Admission over a request's list of limits, and settlement when the request ends.
//!
//! Why this exists: a request passes only if every limit that applies to it (key, team, user,
//! key-per-model; each rpm / tpm / parallel / budget) has room, and the counters must stay
//! exact while the workers of one Envoy admit concurrently. Each limit is one CAS update of its
//! own record; a refusal by a later limit releases what the earlier ones reserved
//! (compensation), so a refused request leaves no trace in any counter.
//!
//! Both operations are state machines ([`Admitting`], [`Settling`]) whose every `step` is one
//! store operation (a read, or a conditional write): [`Limiter::admit`] just runs the steps in
//! a loop, and the property tests interleave the steps of many requests in arbitrary orders —
//! every order the workers of one Envoy can produce, since shared data is only touched by
//! these reads and writes.
//!
//! Amounts per kind: rpm consumes 1 at admission (a started request counts, whatever its end);
//! tpm reserves the token estimate (prompt estimate + `max_tokens`); parallel reserves 1 slot;
//! a budget reserves the worst-case cost. [`settle`] replaces each reservation by the actual
//! amount (tokens, cost; 0 for a slot) in the window that admitted the request.
//!
//! Failure policy ([`OnUnavailable`]): a limit whose record cannot be read or written, or whose
//! CAS keeps conflicting for [`MAX_CAS_RETRIES`] attempts (contention comes from a handful of
//! workers, so this means a broken store, not load), is either skipped (`FailOpen`: the request
//! goes on, the limit is listed in [`Reservation::unchecked`] for a log line and a metric) or
//! refuses the request (`FailClosed`, [`Reason::Unavailable`], compensating what was reserved).
//! A release or settlement that cannot be written is given up (counted in [`Settled::failed`]):
//! the counter then stays *higher* than the truth until its window ends — the safe direction,
//! never an overshoot. A leaked parallel slot (gauge, no window) stays until a config reload
//! recreates the key; the wiring should log it.
//!
//! Exactly once: a [`Reservation`] is consumed by [`settle`] (it is not `Clone`), so it cannot be
//! settled twice; inside one settlement each held amount is applied by exactly one successful
//! CAS write (a conflicting write changed nothing and is recomputed from a fresh read).

use super::counter::{Check, Over, Record};
use super::store::{CasStore, Versioned, Written};
use super::window::{Span, Window};

/// CAS attempts per record before the store counts as unavailable.
pub const MAX_CAS_RETRIES: u32 = 32;

/// Who a limit belongs to. Ids are what the config names: the key's SHA-256 hex (never the raw
/// key), `team_id`, `user_id`; key-per-model is the key hash and the model group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Key(String),
    Team(String),
    User(String),
    KeyModel { key: String, model: String },
}

/// What a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `rpm_limit`, `model_rpm_limit`.
    Requests,
    /// `tpm_limit`, `model_tpm_limit`.
    Tokens,
    /// `max_parallel_requests`.
    Parallel,
    /// `max_budget` over `budget_duration`, `model_max_budget` (nano-USD).
    Budget,
}

/// One limit that applies to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pub scope: Scope,
    pub kind: Kind,
    /// The configured limit in the kind's unit.
    pub limit: u64,
    pub window: Window,
    pub check: Check,
    /// `soft_budget` (budgets only): reaching it flags the admission, never refuses.
    pub soft: Option<u64>,
}

/// Shared-data key prefix of the limit records.
pub const KEY_PREFIX: &str = "llm_router.v1.limit.";

impl Scope {
    pub fn tag(&self) -> &'static str {
        match self {
            Scope::Key(_) => "key",
            Scope::Team(_) => "team",
            Scope::User(_) => "user",
            Scope::KeyModel { .. } => "key_model",
        }
    }

    /// LiteLLM's descriptor key names (`api_key`, `team`, `user`, `model_per_key`) with the id,
    /// for messages.
    pub fn describe(&self) -> String {
        match self {
            Scope::Key(k) => format!("api_key: {k}"),
            Scope::Team(t) => format!("team: {t}"),
            Scope::User(u) => format!("user: {u}"),
            Scope::KeyModel { key, model } => format!("model_per_key: {key}:{model}"),
        }
    }
}

impl Kind {
    pub fn tag(&self) -> &'static str {
        match self {
            Kind::Requests => "rpm",
            Kind::Tokens => "tpm",
            Kind::Parallel => "parallel",
            Kind::Budget => "budget",
        }
    }
}

impl Limit {
    /// `llm_router.v1.limit.<kind>.<scope>.<id>`: kind and scope are fixed tags without dots,
    /// so the id (anything, dots included) is the unambiguous rest; key-per-model ids are
    /// `<key hash>/<model>` (a hex hash has no `/`).
    pub fn key(&self) -> String {
        let id = match &self.scope {
            Scope::Key(id) | Scope::Team(id) | Scope::User(id) => id.clone(),
            Scope::KeyModel { key, model } => format!("{key}/{model}"),
        };
        format!("{KEY_PREFIX}{}.{}.{id}", self.kind.tag(), self.scope.tag())
    }

    /// What admission holds on this limit. A token estimate larger than the whole limit is held
    /// as the whole limit (at least 1): such a request runs alone in its window instead of never
    /// (a 4096-token default reservation against `tpm_limit: 1000`); its settlement may then
    /// exceed the limit by its excess, the `(c − r)⁺` term of the bounds.
    pub(crate) fn amount(&self, demand: &Demand) -> u64 {
        match self.kind {
            Kind::Requests => demand.requests,
            Kind::Parallel => 1,
            Kind::Tokens => demand.tokens.min(self.limit.max(1)),
            Kind::Budget => demand.cost_nanos,
        }
    }
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Demand {
    /// Estimated tokens, counted like the actual will be: LiteLLM's v3 limiter counts
    /// `general_settings.token_rate_limit_type` tokens of the response — `output`, `input` or
    /// `total` (the current version's default, `get_rate_limit_type`; older ones defaulted to
    /// `output`). The wiring counts `total`: the prompt estimate plus `max_tokens`
    /// (`plan::token_demand`).
    pub tokens: u64,
    /// Worst-case cost in nano-USD: the estimate priced at the deployment the request is sent to.
    pub cost_nanos: u64,
    /// Requests to count on rpm limits: 1, or 0 for a failover pass of a request its first pass
    /// already counted (LiteLLM's limiter runs once per client request, before its router
    /// retries). A 0 still checks nothing and reports the limit's status.
    pub requests: u64,
}

impl Default for Demand {
    /// One request, no tokens, no cost.
    fn default() -> Demand {
        Demand { tokens: 0, cost_nanos: 0, requests: 1 }
    }
}

/// What a request consumed. `None`: unknown (no usage in the response) — the reservation is
/// kept as consumed, the conservative choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Actual {
    pub tokens: Option<u64>,
    pub cost_nanos: Option<u64>,
}

/// What to do when a limit's record cannot be updated (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUnavailable {
    FailOpen,
    FailClosed,
}

/// A limit's state after admission: what `x-ratelimit-*` headers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// Position in the admitted plan.
    pub index: usize,
    pub kind: Kind,
    pub limit: u64,
    pub remaining: u64,
    /// What the window had consumed before this request (settled spend for a budget).
    pub used: u64,
    /// Window end (`u64::MAX`: a gauge).
    pub reset_ms: u64,
}

/// An amount held in one record, to release or settle.
#[derive(Debug, PartialEq, Eq)]
struct Held {
    key: String,
    kind: Kind,
    window: Span,
    amount: u64,
    /// Counted in `used` (rpm) rather than `reserved`.
    consumed: bool,
}

/// An admitted request's hold on its limits. Not `Clone`: [`settle`] consumes it.
#[derive(Debug, PartialEq, Eq)]
pub struct Reservation {
    held: Vec<Held>,
    /// One per limit that was checked, in plan order.
    pub statuses: Vec<Status>,
    /// Budgets whose spend had reached `soft_budget` (plan indices): a header and a metric.
    pub soft_exceeded: Vec<usize>,
    /// Limits skipped under `FailOpen` (plan indices).
    pub unchecked: Vec<usize>,
}

impl Reservation {
    /// Tokens/cost/slots still held (for tests and logs).
    pub fn holds(&self) -> usize {
        self.held.len()
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The limit is full.
    Over,
    /// The record could not be updated and the policy is `FailClosed`.
    Unavailable,
}

/// A refused request: everything a 429 needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Position in the plan.
    pub index: usize,
    pub scope: Scope,
    pub kind: Kind,
    pub limit: u64,
    pub remaining: u64,
    /// What the window had consumed (a budget's settled spend: LiteLLM's "Current cost").
    pub used: u64,
    /// Window end in Unix ms (`u64::MAX` for parallel slots: they free when a request ends).
    pub reset_ms: u64,
    pub reason: Reason,
}

/// `retry-after` for a full parallel gauge (no window end to wait for).
pub const PARALLEL_RETRY_AFTER_S: u64 = 1;

impl Refusal {
    /// Whole seconds until the window resets, at least 1 (`retry-after`).
    pub fn retry_after_s(&self, now_ms: u64) -> u64 {
        if self.reset_ms == u64::MAX || self.reason == Reason::Unavailable {
            return PARALLEL_RETRY_AFTER_S;
        }
        self.reset_ms.saturating_sub(now_ms).div_ceil(1000).max(1)
    }

    /// The OpenAI error `type`: LiteLLM's `budget_exceeded` for budgets, else
    /// `rate_limit_error` (what the OpenAI SDK maps to `RateLimitError` with status 429).
    pub fn error_type(&self) -> &'static str {
        match self.kind {
            Kind::Budget => "budget_exceeded",
            _ => "rate_limit_error",
        }
    }

    /// The error message, naming the limit like LiteLLM does (`ExceededTokenBudget: …` from
    /// `auth_checks.py` for a key's budget, v3's "Rate limit exceeded for api_key: …").
    pub fn message(&self) -> String {
        let usd = super::reply::usd;
        match (self.kind, &self.scope) {
            (_, _) if self.reason == Reason::Unavailable => format!("Rate limit state unavailable for {}", self.scope.describe()),
            (Kind::Budget, Scope::Key(_)) => {
                format!("ExceededTokenBudget: Current spend for token: {}; Max Budget for Token: {}", usd(self.used), usd(self.limit))
            }
            (Kind::Budget, scope) => {
                let who = match scope {
                    Scope::Team(t) => format!("Team={t}"),
                    Scope::User(u) => format!("User={u}"),
                    Scope::KeyModel { key, model } => format!("Key={key} Model={model}"),
                    Scope::Key(k) => format!("Key={k}"),
                };
                format!("Budget has been exceeded! {who} Current cost: {}, Max budget: {}", usd(self.used), usd(self.limit))
            }
            (kind, scope) => format!(
                "Rate limit exceeded for {}. Limit type: {}. Current limit: {}, Remaining: {}.",
                scope.describe(),
                match kind {
                    Kind::Tokens => "tokens",
                    Kind::Parallel => "max_parallel_requests",
                    _ => "requests",
                },
                self.limit,
                self.remaining
            ),
        }
    }
}

/// A state machine's next state, or its result.
#[derive(Debug)]
pub enum Progress<M, T> {
    Pending(M),
    Done(T),
}

#[derive(Debug)]
enum Phase {
    /// Reserving on `plan[i]`.
    Reserve(usize),
    /// Releasing `held` from the back, then refusing.
    Release(Refusal),
}

/// When a limit frees up, as statuses and refusals report it: a parallel slot frees when a
/// request ends (`u64::MAX`), not at its epoch's end.
fn reset_of(kind: Kind, window_end_ms: u64) -> u64 {
    if kind == Kind::Parallel {
        u64::MAX
    } else {
        window_end_ms
    }
}

/// One admission in flight (module docs).
#[derive(Debug)]
pub struct Admitting {
    plan: Vec<Limit>,
    demand: Demand,
    now_ms: u64,
    policy: OnUnavailable,
    phase: Phase,
    read: Option<Versioned>,
    retries: u32,
    reservation: Reservation,
}

impl Admitting {
    pub fn new(plan: Vec<Limit>, demand: Demand, now_ms: u64, policy: OnUnavailable) -> Admitting {
        Admitting {
            plan,
            demand,
            now_ms,
            policy,
            phase: Phase::Reserve(0),
            read: None,
            retries: 0,
            reservation: Reservation { held: Vec::new(), statuses: Vec::new(), soft_exceeded: Vec::new(), unchecked: Vec::new() },
        }
    }

    /// Runs one store operation.
    pub fn step<S: CasStore + ?Sized>(mut self, store: &S) -> Progress<Admitting, Result<Reservation, Refusal>> {
        match std::mem::replace(&mut self.phase, Phase::Reserve(usize::MAX)) {
            Phase::Reserve(i) => self.reserve(store, i),
            Phase::Release(refusal) => self.release(store, refusal),
        }
    }

    fn reserve<S: CasStore + ?Sized>(mut self, store: &S, i: usize) -> Progress<Admitting, Result<Reservation, Refusal>> {
        let Some(limit) = self.plan.get(i) else {
            return Progress::Done(Ok(self.reservation));
        };
        let key = limit.key();
        let Some(read) = self.read.take() else {
            match store.read(&key) {
                Ok(v) => self.read = Some(v),
                Err(_) => return self.unavailable(i),
            }
            self.phase = Phase::Reserve(i);
            return Progress::Pending(self);
        };
        let stored = read.value.as_deref().and_then(Record::decode);
        let current = Record::rolled(stored, &limit.window, self.now_ms);
        let amount = limit.amount(&self.demand);
        let consumed = limit.kind == Kind::Requests;
        let next = match current.admit(limit.limit, amount, limit.check, consumed) {
            Ok(next) => next,
            Err(Over { remaining, used, reset_ms }) => {
                let reset_ms = reset_of(limit.kind, reset_ms);
                let refusal = Refusal { index: i, scope: limit.scope.clone(), kind: limit.kind, limit: limit.limit, remaining, used, reset_ms, reason: Reason::Over };
                return self.start_release(refusal);
            }
        };
        let soft = limit.soft.is_some_and(|s| current.used >= s);
        let status = Status { index: i, kind: limit.kind, limit: limit.limit, remaining: next.remaining(limit.limit), used: current.used, reset_ms: reset_of(limit.kind, next.window.end_ms) };
        // Nothing to hold and the record is already current: no write.
        let written = if amount == 0 && stored == Some(current) {
            Ok(Written::Ok)
        } else {
            store.write(&key, &next.encode(), read.token)
        };
        match written {
            Ok(Written::Ok) => {
                if amount > 0 {
                    self.reservation.held.push(Held { key, kind: limit.kind, window: next.window, amount, consumed });
                }
                self.reservation.statuses.push(status);
                if soft {
                    self.reservation.soft_exceeded.push(i);
                }
                self.retries = 0;
                self.phase = Phase::Reserve(i.saturating_add(1));
                Progress::Pending(self)
            }
            Ok(Written::Conflict) => {
                self.retries = self.retries.saturating_add(1);
                if self.retries >= MAX_CAS_RETRIES {
                    return self.unavailable(i);
                }
                self.phase = Phase::Reserve(i);
                Progress::Pending(self)
            }
            Err(_) => self.unavailable(i),
        }
    }

    fn unavailable(mut self, i: usize) -> Progress<Admitting, Result<Reservation, Refusal>> {
        self.retries = 0;
        self.read = None;
        match (self.policy, self.plan.get(i)) {
            (OnUnavailable::FailClosed, Some(limit)) => {
                let refusal = Refusal { index: i, scope: limit.scope.clone(), kind: limit.kind, limit: limit.limit, remaining: 0, used: 0, reset_ms: u64::MAX, reason: Reason::Unavailable };
                self.start_release(refusal)
            }
            _ => {
                self.reservation.unchecked.push(i);
                self.phase = Phase::Reserve(i.saturating_add(1));
                Progress::Pending(self)
            }
        }
    }

    fn start_release(mut self, refusal: Refusal) -> Progress<Admitting, Result<Reservation, Refusal>> {
        self.read = None;
        self.retries = 0;
        if self.reservation.held.is_empty() {
            return Progress::Done(Err(refusal));
        }
        self.phase = Phase::Release(refusal);
        Progress::Pending(self)
    }

    fn release<S: CasStore + ?Sized>(mut self, store: &S, refusal: Refusal) -> Progress<Admitting, Result<Reservation, Refusal>> {
        let Some(held) = self.reservation.held.last() else {
            return Progress::Done(Err(refusal));
        };
        let (used, reserved) = if held.consumed { (held.amount, 0) } else { (0, held.amount) };
        match undo_step(store, &mut self.read, &mut self.retries, held, used, reserved, 0) {
            UndoStep::Again => {}
            UndoStep::Finished | UndoStep::GaveUp => {
                self.reservation.held.pop();
                self.retries = 0;
            }
        }
        if self.reservation.held.is_empty() {
            return Progress::Done(Err(refusal));
        }
        self.phase = Phase::Release(refusal);
        Progress::Pending(self)
    }
}

enum UndoStep {
    /// Read done, or a conflict: step again.
    Again,
    Finished,
    /// Store failure or retries exhausted: the counter stays high (module docs).
    GaveUp,
}

/// One store operation of taking `used` + `reserved` off `held`'s record and adding `consumed`
/// to `used` — only if the record is still in `held`'s window.
fn undo_step<S: CasStore + ?Sized>(store: &S, read: &mut Option<Versioned>, retries: &mut u32, held: &Held, used: u64, reserved: u64, consumed: u64) -> UndoStep {
    let Some(v) = read.take() else {
        return match store.read(&held.key) {
            Ok(v) => {
                *read = Some(v);
                UndoStep::Again
            }
            Err(_) => UndoStep::GaveUp,
        };
    };
    let Some(rec) = v.value.as_deref().and_then(Record::decode) else {
        return UndoStep::Finished;
    };
    // A slot held in the epoch before the record's was carried into its `used` (`Record::rolled`).
    let carried = held.kind == Kind::Parallel && rec.window != held.window && rec.window.start_ms == held.window.end_ms;
    if rec.window != held.window && !carried {
        // The window rolled: the amount went with it (or the slot expired).
        return UndoStep::Finished;
    }
    let mut next = if carried { Record { used: rec.used.saturating_sub(reserved), ..rec } } else { rec.settled(held.window, reserved, consumed) };
    next.used = next.used.saturating_sub(used);
    match store.write(&held.key, &next.encode(), v.token) {
        Ok(Written::Ok) => UndoStep::Finished,
        Ok(Written::Conflict) => {
            *retries = retries.saturating_add(1);
            if *retries >= MAX_CAS_RETRIES {
                UndoStep::GaveUp
            } else {
                UndoStep::Again
            }
        }
        Err(_) => UndoStep::GaveUp,
    }
}

/// What a settlement did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Settled {
    /// Records updated.
    pub applied: u32,
    /// Records that could not be updated (left high, module docs).
    pub failed: u32,
}

/// One settlement in flight.
#[derive(Debug)]
pub struct Settling {
    held: Vec<Held>,
    actual: Actual,
    /// Undo everything, requests counted at admission included (the request never ran).
    cancel: bool,
    read: Option<Versioned>,
    retries: u32,
    report: Settled,
}

impl Settling {
    /// Starts settling `reservation` (consumed: it cannot be settled again).
    pub fn new(reservation: Reservation, actual: Actual) -> Settling {
        let mut held = reservation.held;
        // rpm was consumed at admission: nothing to settle.
        held.retain(|h| !h.consumed);
        Settling { held, actual, cancel: false, read: None, retries: 0, report: Settled::default() }
    }

    /// Starts undoing `reservation` as if the request had never been admitted: its requests,
    /// tokens, cost and slot all come off (a later gate — the global limits — refused it).
    pub fn cancel(reservation: Reservation) -> Settling {
        Settling { held: reservation.held, actual: Actual::default(), cancel: true, read: None, retries: 0, report: Settled::default() }
    }

    /// Runs one store operation.
    pub fn step<S: CasStore + ?Sized>(mut self, store: &S) -> Progress<Settling, Settled> {
        let Some(held) = self.held.last() else {
            return Progress::Done(self.report);
        };
        let consumed = match held.kind {
            _ if self.cancel => 0,
            Kind::Tokens => self.actual.tokens.unwrap_or(held.amount),
            Kind::Budget => self.actual.cost_nanos.unwrap_or(held.amount),
            Kind::Parallel | Kind::Requests => 0,
        };
        let (used, reserved) = if held.consumed { (held.amount, 0) } else { (0, held.amount) };
        match undo_step(store, &mut self.read, &mut self.retries, held, used, reserved, consumed) {
            UndoStep::Again => {}
            UndoStep::Finished => {
                self.held.pop();
                self.retries = 0;
                self.report.applied = self.report.applied.saturating_add(1);
            }
            UndoStep::GaveUp => {
                self.held.pop();
                self.retries = 0;
                self.report.failed = self.report.failed.saturating_add(1);
            }
        }
        if self.held.is_empty() {
            return Progress::Done(self.report);
        }
        Progress::Pending(self)
    }
}

/// Runs an admission to its end against `store`.
///
/// # Errors
/// The [`Refusal`] of the first limit that refused (or was unavailable under `FailClosed`);
/// nothing stays reserved then.
pub fn admit<S: CasStore + ?Sized>(store: &S, plan: Vec<Limit>, demand: Demand, now_ms: u64, policy: OnUnavailable) -> Result<Reservation, Refusal> {
    let mut m = Admitting::new(plan, demand, now_ms, policy);
    loop {
        match m.step(store) {
            Progress::Pending(next) => m = next,
            Progress::Done(result) => return result,
        }
    }
}

/// Runs a settlement to its end: every held amount is replaced by its actual (tokens, cost)
/// or released (parallel slot), once.
pub fn settle<S: CasStore + ?Sized>(store: &S, reservation: Reservation, actual: Actual) -> Settled {
    let mut m = Settling::new(reservation, actual);
    loop {
        match m.step(store) {
            Progress::Pending(next) => m = next,
            Progress::Done(report) => return report,
        }
    }
}

/// Undoes an admission whose request was refused after it (by the global limits): every
/// counter, rpm included, goes back to what it would be without the request.
pub fn cancel<S: CasStore + ?Sized>(store: &S, reservation: Reservation) -> Settled {
    let mut m = Settling::cancel(reservation);
    loop {
        match m.step(store) {
            Progress::Pending(next) => m = next,
            Progress::Done(report) => return report,
        }
    }
}

/// The limits engine as the request path calls it: [`Local`] (shared data with CAS). The global
/// mode is not another `Limiter` — it is an asynchronous second admission after this one
/// (`super::global`).
pub trait Limiter {
    /// # Errors
    /// The refusal to answer with a 429.
    fn admit(&self, plan: Vec<Limit>, demand: Demand, now_ms: u64) -> Result<Reservation, Refusal>;
    fn settle(&self, reservation: Reservation, actual: Actual) -> Settled;
}

/// Limits in one Envoy's shared data.
#[derive(Debug)]
pub struct Local<'a, S: CasStore + ?Sized> {
    pub store: &'a S,
    pub policy: OnUnavailable,
}

impl<S: CasStore + ?Sized> Limiter for Local<'_, S> {
    fn admit(&self, plan: Vec<Limit>, demand: Demand, now_ms: u64) -> Result<Reservation, Refusal> {
        admit(self.store, plan, demand, now_ms, self.policy)
    }

    fn settle(&self, reservation: Reservation, actual: Actual) -> Settled {
        settle(self.store, reservation, actual)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::store::{Fault, MemCas};
    use crate::limits::window::{Duration, Unit, MINUTE_MS, PARALLEL_EPOCH_MS};

    const NOW: u64 = 1_700_000_000_000;

    fn limit(scope: Scope, kind: Kind, n: u64) -> Limit {
        let window = match kind {
            Kind::Parallel => Window::Epoch { len_ms: PARALLEL_EPOCH_MS },
            Kind::Budget => Window::Calendar(Duration { value: 1, unit: Unit::Days }),
            _ => Window::FirstHit { len_ms: MINUTE_MS },
        };
        Limit { scope, kind, limit: n, window, check: Check::Fits, soft: None }
    }

    fn key() -> Scope {
        Scope::Key("ab12".into())
    }

    fn team() -> Scope {
        Scope::Team("eng.ml".into())
    }

    fn store_for(plan: &[Limit]) -> MemCas {
        let keys: Vec<String> = plan.iter().map(Limit::key).collect();
        MemCas::with_keys(keys.iter().map(String::as_str))
    }

    fn rec(s: &MemCas, l: &Limit) -> Option<Record> {
        s.value(&l.key()).and_then(|v| Record::decode(&v))
    }

    #[test]
    fn keys_are_unambiguous() {
        assert_eq!(limit(key(), Kind::Requests, 1).key(), "llm_router.v1.limit.rpm.key.ab12");
        assert_eq!(limit(team(), Kind::Budget, 1).key(), "llm_router.v1.limit.budget.team.eng.ml");
        let km = Scope::KeyModel { key: "ab12".into(), model: "openai/gpt-4o".into() };
        assert_eq!(limit(km, Kind::Tokens, 1).key(), "llm_router.v1.limit.tpm.key_model.ab12/openai/gpt-4o");
        assert_eq!(limit(Scope::User("u".into()), Kind::Parallel, 1).key(), "llm_router.v1.limit.parallel.user.u");
    }

    #[test]
    fn admits_until_full_then_refuses_with_reset() {
        let plan = vec![limit(key(), Kind::Requests, 2)];
        let s = store_for(&plan);
        let d = Demand::default();
        let r1 = admit(&s, plan.clone(), d, NOW, OnUnavailable::FailClosed).unwrap();
        assert_eq!(r1.statuses, vec![Status { index: 0, kind: Kind::Requests, limit: 2, remaining: 1, used: 0, reset_ms: NOW + MINUTE_MS }]);
        admit(&s, plan.clone(), d, NOW + 10, OnUnavailable::FailClosed).unwrap();
        let refusal = admit(&s, plan.clone(), d, NOW + 20_500, OnUnavailable::FailClosed).unwrap_err();
        assert_eq!((refusal.index, refusal.remaining, refusal.reset_ms, refusal.reason), (0, 0, NOW + MINUTE_MS, Reason::Over));
        assert_eq!(refusal.retry_after_s(NOW + 20_500), 40);
        assert_eq!(refusal.error_type(), "rate_limit_error");
        assert_eq!(refusal.message(), "Rate limit exceeded for api_key: ab12. Limit type: requests. Current limit: 2, Remaining: 0.");
        // The window opened at the first request; it resets one minute later.
        admit(&s, plan.clone(), d, NOW + MINUTE_MS, OnUnavailable::FailClosed).unwrap();
        assert_eq!(rec(&s, &plan[0]).map(|r| (r.window.start_ms, r.used)), Some((NOW + MINUTE_MS, 1)));
    }

    #[test]
    fn an_estimate_above_the_whole_tpm_limit_is_held_as_the_limit() {
        let plan = vec![limit(key(), Kind::Tokens, 100)];
        let s = store_for(&plan);
        let big = Demand { tokens: 5_000, cost_nanos: 0, requests: 1 };
        let r = admit(&s, plan.clone(), big, NOW, OnUnavailable::FailClosed).unwrap();
        assert_eq!(rec(&s, &plan[0]).map(|r| r.reserved), Some(100));
        assert!(admit(&s, plan.clone(), Demand { tokens: 1, cost_nanos: 0, requests: 1 }, NOW, OnUnavailable::FailClosed).is_err(), "it runs alone");
        settle(&s, r, Actual { tokens: Some(7), cost_nanos: None });
        assert_eq!(rec(&s, &plan[0]).map(|r| (r.used, r.reserved)), Some((7, 0)));
        let zero = vec![limit(key(), Kind::Tokens, 0)];
        let s = store_for(&zero);
        assert!(admit(&s, zero, Demand { tokens: 1, cost_nanos: 0, requests: 1 }, NOW, OnUnavailable::FailClosed).is_err(), "tpm_limit 0 admits nothing");
    }

    #[test]
    fn later_refusal_releases_earlier_reservations() {
        let plan = vec![limit(key(), Kind::Requests, 5), limit(key(), Kind::Parallel, 5), limit(key(), Kind::Tokens, 1000), limit(team(), Kind::Tokens, 100)];
        let s = store_for(&plan);
        // Another request holds 50 of the team's 100 tokens.
        admit(&s, vec![plan[3].clone()], Demand { tokens: 50, cost_nanos: 0, requests: 1 }, NOW, OnUnavailable::FailClosed).unwrap();
        let refusal = admit(&s, plan.clone(), Demand { tokens: 60, cost_nanos: 0, requests: 1 }, NOW, OnUnavailable::FailClosed).unwrap_err();
        assert_eq!((refusal.index, refusal.scope.clone(), refusal.kind, refusal.remaining), (3, team(), Kind::Tokens, 50));
        for l in &plan[..3] {
            let r = rec(&s, l).unwrap();
            assert_eq!((r.used, r.reserved), (0, 0), "{l:?}");
        }
        // The team record was only read: the other request's hold is all it has.
        assert_eq!(rec(&s, &plan[3]).map(|r| (r.used, r.reserved)), Some((0, 50)));
    }

    #[test]
    fn cancel_undoes_every_kind_rpm_included() {
        let plan = vec![limit(key(), Kind::Parallel, 1), limit(key(), Kind::Requests, 1), limit(key(), Kind::Tokens, 1000), limit(key(), Kind::Budget, 10_000)];
        let s = store_for(&plan);
        let d = Demand { tokens: 300, cost_nanos: 3_000, requests: 1 };
        let r = admit(&s, plan.clone(), d, NOW, OnUnavailable::FailClosed).unwrap();
        assert!(admit(&s, plan.clone(), d, NOW, OnUnavailable::FailClosed).is_err(), "full");
        assert_eq!(cancel(&s, r), Settled { applied: 4, failed: 0 });
        for l in &plan {
            assert_eq!(rec(&s, l).map(|r| (r.used, r.reserved)), Some((0, 0)), "{l:?}");
        }
        admit(&s, plan, d, NOW, OnUnavailable::FailClosed).expect("room again");
    }

    #[test]
    fn settle_reconciles_and_releases_once() {
        let plan = vec![limit(key(), Kind::Parallel, 1), limit(key(), Kind::Tokens, 1000), limit(key(), Kind::Budget, 10_000)];
        let s = store_for(&plan);
        let r = admit(&s, plan.clone(), Demand { tokens: 300, cost_nanos: 3_000, requests: 1 }, NOW, OnUnavailable::FailClosed).unwrap();
        assert_eq!(r.holds(), 3);
        // The single slot is taken.
        let refusal = admit(&s, plan.clone(), Demand::default(), NOW, OnUnavailable::FailClosed).unwrap_err();
        assert_eq!((refusal.kind, refusal.retry_after_s(NOW)), (Kind::Parallel, 1));
        let report = settle(&s, r, Actual { tokens: Some(120), cost_nanos: Some(1_200) });
        assert_eq!(report, Settled { applied: 3, failed: 0 });
        let at = |i: usize| rec(&s, &plan[i]).map(|r| (r.used, r.reserved));
        assert_eq!((at(0), at(1), at(2)), (Some((0, 0)), Some((120, 0)), Some((1_200, 0))));
        // `settle(&s, r, ..)` again does not compile: the reservation was moved.
        // Unknown usage keeps the reservation as consumed.
        let r = admit(&s, plan.clone(), Demand { tokens: 300, cost_nanos: 3_000, requests: 1 }, NOW, OnUnavailable::FailClosed).unwrap();
        settle(&s, r, Actual::default());
        assert_eq!((at(1), at(2)), (Some((420, 0)), Some((4_200, 0))));
    }

    #[test]
    fn settling_after_the_window_rolled_charges_nothing_new() {
        let plan = vec![limit(key(), Kind::Tokens, 1000)];
        let s = store_for(&plan);
        let r = admit(&s, plan.clone(), Demand { tokens: 300, cost_nanos: 0, requests: 1 }, NOW, OnUnavailable::FailClosed).unwrap();
        let r2 = admit(&s, plan.clone(), Demand { tokens: 100, cost_nanos: 0, requests: 1 }, NOW + MINUTE_MS, OnUnavailable::FailClosed).unwrap();
        settle(&s, r, Actual { tokens: Some(900), cost_nanos: None });
        assert_eq!(rec(&s, &plan[0]).map(|r| (r.window.start_ms, r.used, r.reserved)), Some((NOW + MINUTE_MS, 0, 100)));
        settle(&s, r2, Actual { tokens: Some(50), cost_nanos: None });
        assert_eq!(rec(&s, &plan[0]).map(|r| (r.used, r.reserved)), Some((50, 0)));
    }

    #[test]
    fn budget_fits_or_below_limit_and_soft_flag() {
        let mut b = limit(key(), Kind::Budget, 10_000);
        b.soft = Some(5_000);
        let s = store_for(std::slice::from_ref(&b));
        let d = Demand { tokens: 0, cost_nanos: 4_000, requests: 1 };
        let r = admit(&s, vec![b.clone()], d, NOW, OnUnavailable::FailClosed).unwrap();
        assert!(r.soft_exceeded.is_empty());
        settle(&s, r, Actual { tokens: None, cost_nanos: Some(6_000) });
        // Spend 6000 ≥ soft 5000: flagged, not refused.
        let r = admit(&s, vec![b.clone()], d, NOW, OnUnavailable::FailClosed).unwrap();
        assert_eq!(r.soft_exceeded, vec![0]);
        // 6000 spent + 4000 held: a third worst case does not fit.
        let refusal = admit(&s, vec![b.clone()], d, NOW, OnUnavailable::FailClosed).unwrap_err();
        assert_eq!((refusal.error_type(), refusal.remaining), ("budget_exceeded", 0));
        assert_eq!(refusal.message(), "ExceededTokenBudget: Current spend for token: 0.000006; Max Budget for Token: 0.00001");
        // BelowLimit: admitted while anything is left.
        settle(&s, r, Actual { tokens: None, cost_nanos: Some(3_000) });
        b.check = Check::BelowLimit;
        assert!(admit(&s, vec![b.clone()], d, NOW, OnUnavailable::FailClosed).is_ok());
        assert!(admit(&s, vec![b], d, NOW, OnUnavailable::FailClosed).is_err());
        let team_budget = Refusal { index: 0, scope: team(), kind: Kind::Budget, limit: 2_000_000_000, remaining: 0, used: 2_000_000_000, reset_ms: NOW, reason: Reason::Over };
        assert_eq!(team_budget.message(), "Budget has been exceeded! Team=eng.ml Current cost: 2.0, Max budget: 2.0");
    }

    #[test]
    fn cas_conflicts_are_retried_and_bounded() {
        let plan = vec![limit(key(), Kind::Requests, 5), limit(team(), Kind::Requests, 5)];
        let s = store_for(&plan);
        for _ in 0..3 {
            s.inject(&plan[1].key(), Fault::Conflict);
        }
        let r = admit(&s, plan.clone(), Demand::default(), NOW, OnUnavailable::FailClosed).unwrap();
        assert!(r.unchecked.is_empty());
        assert_eq!(rec(&s, &plan[1]).map(|r| r.used), Some(1));
        // Endless conflicts on the team record: FailClosed refuses and releases the key's rpm.
        for _ in 0..MAX_CAS_RETRIES {
            s.inject(&plan[1].key(), Fault::Conflict);
        }
        let refusal = admit(&s, plan.clone(), Demand::default(), NOW, OnUnavailable::FailClosed).unwrap_err();
        assert_eq!((refusal.index, refusal.reason), (1, Reason::Unavailable));
        assert_eq!(rec(&s, &plan[0]).map(|r| r.used), Some(1));
        // FailOpen skips it and says so.
        s.inject(&plan[1].key(), Fault::Fail);
        let r = admit(&s, plan.clone(), Demand::default(), NOW, OnUnavailable::FailOpen).unwrap();
        assert_eq!((r.unchecked.clone(), r.statuses.len()), (vec![1], 1));
        assert_eq!(rec(&s, &plan[0]).map(|r| r.used), Some(2));
    }

    #[test]
    fn failed_settlement_leaves_the_counter_high() {
        let plan = vec![limit(key(), Kind::Parallel, 3)];
        let s = store_for(&plan);
        let r = admit(&s, plan.clone(), Demand::default(), NOW, OnUnavailable::FailClosed).unwrap();
        s.inject(&plan[0].key(), Fault::Fail);
        assert_eq!(settle(&s, r, Actual::default()), Settled { applied: 0, failed: 1 });
        assert_eq!(rec(&s, &plan[0]).map(|r| r.reserved), Some(1));
    }

    #[test]
    fn a_lost_parallel_slot_expires_after_one_to_two_epochs_and_live_ones_carry_over() {
        let p = vec![limit(key(), Kind::Parallel, 1)];
        let s = store_for(&p);
        let epoch = PARALLEL_EPOCH_MS;
        let start = NOW - NOW % epoch; // the start of NOW's epoch
        // A hold taken late in one epoch and never released (its VM died).
        let lost = admit(&s, p.clone(), Demand::default(), start + epoch - 1, OnUnavailable::FailClosed).unwrap();
        let refused = admit(&s, p.clone(), Demand::default(), start + epoch, OnUnavailable::FailClosed).unwrap_err();
        assert_eq!((refused.kind, refused.reset_ms, refused.retry_after_s(start + epoch)), (Kind::Parallel, u64::MAX, 1), "carried into the next epoch");
        assert_eq!(rec(&s, &p[0]).map(|r| (r.used, r.reserved)), Some((0, 1)), "a refusal writes nothing");
        // Two epochs later it is gone.
        let next = admit(&s, p.clone(), Demand::default(), start + 2 * epoch, OnUnavailable::FailClosed).unwrap();
        assert_eq!(next.statuses[0].reset_ms, u64::MAX);
        assert!(admit(&s, p.clone(), Demand::default(), start + 2 * epoch + 1, OnUnavailable::FailClosed).is_err(), "the new hold counts");
        // Settling the expired hold changes nothing.
        settle(&s, lost, Actual::default());
        assert_eq!(rec(&s, &p[0]).map(|r| (r.used, r.reserved)), Some((0, 1)));
        // Live holds carry into the next epoch and are released from there.
        let two = vec![limit(key(), Kind::Parallel, 2)];
        let s = store_for(&two);
        let old = admit(&s, two.clone(), Demand::default(), start + epoch - 1, OnUnavailable::FailClosed).unwrap();
        let new = admit(&s, two.clone(), Demand::default(), start + epoch, OnUnavailable::FailClosed).unwrap();
        assert_eq!(rec(&s, &two[0]).map(|r| (r.used, r.reserved)), Some((1, 1)), "the previous epoch's hold sits in `used`");
        assert!(admit(&s, two.clone(), Demand::default(), start + epoch + 1, OnUnavailable::FailClosed).is_err(), "both count");
        settle(&s, old, Actual::default());
        assert_eq!(rec(&s, &two[0]).map(|r| (r.used, r.reserved)), Some((0, 1)));
        settle(&s, new, Actual::default());
        assert_eq!(rec(&s, &two[0]).map(|r| (r.used, r.reserved)), Some((0, 0)));
        drop(next);
    }

    #[test]
    fn zero_amounts_hold_nothing() {
        let plan = vec![limit(key(), Kind::Tokens, 10)];
        let s = store_for(&plan);
        let r = admit(&s, plan.clone(), Demand::default(), NOW, OnUnavailable::FailClosed).unwrap();
        assert_eq!((r.holds(), r.statuses.len()), (0, 1));
        // The first write created the window; a second zero admission writes nothing.
        let writes = *s.writes.borrow();
        admit(&s, plan, Demand::default(), NOW + 1, OnUnavailable::FailClosed).unwrap();
        assert_eq!(*s.writes.borrow(), writes);
    }

    #[test]
    fn absent_keys_race_which_is_why_configure_creates_them() {
        // Two workers read an absent key: both writes are unconditional, one increment is lost.
        let plan = vec![limit(key(), Kind::Requests, 5)];
        let s = MemCas::default();
        let a = Admitting::new(plan.clone(), Demand::default(), NOW, OnUnavailable::FailClosed);
        let b = Admitting::new(plan.clone(), Demand::default(), NOW, OnUnavailable::FailClosed);
        let (Progress::Pending(a), Progress::Pending(b)) = (a.step(&s), b.step(&s)) else { panic!("reads") };
        let (Progress::Pending(a), Progress::Pending(b)) = (a.step(&s), b.step(&s)) else { panic!("writes") };
        assert!(matches!((a.step(&s), b.step(&s)), (Progress::Done(Ok(_)), Progress::Done(Ok(_)))));
        assert_eq!(rec(&s, &plan[0]).map(|r| r.used), Some(1));
        // With the key created empty, the second write conflicts and is retried.
        let s = store_for(&plan);
        let a = Admitting::new(plan.clone(), Demand::default(), NOW, OnUnavailable::FailClosed);
        let b = Admitting::new(plan.clone(), Demand::default(), NOW, OnUnavailable::FailClosed);
        let (Progress::Pending(a), Progress::Pending(b)) = (a.step(&s), b.step(&s)) else { panic!("reads") };
        let (Progress::Pending(a), Progress::Pending(b)) = (a.step(&s), b.step(&s)) else { panic!("writes") };
        assert!(matches!(a.step(&s), Progress::Done(Ok(_))));
        assert!(admit_rest(b, &s).is_ok());
        assert_eq!(rec(&s, &plan[0]).map(|r| r.used), Some(2));
    }

    #[test]
    fn the_local_limiter_is_the_seam() {
        let plan = vec![limit(key(), Kind::Parallel, 1)];
        let s = store_for(&plan);
        let limiter: &dyn Limiter = &Local { store: &s, policy: OnUnavailable::FailClosed };
        let r = limiter.admit(plan.clone(), Demand::default(), NOW).unwrap();
        assert!(limiter.admit(plan.clone(), Demand::default(), NOW).is_err());
        assert_eq!(limiter.settle(r, Actual::default()).applied, 1);
        assert!(limiter.admit(plan.clone(), Demand::default(), NOW).is_ok());
        // An unavailable store under FailClosed: a 429 that says so, retried after a second.
        let s = store_for(&plan);
        s.inject(&plan[0].key(), Fault::Fail);
        let refusal = Local { store: &s, policy: OnUnavailable::FailClosed }.admit(plan, Demand::default(), NOW).unwrap_err();
        assert_eq!((refusal.reason, refusal.retry_after_s(NOW)), (Reason::Unavailable, 1));
        assert_eq!(refusal.message(), "Rate limit state unavailable for api_key: ab12");
    }

    fn admit_rest(mut m: Admitting, s: &MemCas) -> Result<Reservation, Refusal> {
        loop {
            match m.step(s) {
                Progress::Pending(n) => m = n,
                Progress::Done(r) => return r,
            }
        }
    }
}
