//! The header phase: which requests the router takes, refuses, answers itself or passes
//! through, and how a failover pass (Envoy's replay after the upstream role's 307) is told
//! from a replay the router must refuse.

use super::Reply;
use crate::access::{Caller, Peer};
use crate::config::RouterConfig;
use crate::failover::{AttemptState, FailureReport, SpentStates, FAILOVER_PATH};
use crate::openai::ApiError;
use crate::pipeline::auth::ClientCredentials;
use crate::provider::Endpoint;

/// Longest client `:path` (query included) the router routes: it travels in the attempt state.
pub const MAX_PATH_BYTES: usize = 2048;
/// Longest `:authority` the router routes (a DNS name is at most 253 bytes, plus a port).
pub const MAX_AUTHORITY_BYTES: usize = 261;
/// Longest `model` the router accepts (model ids are far shorter; it travels in the state).
pub const MAX_MODEL_BYTES: usize = 256;

/// Request header carrying routing tags (comma-separated), besides the body's `tags` /
/// `metadata.tags`. Consumed by the router, never forwarded.
pub const TAGS_HEADER: &str = "x-llm-router-tags";

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
    /// The identity Envoy established (peer certificate, verified JWT), read only when some key
    /// is bound to one and the request presents no key.
    pub peer: Peer<'a>,
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
    /// Who is calling (checked against the model in the body phase).
    pub caller: Caller,
}

impl Pending {
    pub(super) fn query(&self) -> &str {
        self.path.split_once('?').map_or("", |(_, q)| q)
    }
}

/// An endpoint the filter answers itself (GET or HEAD, 200 `application/json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalReply {
    /// The model list (`envoy_settings.models_paths`), body precomputed in the config: the
    /// caller's own when it is a virtual key.
    Models(Caller),
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
/// and the nonces already spent. The clock also decides whether a virtual key has expired (the
/// shell reads it only for replays and for configs with expiring keys; 0 otherwise).
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
        return local_head(cfg, head, local, path, replay.now_ms);
    }
    let Some(endpoint) = Endpoint::from_path(path) else { return HeadDecision::PassThrough };
    if head.method != "POST" {
        return HeadDecision::Reject(Reply {
            error: ApiError::method_not_allowed(head.method),
            headers: vec![("allow", "POST".to_string())],
        });
    }
    let caller = match cfg.access.identify_with(cfg.master_key.as_deref(), &head.credentials, &head.peer, replay.now_ms) {
        Ok(c) => c,
        Err(e) => return HeadDecision::Reject(e.into()),
    };
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
        caller,
    }))
}

/// Whether the header phase identifies the caller of this request (a routed or local endpoint,
/// not a replay): only then are identity properties worth reading.
pub fn identifies(cfg: &RouterConfig, head: &RequestHead<'_>) -> bool {
    let path = head.path.split_once('?').map_or(head.path, |(p, _)| p);
    !head.internal_redirect && (local_endpoint(cfg, path).is_some() || Endpoint::from_path(path).is_some())
}

/// Which local endpoint `path` (no query) is, if any: exact match on the configured paths.
fn local_endpoint(cfg: &RouterConfig, path: &str) -> Option<LocalReply> {
    if cfg.envoy.models_paths.iter().any(|p| p == path) {
        Some(LocalReply::Models(Caller::Open))
    } else if cfg.envoy.health_path.as_deref() == Some(path) {
        Some(LocalReply::Health)
    } else {
        None
    }
}

/// GET and HEAD only; the same credentials as the routed endpoints (LiteLLM asks for a key on
/// `/v1/models` and `/health` too). A virtual key gets its own model list; the health report
/// (deployments, clusters, failures) is the operator's: the master key only, once keys exist.
fn local_head(cfg: &RouterConfig, head: &RequestHead<'_>, local: LocalReply, path: &str, now_ms: u64) -> HeadDecision {
    if head.method != "GET" && head.method != "HEAD" {
        return HeadDecision::Reject(Reply {
            error: ApiError::method_not_allowed_use(head.method, "GET"),
            headers: vec![("allow", "GET, HEAD".to_string())],
        });
    }
    let caller = match cfg.access.identify_with(cfg.master_key.as_deref(), &head.credentials, &head.peer, now_ms) {
        Ok(c) => c,
        Err(e) => return HeadDecision::Reject(e.into()),
    };
    match local {
        LocalReply::Models(_) => HeadDecision::Local(LocalReply::Models(caller)),
        LocalReply::Health if matches!(caller, Caller::Key(_)) => HeadDecision::Reject(ApiError::admin_only(path).into()),
        LocalReply::Health => HeadDecision::Local(LocalReply::Health),
    }
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
        caller: Caller::Replay,
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

