//! The response side: turn an upstream (or Envoy local) response into a health record.
//! Successes cost nothing; a failure costs one or two CAS round trips on shared data.

use crate::config::{PerClass, RouterConfig};
use crate::health::{self, Failure, FailureClass, FailureRecord, Policy, Store, StoreError};

/// Records a failed attempt on deployment `index` at `now_ms`.
pub fn record<S: Store + ?Sized>(
    store: &S,
    cfg: &RouterConfig,
    index: usize,
    class: FailureClass,
    retry_after_ms: Option<u64>,
    now_ms: u64,
) -> Result<FailureRecord, StoreError> {
    let dep = cfg.table.deployments.get(index).ok_or(StoreError)?;
    let group_size = cfg.table.group_index(&dep.group).and_then(|g| cfg.table.groups.get(g)).map_or(1, |g| g.members.len());
    let r = &cfg.router;
    let policy = Policy {
        allowed_fails: allowed_fails_for(&r.allowed_fails_policy, class).unwrap_or(r.allowed_fails),
        cooldown_ms: secs_to_ms(r.cooldown_time_secs),
        max_cooldown_ms: secs_to_ms(cfg.envoy.max_cooldown_secs),
        window_ms: secs_to_ms(crate::config::FAILURE_WINDOW_SECS),
        disabled: r.disable_cooldowns,
    };
    let failure = Failure { id: &dep.id, class, group_size, retry_after_ms };
    health::record_failure(store, now_ms, failure, &policy, |id| cfg.table.ids.contains_key(id))
}

/// LiteLLM's `allowed_fails_policy` names error classes; map ours onto them.
fn allowed_fails_for(policy: &PerClass, class: FailureClass) -> Option<u64> {
    match class {
        FailureClass::RateLimit => policy.rate_limit,
        FailureClass::Authentication => policy.authentication,
        FailureClass::Timeout => policy.timeout,
        FailureClass::ServerError | FailureClass::Reset | FailureClass::ConnectFailure => policy.internal_server,
        FailureClass::NotFound => None,
    }
}

fn secs_to_ms(secs: f64) -> u64 {
    (secs * 1000.0).round() as u64
}
