//! The pre-strategy filters of [`super::select`], each narrowing a list of candidate positions
//! (indices into the group's `members`).
//!
//! Why this exists: LiteLLM runs a chain of filters before its routing strategy (tags, pre-call
//! checks, rpm/tpm limits, `order`); each is a small rule with its own LiteLLM semantics, kept
//! here one function each so `select` reads as the chain itself.

use crate::config::{Deployment, Group, RouterSettings, Strategy, Table};
use crate::stats::DeploymentStats;

use super::Ineligible;

/// The tag that marks deployments serving untagged requests (LiteLLM tag routing).
pub const DEFAULT_TAG: &str = "default";

/// Whether deployments' `rpm`/`tpm` are enforced as per-minute caps. LiteLLM enforces them in
/// the usage-, latency- and cost-based strategies (each skips deployments whose limits the
/// request would exceed) and, for any strategy, with `enable_pre_call_checks`; simple-shuffle
/// and least-busy otherwise use `rpm`/`tpm` only as shuffle weights, or not at all.
pub fn caps_apply(settings: &RouterSettings) -> bool {
    settings.enable_pre_call_checks
        || matches!(
            settings.routing_strategy,
            Strategy::UsageBased | Strategy::UsageBasedV2 | Strategy::LatencyBased | Strategy::CostBased
        )
}

/// The deployment at `pos` of `group`.
pub(super) fn deployment<'t>(table: &'t Table, group: &Group, pos: usize) -> Option<&'t Deployment> {
    group.members.get(pos).and_then(|&i| table.deployments.get(i))
}

fn is_default(d: &Deployment) -> bool {
    d.tags.iter().any(|t| t == DEFAULT_TAG)
}

fn matches_any(d: &Deployment, request_tags: &[String]) -> bool {
    d.tags.iter().any(|t| request_tags.contains(t))
}

/// Tag routing for a request that carries tags (LiteLLM `get_deployments_for_tag`, match-any):
/// the deployments having ANY of the tags; if no deployment of the group has any of them, the
/// `default`-tagged ones; if there are none either, [`Ineligible::NoTagMatch`]. Untagged
/// deployments never serve tagged requests. Which set applies is decided over the whole group
/// (not only the untried, healthy members) so a cooling or already-tried match is reported as
/// such instead of silently falling back to `default` deployments.
pub(super) fn by_request_tags(table: &Table, group: &Group, cands: &mut Vec<usize>, request_tags: &[String]) -> Result<(), Ineligible> {
    if request_tags.is_empty() {
        return Ok(());
    }
    let members = || group.members.iter().filter_map(|&i| table.deployments.get(i));
    if members().any(|d| matches_any(d, request_tags)) {
        cands.retain(|&p| deployment(table, group, p).is_some_and(|d| matches_any(d, request_tags)));
    } else if members().any(is_default) {
        cands.retain(|&p| deployment(table, group, p).is_some_and(is_default));
    } else {
        return Err(Ineligible::NoTagMatch);
    }
    if cands.is_empty() {
        Err(Ineligible::AllTried)
    } else {
        Ok(())
    }
}

/// Untagged requests with tag filtering on: the `default`-tagged deployments if any remain
/// available, else all (LiteLLM: "all untagged requests will get routed to" `default`). Runs
/// after the availability filters, so a cooling `default` deployment hands its traffic to the
/// others rather than failing the request.
pub(super) fn prefer_default(table: &Table, group: &Group, cands: &mut Vec<usize>) {
    if cands.iter().any(|&p| deployment(table, group, p).is_some_and(is_default)) {
        cands.retain(|&p| deployment(table, group, p).is_some_and(is_default));
    }
}

/// Pre-call context-window check: drops deployments whose `model_info.max_input_tokens` is
/// below the request's input estimate (deployments without it stay).
pub(super) fn context_window(table: &Table, group: &Group, cands: &mut Vec<usize>, input_tokens: u64) -> Result<(), Ineligible> {
    cands.retain(|&p| deployment(table, group, p).is_some_and(|d| d.info.max_input_tokens.is_none_or(|max| input_tokens <= max)));
    if cands.is_empty() {
        Err(Ineligible::ContextWindow)
    } else {
        Ok(())
    }
}

/// Whether one more request of `input_tokens` fits `d`'s caps this minute: `rpm_used + 1 <=
/// rpm` and `tpm_used + input_tokens <= tpm` (LiteLLM's usage-based routing checks).
pub(super) fn within_caps(d: &Deployment, s: &DeploymentStats, input_tokens: u64) -> bool {
    d.rpm.is_none_or(|rpm| s.rpm_used.saturating_add(1) <= rpm) && d.tpm.is_none_or(|tpm| s.tpm_used.saturating_add(input_tokens) <= tpm)
}

/// `order`: keeps only the lowest `order` among the candidates (1 = highest priority).
/// Deployments without `order` are used only when no remaining candidate has one (LiteLLM keeps
/// just the minimum-order deployments whenever any is set).
pub(super) fn lowest_order(table: &Table, group: &Group, cands: &mut Vec<usize>) {
    let order = |p: usize| deployment(table, group, p).and_then(|d| d.order);
    if let Some(min) = cands.iter().filter_map(|&p| order(p)).min() {
        cands.retain(|&p| order(p) == Some(min));
    }
}
