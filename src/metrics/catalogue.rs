//! The metric catalogue: every metric the router emits, its kind and its label names.
//!
//! Why a closed enum: the names are an operator-facing contract (dashboards and alerts are built
//! on them), and the Envoy `stats_tags` that turn our encoded names into Prometheus labels must
//! list every label name ([`TAGS`]); one table keeps the two in step.

/// What Envoy does with recorded values (proxy-wasm `MetricType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric the router emits. Counters end in `_total`; durations are in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// Attempts forwarded to a deployment (each failover pass that forwards counts once).
    Requests,
    /// Failed attempts by failure class (`rate_limit`, `timeout`, `server_error`, ...).
    Failures,
    /// Failures that started a cooldown (extending one in force is not counted).
    Cooldowns,
    /// 1 while the deployment is cooling, else 0 (refreshed every second by every VM).
    Cooling,
    /// Attempts forwarded and not yet finished.
    InFlight,
    /// Forward → end of the response (or of the failover pass), ms.
    Duration,
    /// Forward → first response body byte, streaming requests only, ms.
    TimeToFirstToken,
    /// Tokens from the response's `usage` (JSON or SSE, not content-encoded).
    InputTokens,
    OutputTokens,
    /// Passes that went to another deployment of the same group after a failed attempt.
    Retries,
    /// Passes that went to another group than the previous attempt's (`fallback_from`: the
    /// group the client asked for).
    Fallbacks,
    /// Local error replies by the error's `code` (label `error_code`).
    Rejected,
    /// Spend attribution (`pipeline::spend`), labelled by `team`, `key_alias`, `model_group`
    /// — config-defined names only (`-`: no team / no key; `master_key`; `keys[i]` for a key
    /// without alias), never a key or its hash. Forwarded attempts ended (`on_log`).
    SpendRequests,
    /// Cost in nano-USD (Envoy counters are integers; divide by 1e9 for USD): the serving
    /// deployment's `input_cost_per_token` / `output_cost_per_token` × the response's usage.
    SpendNanoUsd,
    SpendInputTokens,
    SpendOutputTokens,
    /// Admissions whose reservation listed a budget past its `soft_budget` (labels `scope`:
    /// key, team, user, key_model; `scope_name`: the key's label, team id, user id,
    /// `<key>:<model>`).
    SoftBudgetExceeded,
    /// Calls to the rate limit service (global limits) by `rls_call` (`admission`,
    /// `settlement`) and `rls_result`: `ok`, `over_limit`, or why there was no answer
    /// (`timeout`, `unavailable`, `grpc_error`, `dispatch`, `malformed`; `limits::global::Failure`).
    RlsCalls,
    /// Admission call → its answer, ms (the time a request waits for the RLS).
    RlsDuration,
}

const DEPLOYMENT: &[&str] = &["model_group", "deployment"];
const SPEND: &[&str] = &["team", "key_alias", "model_group"];

impl Metric {
    #[cfg(test)]
    pub const ALL: [Metric; 19] = [
        Metric::Requests,
        Metric::Failures,
        Metric::Cooldowns,
        Metric::Cooling,
        Metric::InFlight,
        Metric::Duration,
        Metric::TimeToFirstToken,
        Metric::InputTokens,
        Metric::OutputTokens,
        Metric::Retries,
        Metric::Fallbacks,
        Metric::Rejected,
        Metric::SpendRequests,
        Metric::SpendNanoUsd,
        Metric::SpendInputTokens,
        Metric::SpendOutputTokens,
        Metric::SoftBudgetExceeded,
        Metric::RlsCalls,
        Metric::RlsDuration,
    ];

    /// The name as Prometheus shows it (before the labels).
    pub fn name(self) -> &'static str {
        match self {
            Metric::Requests => "llm_router_requests_total",
            Metric::Failures => "llm_router_failures_total",
            Metric::Cooldowns => "llm_router_cooldowns_total",
            Metric::Cooling => "llm_router_deployment_cooling",
            Metric::InFlight => "llm_router_in_flight",
            Metric::Duration => "llm_router_request_duration_ms",
            Metric::TimeToFirstToken => "llm_router_time_to_first_token_ms",
            Metric::InputTokens => "llm_router_input_tokens_total",
            Metric::OutputTokens => "llm_router_output_tokens_total",
            Metric::Retries => "llm_router_retries_total",
            Metric::Fallbacks => "llm_router_fallbacks_total",
            Metric::Rejected => "llm_router_rejected_total",
            Metric::SpendRequests => "llm_router_spend_requests_total",
            Metric::SpendNanoUsd => "llm_router_spend_nanousd_total",
            Metric::SpendInputTokens => "llm_router_spend_input_tokens_total",
            Metric::SpendOutputTokens => "llm_router_spend_output_tokens_total",
            Metric::SoftBudgetExceeded => "llm_router_soft_budget_exceeded_total",
            Metric::RlsCalls => "llm_router_rls_calls_total",
            Metric::RlsDuration => "llm_router_rls_duration_ms",
        }
    }

    pub fn kind(self) -> Kind {
        match self {
            Metric::Cooling | Metric::InFlight => Kind::Gauge,
            Metric::Duration | Metric::TimeToFirstToken | Metric::RlsDuration => Kind::Histogram,
            _ => Kind::Counter,
        }
    }

    /// Label names, in the order [`super::MetricKey`] values are given.
    pub fn labels(self) -> &'static [&'static str] {
        match self {
            Metric::Failures => &["model_group", "deployment", "class"],
            Metric::Fallbacks => &["model_group", "fallback_from"],
            Metric::Rejected => &["error_code"],
            Metric::SpendRequests | Metric::SpendNanoUsd | Metric::SpendInputTokens | Metric::SpendOutputTokens => SPEND,
            Metric::SoftBudgetExceeded => &["scope", "scope_name"],
            Metric::RlsCalls => &["rls_call", "rls_result"],
            Metric::RlsDuration => &["rls_call"],
            _ => DEPLOYMENT,
        }
    }
}

/// Every label name used by the catalogue: one Envoy `stats_tags` entry each.
/// (`error_code`, not `code`: an unanchored `code=.=` tag regex would also match inside the
/// `response_code=.=` segment of Istio's own stat names; likewise `scope_name`, not `name`, which
/// would match inside Istio's `destination_service_name=.=`. No tag name ends another.)
pub const TAGS: [&str; 11] =
    ["model_group", "deployment", "class", "fallback_from", "error_code", "team", "key_alias", "scope", "scope_name", "rls_call", "rls_result"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_label_has_a_tag_and_names_follow_the_conventions() {
        for m in Metric::ALL {
            assert!(m.name().starts_with("llm_router_"), "{m:?}");
            assert_eq!(m.kind() == Kind::Counter, m.name().ends_with("_total"), "{m:?}");
            for l in m.labels() {
                assert!(TAGS.contains(l), "{m:?} {l}");
            }
        }
        for t in TAGS {
            assert!(Metric::ALL.iter().any(|m| m.labels().contains(&t)), "{t} unused");
            // An unanchored `<tag>=.=` regex must not match inside another tag's segment.
            for other in TAGS {
                assert!(other == t || !other.ends_with(&format!("_{t}")) && !other.ends_with(t), "{t} inside {other}");
            }
        }
    }
}
