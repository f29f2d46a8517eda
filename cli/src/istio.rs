//! Istio objects for a config, for an Istio **gateway** (ingress or egress) on Istio >= 1.28:
//!
//! - an **EnvoyFilter** that adds the filter as an ECDS resource (`EXTENSION_CONFIG` ADD, with
//!   `allow_on_headers_stop_iteration: true`, which a WasmPlugin cannot carry: istiod never sets it,
//!   and without it every routed request hangs, see the README's Istio section) and references it
//!   from the gateway's HTTP filter chain (`HTTP_FILTER` INSERT_BEFORE `envoy.filters.http.grpc_stats`,
//!   which is exactly where a WasmPlugin of phase STATS lands: after Istio's authentication and
//!   authorization filters, before fault, CORS, stats and the router; pilot/pkg/networking/core/
//!   listener_builder.go `buildHTTPConnectionManager`). Two MERGE patches carry the values
//!   `llm-router envoy` uses: the listener's buffer limit (the one that answers 413) and, on the
//!   gateway's HTTP connection manager, `stream_idle_timeout` and `accept_http_10`;
//! - a **Gateway** server listing the provider hosts, and **one VirtualService per provider host**
//!   whose route matches the filter's cluster header with the value the filter sets for that
//!   host's deployments, routes to `outbound|PORT||HOST` and removes the header. Per host, not one
//!   `*` VirtualService: the filter rewrites `:authority` before Envoy picks the route, so Envoy
//!   re-selects the virtual host by the *provider's* host. An exact-domain virtual host wins over
//!   any `*` one whatever the route order, so a team's `*` VirtualService (say `prefix: /v1/`)
//!   never receives a rewritten request carrying a provider key; and a client that sends the
//!   provider's Host itself finds no route, because the filter strips the cluster header from
//!   every request it sees;
//! - per upstream host outside the cluster a **ServiceEntry** (the `outbound|PORT||HOST` cluster)
//!   and a **DestinationRule** (TLS origination with SNI *and* SAN verification for https
//!   api_bases; the circuit breakers of `llm-router envoy`);
//! - every object in one namespace (the gateway's) with `exportTo: ["."]`: sidecars elsewhere in
//!   the mesh do not gain the provider hosts.
//!
//! Secrets never enter the plugin config: `os.environ/NAME` references stay as written, the
//! EnvoyFilter passes the names to the VM (`host_env_keys`), and [`deployment_patch`] wires them
//! into the gateway's `istio-proxy` container from a Kubernetes Secret. A literal secret in the
//! config is refused ([`literal_secrets`]).

use crate::envoy;
use crate::plan::Endpoint;
use crate::source::{Diag, Severity, Source};
use crate::value::Value;
use llm_router::config::RouterConfig;

/// The first Istio whose istiod keeps `allow_on_headers_stop_iteration` in an EnvoyFilter value
/// (1.27 pins a go-control-plane that predates the field and drops it with a warning).
pub const MIN_ISTIO: (u64, u64) = (1, 28);
/// `match.proxy.proxyVersion` of every patch: gateway proxies older than 1.28 get none of them
/// (their Envoy may not know the flag, and a filter without it hangs every routed request).
pub const PROXY_VERSION_REGEX: &str = r"^(1\.(2[89]|[3-9][0-9])|[2-9]\.[0-9]+)([.-].*)?$";
pub const DEFAULT_NAMESPACE: &str = "istio-system";
pub const DEFAULT_SELECTOR: (&str, &str) = ("istio", "ingressgateway");
pub const DEFAULT_DEPLOYMENT: &str = "istio-ingressgateway";
pub const DEFAULT_PORT: u16 = 80;
/// The gateway container that runs Envoy (istio/gateway Helm chart, injection template `gateway`).
pub const PROXY_CONTAINER: &str = "istio-proxy";

const WASM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
/// istio-agent substitutes an RBAC filter when it cannot fetch the module (pkg/wasm/convert.go),
/// so the HTTP filter must accept that type too (as istiod's own WasmPlugin filters do).
const RBAC_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC";
const HCM_NAME: &str = "envoy.filters.network.http_connection_manager";
const HCM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
/// The HTTP filter istiod puts right after the WasmPlugin phases on every gateway listener.
pub const ANCHOR_FILTER: &str = "envoy.filters.http.grpc_stats";
/// Retries Envoy makes on its own, within the deployment's cluster: only attempts that never reached
/// the provider (Istio's default would also retry gRPC `unavailable`/`cancelled`, and a mesh-wide
/// `defaultHttpRetryPolicy` could add 5xx: those would resend a request the router counts once).
pub const ROUTE_RETRY_ON: &str = "connect-failure,refused-stream";
pub const ROUTE_RETRY_ATTEMPTS: u64 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailurePolicy {
    Closed,
    Open,
    Reload,
}

impl FailurePolicy {
    pub fn parse(s: &str) -> Option<FailurePolicy> {
        match s.to_ascii_lowercase().as_str() {
            "closed" | "fail_closed" | "fail_close" => Some(FailurePolicy::Closed),
            "open" | "fail_open" => Some(FailurePolicy::Open),
            "reload" | "fail_reload" => Some(FailurePolicy::Reload),
            _ => None,
        }
    }

    pub fn envoy_name(self) -> &'static str {
        match self {
            FailurePolicy::Closed => "FAIL_CLOSED",
            FailurePolicy::Open => "FAIL_OPEN",
            FailurePolicy::Reload => "FAIL_RELOAD",
        }
    }
}

/// Where istio-agent (or Envoy, for `file://`) gets llm_router.wasm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Module {
    /// `oci://` or `https://` (or `http://`): istio-agent downloads it and checks `sha256`.
    Remote { url: String, sha256: Option<String> },
    /// A file inside the proxy container.
    Local { path: String },
}

impl Module {
    /// Checks the URL and its pin. `oci://` needs `--sha256` (the image manifest digest) unless
    /// the URL names a digest (`@sha256:...`); `https://` needs `--sha256` of the .wasm file.
    pub fn parse(url: &str, sha256: Option<&str>) -> Result<Module, String> {
        let sha = match sha256 {
            None => None,
            Some(s) => {
                let s = s.strip_prefix("sha256:").unwrap_or(s).to_ascii_lowercase();
                if s.len() != 64 || !s.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(format!("--sha256: `{s}` is not a sha256 (64 hex digits)"));
                }
                Some(s)
            }
        };
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(format!("--url {url}: file:// needs an absolute path inside the proxy container (file:///...)"));
            }
            if sha.is_some() {
                return Err("--sha256 is not checked for file:// modules (Envoy reads the file as it is): drop it".into());
            }
            return Ok(Module::Local { path: path.to_string() });
        }
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(format!("--url {url}: expected oci://, https:// or file://"));
        };
        if rest.is_empty() {
            return Err(format!("--url {url}: missing the location"));
        }
        match scheme {
            "oci" => {
                let digest = rest.split_once("@sha256:").map(|(_, d)| d.to_ascii_lowercase());
                match (&digest, &sha) {
                    (Some(d), Some(s)) if d != s => Err(format!("--url names digest sha256:{d} but --sha256 says {s}")),
                    (None, None) => Err(format!(
                        "--url {url}: pin the image: --sha256 <the image manifest digest> (istio-agent compares it), or oci://...@sha256:<digest>"
                    )),
                    _ => Ok(Module::Remote { url: url.to_string(), sha256: sha }),
                }
            }
            "https" | "http" => match sha {
                None => Err(format!("--url {url}: pin the module: --sha256 <sha256 of llm_router.wasm> (istio-agent checks the download against it)")),
                Some(s) => Ok(Module::Remote { url: url.to_string(), sha256: Some(s) }),
            },
            other => Err(format!("--url {url}: unsupported scheme `{other}` (oci://, https:// or file://)")),
        }
    }

    pub fn url(&self) -> String {
        match self {
            Module::Remote { url, .. } => url.clone(),
            Module::Local { path } => format!("file://{path}"),
        }
    }
}

/// `1.28`, `1.28.3`, `v1.29.0-beta.1` → (1, 28).
pub fn parse_version(s: &str) -> Option<(u64, u64)> {
    let s = s.strip_prefix('v').unwrap_or(s);
    let mut parts = s.split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Name of the EnvoyFilter and Gateway, prefix of the per-host objects.
    pub name: String,
    /// The gateway's namespace (every object lives there).
    pub namespace: String,
    /// `namespace` was not given (the header and stderr say so).
    pub namespace_defaulted: bool,
    /// The gateway pods' labels (`workloadSelector` of the EnvoyFilter, `selector` of the Gateway).
    pub selector: Vec<(String, String)>,
    /// The Gateway server's port (HTTP).
    pub port: u16,
    pub module: Module,
    pub failure_policy: FailurePolicy,
    /// The Kubernetes Secret holding every `os.environ/` variable that is a secret.
    pub secret: String,
    /// The gateway Deployment (for the patch command in the header).
    pub deployment: String,
    pub istio_version: (u64, u64),
}

fn metadata(name: &str, opts: &Options) -> Value {
    Value::map([
        ("name", Value::from(name)),
        ("namespace", Value::from(opts.namespace.as_str())),
        ("labels", Value::map([("app.kubernetes.io/managed-by", Value::from("llm-router"))])),
    ])
}

fn export_here() -> Value {
    Value::seq([Value::from(".")])
}

fn labels(opts: &Options) -> Value {
    Value::Map(opts.selector.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect())
}

/// The ECDS resource name (and the HTTP filter's name): `<namespace>.<name>`, as istiod names a
/// WasmPlugin's (pilot/pkg/model/extensions.go).
pub fn filter_name(opts: &Options) -> String {
    format!("{}.{}", opts.namespace, opts.name)
}

fn typed(type_url: &str, rest: impl IntoIterator<Item = (&'static str, Value)>) -> Value {
    let mut entries: Vec<(String, Value)> = vec![("@type".to_string(), Value::from(type_url))];
    entries.extend(rest.into_iter().map(|(k, v)| (k.to_string(), v)));
    Value::Map(entries)
}

/// `vm_config.code`, the way istiod writes it for a WasmPlugin (`buildDataSource`): a remote
/// `http_uri` (cluster `_`: istio-agent downloads it and rewrites `code` to a local file before
/// Envoy sees it) with the checksum, or a local file.
fn code(module: &Module) -> Value {
    match module {
        Module::Local { path } => Value::map([("local", Value::map([("filename", Value::from(path.as_str()))]))]),
        Module::Remote { url, sha256 } => {
            let mut remote = vec![(
                "http_uri",
                Value::map([("uri", Value::from(url.as_str())), ("cluster", Value::from("_")), ("timeout", Value::from("30s"))]),
            )];
            if let Some(s) = sha256 {
                remote.push(("sha256", Value::from(s.as_str())));
            }
            Value::map([("remote", Value::map(remote))])
        }
    }
}

fn proxy_match() -> (&'static str, Value) {
    ("proxy", Value::map([("proxyVersion", Value::from(PROXY_VERSION_REGEX))]))
}

fn hcm_match() -> Value {
    Value::map([("filterChain", Value::map([("filter", Value::map([("name", Value::from(HCM_NAME))]))]))])
}

/// The EnvoyFilter: the filter (ECDS resource + HTTP filter reference) and the two MERGE patches.
pub fn envoy_filter(source: &Source, cfg: &RouterConfig, env_refs: &[String], opts: &Options) -> Value {
    let name = filter_name(opts);
    let mut vm = vec![
        // Its own shared-data namespace (cooldowns, counters), kept across config updates.
        ("vm_id", Value::from("llm_router")),
        ("runtime", Value::from("envoy.wasm.runtime.v8")),
        ("code", code(&opts.module)),
    ];
    if !env_refs.is_empty() {
        vm.push((
            "environment_variables",
            Value::map([("host_env_keys", Value::seq(env_refs.iter().map(|k| Value::from(k.as_str()))))]),
        ));
    }
    let wasm = typed(
        WASM_TYPE,
        [(
            "config",
            Value::map([
                ("name", Value::from(name.as_str())),
                ("root_id", Value::from("llm_router")),
                // Required: the filter holds the request headers until it has read the body.
                ("allow_on_headers_stop_iteration", Value::from(true)),
                ("failure_policy", Value::from(opts.failure_policy.envoy_name())),
                ("vm_config", Value::map(vm)),
                (
                    "configuration",
                    typed("type.googleapis.com/google.protobuf.StringValue", [("value", Value::from(source.json()))]),
                ),
            ]),
        )],
    );
    let extension = Value::map([
        ("applyTo", Value::from("EXTENSION_CONFIG")),
        ("match", Value::map([("context", Value::from("GATEWAY")), proxy_match()])),
        (
            "patch",
            Value::map([("operation", Value::from("ADD")), ("value", Value::map([("name", Value::from(name.as_str())), ("typed_config", wasm)]))]),
        ),
    ]);
    let mut listener_match = hcm_match();
    if let Value::Map(m) = &mut listener_match {
        if let Some((_, Value::Map(fc))) = m.first_mut() {
            if let Some((_, Value::Map(filter))) = fc.first_mut() {
                filter.push(("subFilter".to_string(), Value::map([("name", Value::from(ANCHOR_FILTER))])));
            }
        }
    }
    let http_filter = Value::map([
        ("applyTo", Value::from("HTTP_FILTER")),
        ("match", Value::map([("context", Value::from("GATEWAY")), proxy_match(), ("listener", listener_match)])),
        (
            "patch",
            Value::map([
                ("operation", Value::from("INSERT_BEFORE")),
                (
                    "value",
                    Value::map([
                        ("name", Value::from(name.as_str())),
                        (
                            "config_discovery",
                            Value::map([
                                (
                                    "config_source",
                                    Value::map([
                                        ("ads", Value::Map(Vec::new())),
                                        // Block the listener until the filter is there (istiod's
                                        // WasmPlugin reference does the same).
                                        ("initial_fetch_timeout", Value::from("0s")),
                                        ("resource_api_version", Value::from("V3")),
                                    ]),
                                ),
                                ("type_urls", Value::seq([Value::from(WASM_TYPE), Value::from(RBAC_TYPE)])),
                            ]),
                        ),
                    ]),
                ),
            ]),
        ),
    ]);
    let listener = Value::map([
        ("applyTo", Value::from("LISTENER")),
        ("match", Value::map([("context", Value::from("GATEWAY")), proxy_match()])),
        (
            "patch",
            Value::map([
                ("operation", Value::from("MERGE")),
                // The limit that answers 413: whole bodies up to max_request_body_bytes, as the
                // router rewrites them (Envoy's default is 1 MiB; istiod sets none).
                ("value", Value::map([("per_connection_buffer_limit_bytes", Value::from(envoy::buffer_limit(cfg)))])),
            ]),
        ),
    ]);
    let idle = format!("{}s", envoy::DEFAULT_IDLE_TIMEOUT_SECS.max(longest_timeout_secs(cfg)));
    let hcm = Value::map([
        ("applyTo", Value::from("NETWORK_FILTER")),
        ("match", Value::map([("context", Value::from("GATEWAY")), proxy_match(), ("listener", hcm_match())])),
        (
            "patch",
            Value::map([
                ("operation", Value::from("MERGE")),
                (
                    "value",
                    Value::map([
                        ("name", Value::from(HCM_NAME)),
                        (
                            "typed_config",
                            typed(
                                HCM_TYPE,
                                [
                                    // istiod sets 0s (none) on gateways: a stalled stream would hold its
                                    // connection forever. Routes keep no total timeout.
                                    ("stream_idle_timeout", Value::from(idle)),
                                    // HTTP/1.0 clients get 426 otherwise.
                                    ("http_protocol_options", envoy::http_protocol_options()),
                                ],
                            ),
                        ),
                    ]),
                ),
            ]),
        ),
    ]);
    Value::map([
        ("apiVersion", Value::from("networking.istio.io/v1alpha3")),
        ("kind", Value::from("EnvoyFilter")),
        ("metadata", metadata(&opts.name, opts)),
        (
            "spec",
            Value::map([
                ("workloadSelector", Value::map([("labels", labels(opts))])),
                ("configPatches", Value::seq([extension, http_filter, listener, hcm])),
            ]),
        ),
    ])
}

fn longest_timeout_secs(cfg: &RouterConfig) -> u64 {
    let longest = cfg.table.deployments.iter().filter_map(|d| d.timeout_secs).chain(cfg.router.timeout_secs).fold(0.0_f64, f64::max);
    longest.ceil() as u64
}

/// A DNS-1123 name for a host's objects: `llm-router-api-openai-com`.
pub fn object_name(prefix: &str, host: &str) -> String {
    let mut s: String = format!("{prefix}-{host}")
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    while s.contains("--") {
        s = s.replace("--", "-");
    }
    s.truncate(63);
    s.trim_matches('-').to_string()
}

/// Hosts Istio already knows (Kubernetes services): no ServiceEntry or DestinationRule for them.
pub fn in_cluster(host: &str) -> bool {
    host.ends_with(".svc.cluster.local")
}

/// One host, the ports it is reached on (`(port, tls)`), and the cluster names the filter sets
/// for each port (`(port, cluster)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub host: String,
    pub ports: Vec<(u16, bool)>,
    pub clusters: Vec<(u16, String)>,
    pub ip: bool,
}

pub fn hosts(endpoints: &[Endpoint]) -> Vec<Host> {
    let mut out: Vec<Host> = Vec::new();
    for ep in endpoints {
        let i = match out.iter().position(|h| h.host == ep.host) {
            Some(i) => i,
            None => {
                out.push(Host { host: ep.host.clone(), ports: Vec::new(), clusters: Vec::new(), ip: ep.is_ip() });
                out.len() - 1
            }
        };
        if let Some(host) = out.get_mut(i) {
            if !host.ports.iter().any(|(p, _)| *p == ep.port) {
                host.ports.push((ep.port, ep.tls));
            }
            if !host.clusters.iter().any(|(p, c)| *p == ep.port && *c == ep.cluster) {
                host.clusters.push((ep.port, ep.cluster.clone()));
            }
        }
    }
    out
}

/// The Gateway: one HTTP server listing every provider host (`./host`: only VirtualServices of
/// this namespace may bind them), on the gateway pods the selector names.
pub fn gateway(hosts: &[Host], opts: &Options) -> Value {
    Value::map([
        ("apiVersion", Value::from("networking.istio.io/v1")),
        ("kind", Value::from("Gateway")),
        ("metadata", metadata(&opts.name, opts)),
        (
            "spec",
            Value::map([
                ("selector", labels(opts)),
                (
                    "servers",
                    Value::seq([Value::map([
                        (
                            "port",
                            Value::map([
                                ("number", Value::from(opts.port)),
                                ("name", Value::from(format!("http-{}", opts.name))),
                                ("protocol", Value::from("HTTP")),
                            ]),
                        ),
                        ("hosts", Value::seq(hosts.iter().map(|h| Value::from(format!("./{}", h.host))))),
                    ])]),
                ),
            ]),
        ),
    ])
}

/// The VirtualService of one provider host: one route per cluster the filter names for it, taken
/// only when the filter's cluster header carries exactly that name; the header is removed before
/// the request leaves.
pub fn virtual_service(h: &Host, cluster_header: &str, opts: &Options) -> Value {
    let routes = h.clusters.iter().map(|(port, cluster)| {
        Value::map([
            ("name", Value::from(object_name(&opts.name, &format!("{}-{port}", h.host)))),
            (
                "match",
                Value::seq([Value::map([(
                    "headers",
                    Value::Map(vec![(cluster_header.to_string(), Value::map([("exact", Value::from(cluster.as_str()))]))]),
                )])]),
            ),
            (
                "route",
                Value::seq([Value::map([(
                    "destination",
                    Value::map([("host", Value::from(h.host.as_str())), ("port", Value::map([("number", Value::from(*port))]))]),
                )])]),
            ),
            ("headers", Value::map([("request", Value::map([("remove", Value::seq([Value::from(cluster_header)]))]))])),
            // No total timeout (streams are never cut); the router bounds each attempt's time to
            // response headers (x-envoy-upstream-rq-per-try-timeout-ms, the deployment's timeout).
            ("timeout", Value::from(envoy::ROUTE_TIMEOUT)),
            (
                "retries",
                Value::map([("attempts", Value::from(ROUTE_RETRY_ATTEMPTS)), ("retryOn", Value::from(ROUTE_RETRY_ON))]),
            ),
        ])
    });
    Value::map([
        ("apiVersion", Value::from("networking.istio.io/v1")),
        ("kind", Value::from("VirtualService")),
        ("metadata", metadata(&object_name(&opts.name, &h.host), opts)),
        (
            "spec",
            Value::map([
                ("hosts", Value::seq([Value::from(h.host.as_str())])),
                ("gateways", Value::seq([Value::from(opts.name.as_str())])),
                ("exportTo", export_here()),
                ("http", Value::seq(routes)),
            ]),
        ),
    ])
}

/// The mesh-external service. Ports are declared `HTTP`: the gateway sends plain HTTP to the
/// cluster and, for https api_bases, the DestinationRule originates TLS on the same port.
pub fn service_entry(h: &Host, opts: &Options) -> Value {
    let ports = Value::seq(h.ports.iter().map(|(port, _)| {
        Value::map([("number", Value::from(*port)), ("name", Value::from(format!("http-{port}"))), ("protocol", Value::from("HTTP"))])
    }));
    let mut spec = vec![("hosts", Value::seq([Value::from(h.host.as_str())]))];
    if h.ip {
        spec.push(("addresses", Value::seq([Value::from(h.host.as_str())])));
    }
    spec.extend([("location", Value::from("MESH_EXTERNAL")), ("ports", ports)]);
    if h.ip {
        spec.push(("resolution", Value::from("STATIC")));
        spec.push(("endpoints", Value::seq([Value::map([("address", Value::from(h.host.as_str()))])])));
    } else {
        spec.push(("resolution", Value::from("DNS")));
    }
    spec.push(("exportTo", export_here()));
    Value::map([
        ("apiVersion", Value::from("networking.istio.io/v1")),
        ("kind", Value::from("ServiceEntry")),
        ("metadata", metadata(&object_name(&opts.name, &h.host), opts)),
        ("spec", Value::map(spec)),
    ])
}

/// `connectionPool` with `llm-router envoy`'s circuit breaker figure on every threshold.
fn connection_pool() -> Value {
    let n = || Value::from(envoy::CIRCUIT_BREAKER_LIMIT);
    Value::map([
        ("tcp", Value::map([("maxConnections", n())])),
        ("http", Value::map([("http1MaxPendingRequests", n()), ("http2MaxRequests", n()), ("maxRetries", n())])),
    ])
}

/// TLS origination on https ports (mode SIMPLE, SNI = host, the certificate must name the host:
/// with `sni` set and no `subjectAltNames` istiod would check the chain only), plain on http ports.
pub fn destination_rule(h: &Host, opts: &Options) -> Value {
    let settings = Value::seq(h.ports.iter().map(|(port, tls)| {
        let tls = if *tls {
            Value::map([
                ("mode", Value::from("SIMPLE")),
                ("sni", Value::from(h.host.as_str())),
                ("subjectAltNames", Value::seq([Value::from(h.host.as_str())])),
            ])
        } else {
            Value::map([("mode", Value::from("DISABLE"))])
        };
        Value::map([("port", Value::map([("number", Value::from(*port))])), ("tls", tls)])
    }));
    Value::map([
        ("apiVersion", Value::from("networking.istio.io/v1")),
        ("kind", Value::from("DestinationRule")),
        ("metadata", metadata(&object_name(&opts.name, &h.host), opts)),
        (
            "spec",
            Value::map([
                ("host", Value::from(h.host.as_str())),
                ("exportTo", export_here()),
                ("trafficPolicy", Value::map([("connectionPool", connection_pool()), ("portLevelSettings", settings)])),
            ]),
        ),
    ])
}

/// One variable of the gateway container's environment: a secret from the Secret, or the value
/// the clusters were derived from (an `api_base` reference: the filter must see the same value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvVar {
    Secret(String),
    /// A provider key the filter reads for a deployment without `api_key`: the filter loads
    /// without it (those deployments go without a key), so the gateway must start without it
    /// too (`secretKeyRef.optional`).
    OptionalSecret(String),
    Plain(String, String),
}

impl EnvVar {
    pub fn name(&self) -> &str {
        match self {
            EnvVar::Secret(n) | EnvVar::OptionalSecret(n) | EnvVar::Plain(n, _) => n,
        }
    }

    fn entry(&self, opts: &Options) -> Value {
        match self {
            EnvVar::Secret(n) | EnvVar::OptionalSecret(n) => {
                let mut key_ref = vec![("name".to_string(), Value::from(opts.secret.as_str())), ("key".to_string(), Value::from(n.as_str()))];
                if matches!(self, EnvVar::OptionalSecret(_)) {
                    key_ref.push(("optional".to_string(), Value::Bool(true)));
                }
                Value::map([("name", Value::from(n.as_str())), ("valueFrom", Value::map([("secretKeyRef", Value::Map(key_ref))]))])
            }
            EnvVar::Plain(n, v) => Value::map([("name", Value::from(n.as_str())), ("value", Value::from(v.as_str()))]),
        }
    }
}

/// The strategic-merge patch for the gateway Deployment (`kubectl patch --type strategic`):
/// every variable the config refers to, on the `istio-proxy` container.
pub fn deployment_patch(vars: &[EnvVar], opts: &Options) -> Value {
    Value::map([(
        "spec",
        Value::map([(
            "template",
            Value::map([(
                "spec",
                Value::map([(
                    "containers",
                    Value::seq([Value::map([
                        ("name", Value::from(PROXY_CONTAINER)),
                        ("env", Value::seq(vars.iter().map(|v| v.entry(opts)))),
                    ])]),
                )]),
            )]),
        )]),
    )])
}

/// The same wiring as istio/gateway Helm values (`envVarFrom` for secrets, `env` for the rest).
pub fn helm_values(vars: &[EnvVar], opts: &Options) -> Value {
    let mut out = Vec::new();
    let plain: Vec<(String, Value)> = vars
        .iter()
        .filter_map(|v| match v {
            EnvVar::Plain(n, val) => Some((n.clone(), Value::from(val.as_str()))),
            EnvVar::Secret(_) | EnvVar::OptionalSecret(_) => None,
        })
        .collect();
    if !plain.is_empty() {
        out.push(("env".to_string(), Value::Map(plain)));
    }
    let secret: Vec<Value> = vars.iter().filter(|v| !matches!(v, EnvVar::Plain(..))).map(|v| v.entry(opts)).collect();
    if !secret.is_empty() {
        out.push(("envVarFrom".to_string(), Value::Seq(secret)));
    }
    Value::Map(out)
}

/// Field names whose values are secrets wherever they appear in a config.
fn secret_field(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n == "key"
        || n.ends_with("_key")
        || n.ends_with("-key")
        || n.ends_with("apikey")
        || n.contains("secret")
        || n.contains("password")
        || n.ends_with("token")
        || n.contains("credential")
}

/// A URL with a password in it (`postgresql://user:pass@host/db`).
fn url_with_password(s: &str) -> bool {
    let Some((_, rest)) = s.split_once("://") else { return false };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    authority.rsplit_once('@').is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

/// Every literal secret in the config: a value of a secret-named field (`api_key`, `master_key`,
/// `*_secret`, `password`, ...), any value of LiteLLM's `environment_variables` section, and URLs
/// with a password, unless written as `os.environ/NAME`. The plugin config is stored in the
/// EnvoyFilter (readable by whoever may read EnvoyFilters) and shows in every config dump of the
/// gateway, so these are refused rather than written.
pub fn literal_secrets(source: &Source) -> Vec<Diag> {
    let mut out = Vec::new();
    walk(&source.value, "", false, source, &mut out);
    out
}

fn walk(v: &Value, path: &str, secret: bool, source: &Source, out: &mut Vec<Diag>) {
    match v {
        Value::Str(s) => {
            if s.is_empty() || crate::env::reference(s).is_some() {
                return;
            }
            if secret || url_with_password(s) {
                out.push(Diag {
                    severity: Severity::Error,
                    loc: source.locate(path),
                    field: Some(path.to_string()),
                    message: "a literal secret would be written into the EnvoyFilter's plugin config (readable by anyone who may read \
                              EnvoyFilters, and in the gateway's config dump): write `os.environ/NAME` and put the value in the Secret \
                              (see the output's header)"
                        .to_string(),
                    kind: crate::source::Kind::Problem,
                });
            }
        }
        Value::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                walk(item, &format!("{path}[{i}]"), secret, source, out);
            }
        }
        Value::Map(entries) => {
            for (k, item) in entries {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                let s = secret || secret_field(k) || (path.is_empty() && k == "environment_variables");
                walk(item, &p, s, source, out);
            }
        }
        _ => {}
    }
}

/// Endpoints Istio cannot reach as the filter names them: refused (the output would not route).
pub fn errors(endpoints: &[Endpoint]) -> Vec<String> {
    let mut out = Vec::new();
    for ep in endpoints {
        if ep.host.contains(':') {
            out.push(format!("{}: Istio hosts cannot be IPv6 literals (deployments {})", ep.url(), ep.deployments.join(", ")));
        } else if !ep.is_ip() && (!ep.host.contains('.') || ep.host.ends_with(".svc")) {
            out.push(format!(
                "`{}` is not a fully qualified host name: the gateway matches the rewritten :authority against its virtual hosts \
                 as written, and Istio names the cluster by the full name (use e.g. {}.<namespace>.svc.cluster.local in api_base; \
                 deployments {})",
                ep.host,
                ep.host.trim_end_matches(".svc"),
                ep.deployments.join(", ")
            ));
        }
    }
    out
}

/// The rate limit service's cluster in a gateway: Istio's outbound cluster of a service port,
/// `outbound|PORT||HOST` (or `outbound|PORT|SUBSET|HOST`) → `(port, host)`; the filter cannot
/// call a cluster the mesh does not build. Err: why not, and what name to use.
pub fn rls_cluster(name: &str) -> Result<(u16, String), String> {
    let example = "outbound|8081||llm-router-rls.<namespace>.svc.cluster.local";
    let mut parts = name.split('|');
    let (Some("outbound"), Some(port), Some(_subset), Some(host), None) = (parts.next(), parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(format!(
            "envoy_settings.rate_limit_service.cluster: `{name}` is not an Istio cluster: in the mesh the filter can only call a cluster \
             istiod builds, named outbound|PORT||HOST after the Service's gRPC port (e.g. `{example}`)"
        ));
    };
    let Some(port) = port.parse::<u16>().ok().filter(|p| *p > 0) else {
        return Err(format!("envoy_settings.rate_limit_service.cluster: `{name}`: `{port}` is not a port (e.g. `{example}`)"));
    };
    if !host.contains('.') || host.ends_with(".svc") {
        return Err(format!(
            "envoy_settings.rate_limit_service.cluster: `{name}`: Istio names the cluster by the service's full host name \
             (e.g. `outbound|{port}||{}.<namespace>.svc.cluster.local`)",
            host.trim_end_matches(".svc")
        ));
    }
    Ok((port, host.to_string()))
}

/// The header paragraph for the rate limit service: what the mesh must provide so that its
/// cluster speaks HTTP/2 (nothing is generated for it).
pub fn rls_comment(cluster: &str, port: u16, host: &str) -> String {
    let mut t = format!(
        "# - Rate limit service (envoy_settings.rate_limit_service): the filter calls {cluster} over gRPC. Istio\n\
         #   gives that cluster HTTP/2 only when the port is gRPC: name the Service port {port} `grpc` or `grpc-<suffix>`, or\n\
         #   set `appProtocol: grpc` on it (an http, tcp or unnamed port gives HTTP/1.1 or TCP, and every call fails: the\n\
         #   failure_mode applies). Nothing is generated for it here; its limits come from `llm-router rls`.\n"
    );
    if !in_cluster(host) {
        t.push_str(&format!("#   {host} is outside the cluster: it needs a ServiceEntry whose port {port} has protocol GRPC (not written here).\n"));
    }
    t
}

/// Notes for the operator.
pub fn notes(endpoints: &[Endpoint]) -> Vec<String> {
    let mut out = Vec::new();
    for ep in endpoints {
        let istio_name = format!("outbound|{}||{}", ep.port, ep.host);
        if ep.explicit && ep.cluster != istio_name {
            out.push(format!(
                "deployments {} set `cluster: {}`: in Istio it only labels the route; the VirtualService sends them to `{istio_name}`",
                ep.deployments.join(", "),
                ep.cluster
            ));
        }
        if in_cluster(&ep.host) {
            out.push(format!("{} is a Kubernetes service: a VirtualService route but no ServiceEntry/DestinationRule is written for it", ep.host));
        }
    }
    out
}

/// Every object, in apply order: the EnvoyFilter, the Gateway, then per host its VirtualService
/// and (outside the cluster) its ServiceEntry and DestinationRule.
pub fn objects(source: &Source, cfg: &RouterConfig, endpoints: &[Endpoint], env_refs: &[String], opts: &Options) -> Vec<Value> {
    let hs = hosts(endpoints);
    let mut out = vec![envoy_filter(source, cfg, env_refs, opts), gateway(&hs, opts)];
    for h in &hs {
        out.push(virtual_service(h, &cfg.envoy.cluster_header, opts));
        if !in_cluster(&h.host) {
            out.push(service_entry(h, opts));
            out.push(destination_rule(h, opts));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(object_name("llm-router", "api.openai.com"), "llm-router-api-openai-com");
        assert_eq!(object_name("llm-router", "::1"), "llm-router-1");
        assert!(object_name("x", &"a".repeat(100)).len() <= 63);
    }

    #[test]
    fn rls_clusters_are_outbound_clusters() {
        assert_eq!(rls_cluster("outbound|8081||rls.ns.svc.cluster.local"), Ok((8081, "rls.ns.svc.cluster.local".into())));
        assert_eq!(rls_cluster("outbound|8081|v1|rls.ns.svc.cluster.local"), Ok((8081, "rls.ns.svc.cluster.local".into())));
        for bad in ["llm_router_rls", "outbound|8081||rls", "outbound|8081||rls.ns.svc", "outbound|0||a.b", "outbound|8081|a.b", "outbound|1||a.b|c", "inbound|8081||a.b"] {
            let e = rls_cluster(bad).err().unwrap_or_default();
            assert!(e.starts_with("envoy_settings.rate_limit_service.cluster: `"), "{bad}: {e}");
        }
        assert!(rls_comment("outbound|1||a.b", 1, "a.b").contains("outside the cluster"));
        assert!(!rls_comment("outbound|1||r.n.svc.cluster.local", 1, "r.n.svc.cluster.local").contains("outside the cluster"));
    }

    #[test]
    fn versions() {
        assert_eq!(parse_version("1.28"), Some((1, 28)));
        assert_eq!(parse_version("v1.29.0-beta.1"), Some((1, 29)));
        assert_eq!(parse_version("1"), None);
        assert_eq!(parse_version("one.two"), None);
    }

    #[test]
    fn modules() {
        let sha = "a".repeat(64);
        assert_eq!(Module::parse("file:///etc/llm_router.wasm", None), Ok(Module::Local { path: "/etc/llm_router.wasm".into() }));
        assert!(Module::parse("file://rel.wasm", None).is_err());
        assert!(Module::parse("file:///x.wasm", Some(&sha)).is_err());
        assert!(Module::parse("https://h/x.wasm", None).is_err());
        assert_eq!(
            Module::parse("https://h/x.wasm", Some(&format!("sha256:{}", sha.to_uppercase()))),
            Ok(Module::Remote { url: "https://h/x.wasm".into(), sha256: Some(sha.clone()) })
        );
        assert!(Module::parse("oci://r/llm-router:1", None).is_err());
        assert!(Module::parse(&format!("oci://r/llm-router@sha256:{sha}"), None).is_ok());
        assert!(Module::parse(&format!("oci://r/llm-router@sha256:{sha}"), Some(&"b".repeat(64))).is_err());
        assert!(Module::parse("s3://b/x.wasm", Some(&sha)).is_err());
        assert!(Module::parse("https://h/x.wasm", Some("abc")).is_err());
    }

    #[test]
    fn secret_fields_and_urls() {
        for k in ["api_key", "master_key", "langfuse_secret_key", "password", "aws_session_token", "x-api-key", "key", "vertex_credentials"] {
            assert!(secret_field(k), "{k}");
        }
        for k in ["model", "max_tokens", "auth_header_name", "auth_header_format", "cooldown_time", "tpm", "api_base"] {
            assert!(!secret_field(k), "{k}");
        }
        assert!(url_with_password("postgresql://u:p@db:5432/x"));
        assert!(!url_with_password("https://user@h/x"));
        assert!(!url_with_password("https://api.openai.com/v1"));
    }
}
