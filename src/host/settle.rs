//! Global-limit settlements, sent from the root context.
//!
//! Why here: a stream's settlement is known in its `on_log`, when the stream is about to be
//! destroyed — and Envoy cancels every gRPC call of a context when it is destroyed
//! (`Context::~Context`), so a call made there may never reach the rate limit service. The root
//! context lives as long as the VM: streams put the encoded settlement on a shared queue only
//! this VM's root drains (its name carries a random suffix; Envoy posts `on_queue_ready` to the
//! thread that registered it), and the root sends each as its own unary call. An answer is only
//! counted (`llm_router_rls_calls_total{rls_call="settlement"}`): a settlement is never retried —
//! a lost one leaves the service's counters at the reservation (a refund not made, or an excess
//! not charged, bounded by one request's difference).

use super::root::HostVm;
use crate::config::RouterConfig;
use crate::limits::global;
use proxy_wasm::hostcalls;
use std::collections::HashSet;

/// Settlement calls in flight (tokens), so the root tells them from its probes' callouts.
#[derive(Default)]
pub struct Settlements {
    in_flight: HashSet<u32>,
}

/// Registers this VM's settlement queue when `cfg` has a rate limit service.
pub fn configure(cfg: &RouterConfig, vm: &HostVm, suffix: u64) {
    if cfg.envoy.rate_limit_service.is_none() || vm.settle_queue.get().is_some() {
        return;
    }
    let name = format!("llm_router.settlements.{suffix:016x}");
    match hostcalls::register_shared_queue(&name) {
        Ok(id) => vm.settle_queue.set(Some(id)),
        Err(status) => log::error!("llm-router: no settlement queue ({status:?}): global limits will keep their reservations"),
    }
}

/// Drains the queue: one call per settlement.
pub fn on_queue_ready(state: &mut Settlements, cfg: Option<&RouterConfig>, vm: &HostVm, queue: u32) {
    loop {
        let message = match hostcalls::dequeue_shared_queue(queue) {
            Ok(Some(m)) => m,
            Ok(None) => return,
            Err(status) => {
                log::warn!("llm-router: reading the settlement queue failed: {status:?}");
                return;
            }
        };
        let Some((cfg, rls)) = cfg.and_then(|c| c.envoy.rate_limit_service.as_ref().map(|r| (c, r))) else { continue };
        // Called from the root's callback, so the SDK routes the answer to the root.
        let timeout = std::time::Duration::from_millis(rls.timeout_ms);
        // The metadata tells an RLS that applies it (tools/rls) this call reports, never asks.
        let metadata = vec![(global::SETTLEMENT_HEADER, b"1".as_slice())];
        match hostcalls::dispatch_grpc_call(&rls.cluster, global::SERVICE, global::METHOD, metadata, Some(&message), timeout) {
            Ok(token) => {
                state.in_flight.insert(token);
            }
            Err(status) => {
                log::warn!("llm-router: sending a settlement to the rate limit service failed: {status:?}");
                count(vm, cfg, "dispatch");
            }
        }
    }
}

/// A settlement's answer; false if `token` is not a settlement's.
pub fn on_response(state: &mut Settlements, cfg: Option<&RouterConfig>, vm: &HostVm, token: u32, status: u32) -> bool {
    if !state.in_flight.remove(&token) {
        return false;
    }
    let result = match status {
        0 => "ok",
        other => {
            let label = global::Failure::Grpc(other).label();
            log::warn!("llm-router: a settlement was not applied by the rate limit service ({label}, gRPC status {other})");
            label
        }
    };
    if let Some(cfg) = cfg {
        count(vm, cfg, result);
    }
    true
}

fn count(vm: &HostVm, cfg: &RouterConfig, result: &str) {
    vm.with_metrics(cfg, |m| crate::metrics::rls_call(&mut m.sink, "settlement", result, None));
}
