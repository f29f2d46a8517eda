//! Prometheus metrics through Envoy stats, without proxy-wasm: the catalogue (names, kinds,
//! labels), the label encoding Envoy's `stats_tags` take apart, and the router's events mapped
//! onto a [`Sink`] the shell implements over `define_metric` / `increment_metric` /
//! `record_metric` (`host/metrics.rs`).
//!
//! Why Envoy stats rather than an endpoint of our own: Envoy already aggregates every worker's
//! VM into one stat per name (measured: a counter defined by name in each VM is one stat whose
//! value is the sum), serves it at the admin `/stats/prometheus` next to Envoy's own metrics, and
//! Istio scrapes it. Labels are not part of proxy-wasm's metric API, so they ride in the stat
//! name (see [`encode`]).

pub(crate) mod catalogue;
mod encode;
mod events;
mod sink;

pub use catalogue::{Kind, TAGS};
pub use encode::{encode_into, tag_regex, MetricKey};
pub use events::{failed, finished, forwarded, rejected, rls_call, soft_budget_exceeded, spent, CoolingGauges, Finished, Pass};
#[cfg(test)]
pub use sink::FakeSink;
pub use sink::Sink;
