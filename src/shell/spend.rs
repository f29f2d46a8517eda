//! Spend attribution in the stream (`pipeline::spend` has the names and the arithmetic): what
//! `on_log` writes for the access log and the `llm_router_spend_*` metrics, and the soft-budget
//! metric at admission. Host calls: with `access_log_properties`, 1–4 `set_property` for the
//! caller's names (+1 for the cost with `access_log_tokens`, when known); with metrics and a
//! key (virtual or master), 1–4 counter updates. Nothing here depends on the number of keys:
//! names are looked up by index.

use super::host::Host;
use super::vm::Vm;
use crate::access::Caller;
use crate::config::RouterConfig;
use crate::limits::{Limit, Scope};
use crate::metrics::{self, Sink};
use crate::openai::Usage;
use crate::pipeline::spend::{self, NONE};

/// The end of a forwarded attempt on deployment `index`: its caller's names, the key's and the
/// request's `tags` (client strings: bounded, cleaned, only ever in the access log) and its cost
/// into the access-log properties, its tokens and cost into the spend metrics.
/// `cost`: the response's cost (`spend::cost_nanos`; None when unpriced or without usage).
#[allow(clippy::too_many_arguments)]
pub fn on_log<H: Host, S: Sink>(host: &H, vm: &Vm<S>, cfg: &RouterConfig, caller: Caller, tags: &[String], index: usize, usage: Option<Usage>, cost: Option<u64>) {
    let Some(dep) = cfg.table.deployments.get(index) else { return };
    let who = cfg.spend.of(caller);
    if cfg.envoy.access_log_properties {
        // The cost goes with the token counts (`access_log_tokens`); Envoy runs this before
        // the access loggers, so the values reach this pass's line.
        let cost = cost.filter(|_| cfg.envoy.access_log_tokens);
        for (name, value) in spend::properties(who, tags, cost) {
            if let Err(status) = host.set_property(name, value.as_bytes()) {
                log::debug!("llm-router: setting property {name} failed: {status:?}");
            }
        }
    }
    // Spend metrics for callers with a key (virtual or master; a failover pass is its first
    // pass's, `spend::payer`): an open gateway's traffic is in the per-deployment metrics.
    let Some(w) = who else { return };
    vm.with_metrics(cfg, |m| metrics::spent(&mut m.sink, w.team_label(), &w.key, &dep.group, usage, cost));
}

/// A request the router answered itself after identifying its caller (a model the key may not
/// call, a limit or budget refusal): the caller's names into the access-log properties, so the
/// line of a 401 or 429 says whose it was. No cost, no metrics: nothing was spent.
pub fn refused<H: Host>(host: &H, cfg: &RouterConfig, caller: Caller) {
    if !cfg.envoy.access_log_properties {
        return;
    }
    let Some(who) = cfg.spend.of(caller) else { return };
    for (name, value) in spend::properties(Some(who), &[], None) {
        if let Err(status) = host.set_property(name, value.as_bytes()) {
            log::debug!("llm-router: setting property {name} failed: {status:?}");
        }
    }
}

/// An admission's budgets past `soft_budget` (`soft`: indices into `plan`, the limit list the
/// request was admitted against): one
/// `llm_router_soft_budget_exceeded_total` each, labelled with config-defined names (a key's
/// scope is named by its alias or `keys[i]`, never its hash).
pub fn soft_budgets<S: Sink>(vm: &Vm<S>, cfg: &RouterConfig, caller: Caller, plan: &[Limit], soft: &[usize]) {
    if soft.is_empty() {
        return;
    }
    let key = cfg.spend.of(caller).map_or(NONE, |w| w.key.as_str());
    vm.with_metrics(cfg, |m| {
        for l in soft.iter().filter_map(|&i| plan.get(i)) {
            match &l.scope {
                Scope::Key(_) => metrics::soft_budget_exceeded(&mut m.sink, "key", key),
                Scope::Team(t) => metrics::soft_budget_exceeded(&mut m.sink, "team", t),
                Scope::User(u) => metrics::soft_budget_exceeded(&mut m.sink, "user", u),
                Scope::KeyModel { model, .. } => metrics::soft_budget_exceeded(&mut m.sink, "key_model", &format!("{key}:{model}")),
            }
        }
    });
}
