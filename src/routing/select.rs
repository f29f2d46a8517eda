//! [`select`]: the one entry point that picks a deployment for an attempt — LiteLLM's filter
//! chain, then its routing strategy.
//!
//! Why this exists: every attempt of a request (first try and retries) must apply the same
//! rules in the same order, and report precisely why nothing could be picked so the caller can
//! answer (429 with `retry-after`, 400 for the context window, ...) or fall back to another
//! group. The chain, over the group's members only (a 500-deployment table costs what a
//! 40-deployment one does):
//!
//! 1. already tried in this request → out (all tried: [`Ineligible::AllTried`]);
//! 2. tags, with `enable_tag_filtering` and a tagged request ([`Ineligible::NoTagMatch`]);
//! 3. context window, with `enable_pre_call_checks` (LiteLLM runs it only as a pre-call check):
//!    `max_input_tokens` below the input estimate → out ([`Ineligible::ContextWindow`]);
//! 4. cooling → out; if every remaining one cools: [`Selection::AllCooling`] with the soonest
//!    expiry;
//! 5. rpm/tpm caps when [`super::caps_apply`] ([`Ineligible::RateLimited`]; the window frees up
//!    at [`crate::stats::ms_to_next_minute`]);
//! 6. untagged request with tag filtering: `default`-tagged deployments preferred;
//! 7. `order`: only the lowest remaining `order`;
//! 8. the strategy ([`super::strategy`]).
//!
//! The static filters (tags, context window) run before cooling so that a request whose only
//! matching deployments are cooling gets "retry later" rather than "no match".

use crate::config::{RouterSettings, Table};
use crate::health::CooldownView;
use crate::stats::StatsSource;

use super::filters::{self, caps_apply, deployment};
use super::strategy::{self, StatsCache};
use super::Rng;

/// What selection needs to know about the request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestFacts<'a> {
    /// Request tags (top-level `tags` and `metadata.tags`).
    pub tags: &'a [String],
    /// Input token estimate ([`crate::openai::estimate_input_tokens`]).
    pub input_tokens: u64,
    pub stream: bool,
}

/// The outcome of one selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// Index into the table's deployments.
    Deployment(usize),
    /// Every otherwise eligible deployment is cooling; the soonest is free after this long.
    AllCooling { retry_after_ms: u64 },
    NoneEligible(Ineligible),
}

/// Why no deployment is eligible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ineligible {
    /// Every eligible deployment was already tried in this request (or the group is empty).
    AllTried,
    /// Every available deployment is at its `rpm`/`tpm` cap for this minute.
    RateLimited,
    /// Every candidate's `max_input_tokens` is below the input estimate.
    ContextWindow,
    /// The request has tags and no deployment of the group matches or is `default`.
    NoTagMatch,
}

/// Picks the deployment for one attempt at `now_ms`. `exclude` lists the deployments (table
/// indices) already tried in this request. `stats` is asked only for candidates, only when the
/// strategy or the caps need them, and at most once each.
#[allow(clippy::too_many_arguments)]
pub fn select(
    table: &Table,
    settings: &RouterSettings,
    group: usize,
    facts: &RequestFacts<'_>,
    cooling: &CooldownView,
    stats: &dyn StatsSource,
    exclude: &[usize],
    now_ms: u64,
    rng: &mut Rng,
) -> Selection {
    let Some(g) = table.groups.get(group) else { return Selection::NoneEligible(Ineligible::AllTried) };
    let mut cands: Vec<usize> = g.members.iter().enumerate().filter(|(_, i)| !exclude.contains(i)).map(|(pos, _)| pos).collect();
    if cands.is_empty() {
        return Selection::NoneEligible(Ineligible::AllTried);
    }
    if settings.enable_tag_filtering {
        if let Err(why) = filters::by_request_tags(table, g, &mut cands, facts.tags) {
            return Selection::NoneEligible(why);
        }
    }
    if settings.enable_pre_call_checks {
        if let Err(why) = filters::context_window(table, g, &mut cands, facts.input_tokens) {
            return Selection::NoneEligible(why);
        }
    }

    let remaining = |pos: usize| g.members.get(pos).and_then(|&i| cooling.remaining_ms(i, now_ms));
    let soonest = cands.iter().filter_map(|&p| remaining(p)).min();
    cands.retain(|&p| remaining(p).is_none());
    if cands.is_empty() {
        return Selection::AllCooling { retry_after_ms: soonest.unwrap_or(0) };
    }

    let mut cache = StatsCache::new(stats, g);
    if caps_apply(settings) {
        cands.retain(|&p| match deployment(table, g, p) {
            Some(d) if d.rpm.is_some() || d.tpm.is_some() => filters::within_caps(d, &cache.get(p), facts.input_tokens),
            Some(_) => true,
            None => false,
        });
        if cands.is_empty() {
            return Selection::NoneEligible(Ineligible::RateLimited);
        }
    }
    if settings.enable_tag_filtering && facts.tags.is_empty() {
        filters::prefer_default(table, g, &mut cands);
    }
    filters::lowest_order(table, g, &mut cands);

    strategy::pick(settings, table, g, &cands, facts, &mut cache, rng)
        .and_then(|pos| g.members.get(pos))
        .map_or(Selection::NoneEligible(Ineligible::AllTried), |&i| Selection::Deployment(i))
}
