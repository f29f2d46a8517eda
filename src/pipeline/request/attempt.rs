//! The body phase's orchestration: the first attempt (resolve the model, select, or fall back
//! when the group cannot serve) and every failover pass (record what failed, pick the next
//! target in LiteLLM's order), each ending in a planned rewrite (`rewrite.rs`) or a reply.

use super::head::{Pending, Redirect, MAX_MODEL_BYTES};
use super::rewrite::{plan, Forward};
use super::Reply;
use crate::config::{Group, RouterConfig};
use crate::failover::{body_fingerprint, chain, context_chain, next_targets, policy_targets, rejection_targets, AttemptState, Chain, FailureReport};
use crate::health::{classify, counts_against_deployment, timeout_or_connect_failure, CooldownView, FailureClass};
use crate::openai::error::Exhausted;
use crate::openai::{json_scan, scan_request_with_facts, ApiError, BodyFacts};
use crate::routing::{select, Ineligible, RequestFacts, Rng, Selection};
use crate::stats::{ms_to_next_minute, StatsSource};

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
    // The key's own aliases first, then access (before "does it exist", as LiteLLM checks: a
    // restricted key learns nothing about models it may not call), then the table.
    let requested = cfg.access.resolve_alias(pending.caller, scanned.requested.as_str());
    let found = cfg.table.resolve(requested);
    let group_of = found.and_then(|r| cfg.table.groups.get(r.group).map(|g| (r.group, g.name.as_str())));
    cfg.access.check_model(pending.caller, requested, group_of).map_err(Reply::from)?;
    let resolved = found.ok_or_else(|| {
        Reply::from(match cfg.table.unservable(requested) {
            Some((group, reason)) => ApiError::model_not_servable(group, reason),
            None => ApiError::model_not_found(requested),
        })
    })?;
    let group = cfg.table.groups.get(resolved.group).ok_or_else(|| Reply::from(ApiError::model_not_found(requested)))?;
    let mut state = AttemptState {
        model: requested.to_string(),
        origin_group: group.name.clone(),
        group: group.name.clone(),
        path: pending.path.clone(),
        authority: pending.authority.clone(),
        payer: crate::pipeline::spend::first_pass_payer(cfg, pending.caller),
        ..Default::default()
    };
    let first = choose(cfg, resolved.group, &scanned, &[], env);
    let index = match first {
        Selection::Deployment(i) => i,
        unavailable => {
            // The group cannot serve this request: its fallbacks may (LiteLLM's order: a prompt
            // too long goes to `context_window_fallbacks`, anything else to `fallbacks`).
            let which = match unavailable {
                Selection::NoneEligible(Ineligible::ContextWindow) => context_chain(cfg),
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
            state.chain = which;
            return plan(cfg, pending, body, &scanned, fallback_group, d, state, None, false, env);
        }
    };
    plan(cfg, pending, body, &scanned, group, index, state, None, false, env)
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
                error: ApiError::all_rate_limited(&group.name, secs),
                headers: vec![("retry-after", secs.to_string())],
            }
        }
        Selection::NoneEligible(Ineligible::ContextWindow) => ApiError::context_too_long(&group.name).into(),
        Selection::NoneEligible(Ineligible::NoTagMatch) => ApiError::no_tag_match(&group.name).into(),
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
    // A prompt too long for the deployment, or one its content policy refuses, is the request's
    // problem, not the deployment's (LiteLLM's `_is_cooldown_required` skips both: status 400);
    // so is a name the client invented under a wildcard that the provider does not know.
    let wildcard = crate::config::is_wildcard_group(&prev.group);
    let rejected = report.context_window || report.content_policy;
    let failed = prev_index
        .filter(|_| !rejected && counts_against_deployment(class, wildcard))
        .map(|deployment_index| FailedAttempt { deployment_index, class, retry_after_ms: report.retry_after_ms });
    let exhausted = |attempts: u32| Reply::from(exhausted_error(&prev.origin_group, attempts, class, &report));

    let original = strip_inserted(body, prev.inserted);
    let body: &[u8] = original.as_deref().unwrap_or(body);
    let scanned = match scan(cfg, body, pending) {
        Ok(s) => s,
        Err(reply) => return BodyDecision { failed, action: Err(reply) },
    };
    let tried: Vec<usize> = prev.tried.iter().filter_map(|id| cfg.table.ids.get(id).copied()).collect();
    let targets = if report.context_window {
        rejection_targets(cfg, prev, context_chain(cfg))
    } else if report.content_policy {
        policy_targets(cfg, prev)
    } else {
        next_targets(cfg, prev, class)
    };
    for target in targets {
        let Some(group) = cfg.table.groups.get(target.group) else { continue };
        let Selection::Deployment(index) = choose(cfg, target.group, &scanned, &tried, env) else { continue };
        let state = AttemptState {
            hop: prev.hop + 1,
            group: group.name.clone(),
            fallback: target.fallback,
            retries: target.retries,
            chain: target.chain,
            ..prev.clone()
        };
        let previous = prev_index.and_then(|i| cfg.table.deployments.get(i));
        let action = plan(cfg, pending, body, &scanned, group, index, state, previous, original.is_some(), env);
        return BodyDecision { failed, action };
    }
    BodyDecision { failed, action: Err(exhausted(prev.hop + 1)) }
}

/// The body without the `inserted` bytes the previous attempt put right after its opening `{`
/// (None when it inserted nothing). The body is the one that attempt forwarded (its
/// fingerprint was checked), so the bytes are exactly its insertion.
fn strip_inserted(body: &[u8], inserted: u32) -> Option<Vec<u8>> {
    let n = usize::try_from(inserted).ok().filter(|&n| n > 0)?;
    let open = body.iter().position(|b| !b.is_ascii_whitespace()).filter(|&i| body.get(i) == Some(&b'{'))?;
    let head = body.get(..=open)?;
    let tail = body.get(open.checked_add(1)?.checked_add(n)?..)?;
    Some([head, tail].concat())
}

/// What a pass needs from the body: the requested model (first pass), where `model` is, and
/// the facts selection filters on (tags, input token estimate).
pub(super) struct Scanned<'b> {
    pub(super) requested: String,
    pub(super) scan: json_scan::RequestScan<'b>,
    pub(super) facts: BodyFacts,
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
    // The client's name (first pass); a failover pass's body holds the router's own rewrite.
    if pending.redirect.is_none() {
        check_model_name(&requested)?;
    }
    if scan.duplicate_model {
        return Err(ApiError::duplicate_model().into());
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
        return ApiError::context_fallbacks_exhausted(group, attempts);
    }
    if report.content_policy {
        return ApiError::content_policy_fallbacks_exhausted(group, attempts);
    }
    let last = if report.status == 0 { class.to_string() } else { format!("status {}", report.status) };
    let kind = match class {
        FailureClass::RateLimit => Exhausted::RateLimited,
        FailureClass::Timeout => Exhausted::TimedOut,
        FailureClass::ConnectFailure | FailureClass::Reset => Exhausted::Unavailable,
        _ => Exhausted::Failed,
    };
    ApiError::attempts_exhausted(group, attempts, kind, &last)
}

