//! Which statistics the active configuration needs for a deployment, so the request path pays
//! only for what routing will read.
//!
//! Why this exists: every tracked field costs a shared-data CAS round trip per attempt and,
//! for token counts and per-token latency, reading the response body. `simple-shuffle` without
//! `enable_pre_call_checks` reads nothing, so it tracks nothing: zero writes, zero body reads.

use crate::config::{Deployment, RouterSettings, Strategy};
use crate::routing::caps_apply;

use super::record::DEFAULT_LATENCY_TTL_MS;

/// What to record for one deployment's attempts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Track {
    /// `in_flight` (least-busy).
    pub in_flight: bool,
    /// `rpm_used` / `tpm_used` of the current minute (usage-based routing, rpm/tpm caps).
    pub usage: bool,
    /// Latency and time-to-first-token EWMAs (latency-based routing).
    pub latency: bool,
    /// Latency samples older than this are replaced rather than averaged in.
    pub latency_ttl_ms: u64,
}

impl Track {
    /// Nothing to record.
    pub const NONE: Track = Track { in_flight: false, usage: false, latency: false, latency_ttl_ms: 0 };

    /// What `settings` needs recorded for `deployment`'s attempts.
    pub fn for_deployment(settings: &RouterSettings, deployment: &Deployment) -> Track {
        let strategy = settings.routing_strategy;
        let capped = caps_apply(settings) && (deployment.rpm.is_some() || deployment.tpm.is_some());
        Track {
            in_flight: strategy == Strategy::LeastBusy,
            usage: matches!(strategy, Strategy::UsageBased | Strategy::UsageBasedV2) || capped,
            latency: strategy == Strategy::LatencyBased,
            latency_ttl_ms: latency_ttl_ms(settings),
        }
    }

    /// Whether attempts write shared data at all.
    pub fn any(&self) -> bool {
        self.in_flight || self.usage || self.latency
    }

    /// Whether the host must feed the response body to a [`crate::openai::UsageTracker`] (token
    /// counts for tpm, output tokens for per-token latency).
    pub fn reads_response_body(&self) -> bool {
        self.usage || self.latency
    }
}

/// `routing_strategy_args.ttl` in ms (LiteLLM's one-hour default when unset).
pub fn latency_ttl_ms(settings: &RouterSettings) -> u64 {
    settings.latency_ttl_secs.map_or(DEFAULT_LATENCY_TTL_MS, |s| (s * 1000.0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use serde_json::json;

    fn cfg(strategy: &str, pre_call: bool) -> config::RouterConfig {
        let v = json!({
            "model_list": [
                {"model_name": "g", "litellm_params": {"model": "openai/a", "api_key": "k", "rpm": 10}, "model_info": {"id": "a"}},
                {"model_name": "g", "litellm_params": {"model": "openai/b", "api_key": "k"}, "model_info": {"id": "b"}},
            ],
            "router_settings": {"routing_strategy": strategy, "enable_pre_call_checks": pre_call, "routing_strategy_args": {"ttl": 30}},
        });
        match config::load(v.to_string().as_bytes(), &|_| None).config {
            Some(c) => c,
            None => panic!("config refused"),
        }
    }

    fn tracks(strategy: &str, pre_call: bool) -> Vec<Track> {
        let c = cfg(strategy, pre_call);
        c.table.deployments.iter().map(|d| Track::for_deployment(&c.router, d)).collect()
    }

    #[test]
    fn simple_shuffle_tracks_nothing() {
        assert!(tracks("simple-shuffle", false).iter().all(|t| !t.any() && !t.reads_response_body()));
    }

    #[test]
    fn each_strategy_tracks_what_it_reads() {
        let t = tracks("least-busy", false);
        assert!(t.iter().all(|t| t.in_flight && !t.usage && !t.latency && !t.reads_response_body()));
        assert!(tracks("usage-based-routing-v2", false).iter().all(|t| t.usage && !t.in_flight));
        assert!(tracks("usage-based-routing", false).iter().all(|t| t.usage));
        let t = tracks("latency-based-routing", false);
        assert!(t.iter().all(|t| t.latency && t.latency_ttl_ms == 30_000));
        // Caps: only the capped deployment counts usage.
        assert_eq!(t.iter().map(|t| t.usage).collect::<Vec<_>>(), [true, false]);
        assert_eq!(tracks("cost-based-routing", false).iter().map(|t| t.usage).collect::<Vec<_>>(), [true, false]);
        assert_eq!(tracks("simple-shuffle", true).iter().map(|t| t.usage).collect::<Vec<_>>(), [true, false]);
        assert_eq!(tracks("least-busy", true).iter().map(|t| t.usage).collect::<Vec<_>>(), [true, false]);
    }

    #[test]
    fn default_ttl_is_an_hour() {
        let c = cfg("latency-based-routing", false);
        let mut s = c.router.clone();
        s.latency_ttl_secs = None;
        assert_eq!(latency_ttl_ms(&s), DEFAULT_LATENCY_TTL_MS);
    }
}
