//! Failover inside one client request: retries within the model group, then fallback groups,
//! without losing streaming.
//!
//! Mechanism (measured on Envoy 1.40, see ARCHITECTURE.md): an *upstream* instance of this
//! filter on every deployment cluster turns a failed response (429, 408, 5xx, 401, 404) into a
//! 307 whose `location` points back at the gateway; the route's `internal_redirect_policy`
//! makes Envoy replay the buffered request through the whole filter chain, where the router
//! reads its signed [`AttemptState`] and picks the next deployment. Connect failures and
//! timeouts never produce an upstream response, so each cluster has a local "redirector"
//! endpoint at priority 1 that Envoy's retry (`retry_on: connect-failure,reset,...` with
//! `previous_priorities`) reaches instead; its 307 is handled the same way. The fallback's
//! response streams to the client like any other.

mod pending;
mod plan;
#[cfg(test)]
mod props;
mod report;
mod siphash;
mod spent;
mod state;

pub use plan::{
    can_failover, can_policy_failover, can_rejection_failover, chain, context_chain, next_targets, policy_targets, rejection_targets, Chain,
};
pub use report::{failover_location, FailureReport, FAILOVER_PATH, REDIRECTOR_HEADER};
pub use siphash::siphash24;
pub use pending::PendingAttempts;
pub use spent::SpentStates;
pub use state::{body_fingerprint, state_ttl_ms, AttemptState, Payer, STATE_HEADER};
