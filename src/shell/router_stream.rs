//! One HTTP stream on the downstream side: read headers → (pause) → buffered body (ended by its
//! last chunk or by trailers) → apply the plan → observe the response → close the attempt in
//! `on_log`. Host calls per routed request:
//! 1 header read, 1 body read, 1 shared-data read, 1 header-map write, 1 body write when the body
//! changes, and on the response 1 status read and 3–4 header writes; with
//! `access_log_properties` (opt-in) 3–4 `set_property` calls per pass (+2 at the end when token
//! usage is known, +1–5 for the caller's names and the cost: `shell/spend.rs`). Shared-data writes happen only when an attempt failed. The local endpoints
//! answer in the headers phase. Metrics (`envoy_settings.metrics`) add 2–3 metric calls when an
//! attempt is forwarded, 2–5 in `on_log` (+1–4 spend counters for a request with a key), 1–3 per failure, and the token-usage read of the
//! response body (`host/metrics.rs`). A virtual key with limits adds, per limit, one
//! shared-data read and one CAS write at admission and again at settlement in `on_log` (rpm: none
//! at settlement); its response headers (the router's, `x-ratelimit-*`, budget) are then read and
//! written as one map (2 calls instead of a call per header and per read); and the response-body
//! read when a tpm limit or a budget applies. Keys bound to a mesh principal or JWT subject (`mesh_principals`, `jwt_subjects`) add,
//! for a request that presents no key, 1–3 property reads in the headers phase (`shell/identity.rs`);
//! without bindings, none. With a rate limit service (`envoy_settings.rate_limit_service`), a key
//! with limits adds a gRPC call and the read of its answer, a resume, and one shared-queue append in
//! `on_log` (the root context sends the settlement).
//!
//! Every host call goes through [`Host`]; a failing call degrades this request (a 500 reply, or a
//! missing response header / metric / property), never the VM.

use super::host::{Flow, Host};
use super::identity::PeerProperties;
use super::vm::Vm;
use crate::config::RouterConfig;
use crate::failover::{REDIRECTOR_HEADER, STATE_HEADER};
use crate::access::Caller;
use crate::health::parse_retry_after;
use crate::limits::{self, Actual, Demand, Kind, Limiter, Local, OnUnavailable, Reservation};
use crate::metrics::{self, Pass, Sink};
use crate::openai::{ApiError, UsageTracker};
use crate::pipeline::auth::{presented, ClientCredentials};
use crate::pipeline::request::{
    self, Env, FailedAttempt, Forward, HeadDecision, LocalReply, Pending, ReplayCheck, Reply, RequestHead, PER_TRY_TIMEOUT_HEADER,
    TAGS_HEADER,
};
use crate::pipeline::response::{self, ResponseFacts};
use crate::pipeline::{headers, health_report, log_props, outcome};
use crate::stats::{self, Attempt, Finish, Outcome, StoreStats, Track};
use std::rc::Rc;

pub const DEPLOYMENT_HEADER: &str = "x-llm-router-deployment";
pub const GROUP_HEADER: &str = "x-llm-router-model-group";
pub const ATTEMPTS_HEADER: &str = "x-llm-router-attempts";
pub const FALLBACK_FROM_HEADER: &str = "x-llm-router-fallback-from";

/// Where the stream is.
enum Phase {
    /// Not ours (or no config, or closed in `on_log`): everything passes through.
    Idle,
    /// Waiting for the whole body, with the client's request headers (rewritten in one write).
    Buffering { pending: Pending, headers: Vec<(String, String)> },
    /// Rewritten and locally admitted; waiting for the rate limit service's answer (global
    /// limits) before going on.
    Admitting(Box<Awaiting>),
    /// Forwarded to deployment `index` of the config.
    Forwarded(Sent),
    /// A local reply was sent.
    Replied,
}

/// What the response side needs to know about the forwarded attempt.
struct Sent {
    index: usize,
    attempts: u32,
    fallback_from: Option<String>,
    start_ms: u64,
    try_budget_ms: Option<u64>,
    stream: bool,
    /// The live-statistics receipt (untracked for simple-shuffle: no writes).
    attempt: Attempt,
    /// Reads token usage from the response body, when someone needs it.
    usage: Option<UsageTracker>,
    first_byte_ms: Option<u64>,
    outcome: Option<Outcome>,
    /// The key's admitted rate limits, settled once in `on_log` (taken there).
    limits: Option<Reservation>,
    /// Budget headers of the admission (`limits::reply::budget_headers`; empty without budgets).
    budget_headers: Vec<(&'static str, String)>,
    /// Response headers arrived (else the stream ended before any answer).
    responded: bool,
    /// Who is calling and the request's tags (spend attribution in `on_log`).
    caller: Caller,
    tags: Vec<String>,
    /// What the rate limit service holds for this pass, settled once in `on_log` (taken there).
    global: Option<limits::global::Hold>,
}

/// What forwarding a rewritten request still has to do once it is admitted (now, or when the
/// rate limit service answers).
struct Forwarding {
    /// The deployment of the attempt before this pass, if it failed (retry/fallback metrics).
    previous: Option<usize>,
    input_tokens: u64,
    /// Access-log routing properties (`access_log_properties`).
    routing: Vec<(&'static str, String)>,
}

/// A request held for the rate limit service's answer.
struct Awaiting {
    token: u32,
    asked_ms: u64,
    /// The payer's key and the model its plan is for (`limits::Plans::for_request`).
    key: usize,
    model: String,
    /// A failover pass: it inherited its first pass's parallel slot.
    replay: bool,
    hold: limits::global::Hold,
    sent: Sent,
    forwarding: Forwarding,
}

/// A local admission: the reservation, its budget headers, and the demand the global call sends.
struct Admitted {
    reservation: Reservation,
    budget_headers: Vec<(&'static str, String)>,
    demand: Demand,
}

/// The model whose limits a pass is admitted against: the one the client asked for (a fallback
/// group's pass still counts against the requested model's per-key limits).
fn plan_model<'a>(fwd: &'a Forward<'_>) -> &'a str {
    fwd.fallback_from.as_deref().unwrap_or(fwd.group)
}

/// The router's per-stream logic, generic over the metrics sink of its VM; each callback takes
/// the host it runs on.
pub struct RouterStream<S> {
    config: Option<Rc<RouterConfig>>,
    vm: Rc<Vm<S>>,
    phase: Phase,
}

fn internal_error(what: &'static str) -> Reply {
    Reply::from(ApiError::internal(what))
}

impl<S: Sink> RouterStream<S> {
    pub fn new(config: Option<Rc<RouterConfig>>, vm: Rc<Vm<S>>) -> RouterStream<S> {
        RouterStream { config, vm, phase: Phase::Idle }
    }

    fn reply<H: Host>(&mut self, host: &H, reply: &Reply) -> Flow {
        self.send_reply(host, reply);
        self.phase = Phase::Replied;
        Flow::Pause
    }

    /// Sends `reply` as the response, leaving the stream's phase alone (a forwarded attempt is
    /// still closed in `on_log`).
    fn send_reply<H: Host>(&self, host: &H, reply: &Reply) {
        if let Some(cfg) = &self.config {
            self.vm.with_metrics(cfg, |m| metrics::rejected(&mut m.sink, reply.error.code));
        }
        let body = reply.error.body();
        let mut headers: Vec<(&str, &str)> = vec![("content-type", "application/json")];
        headers.extend(reply.headers.iter().map(|(k, v)| (*k, v.as_str())));
        if let Err(status) = host.send_reply(reply.error.status, headers, &body) {
            log::error!("llm-router: sending a {} reply failed: {status:?}", reply.error.status);
        }
    }

    /// Answers the model list or the health report (GET/HEAD; Envoy drops the body for HEAD).
    fn local<H: Host>(&mut self, host: &H, cfg: &RouterConfig, local: LocalReply) -> Flow {
        let health;
        let body: &[u8] = match local {
            LocalReply::Models(caller) => cfg.access.listing(caller).unwrap_or(&cfg.models_body),
            LocalReply::Health => {
                health = health_report::body(cfg, &health_report::read(cfg, host.shared()), host.now_ms());
                &health
            }
        };
        let headers = vec![("content-type", "application/json"), ("cache-control", "no-store")];
        if let Err(status) = host.send_reply(200, headers, body) {
            log::error!("llm-router: sending a local {local:?} reply failed: {status:?}");
        }
        self.phase = Phase::Replied;
        Flow::Pause
    }

    /// Applies the plan to the request headers and body; false if either could not be set.
    ///
    /// All header changes go to the host in one call: the headers read in the headers phase,
    /// minus what the header policy drops or the plan replaces, plus the plan's (one `set_map`
    /// instead of ~8 single writes; `pipeline::headers::merge`).
    fn apply<H: Host>(host: &H, fwd: &Forward<'_>, headers: &[(String, String)], body_size: usize) -> bool {
        let per_try = fwd.per_try_timeout_ms.map(|ms| ms.to_string());
        let length = fwd.body.as_ref().map(|b| b.len().to_string());
        let mut set: Vec<(&str, &str)> = Vec::with_capacity(8);
        set.push((fwd.cluster_header, fwd.cluster));
        set.push((":authority", fwd.authority));
        set.push((":path", &fwd.path));
        if let Some(state) = &fwd.state {
            set.push((STATE_HEADER, state));
        }
        if let Some(auth) = fwd.auth {
            set.push((&auth.name, &auth.value));
        }
        if let Some(v) = fwd.anthropic_version {
            set.push(("anthropic-version", v));
        }
        for (name, value) in fwd.extra_headers {
            set.push((name, value));
        }
        if let Some(ms) = &per_try {
            set.push((PER_TRY_TIMEOUT_HEADER, ms));
        }
        if let Some(len) = &length {
            // Envoy does not fix content-length after a body rewrite; a stale one corrupts
            // the pooled upstream connection.
            set.push(("content-length", len));
        }
        let map = headers::merge(headers, fwd.cluster_header, &fwd.stale, set);
        if let Err(status) = host.set_request_headers(map) {
            log::error!("llm-router: replacing the request headers failed: {status:?}");
            return false;
        }
        if let Some(new_body) = &fwd.body {
            if let Err(status) = host.set_request_body(body_size, new_body) {
                log::error!("llm-router: replacing the request body failed: {status:?}");
                return false;
            }
        }
        true
    }

    fn record<H: Host>(&self, host: &H, cfg: &RouterConfig, failed: FailedAttempt, now: u64) {
        let Some(dep) = cfg.table.deployments.get(failed.deployment_index) else { return };
        let class = failed.class;
        let result = outcome::record(host.shared(), cfg, failed.deployment_index, class, failed.retry_after_ms, now);
        // ---- metrics: failed attempt (cooldown started → gauge 1 now, not at the next tick) ----
        self.vm.with_metrics(cfg, |m| {
            metrics::failed(&mut m.sink, &dep.group, &dep.id, class, result.as_ref().ok());
            if result.as_ref().is_ok_and(|r| r.cooled_until_ms.is_some()) {
                m.cooling.mark_cooling(failed.deployment_index);
            }
        });
        match result {
            Ok(r) => match r.cooled_until_ms {
                Some(until) => log::info!(
                    "llm-router: deployment {} of {} cooling for {} ms after {class} ({} failure(s) this window)",
                    dep.id,
                    dep.group,
                    until.saturating_sub(now),
                    r.fails_in_window
                ),
                None => log::debug!("llm-router: deployment {} failed with {class} ({} this window)", dep.id, r.fails_in_window),
            },
            Err(_) => log::warn!("llm-router: recording a {class} failure of deployment {} failed", dep.id),
        }
    }

    pub fn on_request_headers<H: Host>(&mut self, host: &H, end_of_stream: bool) -> Flow {
        let Some(cfg) = self.config.clone() else { return Flow::Continue };
        let headers = match host.request_headers() {
            Ok(h) => h,
            Err(status) => {
                // Unread headers cannot be sanitised: passing the request on could forward a
                // client's cluster header or attempt state (the trust boundary fails closed).
                log::warn!("llm-router: reading request headers failed: {status:?}");
                return self.reply(host, &internal_error("could not read the request headers"));
            }
        };
        let mut head = RequestHead::default();
        let mut creds = ClientCredentials::default();
        for (name, value) in &headers {
            match name.as_str() {
                ":method" => head.method = value,
                ":path" => head.path = value,
                ":authority" => head.authority = value,
                "content-type" => head.content_type = Some(value),
                "content-length" => head.content_length = Some(value),
                "anthropic-version" => head.has_anthropic_version = true,
                "x-envoy-original-url" => {
                    head.internal_redirect = true;
                    head.original_url = Some(value);
                }
                TAGS_HEADER => head.tags = Some(value),
                "authorization" => creds.authorization = Some(value),
                "api-key" => creds.api_key = Some(value),
                "x-api-key" => creds.x_api_key = Some(value),
                _ => {}
            }
        }
        head.credentials = creds;
        let peer = Self::peer_properties(host, &cfg, &head);
        head.peer = peer.peer();
        log::trace!("llm-router: request {:?} {:?} (redirected: {})", head.method, head.path, head.internal_redirect);
        let decision = {
            let Ok(mut spent) = self.vm.spent.try_borrow_mut() else {
                return self.reply(host, &internal_error("llm-router is busy"));
            };
            // Only a replay's state and expiring virtual keys need the clock: no clock read for
            // any other request.
            let now_ms = if head.internal_redirect || cfg.access.needs_clock() { host.now_ms() } else { 0 };
            let mut replay = ReplayCheck { key: self.vm.key, now_ms, spent: &mut spent };
            request::on_head(&cfg, &head, &mut replay)
        };
        match decision {
            HeadDecision::PassThrough => {
                // Not ours to route, but the router's own headers never travel on: no client
                // picks a cluster, forges attempt state or poses as the redirector on any route.
                for name in headers::internal_present(&headers, &cfg.envoy.cluster_header) {
                    if let Err(status) = host.remove_request_header(name) {
                        log::warn!("llm-router: removing internal header {name} failed: {status:?}");
                        return self.reply(host, &internal_error("could not sanitise the request headers"));
                    }
                }
                Flow::Continue
            }
            HeadDecision::Reject(reply) => self.reply(host, &reply),
            HeadDecision::Local(local) => self.local(host, &cfg, local),
            HeadDecision::ReadBody(pending) => {
                self.phase = Phase::Buffering { pending: *pending, headers };
                if end_of_stream {
                    // No body at all: answer now, there will be no body callback.
                    return self.route(host, Some(0));
                }
                Flow::Pause
            }
        }
    }

    /// The identity Envoy established, read only when some key is bound to one, the request
    /// presents no key (a presented key is authoritative) and is one the router identifies (a
    /// routed or local endpoint; not a failover pass, not a pass-through).
    fn peer_properties<H: Host>(host: &H, cfg: &RouterConfig, head: &RequestHead<'_>) -> PeerProperties {
        let bound = cfg.access.needs_principal() || cfg.access.needs_jwt();
        if !bound || presented(&head.credentials).iter().any(Option::is_some) || !request::identifies(cfg, head) {
            return PeerProperties::default();
        }
        PeerProperties::read(host, &cfg.access)
    }

    pub fn on_request_body<H: Host>(&mut self, host: &H, body_size: usize, end_of_stream: bool) -> Flow {
        if !matches!(self.phase, Phase::Buffering { .. }) {
            return Flow::Continue;
        }
        if !end_of_stream {
            return Flow::Pause;
        }
        self.route(host, Some(body_size))
    }

    /// Request trailers end the request (HTTP/2, or HTTP/1 with `enable_trailers`): its last body
    /// callback had no end of stream, so the body phase runs here. Continuing without it would
    /// send the paused request on as the client wrote it: unrouted, with the gateway key and the
    /// client's `x-llm-router-*` headers (and, without Envoy's early header mutation, to a
    /// cluster the client's cluster header names).
    pub fn on_request_trailers<H: Host>(&mut self, host: &H) -> Flow {
        if !matches!(self.phase, Phase::Buffering { .. }) {
            return Flow::Continue;
        }
        self.route(host, None)
    }

    /// The body phase, once the whole body is buffered: `body_size` as the last body callback
    /// gave it, or None at the trailers (then the whole buffered body is read).
    fn route<H: Host>(&mut self, host: &H, body_size: Option<usize>) -> Flow {
        let Phase::Buffering { pending, headers } = std::mem::replace(&mut self.phase, Phase::Idle) else {
            return Flow::Continue;
        };
        let pending = &pending;
        let Some(cfg) = self.config.clone() else { return Flow::Continue };
        let body = match host.request_body(body_size.unwrap_or(usize::MAX)) {
            Ok(b) => b.unwrap_or_default(),
            Err(status) => {
                // Not the client's fault: an unread body must not be judged (400) as if empty.
                log::warn!("llm-router: reading the request body failed: {status:?}");
                return self.reply(host, &internal_error("llm-router could not read the request body"));
            }
        };
        let body_size = body_size.unwrap_or(body.len());
        let now = host.now_ms();
        let decision = {
            let (Ok(mut cache), Ok(mut rng)) = (self.vm.cooldowns.try_borrow_mut(), self.vm.rng.try_borrow_mut()) else {
                return self.reply(host, &internal_error("llm-router is busy"));
            };
            let cooling = cache.refresh(host.shared(), &cfg);
            let live = StoreStats { store: host.shared(), table: &cfg.table, now_ms: now, latency_ttl_ms: stats::latency_ttl_ms(&cfg.router) };
            let mut env = Env { cooling, stats: &live, now_ms: now, rng: &mut rng, key: self.vm.key };
            request::on_body(&cfg, pending, &body, &mut env)
        };
        let previous = decision.failed.map(|f| f.deployment_index);
        if let Some(failed) = decision.failed {
            self.record(host, &cfg, failed, now);
        }
        let fwd = match decision.action {
            Ok(f) => f,
            Err(reply) => {
                if reply.error.status == 401 {
                    if let Some(who) = cfg.access.describe(pending.caller) {
                        log::info!("llm-router: {who} refused: {}", reply.error.code.unwrap_or("unauthorized"));
                    }
                }
                super::spend::refused(host, &cfg, pending.caller);
                return self.reply(host, &reply);
            }
        };
        if !Self::apply(host, &fwd, &headers, body_size) {
            return self.reply(host, &internal_error("llm-router could not rewrite the request"));
        }
        // Limits and budgets: a pre-call check, after identity and model access (LiteLLM's limiter
        // is a pre-call hook). Admitted here, settled in `on_log` whatever ends the stream. A
        // failover pass is its first pass's caller's (the signed state's payer).
        let payer = crate::pipeline::spend::payer(pending.caller, pending.redirect.as_ref().and_then(|r| r.state.payer), cfg.generation);
        let admitted = match self.admit(host, &cfg, pending, payer, &fwd, now) {
            Ok(admitted) => admitted,
            Err(reply) => {
                if let (Caller::Key(key), Caller::Replay, Some(_)) = (payer, pending.caller, &cfg.envoy.rate_limit_service) {
                    self.release_inherited(host, &cfg, true, key, plan_model(&fwd));
                }
                super::spend::refused(host, &cfg, payer);
                return self.reply(host, &reply);
            }
        };
        log::debug!(
            "llm-router: {} → deployment {} ({}) via {}, attempt {}",
            fwd.group,
            fwd.deployment.id,
            fwd.deployment.provider.name,
            fwd.cluster,
            fwd.attempts
        );
        // Once per pass: each pass of a failover writes its own access-log line.
        let routing = if cfg.envoy.access_log_properties { log_props::routing(&fwd) } else { Vec::new() };
        let forwarding = Forwarding { previous, input_tokens: fwd.input_tokens, routing };
        let (limits, budget_headers, demand) = match admitted {
            Some(a) => (Some(a.reservation), a.budget_headers, Some(a.demand)),
            None => (None, Vec::new(), None),
        };
        // Only the global call needs the model kept (owned) past `fwd`.
        let model = cfg.envoy.rate_limit_service.as_ref().map(|_| plan_model(&fwd).to_string());
        let sent = Sent {
            index: fwd.deployment_index,
            attempts: fwd.attempts,
            fallback_from: fwd.fallback_from,
            start_ms: now,
            try_budget_ms: fwd.per_try_timeout_ms,
            stream: fwd.stream,
            attempt: Attempt::untracked(now),
            usage: None,
            first_byte_ms: None,
            outcome: None,
            limits,
            budget_headers,
            responded: false,
            caller: payer,
            tags: fwd.tags,
            global: None,
        };
        // Global limits: the rate limit service admits too, after the local gate let it through.
        let sent = match (&cfg.envoy.rate_limit_service, payer, demand, model) {
            (Some(rls), Caller::Key(key), Some(demand), Some(model)) => {
                let plan = cfg.limits.for_request(key, &model);
                let (message, hold) = limits::global::admission(&rls.domain, plan, &demand);
                let replay = demand.requests == 0;
                match host.grpc_call(&rls.cluster, limits::global::SERVICE, limits::global::METHOD, &message, rls.timeout_ms) {
                    Ok(token) => {
                        self.phase = Phase::Admitting(Box::new(Awaiting { token, asked_ms: now, key, model, replay, hold, sent, forwarding }));
                        return Flow::Pause;
                    }
                    Err(status) => {
                        log::warn!("llm-router: calling the rate limit service (cluster {}) failed: {status:?}", rls.cluster);
                        let failure = limits::global::Failure::Dispatch;
                        self.vm.with_metrics(&cfg, |m| metrics::rls_call(&mut m.sink, "admission", failure.label(), None));
                        match self.unanswered(host, &cfg, key, &model, replay, sent, failure) {
                            Some(sent) => sent,
                            None => return Flow::Pause,
                        }
                    }
                }
            }
            _ => sent,
        };
        self.forward(host, &cfg, sent, forwarding, now);
        Flow::Continue
    }

    /// Starts the admitted attempt: its access-log properties, live statistics and metrics.
    fn forward<H: Host>(&mut self, host: &H, cfg: &RouterConfig, mut sent: Sent, forwarding: Forwarding, now: u64) {
        for (name, value) in &forwarding.routing {
            set_property(host, name, value);
        }
        let Some(dep) = cfg.table.deployments.get(sent.index) else { return };
        let track = Track::for_deployment(&cfg.router, dep);
        sent.start_ms = now;
        sent.attempt = if track.any() {
            let a = stats::on_start(host.shared(), &dep.id, now, forwarding.input_tokens, track);
            if a.start_failed() {
                log::warn!("llm-router: recording the start of an attempt on {} failed", dep.id);
            }
            a
        } else {
            Attempt::untracked(now)
        };
        // ---- metrics: attempt forwarded (in_flight +1, released in on_log) ----
        self.vm.with_metrics(cfg, |m| {
            let previous_group = forwarding.previous.and_then(|i| cfg.table.deployments.get(i)).map(|d| d.group.as_str());
            let group = dep.group.as_str();
            let pass = Pass::classify(sent.attempts, previous_group, group, sent.fallback_from.as_deref());
            metrics::forwarded(&mut m.sink, group, &dep.id, pass);
        });
        self.phase = Phase::Forwarded(sent);
    }

    /// The rate limit service gave no answer (`failure`): the request goes on as the local
    /// limits admitted it (Some), or — when a limit of its plan fails closed — its local
    /// admission is undone and it is answered 503 (None).
    /// A failover pass going on keeps only the slot its first pass took.
    #[allow(clippy::too_many_arguments)]
    fn unanswered<H: Host>(&mut self, host: &H, cfg: &RouterConfig, key: usize, model: &str, replay: bool, mut sent: Sent, failure: limits::global::Failure) -> Option<Sent> {
        let plan = cfg.limits.for_request(key, model);
        let modes = cfg.envoy.rate_limit_service.as_ref().map(|r| r.failure_mode).unwrap_or_default();
        let who = cfg.access.describe(sent.caller).unwrap_or_default();
        match limits::global::on_failure(plan, &modes).and_then(|i| plan.get(i)) {
            None => {
                log::warn!("llm-router: {who}: the rate limit service did not answer ({}); the request goes on (its limits fail open)", failure.label());
                if replay {
                    sent.global = limits::global::Hold::inherited(plan);
                }
                Some(sent)
            }
            Some(closed) => {
                log::warn!("llm-router: {who}: the rate limit service did not answer ({}); refused ({:?} limits fail closed)", failure.label(), closed.kind);
                if let Some(r) = sent.limits.take() {
                    limits::cancel(host.shared(), r);
                }
                self.release_inherited(host, cfg, replay, key, model);
                super::spend::refused(host, cfg, sent.caller);
                self.reply(host, &limits::reply::unavailable_reply(closed.kind));
                None
            }
        }
    }

    /// The rate limit service's answer to the admission of the request this stream holds.
    pub fn on_grpc_response<H: Host>(&mut self, host: &H, token: u32, status: u32, size: usize) {
        let waiting = match std::mem::replace(&mut self.phase, Phase::Idle) {
            Phase::Admitting(w) if w.token == token => w,
            other => {
                self.phase = other;
                return;
            }
        };
        let Some(cfg) = self.config.clone() else { return };
        let Awaiting { asked_ms, key, model, replay, hold, mut sent, forwarding, .. } = *waiting;
        let now = host.now_ms();
        let answer = if status != 0 {
            Err(limits::global::Failure::Grpc(status))
        } else {
            host.grpc_response(size).map(Option::unwrap_or_default).map_err(|_| limits::global::Failure::Malformed)
        };
        let plan = cfg.limits.for_request(key, &model);
        let verdict = limits::global::judge(plan, answer.as_deref().map_err(|f| *f), now);
        let result = match &verdict {
            limits::global::Verdict::Admitted(_) => "ok",
            limits::global::Verdict::Refused(_) => "over_limit",
            limits::global::Verdict::Failed(f) => f.label(),
        };
        self.vm.with_metrics(&cfg, |m| metrics::rls_call(&mut m.sink, "admission", result, Some(now.saturating_sub(asked_ms))));
        match verdict {
            limits::global::Verdict::Admitted(remaining) => {
                if let Some(r) = &mut sent.limits {
                    limits::global::merge_remaining(&mut r.statuses, &remaining);
                }
                sent.global = Some(hold);
            }
            limits::global::Verdict::Refused(refusal) => {
                if let Some(r) = sent.limits.take() {
                    limits::cancel(host.shared(), r);
                }
                self.release_inherited(host, &cfg, replay, key, &model);
                let who = cfg.access.describe(sent.caller).unwrap_or_default();
                log::info!("llm-router: {who} rate limited by the rate limit service ({:?} limit {})", refusal.kind, refusal.limit);
                super::spend::refused(host, &cfg, sent.caller);
                let reply = limits::reply::refusal_reply(&refusal, &key_name(&cfg, key), now);
                self.reply(host, &reply);
                return;
            }
            limits::global::Verdict::Failed(failure) => match self.unanswered(host, &cfg, key, &model, replay, sent, failure) {
                Some(s) => sent = s,
                None => return,
            },
        }
        self.forward(host, &cfg, sent, forwarding, now);
        if let Err(status) = host.resume_request() {
            log::error!("llm-router: resuming the request after its admission failed: {status:?}");
        }
    }

    /// Admits the request of `payer` (the caller, or a failover pass's first pass's) against its
    /// key's limits (key, team or user, key-per-model for the model the client asked for): a
    /// first pass counts 1 request, a failover pass 0 (its first pass counted it). None: no
    /// limits apply; else the reservation and its budget response headers. Store failures skip
    /// the limit (fail open, logged).
    fn admit<H: Host>(&self, host: &H, cfg: &RouterConfig, pending: &Pending, payer: Caller, fwd: &Forward<'_>, now: u64) -> Result<Option<Admitted>, Reply> {
        let Caller::Key(key) = payer else {
            if matches!(pending.redirect.as_ref().and_then(|r| r.state.payer), Some(crate::failover::Payer::Key { generation, .. }) if generation != cfg.generation) {
                log::info!("llm-router: the config changed during a failover: this pass is not admitted against the key's limits");
            }
            return Ok(None);
        };
        let plan = cfg.limits.for_request(key, plan_model(fwd));
        if plan.is_empty() {
            return Ok(None);
        }
        let prices = limits::cost::Prices::of(&fwd.deployment.info);
        let demand = Demand {
            tokens: limits::plan::token_demand(fwd.input_tokens, fwd.max_output_tokens),
            cost_nanos: limits::cost::worst_case_nanos(prices, fwd.input_tokens, fwd.max_output_tokens),
            requests: if pending.caller == Caller::Replay { 0 } else { 1 },
        };
        let limiter = Local { store: host.shared(), policy: OnUnavailable::FailOpen };
        match limiter.admit(plan.to_vec(), demand, now) {
            Ok(r) => {
                for &i in &r.unchecked {
                    if let Some(l) = plan.get(i) {
                        // Never the record's key: it holds the key's hash.
                        let who = cfg.access.describe(payer).unwrap_or_default();
                        log::warn!("llm-router: {who}: a {:?} limit could not be checked (shared data unavailable); the request goes on", l.kind);
                    }
                }
                super::spend::soft_budgets(&self.vm, cfg, payer, plan, &r.soft_exceeded);
                let headers = limits::reply::budget_headers(&r.statuses, &r.soft_exceeded, plan);
                Ok(Some(Admitted { reservation: r, budget_headers: headers, demand }))
            }
            Err(refusal) => {
                let who = cfg.access.describe(payer).unwrap_or_default();
                log::info!("llm-router: {who} rate limited ({:?} {:?} limit {})", refusal.kind, refusal.reason, refusal.limit);
                Err(limits::reply::refusal_reply(&refusal, &key_name(cfg, key), now))
            }
        }
    }

    pub fn on_response_headers<H: Host>(&mut self, host: &H) -> Flow {
        let Phase::Forwarded(sent) = &mut self.phase else { return Flow::Continue };
        let Some(cfg) = self.config.clone() else { return Flow::Continue };
        let Some(dep) = cfg.table.deployments.get(sent.index) else { return Flow::Continue };
        sent.responded = true;
        let now = host.now_ms();
        // A key's limits add up to 8 headers: then one map read and one map write beat a call per
        // header; otherwise (3 router headers) a call each.
        let mut headers = if sent.limits.is_some() { ResponseEdits::batch(host) } else { ResponseEdits::Direct };
        headers.set(host, DEPLOYMENT_HEADER, Some(&dep.id));
        headers.set(host, GROUP_HEADER, Some(&dep.group));
        headers.set(host, ATTEMPTS_HEADER, Some(&sent.attempts.to_string()));
        if let Some(r) = &sent.limits {
            for (name, value) in limits::reply::status_headers(&r.statuses, now) {
                headers.set(host, name, Some(&value));
            }
        }
        for (name, value) in &sent.budget_headers {
            headers.set(host, name, Some(value));
        }
        if let Some(from) = &sent.fallback_from {
            headers.set(host, FALLBACK_FROM_HEADER, Some(from));
        }
        let status = headers.get(host, ":status").and_then(|s| s.parse::<u16>().ok()).unwrap_or(0);
        let location = if response::needs_location(status) { headers.get(host, "location") } else { None };
        let redirector = status >= 300 && headers.get(host, REDIRECTOR_HEADER).is_some();
        let details = if response::needs_details(status) {
            host.property(&["response", "code_details"]).ok().flatten().and_then(|b| String::from_utf8(b).ok())
        } else {
            None
        };
        let facts = ResponseFacts {
            status,
            location: location.as_deref(),
            redirector,
            details: details.as_deref(),
            elapsed_ms: now.saturating_sub(sent.start_ms),
            try_budget_ms: sent.try_budget_ms,
            wildcard_group: crate::config::is_wildcard_group(&dep.group),
        };
        let verdict = response::judge(&facts);
        if verdict.refuse_redirect {
            log::info!("llm-router: deployment {} answered a {status} redirect; refused (never followed with its key)", dep.id);
            sent.outcome = Some(Outcome::Failed);
            self.send_reply(host, &Reply::from(ApiError::redirect_refused()));
            return Flow::Pause;
        }
        if status >= 400 {
            log::debug!("llm-router: attempt on {} answered {status} ({:?}): {:?}", dep.id, facts.details, verdict.record);
        }
        if let Some(real) = verdict.unwrap_failover {
            headers.set(host, ":status", Some(&real.to_string()));
            headers.set(host, "location", None);
        }
        if redirector {
            headers.set(host, REDIRECTOR_HEADER, None);
        }
        let headers = headers.flush(host);
        sent.outcome = verdict.outcome;
        if verdict.outcome == Some(Outcome::Success) {
            // Token usage for the strategy's statistics, the token metrics and/or the access log.
            // Usage settles tpm and budget reservations.
            let settles_usage = sent.limits.as_ref().is_some_and(|r| r.statuses.iter().any(|s| matches!(s.kind, Kind::Tokens | Kind::Budget)));
            if (settles_usage || log_props::wants_usage(&cfg.envoy, sent.attempt.track.reads_response_body()))
                && headers.get(host, "content-encoding").is_none()
            {
                sent.usage = Some(UsageTracker::for_content_type(headers.get(host, "content-type").as_deref()));
            }
            return Flow::Continue;
        }
        let Some(class) = verdict.record else { return Flow::Continue };
        let retry_after =
            parse_retry_after(headers.get(host, "retry-after").as_deref(), headers.get(host, "retry-after-ms").as_deref(), now);
        let failed = FailedAttempt { deployment_index: sent.index, class, retry_after_ms: retry_after };
        self.record(host, &cfg, failed, now);
        Flow::Continue
    }

    pub fn on_response_body<H: Host>(&mut self, host: &H, body_size: usize) -> Flow {
        let Phase::Forwarded(sent) = &mut self.phase else { return Flow::Continue };
        if sent.first_byte_ms.is_none() && body_size > 0 {
            sent.first_byte_ms = Some(host.now_ms());
        }
        if let Some(tracker) = &mut sent.usage {
            match host.response_body(body_size) {
                Ok(Some(chunk)) => tracker.feed(&chunk),
                Ok(None) => {}
                Err(status) => log::debug!("llm-router: reading a response chunk failed: {status:?}"),
            }
        }
        Flow::Continue
    }

    /// Closes the forwarded attempt: once per stream, whatever the ending (a failover pass ends
    /// here at its redirect). The phase is taken, so a second call does nothing.
    pub fn on_log<H: Host>(&mut self, host: &H) {
        let mut sent = match std::mem::replace(&mut self.phase, Phase::Idle) {
            Phase::Forwarded(sent) => sent,
            Phase::Admitting(waiting) => {
                // The stream ended while the rate limit service was deciding (the client went
                // away): nothing ran. The local admission is undone; what the service may have
                // counted stays counted (the safe direction: it cannot be told apart from a
                // refusal, whose descriptors must not be refunded).
                if let Some(r) = waiting.sent.limits {
                    limits::cancel(host.shared(), r);
                }
                if let Some(cfg) = self.config.clone() {
                    self.release_inherited(host, &cfg, waiting.replay, waiting.key, &waiting.model);
                }
                return;
            }
            _ => return,
        };
        let Some(cfg) = self.config.clone() else { return };
        // The response's token usage, read once for the access log, the metrics and the statistics.
        let usage = sent.usage.as_mut().and_then(UsageTracker::finish);
        // Its cost at the serving deployment's prices (None: unpriced or no usage), for the
        // budgets, the access log and the spend metrics.
        let cost = usage.as_ref().zip(cfg.table.deployments.get(sent.index)).and_then(|(u, d)| crate::pipeline::spend::cost_nanos(&d.info, u));
        if let Some(reservation) = sent.limits.take() {
            // Tokens: the usage the response reported; none from an attempt answered with an
            // error (nothing was generated); unknown — a success without usage, or a stream that
            // ended before any answer (the provider may have worked) — keeps the reservation.
            // A pass that ended in an internal redirect (measured on Envoy 1.40: this pass's
            // `response.code_details` is `internal_redirect`) failed over: it generated nothing,
            // and the next pass admits and settles on its own.
            let redirected = || {
                host.property(&["response", "code_details"]).ok().flatten().is_some_and(|d| d.as_slice() == b"internal_redirect".as_slice())
            };
            let tokens = match (usage, sent.outcome) {
                (Some(u), _) => Some(u.total()),
                (None, Some(Outcome::Success)) => None,
                (None, _) if !sent.responded && !redirected() => None,
                (None, _) => Some(0),
            };
            // Cost follows the tokens: priced usage (an unpriced deployment costs 0), 0 with the
            // tokens, or unknown with them.
            let cost_nanos = match (usage, tokens) {
                (Some(_), _) => Some(cost.unwrap_or(0)),
                (None, Some(_)) => Some(0),
                (None, None) => None,
            };
            let actual = Actual { tokens, cost_nanos };
            let done = Local { store: host.shared(), policy: OnUnavailable::FailOpen }.settle(reservation, actual);
            if done.failed > 0 {
                log::warn!("llm-router: settling {} rate-limit record(s) failed: they stay counted until their window ends", done.failed);
            }
            if let Some(hold) = sent.global.take() {
                let end = if redirected() { limits::global::PassEnd::FailedOver } else { limits::global::PassEnd::Last };
                self.settle_globally(host, &cfg, hold, actual, end);
            }
        }
        if let (Some(u), true) = (&usage, cfg.envoy.access_log_properties && cfg.envoy.access_log_tokens) {
            // Envoy runs the filter's on_log before the access loggers: these reach the line.
            for (name, value) in log_props::tokens(u) {
                set_property(host, name, &value);
            }
        }
        // ---- spend attribution: names and cost for the access log, spend metrics ----
        super::spend::on_log(host, &self.vm, &cfg, sent.caller, &sent.tags, sent.index, usage, cost);
        let stats_open = sent.attempt.open() || sent.attempt.track.latency;
        if !stats_open && !cfg.envoy.metrics {
            return;
        }
        let Some(dep) = cfg.table.deployments.get(sent.index) else { return };
        let now = host.now_ms();
        let latency_ms = now.saturating_sub(sent.start_ms);
        let ttft_ms = sent.first_byte_ms.filter(|_| sent.stream).map(|t| t.saturating_sub(sent.start_ms));
        // ---- metrics: attempt finished (in_flight -1, duration, ttft, tokens) ----
        self.vm.with_metrics(&cfg, |m| {
            let done = metrics::Finished { duration_ms: latency_ms, ttft_ms, usage };
            metrics::finished(&mut m.sink, &dep.group, &dep.id, &done);
        });
        if !stats_open {
            return;
        }
        let finish = Finish { latency_ms, ttft_ms, usage, in_flight_release: true, outcome: sent.outcome.unwrap_or(Outcome::Failed) };
        if stats::on_finish(host.shared(), &dep.id, now, &mut sent.attempt, &finish).is_err() {
            log::warn!("llm-router: recording the end of an attempt on {} failed", dep.id);
        }
    }

    /// Hands the settlement of `hold` to the VM's root context (its queue), which sends it: a
    /// call made from this stream would be cancelled with it.
    fn settle_globally<H: Host>(&self, host: &H, cfg: &RouterConfig, hold: limits::global::Hold, actual: Actual, end: limits::global::PassEnd) {
        let Some(rls) = &cfg.envoy.rate_limit_service else { return };
        let Some(message) = limits::global::settlement(&rls.domain, hold, actual, end) else { return };
        let queued = match self.vm.settle_queue.get() {
            Some(queue) => host.enqueue(queue, &message).map_err(|status| format!("{status:?}")),
            None => Err("no settlement queue".to_string()),
        };
        if let Err(why) = queued {
            log::warn!("llm-router: a settlement for the rate limit service was dropped ({why}): its counters keep the reservation");
            self.vm.with_metrics(cfg, |m| metrics::rls_call(&mut m.sink, "settlement", "dispatch", None));
        }
    }

    /// A failover pass that ends without the service's admission (refused, or the client gone)
    /// releases the parallel slot its first pass took: the request ends here
    /// (`limits::global` module docs).
    fn release_inherited<H: Host>(&self, host: &H, cfg: &RouterConfig, replay: bool, key: usize, model: &str) {
        if !replay {
            return;
        }
        if let Some(hold) = limits::global::Hold::inherited(cfg.limits.for_request(key, model)) {
            self.settle_globally(host, cfg, hold, Actual::default(), limits::global::PassEnd::Last);
        }
    }
}

/// A key as messages name it: its alias, else its position (never the key or its hash).
fn key_name(cfg: &RouterConfig, key: usize) -> String {
    match cfg.access.keys.get(key).and_then(|k| k.alias.as_deref()) {
        Some(alias) => alias.to_string(),
        None => format!("keys[{key}]"),
    }
}

/// How `on_response_headers` reads and edits the response headers: a host call per header
/// (`Direct`), or the whole map read once, edited in memory and written back once (`Batch`; a
/// failed map read falls back to `Direct`).
enum ResponseEdits {
    Direct,
    Batch { headers: Vec<(String, String)>, changed: bool },
}

impl ResponseEdits {
    fn batch<H: Host>(host: &H) -> ResponseEdits {
        match host.response_headers() {
            Ok(headers) => ResponseEdits::Batch { headers, changed: false },
            Err(status) => {
                log::debug!("llm-router: reading the response headers failed: {status:?}");
                ResponseEdits::Direct
            }
        }
    }

    fn get<H: Host>(&self, host: &H, name: &str) -> Option<String> {
        match self {
            ResponseEdits::Direct => response_header(host, name),
            ResponseEdits::Batch { headers, .. } => headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()),
        }
    }

    fn set<H: Host>(&mut self, host: &H, name: &str, value: Option<&str>) {
        match self {
            ResponseEdits::Direct => set_response_header(host, name, value),
            ResponseEdits::Batch { headers, changed } => {
                headers.retain(|(n, _)| n != name);
                if let Some(v) = value {
                    headers.push((name.to_string(), v.to_string()));
                }
                *changed = true;
            }
        }
    }

    /// Writes a batch back (one call); what is left reads the edited map.
    fn flush<H: Host>(self, host: &H) -> ResponseEdits {
        if let ResponseEdits::Batch { headers, changed: true } = &self {
            let pairs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            if let Err(status) = host.set_response_headers(pairs) {
                log::warn!("llm-router: writing the response headers failed: {status:?}");
            }
        }
        self
    }
}

fn set_response_header<H: Host>(host: &H, name: &str, value: Option<&str>) {
    if let Err(status) = host.set_response_header(name, value) {
        log::warn!("llm-router: setting response header {name} failed: {status:?}");
    }
}

/// One filter-state property (`wasm.<name>` in Envoy; see `pipeline::log_props`).
fn set_property<H: Host>(host: &H, name: &str, value: &str) {
    if let Err(status) = host.set_property(name, value.as_bytes()) {
        log::debug!("llm-router: setting property {name} failed: {status:?}");
    }
}

fn response_header<H: Host>(host: &H, name: &str) -> Option<String> {
    host.response_header(name).ok().flatten()
}
