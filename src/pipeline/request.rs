//! The request side: decide from the headers whether the router handles the request, then —
//! once the body is buffered — resolve its model, pick a deployment and plan the rewrite.
//!
//! The body is never parsed into a tree: one validating scan finds the top-level `model`
//! (and the keys `default_params` may add), and one splice writes the new body.

use super::auth::{is_authorized, ClientCredentials};
use crate::config::{glob_capture, AuthHeader, Deployment, Group, RouterConfig, ANTHROPIC_VERSION};
use crate::failover::{
    body_fingerprint, can_context_failover, can_failover, chain, context_targets, next_targets, state_ttl_ms, AttemptState, Chain,
    FailureReport, SpentStates, FAILOVER_PATH,
};
use crate::health::{classify, counts_against_deployment, timeout_or_connect_failure, CooldownView, FailureClass};
use crate::openai::{json_scan, rewrite, scan_request_with_facts, ApiError, BodyFacts};
use crate::provider::{upstream_path, Endpoint, Wire};
use crate::routing::{select, Ineligible, RequestFacts, Rng, Selection};
use crate::stats::{ms_to_next_minute, StatsSource};

/// Longest client `:path` (query included) the router routes: it travels in the attempt state.
pub const MAX_PATH_BYTES: usize = 2048;
/// Longest `:authority` the router routes (a DNS name is at most 253 bytes, plus a port).
pub const MAX_AUTHORITY_BYTES: usize = 261;
/// Longest `model` the router accepts (model ids are far shorter; it travels in the state).
pub const MAX_MODEL_BYTES: usize = 256;

/// Request header carrying routing tags (comma-separated), besides the body's `tags` /
/// `metadata.tags`. Consumed by the router, never forwarded.
pub const TAGS_HEADER: &str = "x-llm-router-tags";

/// Request header giving Envoy the attempt's time-to-response-headers budget.
pub const PER_TRY_TIMEOUT_HEADER: &str = "x-envoy-upstream-rq-per-try-timeout-ms";

/// What the shell reads from the request headers.
#[derive(Debug, Default, Clone, Copy)]
pub struct RequestHead<'a> {
    pub method: &'a str,
    /// `:path`, query included.
    pub path: &'a str,
    pub authority: &'a str,
    pub content_type: Option<&'a str>,
    pub content_length: Option<&'a str>,
    pub credentials: ClientCredentials<'a>,
    pub has_anthropic_version: bool,
    /// `x-envoy-original-url` is present: Envoy replays this request after an internal redirect
    /// (Envoy strips a client-sent one).
    pub internal_redirect: bool,
    /// Its value: the URL the client originally asked for.
    pub original_url: Option<&'a str>,
    /// The `x-llm-router-tags` header.
    pub tags: Option<&'a str>,
}

/// A failover pass: the attempt that failed and what it reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    pub state: AttemptState,
    pub report: FailureReport,
}

/// A request the router will handle once its body is buffered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub endpoint: Endpoint,
    /// The client's path and query.
    pub path: String,
    pub authority: String,
    pub has_anthropic_version: bool,
    pub redirect: Option<Redirect>,
    /// Tags from the `x-llm-router-tags` header.
    pub header_tags: Vec<String>,
}

impl Pending {
    fn query(&self) -> &str {
        self.path.split_once('?').map_or("", |(_, q)| q)
    }
}

/// A local reply: an OpenAI-shaped error plus any extra headers (`retry-after`, `allow`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub error: ApiError,
    pub headers: Vec<(&'static str, String)>,
}

impl From<ApiError> for Reply {
    fn from(error: ApiError) -> Reply {
        Reply { error, headers: Vec::new() }
    }
}

/// An endpoint the filter answers itself (GET or HEAD, 200 `application/json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalReply {
    /// The model list (`envoy_settings.models_paths`), body precomputed in the config.
    Models,
    /// The deployments' health (`envoy_settings.health_path`), read from shared data.
    Health,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadDecision {
    /// Not a routed endpoint: leave the request alone.
    PassThrough,
    Reject(Reply),
    ReadBody(Box<Pending>),
    /// Answer locally, without a body phase.
    Local(LocalReply),
}

/// What the header phase needs to accept a failover pass: the per-VM signing key, the clock
/// and the nonces already spent.
pub struct ReplayCheck<'s> {
    pub key: (u64, u64),
    pub now_ms: u64,
    pub spent: &'s mut SpentStates,
}

/// Header-time checks: endpoint, method, gateway key, content type, declared size. A verified
/// failover pass skips them: its first pass already passed them, and its state is signed,
/// unexpired, unused and (checked with the body) bound to the body that pass forwarded.
///
/// A replay of one of the router's requests that is *not* such a pass — a provider's own
/// redirect, a forged or reused state — is refused here: its header map still carries the
/// previous pass's provider credentials, so it must never be passed through.
pub fn on_head(cfg: &RouterConfig, head: &RequestHead<'_>, replay: &mut ReplayCheck<'_>) -> HeadDecision {
    let (path, query) = head.path.split_once('?').unwrap_or((head.path, ""));
    if head.internal_redirect {
        if path == FAILOVER_PATH {
            return match failover_pass(head, query, replay) {
                Some(pending) => HeadDecision::ReadBody(Box::new(pending)),
                None => HeadDecision::Reject(ApiError::redirect_refused().into()),
            };
        }
        if head.original_url.is_none_or(is_routed_url) {
            return HeadDecision::Reject(ApiError::redirect_refused().into());
        }
    }
    if let Some(local) = local_endpoint(cfg, path) {
        return local_head(cfg, head, local);
    }
    let Some(endpoint) = Endpoint::from_path(path) else { return HeadDecision::PassThrough };
    if head.method != "POST" {
        return HeadDecision::Reject(Reply {
            error: ApiError::method_not_allowed(head.method),
            headers: vec![("allow", "POST".to_string())],
        });
    }
    if let Some(key) = &cfg.master_key {
        if !is_authorized(key, &head.credentials) {
            return HeadDecision::Reject(ApiError::invalid_api_key().into());
        }
    }
    if let Some(ct) = head.content_type {
        if !is_json(ct) {
            return HeadDecision::Reject(ApiError::unsupported_media_type(ct).into());
        }
    }
    let limit = cfg.envoy.max_request_body_bytes;
    if head.content_length.and_then(|v| v.trim().parse::<u64>().ok()).is_some_and(|n| n > limit) {
        return HeadDecision::Reject(ApiError::body_too_large(limit as usize).into());
    }
    if head.path.len() > MAX_PATH_BYTES {
        return HeadDecision::Reject(ApiError::uri_too_long(MAX_PATH_BYTES).into());
    }
    if head.authority.len() > MAX_AUTHORITY_BYTES {
        return HeadDecision::Reject(ApiError::invalid_authority(MAX_AUTHORITY_BYTES).into());
    }
    HeadDecision::ReadBody(Box::new(Pending {
        endpoint,
        path: head.path.to_string(),
        authority: head.authority.to_string(),
        has_anthropic_version: head.has_anthropic_version,
        redirect: None,
        header_tags: header_tags(head.tags),
    }))
}

/// Which local endpoint `path` (no query) is, if any: exact match on the configured paths.
fn local_endpoint(cfg: &RouterConfig, path: &str) -> Option<LocalReply> {
    if cfg.envoy.models_paths.iter().any(|p| p == path) {
        Some(LocalReply::Models)
    } else if cfg.envoy.health_path.as_deref() == Some(path) {
        Some(LocalReply::Health)
    } else {
        None
    }
}

/// GET and HEAD only; with a master key, the same key as the routed endpoints (LiteLLM asks
/// for a key on `/v1/models` and `/health` too).
fn local_head(cfg: &RouterConfig, head: &RequestHead<'_>, local: LocalReply) -> HeadDecision {
    if head.method != "GET" && head.method != "HEAD" {
        return HeadDecision::Reject(Reply {
            error: ApiError::method_not_allowed_use(head.method, "GET"),
            headers: vec![("allow", "GET, HEAD".to_string())],
        });
    }
    if let Some(key) = &cfg.master_key {
        if !is_authorized(key, &head.credentials) {
            return HeadDecision::Reject(ApiError::invalid_api_key().into());
        }
    }
    HeadDecision::Local(local)
}

fn header_tags(value: Option<&str>) -> Vec<String> {
    value.into_iter().flat_map(|v| v.split(',')).map(str::trim).filter(|t| !t.is_empty()).map(str::to_string).collect()
}

/// The pending failover pass, when the state in the redirect's query is the router's own:
/// signed with this VM's key, before its deadline, its nonce not spent yet (spent now).
fn failover_pass(head: &RequestHead<'_>, query: &str, replay: &mut ReplayCheck<'_>) -> Option<Pending> {
    let (report, encoded) = FailureReport::from_query(query)?;
    let state = AttemptState::decode(&encoded, replay.key)?;
    if !state.is_live(replay.now_ms) || !replay.spent.consume(state.nonce, state.expires_ms, replay.now_ms) {
        return None;
    }
    let client_path = state.path.split_once('?').map_or(state.path.as_str(), |(p, _)| p);
    let endpoint = Endpoint::from_path(client_path)?;
    Some(Pending {
        endpoint,
        path: state.path.clone(),
        authority: state.authority.clone(),
        has_anthropic_version: head.has_anthropic_version,
        header_tags: header_tags(head.tags),
        redirect: Some(Redirect { state, report }),
    })
}

/// Whether an original URL (`x-envoy-original-url`: `scheme://authority/path?query`) was one
/// of the router's requests: a routed endpoint or a failover pass.
fn is_routed_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path = rest.find('/').and_then(|i| rest.get(i..)).unwrap_or("/");
    let path = path.split(['?', '#']).next().unwrap_or(path);
    path == FAILOVER_PATH || Endpoint::from_path(path).is_some()
}

/// `application/json`, `application/json; charset=utf-8`, `application/*+json`.
fn is_json(content_type: &str) -> bool {
    let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// What a request's body phase needs from its surroundings.
pub struct Env<'r> {
    pub cooling: &'r CooldownView,
    /// Live per-deployment statistics (read only by the strategies that need them).
    pub stats: &'r dyn StatsSource,
    pub now_ms: u64,
    pub rng: &'r mut Rng,
    /// The per-VM key signing attempt state.
    pub key: (u64, u64),
}

/// A failed attempt the shell must record in the health state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailedAttempt {
    pub deployment_index: usize,
    pub class: FailureClass,
    pub retry_after_ms: Option<u64>,
}

/// The planned upstream request. Borrowed from the config, which outlives the request.
#[derive(Debug)]
pub struct Forward<'c> {
    pub deployment: &'c Deployment,
    pub deployment_index: usize,
    pub group: &'c str,
    pub cluster_header: &'c str,
    pub cluster: &'c str,
    pub authority: &'c str,
    pub path: String,
    pub auth: Option<&'c AuthHeader>,
    /// The previous attempt's auth header, to remove when this deployment uses another name.
    pub stale_auth: Option<&'c str>,
    /// `anthropic-version` to add (Anthropic deployments, when the client sent none).
    pub anthropic_version: Option<&'static str>,
    /// The rewritten body, or None when the body goes upstream unchanged.
    pub body: Option<Vec<u8>>,
    pub stream: bool,
    /// The signed attempt state for the upstream side and the next pass; None when no further
    /// attempt is possible (the upstream side then has nothing to do).
    pub state: Option<String>,
    pub per_try_timeout_ms: Option<u64>,
    /// Attempts made for this client request, this one included.
    pub attempts: u32,
    /// The group the client asked for, when a fallback group serves.
    pub fallback_from: Option<String>,
    /// The request's input token estimate (usage accounting).
    pub input_tokens: u64,
}

/// The body phase's result: what to record about the previous attempt, and what to do now.
#[derive(Debug)]
pub struct BodyDecision<'c> {
    pub failed: Option<FailedAttempt>,
    pub action: Result<Forward<'c>, Reply>,
}

/// Body-time decision: resolve the model (or continue a failover), pick a healthy deployment,
/// plan the rewrite.
pub fn on_body<'c>(cfg: &'c RouterConfig, pending: &Pending, body: &[u8], env: &mut Env<'_>) -> BodyDecision<'c> {
    match &pending.redirect {
        None => BodyDecision { failed: None, action: first_attempt(cfg, pending, body, env) },
        Some(redirect) => next_attempt(cfg, pending, redirect, body, env),
    }
}

fn first_attempt<'c>(cfg: &'c RouterConfig, pending: &Pending, body: &[u8], env: &mut Env<'_>) -> Result<Forward<'c>, Reply> {
    let limit = cfg.envoy.max_request_body_bytes;
    if body.len() as u64 > limit {
        return Err(ApiError::body_too_large(limit as usize).into());
    }
    let scanned = scan(cfg, body, pending)?;
    let requested = scanned.requested.as_str();
    let resolved = cfg.table.resolve(requested).ok_or_else(|| Reply::from(ApiError::model_not_found(requested)))?;
    let group = cfg.table.groups.get(resolved.group).ok_or_else(|| Reply::from(ApiError::model_not_found(requested)))?;
    let mut state = AttemptState {
        model: requested.to_string(),
        origin_group: group.name.clone(),
        group: group.name.clone(),
        path: pending.path.clone(),
        authority: pending.authority.clone(),
        ..Default::default()
    };
    let first = choose(cfg, resolved.group, &scanned, &[], env);
    let index = match first {
        Selection::Deployment(i) => i,
        unavailable => {
            // The group cannot serve this request: its fallbacks may (LiteLLM's order: a prompt
            // too long goes to `context_window_fallbacks`, anything else to `fallbacks`).
            let which = match unavailable {
                Selection::NoneEligible(Ineligible::ContextWindow) => Chain::ContextWindow,
                _ => Chain::Regular,
            };
            let fallback = chain(cfg, &group.name, which).into_iter().enumerate().find_map(|(i, g)| match choose(cfg, g, &scanned, &[], env) {
                Selection::Deployment(d) => Some((i, g, d)),
                _ => None,
            });
            let Some((position, g, d)) = fallback else { return Err(unavailable_reply(group, unavailable, env.now_ms, requested)) };
            let Some(fallback_group) = cfg.table.groups.get(g) else { return Err(unavailable_reply(group, unavailable, env.now_ms, requested)) };
            state.group = fallback_group.name.clone();
            state.fallback = u32::try_from(position + 1).unwrap_or(u32::MAX);
            state.context_fallback = which == Chain::ContextWindow;
            return plan(cfg, pending, body, &scanned, fallback_group, d, state, None, env);
        }
    };
    plan(cfg, pending, body, &scanned, group, index, state, None, env)
}

/// The reply when the client's group has nothing to offer (and no fallback took over).
fn unavailable_reply(group: &Group, why: Selection, now_ms: u64, requested: &str) -> Reply {
    match why {
        Selection::AllCooling { retry_after_ms } => {
            let secs = retry_after_ms.div_ceil(1000).max(1);
            Reply {
                error: ApiError::all_cooling(&group.name, group.members.len(), secs),
                headers: vec![("retry-after", secs.to_string())],
            }
        }
        Selection::NoneEligible(Ineligible::RateLimited) => {
            let secs = ms_to_next_minute(now_ms).div_ceil(1000).max(1);
            Reply {
                error: ApiError::new(
                    429,
                    crate::openai::error::RATE_LIMIT,
                    None,
                    Some("rate_limited"),
                    format!("Every deployment of model group `{}` is at its rpm/tpm limit. Retry after {secs}s.", group.name),
                ),
                headers: vec![("retry-after", secs.to_string())],
            }
        }
        Selection::NoneEligible(Ineligible::ContextWindow) => ApiError::new(
            400,
            crate::openai::error::INVALID_REQUEST,
            Some("messages"),
            Some("context_length_exceeded"),
            format!("The request is longer than the context window of every deployment of model group `{}`", group.name),
        )
        .into(),
        Selection::NoneEligible(Ineligible::NoTagMatch) => ApiError::new(
            400,
            crate::openai::error::INVALID_REQUEST,
            Some("tags"),
            Some("no_matching_deployment"),
            format!("No deployment of model group `{}` matches the request's tags", group.name),
        )
        .into(),
        Selection::NoneEligible(Ineligible::AllTried) | Selection::Deployment(_) => ApiError::model_not_found(requested).into(),
    }
}

fn next_attempt<'c>(cfg: &'c RouterConfig, pending: &Pending, redirect: &Redirect, body: &[u8], env: &mut Env<'_>) -> BodyDecision<'c> {
    let prev = &redirect.state;
    let report = redirect.report;
    if body_fingerprint(env.key, body) != (prev.body_len, prev.body_digest) {
        // Not the body this state was issued for: nothing of it is trusted, nothing recorded.
        return BodyDecision { failed: None, action: Err(ApiError::redirect_refused().into()) };
    }
    let prev_index = prev.current().and_then(|id| cfg.table.ids.get(id).copied());
    let class = failure_class(prev, &report, env.now_ms);
    // A prompt too long for the deployment is the request's problem, not the deployment's;
    // so is a name the client invented under a wildcard that the provider does not know.
    let wildcard = cfg.table.group_index(&prev.group).and_then(|i| cfg.table.groups.get(i)).is_some_and(Group::is_wildcard);
    let failed = prev_index
        .filter(|_| !report.context_window && counts_against_deployment(class, wildcard))
        .map(|deployment_index| FailedAttempt { deployment_index, class, retry_after_ms: report.retry_after_ms });
    let exhausted = |attempts: u32| Reply::from(exhausted_error(&prev.origin_group, attempts, class, &report));

    let scanned = match scan(cfg, body, pending) {
        Ok(s) => s,
        Err(reply) => return BodyDecision { failed, action: Err(reply) },
    };
    let tried: Vec<usize> = prev.tried.iter().filter_map(|id| cfg.table.ids.get(id).copied()).collect();
    let targets = if report.context_window { context_targets(cfg, prev) } else { next_targets(cfg, prev, class) };
    for target in targets {
        let Some(group) = cfg.table.groups.get(target.group) else { continue };
        let Selection::Deployment(index) = choose(cfg, target.group, &scanned, &tried, env) else { continue };
        let state = AttemptState {
            hop: prev.hop + 1,
            group: group.name.clone(),
            fallback: target.fallback,
            retries: target.retries,
            context_fallback: prev.context_fallback || report.context_window,
            ..prev.clone()
        };
        let stale_auth = prev_index.and_then(|i| cfg.table.deployments.get(i)).and_then(|d| d.auth.as_ref()).map(|a| a.name.as_str());
        let action = plan(cfg, pending, body, &scanned, group, index, state, stale_auth, env);
        return BodyDecision { failed, action };
    }
    BodyDecision { failed, action: Err(exhausted(prev.hop + 1)) }
}

/// What a pass needs from the body: the requested model (first pass), where `model` is, and
/// the facts selection filters on (tags, input token estimate).
struct Scanned<'b> {
    requested: String,
    scan: json_scan::RequestScan<'b>,
    facts: BodyFacts,
}

fn scan<'b>(cfg: &RouterConfig, body: &'b [u8], pending: &Pending) -> Result<Scanned<'b>, Reply> {
    let wanted: Vec<&str> = cfg.table.default_param_keys.iter().map(String::as_str).collect();
    let (scan, mut facts) = scan_request_with_facts(body, &wanted).map_err(|e| Reply::from(ApiError::from_scan_error(&e)))?;
    for tag in &pending.header_tags {
        if !facts.tags.contains(tag) {
            facts.tags.push(tag.clone());
        }
    }
    let requested = scan.model_name().ok_or_else(|| Reply::from(ApiError::missing_model()))?.into_owned();
    check_model_name(&requested)?;
    if scan.duplicate_model {
        return Err(ApiError::new(
            400,
            crate::openai::error::INVALID_REQUEST,
            Some("model"),
            Some("duplicate_model"),
            "Request body has more than one \"model\" field",
        )
        .into());
    }
    Ok(Scanned { requested, scan, facts })
}

/// A client's model name is data: it may land in a path, a log line, the attempt state. Empty
/// (OpenAI answers 400 too), over [`MAX_MODEL_BYTES`], or holding control characters (CR/LF
/// would forge header values and log lines) → 400.
fn check_model_name(name: &str) -> Result<(), Reply> {
    let why = if name.is_empty() {
        "must not be empty"
    } else if name.len() > MAX_MODEL_BYTES {
        "longer than 256 bytes"
    } else if name.chars().any(char::is_control) {
        "contains control characters"
    } else {
        return Ok(());
    };
    Err(ApiError::invalid_model(why).into())
}

/// What a wildcard may capture when the capture lands in the upstream `:path` (Azure puts the
/// deployment name there): Azure's own deployment-name alphabet. Anything else (`/`, `..`, `?`,
/// `#`, `%`, spaces) would be path syntax.
fn is_path_safe_capture(capture: &str) -> bool {
    !capture.is_empty()
        && !capture.starts_with('.')
        && capture.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Selects a deployment of group `group` for this request, skipping `exclude` (tried ones).
fn choose(cfg: &RouterConfig, group: usize, scanned: &Scanned<'_>, exclude: &[usize], env: &mut Env<'_>) -> Selection {
    let facts = RequestFacts { tags: &scanned.facts.tags, input_tokens: scanned.facts.input_tokens, stream: scanned.scan.stream.unwrap_or(false) };
    select(&cfg.table, &cfg.router, group, &facts, env.cooling, env.stats, exclude, env.now_ms, env.rng)
}

/// The failed attempt's class. The redirector answers for attempts that got no response: a
/// timeout when the attempt used up its time budget, else a failed connection.
fn failure_class(prev: &AttemptState, report: &FailureReport, now_ms: u64) -> FailureClass {
    if report.status == 0 {
        return timeout_or_connect_failure(now_ms.saturating_sub(prev.start_ms), prev.try_budget_ms);
    }
    classify(report.status, Some("via_upstream")).unwrap_or(FailureClass::ServerError)
}

/// The error when every attempt failed: the last failure's kind, naming the group and count.
fn exhausted_error(group: &str, attempts: u32, class: FailureClass, report: &FailureReport) -> ApiError {
    if report.context_window {
        return ApiError::new(
            400,
            crate::openai::error::INVALID_REQUEST,
            Some("messages"),
            Some("context_length_exceeded"),
            format!("The request is longer than the context window of model group `{group}` and its context-window fallbacks ({attempts} attempt(s))"),
        );
    }
    let (status, kind, code) = match class {
        FailureClass::RateLimit => (429, crate::openai::error::RATE_LIMIT, "rate_limited"),
        FailureClass::Timeout => (504, crate::openai::error::API_ERROR, "upstream_timeout"),
        FailureClass::ConnectFailure | FailureClass::Reset => (503, crate::openai::error::API_ERROR, "upstream_unavailable"),
        _ => (502, crate::openai::error::API_ERROR, "upstream_error"),
    };
    let last = if report.context_window {
        "the prompt exceeding the context window".to_string()
    } else if report.status == 0 {
        format!("{class}")
    } else {
        format!("status {}", report.status)
    };
    ApiError::new(
        status,
        kind,
        None,
        Some(code),
        format!("All {attempts} attempt(s) for model group `{group}` failed; the last one ended with {last}"),
    )
}

/// Plans the rewrite for deployment `index` of `group`, with `state` describing this attempt
/// (its `tried`, `hop`, counters; completed here).
#[allow(clippy::too_many_arguments)]
fn plan<'c>(
    cfg: &'c RouterConfig,
    pending: &Pending,
    body: &[u8],
    scanned: &Scanned<'_>,
    group: &'c Group,
    index: usize,
    mut state: AttemptState,
    stale_auth: Option<&'c str>,
    env: &mut Env<'_>,
) -> Result<Forward<'c>, Reply> {
    let dep = cfg.table.deployments.get(index).ok_or_else(|| Reply::from(ApiError::model_not_found(&state.model)))?;
    let capture = glob_capture(&group.name, &state.model).flatten();
    if let Some(c) = capture {
        if dep.provider.wire == Wire::Azure && dep.model.contains('*') && !is_path_safe_capture(c) {
            return Err(ApiError::invalid_model("not a valid Azure deployment name (letters, digits, '-', '_', '.')").into());
        }
    }
    let upstream_model = substitute_wildcard(&dep.model, capture.unwrap_or(&state.model));
    let path = upstream_path(dep.provider.wire, &dep.upstream.base_path, pending.endpoint, &upstream_model, &dep.api_version, pending.query())
        .ok_or_else(|| Reply::from(ApiError::unsupported_endpoint(pending.endpoint.public_path(), dep.provider.name)))?;

    let wanted = &cfg.table.default_param_keys;
    let defaults: Vec<(&str, &[u8])> = dep
        .info
        .default_params
        .iter()
        .filter(|(k, _)| !wanted.iter().position(|w| w == k).is_some_and(|i| scanned.scan.has(i)))
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    let model_changes = upstream_model != scanned.requested;
    let new_body: Option<Vec<u8>> = (model_changes || !defaults.is_empty()).then(|| {
        let model_edit = match (&scanned.scan.model, model_changes) {
            (Some(m), true) => Some((m.value.clone(), upstream_model.as_str())),
            _ => None,
        };
        rewrite(body, model_edit, &scanned.scan.object, &defaults)
    });

    state.tried.push(dep.id.clone());
    state.start_ms = env.now_ms;
    let per_try_timeout_ms = dep.timeout_secs.or(cfg.router.timeout_secs).map(|s| (s * 1000.0).round() as u64).filter(|&ms| ms > 0);
    state.try_budget_ms = per_try_timeout_ms;
    let untried_in_group = group.members.iter().any(|i| cfg.table.deployments.get(*i).is_some_and(|d| !state.tried.contains(&d.id)));
    state.can_failover = can_failover(cfg, &state, untried_in_group);
    state.can_context_failover = can_context_failover(cfg, &state);
    // Only with the failover wiring: nothing else strips the header before the provider.
    let attach_state = cfg.envoy.failover && (state.can_failover || state.can_context_failover);
    if attach_state {
        state.nonce = env.rng.next_u64();
        state.expires_ms = env.now_ms.saturating_add(state_ttl_ms(per_try_timeout_ms));
        (state.body_len, state.body_digest) = body_fingerprint(env.key, new_body.as_deref().unwrap_or(body));
    }
    let fallback_from = (state.group != state.origin_group).then(|| state.origin_group.clone());

    Ok(Forward {
        deployment: dep,
        deployment_index: index,
        group: &group.name,
        cluster_header: &cfg.envoy.cluster_header,
        cluster: &dep.upstream.cluster,
        authority: &dep.upstream.authority,
        path,
        auth: dep.auth.as_ref(),
        stale_auth: stale_auth.filter(|name| dep.auth.as_ref().is_none_or(|a| a.name != *name)),
        anthropic_version: (dep.provider.wire == Wire::Anthropic && !pending.has_anthropic_version).then_some(ANTHROPIC_VERSION),
        body: new_body,
        stream: scanned.scan.stream.unwrap_or(false),
        state: attach_state.then(|| state.encode(env.key)),
        per_try_timeout_ms,
        attempts: state.hop + 1,
        fallback_from,
        input_tokens: scanned.facts.input_tokens,
    })
}

/// A `*` in the deployment's model takes what the group's wildcard matched.
fn substitute_wildcard(model: &str, capture: &str) -> String {
    match model.split_once('*') {
        Some((head, tail)) => format!("{head}{capture}{tail}"),
        None => model.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::health::{Cooldowns, FailureClass};
    use serde_json::{json, Value};

    /// A fresh replay check at `now_ms` (its spent set lives for the test; leaked on purpose).
    fn replay(now_ms: u64) -> ReplayCheck<'static> {
        ReplayCheck { key: KEY, now_ms, spent: Box::leak(Box::default()) }
    }

    /// Loads `v`; with the failover wiring declared (`envoy_settings.failover`) unless `v` says.
    fn cfg(mut v: Value) -> RouterConfig {
        let env = |n: &str| (n == "OPENAI_API_KEY").then(|| "sk-up".to_string());
        if let Some(obj) = v.as_object_mut() {
            obj.entry("envoy_settings").or_insert_with(|| json!({"failover": true}));
        }
        match config::load(v.to_string().as_bytes(), &env).config {
            Some(c) => c,
            None => panic!("config refused"),
        }
    }

    fn sample() -> RouterConfig {
        cfg(json!({
            "model_list": [
                {"model_name": "gpt-4o", "litellm_params": {"model": "openai/gpt-4o", "api_base": "http://127.0.0.1:18001/v1",
                    "api_key": "os.environ/OPENAI_API_KEY"}, "model_info": {"id": "oa"}},
                {"model_name": "az", "litellm_params": {"model": "azure/gpt-4o-prod", "api_base": "http://127.0.0.1:18002",
                    "api_key": "az-key", "api_version": "2024-10-21"}, "model_info": {"id": "az"}},
                {"model_name": "claude", "litellm_params": {"model": "anthropic/claude-3-5-sonnet-latest",
                    "api_base": "http://127.0.0.1:18003", "api_key": "ant"}, "model_info": {"id": "an"}},
                {"model_name": "groq", "litellm_params": {"model": "groq/llama-3.1-8b", "api_base": "http://127.0.0.1:18004/openai/v1",
                    "api_key": "k", "auth_header_name": "X-API-Key", "auth_header_format": "Token {api_key}"},
                    "model_info": {"id": "gq", "default_params": {"temperature": 0.2, "seed": 7}}},
                {"model_name": "openai/*", "litellm_params": {"model": "openai/*", "api_key": "w"}, "model_info": {"id": "wc"}},
            ],
            "router_settings": {"model_group_alias": {"gpt4": "gpt-4o"}},
            "general_settings": {"master_key": "sk-master"},
        }))
    }

    fn head<'a>(method: &'a str, path: &'a str) -> RequestHead<'a> {
        RequestHead {
            method,
            path,
            credentials: ClientCredentials { authorization: Some("Bearer sk-master"), ..Default::default() },
            ..Default::default()
        }
    }

    const KEY: (u64, u64) = (11, 22);

    fn pending(cfg: &RouterConfig, path: &str) -> Pending {
        match on_head(cfg, &head("POST", path), &mut replay(0)) {
            HeadDecision::ReadBody(p) => *p,
            other => panic!("{other:?}"),
        }
    }

    fn route<'c>(cfg: &'c RouterConfig, path: &str, body: &str) -> Result<Forward<'c>, Reply> {
        let view = CooldownView::new(&Cooldowns::default(), &cfg.table.ids, cfg.table.deployments.len());
        let mut rng = Rng::from_seed(1);
        let mut env = Env { cooling: &view, stats: &crate::stats::NoStats, now_ms: 0, rng: &mut rng, key: KEY };
        on_body(cfg, &pending(cfg, path), body.as_bytes(), &mut env).action
    }

    fn body_json(f: &Forward<'_>) -> Value {
        serde_json::from_slice(f.body.as_deref().unwrap_or(b"null")).unwrap_or(Value::Null)
    }

    fn code(r: Result<Forward<'_>, Reply>) -> (u16, Option<&'static str>) {
        match r {
            Ok(f) => panic!("forwarded to {}", f.deployment.id),
            Err(reply) => (reply.error.status, reply.error.code),
        }
    }

    #[test]
    fn head_checks() {
        let c = sample();
        assert_eq!(on_head(&c, &head("POST", "/healthz"), &mut replay(0)), HeadDecision::PassThrough);
        assert_eq!(on_head(&c, &head("GET", "/v1/model"), &mut replay(0)), HeadDecision::PassThrough);
        let reject = |h: &RequestHead<'_>| match on_head(&c, h, &mut replay(0)) {
            HeadDecision::Reject(r) => (r.error.status, r.error.code),
            other => panic!("{other:?}"),
        };
        assert_eq!(reject(&head("GET", "/v1/chat/completions")), (405, Some("method_not_allowed")));
        let mut h = head("POST", "/v1/chat/completions");
        h.credentials = ClientCredentials::default();
        assert_eq!(reject(&h), (401, Some("invalid_api_key")));
        let mut h = head("POST", "/v1/chat/completions");
        h.content_type = Some("text/plain");
        assert_eq!(reject(&h), (415, Some("unsupported_media_type")));
        h.content_type = Some("application/json; charset=utf-8");
        h.content_length = Some("2000000");
        assert_eq!(reject(&h), (413, Some("request_too_large")));
        h.content_length = Some("20");
        assert!(matches!(on_head(&c, &h, &mut replay(0)), HeadDecision::ReadBody(_)));
        h.content_type = Some("application/vnd.api+json");
        assert!(matches!(on_head(&c, &h, &mut replay(0)), HeadDecision::ReadBody(_)));
    }

    #[test]
    fn local_endpoints_get_or_head_with_the_master_key() {
        let c = sample();
        let decide = |method, path, key: Option<&'static str>| {
            let mut h = head(method, path);
            h.credentials = ClientCredentials { authorization: key, ..Default::default() };
            on_head(&c, &h, &mut replay(0))
        };
        let ok = Some("Bearer sk-master");
        assert_eq!(decide("GET", "/v1/models", ok), HeadDecision::Local(LocalReply::Models));
        assert_eq!(decide("GET", "/models?limit=5", ok), HeadDecision::Local(LocalReply::Models));
        assert_eq!(decide("HEAD", "/llm-router/health", ok), HeadDecision::Local(LocalReply::Health));
        assert_eq!(decide("GET", "/v1/models/", ok), HeadDecision::PassThrough, "exact paths only");
        let HeadDecision::Reject(r) = decide("POST", "/llm-router/health", ok) else { panic!("not rejected") };
        assert_eq!((r.error.status, r.headers.clone()), (405, vec![("allow", "GET, HEAD".to_string())]));
        assert!(r.error.message.ends_with("use GET"), "{}", r.error.message);
        let HeadDecision::Reject(r) = decide("GET", "/v1/models", None) else { panic!("not rejected") };
        assert_eq!(r.error.code, Some("invalid_api_key"));
        let HeadDecision::Reject(r) = decide("GET", "/v1/models", Some("Bearer wrong")) else { panic!("not rejected") };
        assert_eq!(r.error.status, 401);

        // Custom paths; disabled endpoints pass through; no master key: open.
        let custom = cfg(json!({
            "model_list": [{"model_name": "m", "litellm_params": {"model": "openai/m", "api_key": "k"}}],
            "envoy_settings": {"models_paths": ["/gw/models"], "health_path": null},
        }));
        let anon = |path| on_head(&custom, &RequestHead { method: "GET", path, ..Default::default() }, &mut replay(0));
        assert_eq!(anon("/gw/models"), HeadDecision::Local(LocalReply::Models));
        assert_eq!(anon("/v1/models"), HeadDecision::PassThrough);
        assert_eq!(anon("/llm-router/health"), HeadDecision::PassThrough);
    }

    #[test]
    fn openai_rewrite_keeps_rest_of_body_byte_identical() {
        let c = sample();
        let body = r#"{ "messages": [{"role":"user","content":"hi \u00e9"}], "model" : "gpt4", "n": 1.50 }"#;
        let f = match route(&c, "/v1/chat/completions?x=1", body) {
            Ok(f) => f,
            Err(r) => panic!("{r:?}"),
        };
        assert_eq!(f.deployment.id, "oa");
        assert_eq!(f.group, "gpt-4o");
        assert_eq!(f.cluster, "outbound|18001||127.0.0.1");
        assert_eq!(f.authority, "127.0.0.1:18001");
        assert_eq!(f.path, "/v1/chat/completions?x=1");
        assert_eq!(f.auth.map(|a| (a.name.as_str(), a.value.as_str())), Some(("authorization", "Bearer sk-up")));
        assert_eq!(
            f.body.as_deref(),
            Some(br#"{ "messages": [{"role":"user","content":"hi \u00e9"}], "model" : "gpt-4o", "n": 1.50 }"#.as_slice())
        );
        assert!(!f.stream);
    }

    #[test]
    fn unchanged_model_leaves_body_alone() {
        let c = sample();
        let f = route(&c, "/v1/chat/completions", r#"{"model":"gpt-4o","stream":true}"#);
        let f = f.unwrap_or_else(|r| panic!("{r:?}"));
        assert!(f.body.is_none());
        assert!(f.stream);
    }

    #[test]
    fn azure_anthropic_and_custom_auth() {
        let c = sample();
        let f = route(&c, "/v1/embeddings", r#"{"model":"az","input":"x"}"#).unwrap_or_else(|r| panic!("{r:?}"));
        assert_eq!(f.path, "/openai/deployments/gpt-4o-prod/embeddings?api-version=2024-10-21");
        assert_eq!(f.auth.map(|a| a.name.as_str()), Some("api-key"));
        assert_eq!(body_json(&f)["model"], "gpt-4o-prod");

        let f = route(&c, "/v1/messages", r#"{"model":"claude","max_tokens":5}"#).unwrap_or_else(|r| panic!("{r:?}"));
        assert_eq!(f.path, "/v1/messages");
        assert_eq!(f.auth.map(|a| (a.name.as_str(), a.value.as_str())), Some(("x-api-key", "ant")));
        assert_eq!(f.anthropic_version, Some("2023-06-01"));
        assert_eq!(body_json(&f)["model"], "claude-3-5-sonnet-latest");

        assert_eq!(code(route(&c, "/v1/messages", r#"{"model":"gpt-4o"}"#)), (400, Some("unsupported_endpoint")));

        let f = route(&c, "/chat/completions", r#"{"model":"groq","temperature":1}"#).unwrap_or_else(|r| panic!("{r:?}"));
        assert_eq!(f.path, "/openai/v1/chat/completions");
        assert_eq!(f.auth.map(|a| (a.name.as_str(), a.value.as_str())), Some(("x-api-key", "Token k")));
        assert_eq!(body_json(&f), json!({"model": "llama-3.1-8b", "temperature": 1, "seed": 7}));
    }

    #[test]
    fn wildcard_takes_captured_name() {
        let c = sample();
        let f = route(&c, "/v1/chat/completions", r#"{"model":"openai/gpt-4.1"}"#).unwrap_or_else(|r| panic!("{r:?}"));
        assert_eq!(f.group, "openai/*");
        assert_eq!(body_json(&f)["model"], "gpt-4.1");
        assert_eq!(f.cluster, "outbound|443||api.openai.com");
    }

    #[test]
    fn body_errors() {
        let c = sample();
        let p = "/v1/chat/completions";
        assert_eq!(code(route(&c, p, "")), (400, Some("invalid_json")));
        assert_eq!(code(route(&c, p, "{\"model\":")), (400, Some("invalid_json")));
        assert_eq!(code(route(&c, p, "[1]")), (400, Some("invalid_json")));
        assert_eq!(code(route(&c, p, r#"{"messages":[]}"#)), (400, Some("missing_model")));
        assert_eq!(code(route(&c, p, r#"{"model":5}"#)), (400, Some("missing_model")));
        assert_eq!(code(route(&c, p, r#"{"model":"gpt-4o","model":"x"}"#)), (400, Some("duplicate_model")));
        assert_eq!(code(route(&c, p, r#"{"model":"nope"}"#)), (404, Some("model_not_found")));
        assert_eq!(code(route(&c, p, r#"{"x":{"model":"gpt-4o"}}"#)), (400, Some("missing_model")));
    }

    #[test]
    fn all_cooling_gives_429_with_retry_after() {
        let c = sample();
        let mut record = Cooldowns::default();
        record.extend("oa", 2_500, FailureClass::RateLimit);
        let view = CooldownView::new(&record, &c.table.ids, c.table.deployments.len());
        let mut rng = Rng::from_seed(1);
        let mut env = Env { cooling: &view, stats: &crate::stats::NoStats, now_ms: 1_000, rng: &mut rng, key: KEY };
        let r = on_body(&c, &pending(&c, "/v1/chat/completions"), br#"{"model":"gpt-4o"}"#, &mut env).action;
        let Err(reply) = r else { panic!("forwarded") };
        assert_eq!((reply.error.status, reply.error.code), (429, Some("no_healthy_deployments")));
        assert_eq!(reply.headers, vec![("retry-after", "2".to_string())]);
        assert!(reply.error.message.contains("gpt-4o"));
    }

    fn failover_cfg() -> RouterConfig {
        cfg(json!({
            "model_list": [
                {"model_name": "a", "litellm_params": {"model": "openai/a1", "api_base": "http://h1/v1"}, "model_info": {"id": "a1"}},
                {"model_name": "a", "litellm_params": {"model": "openai/a2", "api_base": "http://h2/v1"}, "model_info": {"id": "a2"}},
                {"model_name": "b", "litellm_params": {"model": "azure/b1", "api_base": "http://h3", "api_key": "kb"}, "model_info": {"id": "b1"}},
                {"model_name": "c", "litellm_params": {"model": "openai/c1", "api_base": "http://h4/v1", "timeout": 2}, "model_info": {"id": "c1"}},
            ],
            "router_settings": {"num_retries": 1, "fallbacks": [{"a": ["b", "c"]}]},
        }))
    }

    /// Runs one pass; `redirect` is the failed previous pass (its state and reported status).
    fn pass<'c>(c: &'c RouterConfig, body: &[u8], redirect: Option<(&str, &str)>, now: u64) -> BodyDecision<'c> {
        let view = CooldownView::new(&Cooldowns::default(), &c.table.ids, c.table.deployments.len());
        let mut rng = Rng::from_seed(3);
        let mut env = Env { cooling: &view, stats: &crate::stats::NoStats, now_ms: now, rng: &mut rng, key: KEY };
        let path = redirect.map_or("/v1/chat/completions?q=1".to_string(), |(state, report)| {
            let report = FailureReport::from_query(report).map(|(r, _)| r).unwrap_or(FailureReport { status: 1, retry_after_ms: None, context_window: false });
            let loc = crate::failover::failover_location("gw:10000", state, &report);
            loc.split_once("gw:10000").map(|(_, p)| p.to_string()).unwrap_or_default()
        });
        let head = RequestHead {
            method: "POST",
            path: &path,
            authority: "gw:10000",
            internal_redirect: redirect.is_some(),
            ..Default::default()
        };
        match on_head(c, &head, &mut replay(now)) {
            HeadDecision::ReadBody(p) => on_body(c, &p, body, &mut env),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn failover_retries_in_group_then_falls_back_in_order() {
        let c = failover_cfg();
        let body = br#"{"model":"a","stream":true}"#.to_vec();
        let first = pass(&c, &body, None, 1_000);
        let f1 = first.action.unwrap_or_else(|r| panic!("{r:?}"));
        assert_eq!((f1.attempts, f1.fallback_from.as_deref()), (1, None));
        let s1 = AttemptState::decode(f1.state.as_deref().unwrap_or(""), KEY).unwrap_or_default();
        assert!(s1.can_failover);
        assert_eq!((s1.path.as_str(), s1.authority.as_str()), ("/v1/chat/completions?q=1", "gw:10000"));
        let body1 = f1.body.clone().unwrap_or_else(|| body.clone());

        // 500 → retry on the other member of `a`.
        let second = pass(&c, &body1, Some((f1.state.as_deref().unwrap_or(""), "status=500")), 1_100);
        assert_eq!(second.failed.map(|f| (f.deployment_index, f.class)), Some((f1.deployment_index, FailureClass::ServerError)));
        let f2 = second.action.unwrap_or_else(|r| panic!("{r:?}"));
        assert_ne!(f2.deployment.id, f1.deployment.id);
        assert_eq!(f2.group, "a");
        assert_eq!(f2.path, "/v1/chat/completions?q=1");
        assert_eq!(f2.attempts, 2);
        let body2 = f2.body.clone().unwrap_or(body1);
        assert_eq!(serde_json::from_slice::<Value>(&body2).ok(), Some(json!({"model": f2.deployment.model, "stream": true})));

        // 429 → retries used up: first fallback `b` (Azure), previous auth header removed.
        let third = pass(&c, &body2, Some((f2.state.as_deref().unwrap_or(""), "status=429&ra=5000")), 1_200);
        assert_eq!(third.failed.map(|f| (f.class, f.retry_after_ms)), Some((FailureClass::RateLimit, Some(5_000))));
        let f3 = third.action.unwrap_or_else(|r| panic!("{r:?}"));
        assert_eq!((f3.deployment.id.as_str(), f3.attempts, f3.fallback_from.as_deref()), ("b1", 3, Some("a")));
        assert_eq!(f3.path, "/openai/deployments/b1/chat/completions?api-version=2024-10-21");
        assert!(f3.stream);
        let body3 = f3.body.clone().unwrap_or(body2);

        // Connect failure (redirector, well within the budget) → `b` has no retry target left → `c`.
        let fourth = pass(&c, &body3, Some((f3.state.as_deref().unwrap_or(""), "status=0")), 1_250);
        assert_eq!(fourth.failed.map(|f| f.class), Some(FailureClass::ConnectFailure));
        let f4 = fourth.action.unwrap_or_else(|r| panic!("{r:?}"));
        assert_eq!((f4.deployment.id.as_str(), f4.attempts), ("c1", 4));
        assert_eq!(f4.per_try_timeout_ms, Some(2_000));
        assert_eq!(f4.state, None, "nothing is left after c: no state, the upstream side passes failures through");
    }

    #[test]
    fn exhausted_when_every_remaining_target_is_cooling() {
        let c = cfg(json!({
            "model_list": [
                {"model_name": "a", "litellm_params": {"model": "openai/a1", "api_base": "http://h1/v1", "timeout": 2, "weight": 1}, "model_info": {"id": "a1"}},
                {"model_name": "a", "litellm_params": {"model": "openai/a2", "api_base": "http://h2/v1", "weight": 0}, "model_info": {"id": "a2"}},
            ],
            "router_settings": {"num_retries": 1},
        }));
        let mut record = Cooldowns::default();
        record.extend("a2", 60_000, FailureClass::RateLimit);
        let view = CooldownView::new(&record, &c.table.ids, c.table.deployments.len());
        let mut rng = Rng::from_seed(5);
        let run = |pending: &Pending, body: &[u8], now: u64, rng: &mut Rng| {
            let mut env = Env { cooling: &view, stats: &crate::stats::NoStats, now_ms: now, rng, key: KEY };
            on_body(&c, pending, body, &mut env)
        };
        let f1 = run(&pending(&c, "/v1/chat/completions"), br#"{"model":"a"}"#, 1_000, &mut rng).action.unwrap_or_else(|r| panic!("{r:?}"));
        assert_eq!(f1.deployment.id, "a1");
        let state = f1.state.clone().unwrap_or_default();
        assert!(!state.is_empty(), "a retry is possible (a2 is untried)");
        // The attempt used its whole 2 s budget: the redirector answered → a timeout; a2 cools → 504.
        let report = FailureReport { status: 0, retry_after_ms: None, context_window: false };
        let loc = crate::failover::failover_location("gw", &state, &report);
        let path = loc.split_once("gw").map(|(_, p)| p.to_string()).unwrap_or_default();
        let head = RequestHead { method: "POST", path: &path, internal_redirect: true, ..Default::default() };
        let HeadDecision::ReadBody(p2) = on_head(&c, &head, &mut replay(3_000)) else { panic!("not a failover pass") };
        let body = f1.body.clone().unwrap_or_default();
        let second = run(&p2, &body, 3_000, &mut rng);
        assert_eq!(second.failed.map(|f| f.class), Some(FailureClass::Timeout));
        let reply = match second.action {
            Err(r) => r,
            Ok(f) => panic!("forwarded to {}", f.deployment.id),
        };
        assert_eq!((reply.error.status, reply.error.code), (504, Some("upstream_timeout")));
        assert!(reply.error.message.contains("All 1 attempt(s) for model group `a`"), "{}", reply.error.message);
    }

    /// The head of a failover pass with `state` and `report`, replayed by Envoy (or not).
    fn failover_head<'a>(path: &'a str, redirected: bool) -> RequestHead<'a> {
        RequestHead {
            method: "POST",
            path,
            internal_redirect: redirected,
            original_url: redirected.then_some("http://gw/v1/chat/completions"),
            ..Default::default()
        }
    }

    fn failover_path(state: &str, status: u16) -> String {
        let report = FailureReport { status, retry_after_ms: None, context_window: false };
        let loc = crate::failover::failover_location("gw", state, &report);
        loc.split_once("gw").map(|(_, p)| p.to_string()).unwrap_or_default()
    }

    fn refused(d: &HeadDecision) -> bool {
        matches!(d, HeadDecision::Reject(r) if (r.error.status, r.error.code) == (502, Some("upstream_redirect_refused")))
    }

    #[test]
    fn forged_reused_expired_or_unredirected_failover_states_are_refused() {
        let c = failover_cfg();
        let f1 = pass(&c, br#"{"model":"a"}"#, None, 1_000).action.unwrap_or_else(|r| panic!("{r:?}"));
        let state = f1.state.clone().unwrap_or_default();
        let body = f1.body.clone().unwrap_or_default();
        let path = failover_path(&state, 500);

        // Forged (signature does not match) → refused, never passed through with credentials.
        let forged = failover_path(&state.replace("h=0", "h=1"), 500);
        assert!(refused(&on_head(&c, &failover_head(&forged, true), &mut replay(1_100))));
        // Signed with another VM's key (or before a restart) → refused.
        let mut other = ReplayCheck { key: (1, 2), now_ms: 1_100, spent: &mut SpentStates::default() };
        assert!(refused(&on_head(&c, &failover_head(&path, true), &mut other)));
        // Past its deadline → refused.
        let late = 1_000 + crate::failover::state_ttl_ms(None) + 1;
        assert!(refused(&on_head(&c, &failover_head(&path, true), &mut replay(late))));
        // Not replayed by Envoy (a client calling the failover path itself) → not ours at all.
        assert_eq!(on_head(&c, &failover_head(&path, false), &mut replay(1_100)), HeadDecision::PassThrough);

        // The genuine pass is accepted once; the same state a second time is a replay.
        let mut spent = SpentStates::default();
        let mut check = ReplayCheck { key: KEY, now_ms: 1_100, spent: &mut spent };
        let HeadDecision::ReadBody(p) = on_head(&c, &failover_head(&path, true), &mut check) else { panic!("genuine pass refused") };
        assert!(refused(&on_head(&c, &failover_head(&path, true), &mut check)), "a captured state replayed");

        // Bound to the body: the same state with another body is refused and records nothing.
        let view = CooldownView::new(&Cooldowns::default(), &c.table.ids, c.table.deployments.len());
        let mut rng = Rng::from_seed(3);
        let mut env = Env { cooling: &view, stats: &crate::stats::NoStats, now_ms: 1_100, rng: &mut rng, key: KEY };
        let other_body = br#"{"model":"a-one","messages":[{"role":"user","content":"steal"}]}"#;
        let d = on_body(&c, &p, other_body, &mut env);
        assert!(d.failed.is_none());
        assert!(matches!(d.action, Err(ref r) if r.error.code == Some("upstream_redirect_refused")), "{:?}", d.action);
        let d = on_body(&c, &p, &body, &mut env);
        assert!(d.failed.is_some() && d.action.is_ok(), "the genuine body goes on");
    }

    #[test]
    fn replays_of_routed_requests_that_are_not_failover_passes_are_refused() {
        // A provider's own `307 location: http://internal.example/...` makes Envoy replay the
        // request — its headers still hold the provider key — to that URL.
        let c = failover_cfg();
        let mut head = failover_head("/steal", true);
        assert!(refused(&on_head(&c, &head, &mut replay(0))));
        head.original_url = Some("https://gw:8443/v1/messages?beta=1");
        assert!(refused(&on_head(&c, &head, &mut replay(0))));
        // Someone else's internal redirect (a route the router does not serve) is not its business.
        head.original_url = Some("http://gw/static/index.html");
        assert_eq!(on_head(&c, &head, &mut replay(0)), HeadDecision::PassThrough);
    }

    #[test]
    fn model_names_are_data() {
        let c = cfg(json!({
            "model_list": [
                {"model_name": "azure/*", "litellm_params": {"model": "azure/*", "api_base": "https://r.openai.azure.com", "api_key": "k"}},
                {"model_name": "openai/*", "litellm_params": {"model": "openai/*", "api_key": "k"}},
            ],
        }));
        let p = "/v1/chat/completions";
        for evil in ["azure/../../../admin", "azure/x?api-version=evil&", "azure/a#b", "azure/a/b", "azure/a b", "azure/%2e%2e", "azure/.."] {
            let body = json!({"model": evil}).to_string();
            assert_eq!(code(route(&c, p, &body)), (400, Some("invalid_model")), "{evil}");
        }
        for evil in [r"openai/x\r\nx-injected: 1", "", r"openai/\u0000"] {
            let body = format!(r#"{{"model":"{evil}"}}"#);
            assert_eq!(code(route(&c, p, &body)), (400, Some("invalid_model")), "{evil:?}");
        }
        let long = json!({"model": format!("openai/{}", "x".repeat(300))}).to_string();
        assert_eq!(code(route(&c, p, &long)), (400, Some("invalid_model")));
        let f = route(&c, p, r#"{"model":"azure/gpt-4o_prod.v2"}"#).unwrap_or_else(|r| panic!("{r:?}"));
        assert_eq!(f.path, "/openai/deployments/gpt-4o_prod.v2/chat/completions?api-version=2024-10-21");
        // Under an OpenAI wildcard the name only reaches the JSON body, escaped by the writer.
        let f = route(&c, p, r#"{"model":"openai/a/b \"c\""}"#).unwrap_or_else(|r| panic!("{r:?}"));
        assert_eq!(body_json(&f)["model"], "a/b \"c\"");
    }

    #[test]
    fn oversized_paths_and_authorities_are_refused_before_buffering() {
        let c = sample();
        let long_path = format!("/v1/chat/completions?{}", "q".repeat(MAX_PATH_BYTES));
        let h = RequestHead { path: &long_path, ..head("POST", "/") };
        assert!(matches!(on_head(&c, &h, &mut replay(0)), HeadDecision::Reject(r) if r.error.status == 414));
        let host = "h".repeat(MAX_AUTHORITY_BYTES + 1);
        let h = RequestHead { authority: &host, ..head("POST", "/v1/chat/completions") };
        assert!(matches!(on_head(&c, &h, &mut replay(0)), HeadDecision::Reject(r) if r.error.status == 400));
    }

    #[test]
    fn without_the_failover_wiring_no_state_header_is_sent() {
        // Retries and fallbacks configured, but envoy_settings.failover is off: the provider
        // must not receive the attempt state (nothing would strip it).
        let c = cfg(json!({
            "model_list": [
                {"model_name": "a", "litellm_params": {"model": "openai/a1", "api_base": "http://h1/v1"}, "model_info": {"id": "a1"}},
                {"model_name": "a", "litellm_params": {"model": "openai/a2", "api_base": "http://h2/v1"}, "model_info": {"id": "a2"}},
            ],
            "router_settings": {"num_retries": 2, "fallbacks": [{"a": ["a"]}]},
            "envoy_settings": {},
        }));
        assert!(!c.envoy.failover);
        let f = pass(&c, br#"{"model":"a"}"#, None, 0).action.unwrap_or_else(|r| panic!("{r:?}"));
        assert_eq!(f.state, None);
        let on = failover_cfg();
        let f = pass(&on, br#"{"model":"a"}"#, None, 0).action.unwrap_or_else(|r| panic!("{r:?}"));
        assert!(f.state.is_some(), "with the wiring declared the state travels");
    }

    #[test]
    fn no_failover_on_a_single_deployment_without_retries_or_fallbacks() {
        let c = sample();
        let f = route(&c, "/v1/chat/completions", r#"{"model":"claude"}"#).unwrap_or_else(|r| panic!("{r:?}"));
        assert_eq!(f.state, None, "no further attempt possible: no state header at all");
        assert_eq!(f.per_try_timeout_ms, None);
    }
}
