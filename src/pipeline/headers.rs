//! The header side of the trust boundary: which client request headers the router removes,
//! consumes or forwards, and the one merge that builds a routed request's header map.
//!
//! Policy (README "Trust model"):
//! - **Internal** (`x-llm-router-*`, and the configured cluster header): removed from *every*
//!   request the filter sees, routed or not, so no client can pick a cluster, forge attempt
//!   state or pose as the redirector on any route.
//! - On routed requests also:
//!   - **credentials** (`authorization`, `api-key`, `x-api-key`): the gateway's own key, never
//!     forwarded; the deployment's provider key replaces them;
//!   - **client-only** headers that would bind the gateway's provider account or leak the
//!     client's session or mesh identity (`openai-organization`, `openai-project`, `cookie`,
//!     `x-forwarded-client-cert`, `x-envoy-peer-metadata[-id]`): LiteLLM forwards no client
//!     header by default, a client-chosen organization lets a client make the provider answer
//!     401 for everyone, the XFCC header Envoy (an Istio sidecar) fills from the verified client
//!     certificate names the mesh's workloads (`URI=spiffe://...`) to the provider, and Istio's
//!     metadata exchange header carries the calling workload's name, namespace and labels;
//!   - **Envoy control** headers (`x-envoy-*` such as `x-envoy-max-retries`,
//!     `x-envoy-retry-on`, `x-envoy-upstream-rq-timeout-ms`): Envoy honours them from trusted
//!     (internal) clients; a client must not change retries or timeouts of the route the
//!     router chose. The ones Envoy itself sets or reads for the stream's identity are kept
//!     ([`ENVOY_OWN`]).
//! - Everything else (content type, accept, user agent, tracing, `anthropic-version`,
//!   `anthropic-beta`, ...) is forwarded unchanged.

/// Prefix of every header the router uses internally.
pub const INTERNAL_PREFIX: &str = "x-llm-router-";

/// Client headers that may carry credentials; none of them is ever forwarded upstream.
pub const CLIENT_AUTH_HEADERS: [&str; 3] = ["authorization", "api-key", "x-api-key"];

/// Headers meant for the gateway, never for the provider.
pub const CLIENT_ONLY_HEADERS: [&str; 6] =
    ["openai-organization", "openai-project", "cookie", "x-forwarded-client-cert", "x-envoy-peer-metadata", "x-envoy-peer-metadata-id"];

/// `x-envoy-*` request headers that Envoy itself sets (or that identify the stream) and that
/// are kept on routed requests; every other `x-envoy-*` is a control header and removed.
pub const ENVOY_OWN: [&str; 8] = [
    "x-envoy-internal",
    "x-envoy-external-address",
    "x-envoy-original-url",
    "x-envoy-original-path",
    "x-envoy-expected-rq-timeout-ms",
    "x-envoy-attempt-count",
    "x-envoy-decorator-operation",
    "x-envoy-downstream-service-cluster",
];

/// What the router does with one client request header (names are lowercase, as Envoy gives them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound {
    /// Forwarded as is.
    Keep,
    /// The router's own header: removed from every request.
    Internal,
    /// Removed from routed requests.
    Credential,
    ClientOnly,
    EnvoyControl,
}

impl Inbound {
    /// Whether a routed request drops it.
    pub fn dropped_when_routed(self) -> bool {
        self != Inbound::Keep
    }
}

pub fn classify(name: &str, cluster_header: &str) -> Inbound {
    if name.starts_with(INTERNAL_PREFIX) || name == cluster_header {
        Inbound::Internal
    } else if CLIENT_AUTH_HEADERS.contains(&name) {
        Inbound::Credential
    } else if CLIENT_ONLY_HEADERS.contains(&name) {
        Inbound::ClientOnly
    } else if name.starts_with("x-envoy-") && !ENVOY_OWN.contains(&name) {
        Inbound::EnvoyControl
    } else {
        Inbound::Keep
    }
}

/// The internal headers present in `headers` (to remove from a request the router passes
/// through; usually none, so usually no host call).
pub fn internal_present<'h>(headers: &'h [(String, String)], cluster_header: &str) -> Vec<&'h str> {
    headers
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| classify(n, cluster_header) == Inbound::Internal)
        .collect()
}

/// The routed request's header map: the client's headers minus everything the policy drops
/// and minus `stale` (headers a previous attempt's deployment set) and anything `set` replaces, then
/// `set`. Pseudo-headers other than the ones `set` replaces (`:method`, `:scheme`) are kept.
pub fn merge<'a>(
    client: &'a [(String, String)],
    cluster_header: &str,
    stale: &[&str],
    set: Vec<(&'a str, &'a str)>,
) -> Vec<(&'a str, &'a str)> {
    let mut out: Vec<(&'a str, &'a str)> = Vec::with_capacity(client.len() + set.len());
    for (name, value) in client {
        let n = name.as_str();
        if classify(n, cluster_header).dropped_when_routed() || stale.contains(&n) || set.iter().any(|(k, _)| *k == n) {
            continue;
        }
        out.push((n, value.as_str()));
    }
    out.extend(set);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn classification() {
        let c = |n| classify(n, "x-route-to");
        assert_eq!(c("x-llm-router-state"), Inbound::Internal);
        assert_eq!(c("x-llm-router-cluster"), Inbound::Internal);
        assert_eq!(c("x-llm-router-redirector"), Inbound::Internal);
        assert_eq!(c("x-llm-router-tags"), Inbound::Internal);
        assert_eq!(c("x-route-to"), Inbound::Internal, "a custom cluster header is internal too");
        assert_eq!(c("authorization"), Inbound::Credential);
        assert_eq!(c("openai-organization"), Inbound::ClientOnly);
        assert_eq!(c("openai-project"), Inbound::ClientOnly);
        assert_eq!(c("x-forwarded-client-cert"), Inbound::ClientOnly, "the mesh's workload identities stay in the mesh");
        assert_eq!(c("x-envoy-peer-metadata"), Inbound::ClientOnly, "so do its workloads' names and labels");
        assert_eq!(c("x-envoy-peer-metadata-id"), Inbound::ClientOnly);
        assert_eq!(c("x-envoy-max-retries"), Inbound::EnvoyControl);
        assert_eq!(c("x-envoy-retry-on"), Inbound::EnvoyControl);
        assert_eq!(c("x-envoy-upstream-rq-timeout-ms"), Inbound::EnvoyControl);
        assert_eq!(c("x-envoy-upstream-rq-per-try-timeout-ms"), Inbound::EnvoyControl);
        assert_eq!(c("x-envoy-original-dst-host"), Inbound::EnvoyControl);
        assert_eq!(c("x-envoy-original-url"), Inbound::Keep);
        assert_eq!(c("x-envoy-internal"), Inbound::Keep);
        for keep in [":method", ":scheme", "content-type", "accept", "user-agent", "x-request-id", "traceparent", "anthropic-beta", "anthropic-version"] {
            assert_eq!(c(keep), Inbound::Keep, "{keep}");
        }
    }

    #[test]
    fn merge_drops_by_policy_and_replaces_what_is_set() {
        let client = h(&[
            (":method", "POST"),
            (":path", "/v1/chat/completions"),
            (":authority", "gw"),
            ("authorization", "Bearer gateway-key"),
            ("openai-organization", "org-evil"),
            ("x-envoy-max-retries", "50"),
            ("x-llm-router-state", "forged"),
            ("x-llm-router-cluster", "internal-admin"),
            ("x-custom-auth", "old-provider-key"),
            ("content-length", "10"),
            ("traceparent", "00-abc"),
        ]);
        let set = vec![(":authority", "api.example"), (":path", "/v1/x"), ("x-llm-router-cluster", "outbound|443||api.example"), ("authorization", "Bearer sk"), ("content-length", "12")];
        let out = merge(&client, "x-llm-router-cluster", &["x-custom-auth"], set);
        assert_eq!(
            out,
            vec![
                (":method", "POST"),
                ("traceparent", "00-abc"),
                (":authority", "api.example"),
                (":path", "/v1/x"),
                ("x-llm-router-cluster", "outbound|443||api.example"),
                ("authorization", "Bearer sk"),
                ("content-length", "12"),
            ]
        );
        assert_eq!(internal_present(&client, "x-llm-router-cluster"), vec!["x-llm-router-state", "x-llm-router-cluster"]);
    }
}
