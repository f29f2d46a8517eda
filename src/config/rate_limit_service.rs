//! `envoy_settings.rate_limit_service`: the global mode of the keys' limits (issue 13).
//!
//! Why this exists: limits kept in one Envoy's shared data reset with Envoy and are granted
//! once per replica. With a rate limit service configured, every admission also asks it
//! (`limits::global`, wire contract in `docs/design/global-limits.md`), and the local limits stay
//! the first, cheap gate. This module reads and checks the section:
//!
//! ```yaml
//! envoy_settings:
//!   rate_limit_service:
//!     cluster: llm_router_rls      # an Envoy cluster speaking HTTP/2 to the RLS
//!     domain: llm_router           # RateLimitRequest.domain
//!     timeout_ms: 50               # per call, 1..=10000
//!     failure_mode: {rpm: open, tpm: open, parallel: open, budget: closed}
//! ```
//!
//! The cluster name is handed to Envoy's `proxy_grpc_call`, which first tries to parse those
//! bytes as a serialized `GrpcService` and only then takes them as a cluster name
//! (`source/extensions/common/wasm/context.cc`, `Context::grpcCall`). A name whose bytes happen
//! to be valid protobuf would be read as an (empty) `GrpcService`, the call would fail with
//! `BadArgument`, which the Rust SDK turns into a panic — so such names are refused here.

use super::fields::Section;
use super::problems::Diagnostics;
use crate::limits::{Kind, OnUnavailable};

pub const DEFAULT_DOMAIN: &str = "llm_router";
pub const DEFAULT_TIMEOUT_MS: u64 = 50;
pub const MAX_TIMEOUT_MS: u64 = 10_000;

/// What to do per limit kind when the RLS cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureModes {
    pub rpm: OnUnavailable,
    pub tpm: OnUnavailable,
    pub parallel: OnUnavailable,
    pub budget: OnUnavailable,
}

impl Default for FailureModes {
    /// Rate limits open (a request is better served than refused for a counter), budgets closed
    /// (money is not spent on an unknown balance).
    fn default() -> FailureModes {
        FailureModes { rpm: OnUnavailable::FailOpen, tpm: OnUnavailable::FailOpen, parallel: OnUnavailable::FailOpen, budget: OnUnavailable::FailClosed }
    }
}

impl FailureModes {
    pub fn of(&self, kind: Kind) -> OnUnavailable {
        match kind {
            Kind::Requests => self.rpm,
            Kind::Tokens => self.tpm,
            Kind::Parallel => self.parallel,
            Kind::Budget => self.budget,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitService {
    pub cluster: String,
    pub domain: String,
    pub timeout_ms: u64,
    pub failure_mode: FailureModes,
}

const KEYS: &[&str] = &["cluster", "domain", "timeout_ms", "failure_mode"];
const KINDS: &[&str] = &["rpm", "tpm", "parallel", "budget"];

/// Reads the section (absent or null: no global mode).
pub fn parse(section: &Section<'_>, diags: &mut Diagnostics) -> Option<RateLimitService> {
    section.map?;
    for key in section.keys() {
        if !KEYS.contains(&key.as_str()) {
            diags.warn(section.field_path(key), "is not a known rate_limit_service key and is ignored");
        }
    }
    let cluster = match section.str("cluster", diags) {
        None => {
            diags.error(section.field_path("cluster"), "is required: the Envoy cluster of the rate limit service");
            return None;
        }
        Some(c) => c,
    };
    if let Some(why) = cluster_problem(cluster) {
        diags.error(section.field_path("cluster"), why);
        return None;
    }
    let domain = match section.str("domain", diags) {
        None => DEFAULT_DOMAIN.to_string(),
        Some(d) if d.is_empty() || d.len() > 256 || d.chars().any(|c| c.is_control()) => {
            diags.error(section.field_path("domain"), "must be 1 to 256 printable characters");
            return None;
        }
        Some(d) => d.to_string(),
    };
    let timeout_ms = match section.count("timeout_ms", diags) {
        None => DEFAULT_TIMEOUT_MS,
        Some(t) if (1..=MAX_TIMEOUT_MS).contains(&t) => t,
        Some(_) => {
            diags.error(section.field_path("timeout_ms"), format!("must be 1 to {MAX_TIMEOUT_MS} (milliseconds)"));
            return None;
        }
    };
    let modes = section.child("failure_mode", diags);
    let mut failure_mode = FailureModes::default();
    for key in modes.keys() {
        if !KINDS.contains(&key.as_str()) {
            diags.warn(modes.field_path(key), "is not a limit kind (rpm, tpm, parallel, budget) and is ignored");
        }
    }
    for (name, slot) in [("rpm", &mut failure_mode.rpm), ("tpm", &mut failure_mode.tpm), ("parallel", &mut failure_mode.parallel), ("budget", &mut failure_mode.budget)] {
        match modes.str(name, diags) {
            None => {}
            Some("open") => *slot = OnUnavailable::FailOpen,
            Some("closed") => *slot = OnUnavailable::FailClosed,
            Some(_) => diags.error(modes.field_path(name), "must be `open` or `closed`"),
        }
    }
    Some(RateLimitService { cluster: cluster.to_string(), domain, timeout_ms, failure_mode })
}

/// Why `name` cannot name the RLS cluster (module docs), if it cannot.
fn cluster_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.len() > 256 {
        return Some("must be 1 to 256 characters");
    }
    if name.chars().any(|c| !(c.is_ascii_alphanumeric() || "_-.:|".contains(c))) {
        return Some("must be an Envoy cluster name (letters, digits, `_ - . : |`)");
    }
    if parses_as_protobuf(name.as_bytes()) {
        return Some("reads as a serialized protobuf message, which Envoy's gRPC call would take for a GrpcService instead of a cluster name; rename the cluster (a name starting with a letter like `l`, `o` or `t` never does)");
    }
    None
}

/// Whether `bytes` is a well-formed sequence of protobuf fields (what `ParseFromString` accepts).
pub fn parses_as_protobuf(bytes: &[u8]) -> bool {
    crate::limits::global::wire::well_formed(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The service and every problem as `path: reason` lines.
    fn read(v: serde_json::Value) -> (Option<RateLimitService>, String) {
        let mut d = Diagnostics::default();
        let s = Section::new(Some(&v), "envoy_settings.rate_limit_service", &mut d);
        let parsed = parse(&s, &mut d);
        let lines: Vec<String> = d.errors.iter().chain(&d.warnings).map(|p| format!("{}: {}", p.path, p.reason)).collect();
        (parsed, lines.join("\n"))
    }

    #[test]
    fn defaults_budgets_closed_rate_limits_open() {
        let (s, d) = read(json!({"cluster": "llm_router_rls"}));
        let s = s.expect("parsed");
        assert!(d.is_empty(), "{d:?}");
        assert_eq!((s.domain.as_str(), s.timeout_ms), (DEFAULT_DOMAIN, DEFAULT_TIMEOUT_MS));
        assert_eq!(s.failure_mode.of(Kind::Budget), OnUnavailable::FailClosed);
        assert_eq!(s.failure_mode.of(Kind::Requests), OnUnavailable::FailOpen);
    }

    #[test]
    fn every_field_is_read_and_checked_with_its_path() {
        let (s, _) = read(json!({"cluster": "outbound|8081||rls.llm.svc.cluster.local", "domain": "gw", "timeout_ms": "20",
                                 "failure_mode": {"rpm": "closed", "budget": "open"}}));
        let s = s.expect("parsed");
        assert_eq!((s.domain.as_str(), s.timeout_ms, s.failure_mode.rpm, s.failure_mode.budget), ("gw", 20, OnUnavailable::FailClosed, OnUnavailable::FailOpen));
        let (s, d) = read(json!({"domain": "x"}));
        assert!(s.is_none() && d.contains("envoy_settings.rate_limit_service.cluster"), "{d}");
        let (_, d) = read(json!({"cluster": "l", "timeout_ms": 0}));
        assert!(d.contains("timeout_ms"), "{d}");
        let (_, d) = read(json!({"cluster": "l", "failure_mode": {"budget": "shut", "rpn": "open"}}));
        let text = d;
        assert!(text.contains("failure_mode.budget") && text.contains("failure_mode.rpn"), "{text}");
        let (_, d) = read(json!({"cluster": "l", "retries": 3}));
        assert!(d.contains("retries"), "unknown keys are warned: {d}");
    }

    #[test]
    fn cluster_names_envoy_would_parse_as_grpc_service_are_refused() {
        // 'b' = field 12, length-delimited; '\u{1}' its length; 'x' its one byte: a valid message.
        assert!(parses_as_protobuf(b"b\x01x"));
        assert!(parses_as_protobuf(b"")); // empty parses, but empty names are refused anyway
        for ok in ["llm_router_rls", "outbound|8081||rls.default.svc.cluster.local", "ratelimit", "rls"] {
            assert!(!parses_as_protobuf(ok.as_bytes()), "{ok}");
            assert_eq!(cluster_problem(ok), None, "{ok}");
        }
        assert!(cluster_problem("b\u{1}x").is_some());
        assert!(cluster_problem("a b").is_some());
        // A two-letter name can be a varint field: 'x' = field 15 varint, '1' its value.
        assert!(parses_as_protobuf(b"x1"));
        assert!(cluster_problem("x1").is_some_and(|w| w.contains("GrpcService")));
    }
}
