//! Rewrite planning: for the chosen deployment, the upstream `:path`, `:authority`, cluster,
//! auth header, body `model` (and `default_params`), the per-try budget and the signed attempt
//! state that lets the next pass continue. Pure: the shell applies the [`Forward`].

use super::attempt::{Env, Scanned};
use super::head::Pending;
use super::Reply;
use crate::config::{glob_capture, AuthHeader, Deployment, Group, RouterConfig, ANTHROPIC_VERSION};
use crate::failover::{body_fingerprint, can_failover, can_policy_failover, can_rejection_failover, context_chain, state_ttl_ms, AttemptState};
use crate::openai::{json_write, rewrite, ApiError};
use crate::provider::{upstream_path, Wire};

/// Request header giving Envoy the attempt's time-to-response-headers budget.
pub const PER_TRY_TIMEOUT_HEADER: &str = "x-envoy-upstream-rq-per-try-timeout-ms";

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
    /// Headers the previous attempt's deployment set (auth, extra headers) that this one does
    /// not: removed, so one provider's key or headers never reach another.
    pub stale: Vec<&'c str>,
    /// The deployment's static headers (`extra_headers`, `organization`).
    pub extra_headers: &'c [(String, String)],
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
    /// The request's `max_completion_tokens` / `max_tokens` (the tpm reservation).
    pub max_output_tokens: Option<u64>,
    /// The request's tags (body `tags` / `metadata.tags`, the tags header; bounded by
    /// `openai::request_facts`): spend attribution in the access log.
    pub tags: Vec<String>,
}

/// What a wildcard may capture when the capture lands in the upstream `:path` (Azure puts the
/// deployment name there): Azure's own deployment-name alphabet. Anything else (`/`, `..`, `?`,
/// `#`, `%`, spaces) would be path syntax.
fn is_path_safe_capture(capture: &str) -> bool {
    !capture.is_empty()
        && !capture.starts_with('.')
        && capture.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Plans the rewrite for deployment `index` of `group`, with `state` describing this attempt
/// (its `tried`, `hop`, counters; completed here). `body_replaced`: `body` is not what Envoy
/// holds (a failover pass removed the previous attempt's insertions), so it is sent even
/// when this attempt changes nothing in it.
#[allow(clippy::too_many_arguments)]
pub(super) fn plan<'c>(
    cfg: &'c RouterConfig,
    pending: &Pending,
    body: &[u8],
    scanned: &Scanned<'_>,
    group: &'c Group,
    index: usize,
    mut state: AttemptState,
    previous: Option<&'c Deployment>,
    body_replaced: bool,
    env: &mut Env<'_>,
) -> Result<Forward<'c>, Reply> {
    let dep = cfg.table.deployments.get(index).ok_or_else(|| Reply::from(ApiError::model_not_found(&state.model)))?;
    let capture = glob_capture(&group.name, &state.model).flatten();
    if let Some(c) = capture {
        if c.is_empty() && dep.model.contains('*') {
            return Err(ApiError::invalid_model("the part the wildcard stands for is empty").into());
        }
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
    state.inserted = u32::try_from(json_write::members_len(&defaults, scanned.scan.object.is_empty)).unwrap_or(u32::MAX);
    let new_body: Option<Vec<u8>> = (model_changes || !defaults.is_empty() || body_replaced).then(|| {
        let model_edit = match (&scanned.scan.model, model_changes) {
            (Some(m), true) => Some((m.value.clone(), upstream_model.as_str())),
            _ => None,
        };
        rewrite(body, model_edit, &scanned.scan.object, &defaults)
    });

    state.tried.push(dep.id.clone());
    state.start_ms = env.now_ms;
    let stream = scanned.scan.stream.unwrap_or(false);
    let per_try_timeout_ms = per_try_timeout_secs(cfg, dep, stream).map(|s| (s * 1000.0).round() as u64).filter(|&ms| ms > 0);
    state.try_budget_ms = per_try_timeout_ms;
    let untried_in_group = group.members.iter().any(|i| cfg.table.deployments.get(*i).is_some_and(|d| !state.tried.contains(&d.id)));
    state.can_failover = can_failover(cfg, &state, untried_in_group);
    state.can_context_failover = can_rejection_failover(cfg, &state, context_chain(cfg));
    state.policy_failover = can_policy_failover(cfg, &state, untried_in_group).then_some(dep.provider.wire);
    // Only with the failover wiring: nothing else strips the header before the provider.
    let attach_state = cfg.envoy.failover && (state.can_failover || state.can_context_failover || state.policy_failover.is_some());
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
        stale: previous.map(|p| stale_headers(p, dep)).unwrap_or_default(),
        extra_headers: &dep.extra_headers,
        anthropic_version: (dep.provider.wire == Wire::Anthropic
            && !pending.has_anthropic_version
            && !dep.extra_headers.iter().any(|(n, _)| n == "anthropic-version"))
        .then_some(ANTHROPIC_VERSION),
        body: new_body,
        stream,
        state: attach_state.then(|| state.encode(env.key)),
        per_try_timeout_ms,
        attempts: state.hop + 1,
        fallback_from,
        input_tokens: scanned.facts.input_tokens,
        max_output_tokens: scanned.facts.max_output_tokens,
        tags: scanned.facts.tags.clone(),
    })
}

/// LiteLLM's order: a stream takes the deployment's `stream_timeout`, then the router's, then
/// the non-stream timeouts (deployment `timeout`, then the router's).
fn per_try_timeout_secs(cfg: &RouterConfig, dep: &Deployment, stream: bool) -> Option<f64> {
    let stream_timeout = if stream { dep.stream_timeout_secs.or(cfg.router.stream_timeout_secs) } else { None };
    stream_timeout.or(dep.timeout_secs).or(cfg.router.timeout_secs)
}

/// Header names `previous` set upstream that `next` does not set itself.
fn stale_headers<'c>(previous: &'c Deployment, next: &Deployment) -> Vec<&'c str> {
    let sets = |d: &Deployment, name: &str| d.auth.as_ref().is_some_and(|a| a.name == name) || d.extra_headers.iter().any(|(n, _)| n == name);
    let auth = previous.auth.as_ref().map(|a| a.name.as_str());
    auth.into_iter().chain(previous.extra_headers.iter().map(|(n, _)| n.as_str())).filter(|n| !sets(next, n)).collect()
}

/// A `*` in the deployment's model takes what the group's wildcard matched.
fn substitute_wildcard(model: &str, capture: &str) -> String {
    match model.split_once('*') {
        Some((head, tail)) => format!("{head}{capture}{tail}"),
        None => model.to_string(),
    }
}

