//! Limits core (issue 12 phase 2): rpm / tpm / parallel / budgets per key, team, user and
//! key-per-model, exact across the workers of one Envoy. Design: see below (written last).

mod admit;
mod counter;
#[cfg(test)]
mod props;
mod store;
mod window;

pub use admit::{admit, settle, Actual, Admitting, Demand, Kind, Limit, Limiter, Local, OnUnavailable, Progress, Reason, Refusal, Reservation, Scope, Settled, Settling, Status, KEY_PREFIX, MAX_CAS_RETRIES};
pub use counter::{usd_to_nanos, Check, Record};
pub use store::{CasStore, Versioned, Written};
pub use window::{parse, Duration, DurationError, Span, Unit, Window};
