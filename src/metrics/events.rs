//! What the router tells the metrics, in its own terms: an attempt was forwarded, failed,
//! finished; a local error reply was sent; a deployment's cooling state is what it is. Each
//! event maps to a handful of [`Sink`] updates, so the shell only reports events.

use super::catalogue::Metric;
use super::encode::MetricKey;
use super::sink::Sink;
use crate::health::{FailureClass, FailureRecord};
use crate::openai::Usage;

/// How a pass relates to the request's earlier attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass<'a> {
    First,
    /// Same group as the previous attempt.
    Retry,
    /// Another group than the previous attempt's; `from` is the group the client asked for.
    Fallback { from: &'a str },
}

impl<'a> Pass<'a> {
    /// `attempts`: this one included; `previous_group`: the group of the attempt before (None
    /// when unknown, e.g. after a context-window failure); `fallback_from`: the requested group
    /// when a fallback group serves this pass.
    pub fn classify(attempts: u32, previous_group: Option<&str>, group: &str, fallback_from: Option<&'a str>) -> Pass<'a> {
        if attempts <= 1 {
            return Pass::First;
        }
        match fallback_from {
            Some(from) if previous_group != Some(group) => Pass::Fallback { from },
            _ => Pass::Retry,
        }
    }
}

/// An attempt was forwarded to deployment `deployment` of `group`.
pub fn forwarded(sink: &mut dyn Sink, group: &str, deployment: &str, pass: Pass<'_>) {
    let labels = [group, deployment];
    sink.counter(&MetricKey::new(Metric::Requests, &labels), 1);
    sink.gauge_add(&MetricKey::new(Metric::InFlight, &labels), 1);
    match pass {
        Pass::First => {}
        Pass::Retry => sink.counter(&MetricKey::new(Metric::Retries, &labels), 1),
        Pass::Fallback { from } => sink.counter(&MetricKey::new(Metric::Fallbacks, &[group, from]), 1),
    }
}

/// An attempt failed; `record` is what the health tracker made of it (None if recording failed).
pub fn failed(sink: &mut dyn Sink, group: &str, deployment: &str, class: FailureClass, record: Option<&FailureRecord>) {
    sink.counter(&MetricKey::new(Metric::Failures, &[group, deployment, class.as_str()]), 1);
    let Some(r) = record else { return };
    let labels = [group, deployment];
    if r.started {
        sink.counter(&MetricKey::new(Metric::Cooldowns, &labels), 1);
    }
    if r.cooled_until_ms.is_some() {
        sink.gauge_set(&MetricKey::new(Metric::Cooling, &labels), 1);
    }
}

/// How a forwarded attempt ended (on_log: once per forwarded pass).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Finished {
    pub duration_ms: u64,
    /// Streaming requests that received body bytes only.
    pub ttft_ms: Option<u64>,
    pub usage: Option<Usage>,
}

pub fn finished(sink: &mut dyn Sink, group: &str, deployment: &str, f: &Finished) {
    let labels = [group, deployment];
    sink.gauge_add(&MetricKey::new(Metric::InFlight, &labels), -1);
    sink.histogram(&MetricKey::new(Metric::Duration, &labels), f.duration_ms);
    if let Some(t) = f.ttft_ms {
        sink.histogram(&MetricKey::new(Metric::TimeToFirstToken, &labels), t);
    }
    if let Some(u) = f.usage {
        sink.counter(&MetricKey::new(Metric::InputTokens, &labels), u.input_tokens);
        sink.counter(&MetricKey::new(Metric::OutputTokens, &labels), u.output_tokens);
    }
}

/// A forwarded attempt's spend, by `team`, `key_alias` and `model_group` (`pipeline::spend`
/// names; config-defined only): one request, its tokens when known, its cost when priced.
pub fn spent(sink: &mut dyn Sink, team: &str, key: &str, group: &str, usage: Option<Usage>, cost_nanos: Option<u64>) {
    let labels = [team, key, group];
    sink.counter(&MetricKey::new(Metric::SpendRequests, &labels), 1);
    if let Some(u) = usage {
        sink.counter(&MetricKey::new(Metric::SpendInputTokens, &labels), u.input_tokens);
        sink.counter(&MetricKey::new(Metric::SpendOutputTokens, &labels), u.output_tokens);
    }
    if let Some(c) = cost_nanos {
        sink.counter(&MetricKey::new(Metric::SpendNanoUsd, &labels), c);
    }
}

/// An admission found a budget past its `soft_budget`: `scope` is `key`, `team`, `user` or
/// `key_model`, `name` the config-defined name of that scope.
pub fn soft_budget_exceeded(sink: &mut dyn Sink, scope: &str, name: &str) {
    sink.counter(&MetricKey::new(Metric::SoftBudgetExceeded, &[scope, name]), 1);
}

/// A call to the rate limit service ended: `call` is `admission` or `settlement`, `result` `ok`,
/// `over_limit` or a `limits::global::Failure` label; an admission's wait in ms.
pub fn rls_call(sink: &mut dyn Sink, call: &str, result: &str, waited_ms: Option<u64>) {
    sink.counter(&MetricKey::new(Metric::RlsCalls, &[call, result]), 1);
    if let Some(ms) = waited_ms {
        sink.histogram(&MetricKey::new(Metric::RlsDuration, &[call]), ms);
    }
}

/// A local error reply with the error's `code` (`unknown` when it has none).
pub fn rejected(sink: &mut dyn Sink, code: Option<&str>) {
    sink.counter(&MetricKey::new(Metric::Rejected, &[code.unwrap_or("unknown")]), 1);
}

/// The cooling gauges as this VM last wrote them, by deployment index of one config. Every VM
/// computes the same values from the shared cooldown record, so writing only changes keeps the
/// shared gauge right with a few host calls per second instead of one per deployment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CoolingGauges {
    written: Vec<Option<bool>>,
}

impl CoolingGauges {
    /// Sets each deployment's gauge whose state differs from what this VM last wrote.
    /// `deployments` yields `(group, id, cooling)` in deployment-index order.
    pub fn refresh<'d>(&mut self, sink: &mut dyn Sink, deployments: impl Iterator<Item = (&'d str, &'d str, bool)>) {
        for (i, (group, id, cooling)) in deployments.enumerate() {
            if self.written.len() <= i {
                self.written.resize(i + 1, None);
            }
            let Some(slot) = self.written.get_mut(i) else { continue };
            if *slot != Some(cooling) {
                sink.gauge_set(&MetricKey::new(Metric::Cooling, &[group, id]), u64::from(cooling));
                *slot = Some(cooling);
            }
        }
    }

    /// This VM just set deployment `index`'s gauge to 1 (see [`failed`]).
    pub fn mark_cooling(&mut self, index: usize) {
        if let Some(slot) = self.written.get_mut(index) {
            *slot = Some(true);
        }
    }

    /// Forget what was written (a new config: indices changed).
    pub fn reset(&mut self) {
        self.written.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::FakeSink;

    const G: &str = "gpt-4.1";

    #[test]
    fn pass_classification() {
        assert_eq!(Pass::classify(1, None, G, None), Pass::First);
        assert_eq!(Pass::classify(2, Some(G), G, None), Pass::Retry);
        assert_eq!(Pass::classify(2, Some("a"), "b", Some("a")), Pass::Fallback { from: "a" });
        // A retry inside a fallback group is a retry; moving on to a second fallback group is a fallback.
        assert_eq!(Pass::classify(3, Some("b"), "b", Some("a")), Pass::Retry);
        assert_eq!(Pass::classify(4, Some("b"), "c", Some("a")), Pass::Fallback { from: "a" });
        // Context-window fallback: no failed attempt to take the group from.
        assert_eq!(Pass::classify(2, None, "big", Some("a")), Pass::Fallback { from: "a" });
    }

    #[test]
    fn a_retry_then_a_fallback() {
        let mut s = FakeSink::default();
        forwarded(&mut s, "a", "a1", Pass::First);
        finished(&mut s, "a", "a1", &Finished { duration_ms: 7, ..Finished::default() });
        forwarded(&mut s, "a", "a2", Pass::Retry);
        finished(&mut s, "a", "a2", &Finished { duration_ms: 9, ..Finished::default() });
        forwarded(&mut s, "b", "b1", Pass::Fallback { from: "a" });
        assert_eq!(s.value(Metric::Requests, &["a", "a1"]), 1);
        assert_eq!(s.value(Metric::Requests, &["a", "a2"]), 1);
        assert_eq!(s.value(Metric::Retries, &["a", "a2"]), 1);
        assert_eq!(s.value(Metric::Retries, &["a", "a1"]), 0);
        assert_eq!(s.value(Metric::Fallbacks, &["b", "a"]), 1);
        assert_eq!(s.value(Metric::InFlight, &["a", "a1"]), 0);
        assert_eq!(s.value(Metric::InFlight, &["b", "b1"]), 1);
        assert_eq!(s.samples(Metric::Duration, &["a", "a2"]), vec![9]);
    }

    #[test]
    fn finished_records_ttft_and_tokens_only_when_known() {
        let mut s = FakeSink::default();
        forwarded(&mut s, G, "d", Pass::First);
        let usage = Usage { input_tokens: 12, output_tokens: 5 };
        finished(&mut s, G, "d", &Finished { duration_ms: 40, ttft_ms: Some(3), usage: Some(usage) });
        forwarded(&mut s, G, "d", Pass::First);
        finished(&mut s, G, "d", &Finished { duration_ms: 50, ttft_ms: None, usage: None });
        assert_eq!(s.samples(Metric::Duration, &[G, "d"]), vec![40, 50]);
        assert_eq!(s.samples(Metric::TimeToFirstToken, &[G, "d"]), vec![3]);
        assert_eq!((s.value(Metric::InputTokens, &[G, "d"]), s.value(Metric::OutputTokens, &[G, "d"])), (12, 5));
        assert_eq!(s.value(Metric::InFlight, &[G, "d"]), 0);
    }

    #[test]
    fn failures_count_by_class_and_cooldowns_only_when_started() {
        let mut s = FakeSink::default();
        let started = FailureRecord { fails_in_window: 1, cooled_until_ms: Some(5_000), started: true };
        let extended = FailureRecord { started: false, ..started };
        let none = FailureRecord { fails_in_window: 1, cooled_until_ms: None, started: false };
        failed(&mut s, G, "d", FailureClass::ServerError, Some(&none));
        failed(&mut s, G, "d", FailureClass::RateLimit, Some(&started));
        failed(&mut s, G, "d", FailureClass::RateLimit, Some(&extended));
        failed(&mut s, G, "d", FailureClass::Timeout, None);
        assert_eq!(s.value(Metric::Failures, &[G, "d", "server_error"]), 1);
        assert_eq!(s.value(Metric::Failures, &[G, "d", "rate_limit"]), 2);
        assert_eq!(s.value(Metric::Failures, &[G, "d", "timeout"]), 1);
        assert_eq!(s.value(Metric::Cooldowns, &[G, "d"]), 1);
        assert_eq!(s.value(Metric::Cooling, &[G, "d"]), 1);
    }

    #[test]
    fn spend_by_team_key_and_group() {
        let mut s = FakeSink::default();
        let u = Usage { input_tokens: 10, output_tokens: 4 };
        spent(&mut s, "finance", "finance-app", G, Some(u), Some(1_500));
        spent(&mut s, "finance", "finance-app", G, Some(u), Some(500));
        spent(&mut s, "-", "keys[1]", G, None, None);
        let l = ["finance", "finance-app", G];
        assert_eq!((s.value(Metric::SpendRequests, &l), s.value(Metric::SpendNanoUsd, &l)), (2, 2_000));
        assert_eq!((s.value(Metric::SpendInputTokens, &l), s.value(Metric::SpendOutputTokens, &l)), (20, 8));
        assert_eq!(s.value(Metric::SpendRequests, &["-", "keys[1]", G]), 1);
        assert!(s.values.keys().any(|k| k == "team=.=finance;.;key_alias=.=finance-app;.;model_group=.=gpt-4.1;.;llm_router_spend_nanousd_total"));
        soft_budget_exceeded(&mut s, "team", "finance");
        assert_eq!(s.value(Metric::SoftBudgetExceeded, &["team", "finance"]), 1);
    }

    #[test]
    fn rejected_by_code() {
        let mut s = FakeSink::default();
        rejected(&mut s, Some("model_not_found"));
        rejected(&mut s, Some("model_not_found"));
        rejected(&mut s, None);
        assert_eq!(s.value(Metric::Rejected, &["model_not_found"]), 2);
        assert_eq!(s.value(Metric::Rejected, &["unknown"]), 1);
    }

    #[test]
    fn cooling_gauges_write_only_changes() {
        let mut s = FakeSink::default();
        let mut g = CoolingGauges::default();
        g.refresh(&mut s, [(G, "a", false), (G, "b", true)].into_iter());
        assert_eq!(s.gauge_writes.len(), 2);
        g.refresh(&mut s, [(G, "a", false), (G, "b", true)].into_iter());
        assert_eq!(s.gauge_writes.len(), 2);
        g.refresh(&mut s, [(G, "a", true), (G, "b", false)].into_iter());
        assert_eq!((s.value(Metric::Cooling, &[G, "a"]), s.value(Metric::Cooling, &[G, "b"])), (1, 0));
        assert_eq!(s.gauge_writes.len(), 4);
        // This VM set `b` to 1 on a failure: the next refresh that sees it cooling writes nothing,
        // the one after its expiry writes 0.
        g.mark_cooling(1);
        g.refresh(&mut s, [(G, "a", true), (G, "b", true)].into_iter());
        assert_eq!(s.gauge_writes.len(), 4);
        g.refresh(&mut s, [(G, "a", true), (G, "b", false)].into_iter());
        assert_eq!(s.gauge_writes.len(), 5);
        g.reset();
        g.refresh(&mut s, [(G, "a", true)].into_iter());
        assert_eq!(s.gauge_writes.len(), 6);
    }
}
