//! Background health probes (`background_health_checks`): one cheap request per deployment every
//! `health_check_interval`, whose failures feed the same cooldown state as live traffic.
//!
//! Every Envoy worker runs its own VM and every root context ticks, so without coordination each
//! VM would probe every deployment (N workers + the main thread = N+1 times the traffic). A lease
//! in shared data ([`lease`]) makes exactly one VM per Envoy process the prober; when it stops
//! renewing (its VM or config is gone), another VM takes over after the lease expires.
//!
//! Plain Rust like the rest of the core: the shell (`host/probe.rs`) ticks, dispatches the
//! planned requests and hands the answers back here.

pub mod lease;
pub mod outcome;
pub mod request;
pub mod schedule;

pub use lease::{generation, release, tick, Lease};
pub use outcome::{finish, Answer};
pub use request::{plan, Planned, ProbeRequest};
pub use schedule::Schedule;

/// How often the shell ticks while probes are enabled.
pub const TICK_MS: u64 = 1000;
/// The lease lasts three tick periods (as observed by the holder): another VM takes it only
/// after the holder missed about three renewals.
pub const LEASE_TICKS: u64 = 3;
/// Observed tick periods are capped here when sizing the lease.
pub const MAX_TICK_MS: u64 = 20_000;
