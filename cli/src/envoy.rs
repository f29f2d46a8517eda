//! A complete Envoy bootstrap for a config: the same listener, routes, filters and failover
//! wiring as `envoy/demo.yaml` and the end-to-end harness (tests/e2e/support/envoy.py), with one
//! cluster per upstream the filter can name.

use crate::plan::Endpoint;
use crate::source::Source;
use crate::value::Value;
use llm_router::config::RouterConfig;
use llm_router::cli_api::FAILOVER_PATH;
use llm_router::cli_api::{ACCESS_LOG_FORMAT, ACCESS_LOG_JSON};

/// `ADDRESS:PORT` as Envoy's `socket_address` wants it (IPv6 without brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addr {
    pub host: String,
    pub port: u16,
}

impl Addr {
    /// Parses `127.0.0.1:10000`, `0.0.0.0:10000`, `[::]:10000` or `localhost:10000`.
    pub fn parse(s: &str) -> Result<Addr, String> {
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, p) = rest.split_once("]:").ok_or_else(|| format!("`{s}`: expected [IPv6]:PORT"))?;
            (h, p)
        } else {
            s.rsplit_once(':').ok_or_else(|| format!("`{s}`: expected ADDRESS:PORT"))?
        };
        let port = port.parse::<u16>().map_err(|_| format!("`{s}`: invalid port `{port}`"))?;
        if host.is_empty() {
            return Err(format!("`{s}`: missing address"));
        }
        Ok(Addr { host: host.to_string(), port })
    }

    fn socket_address(&self) -> Value {
        Value::map([("socket_address", Value::map([("address", Value::from(self.host.as_str())), ("port_value", Value::from(self.port))]))])
    }

    pub fn show(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Path of llm_router.wasm as Envoy will open it (relative paths: to Envoy's working directory).
    pub wasm: String,
    pub listen: Addr,
    pub admin: Addr,
    /// The failover redirector's listener (only with `failover`).
    pub redirector: Addr,
    pub failover: bool,
    /// CA bundle for verifying https upstreams.
    pub ca_file: String,
    /// Stream idle timeout; default: 600 s, or the config's longest `timeout` if longer.
    pub idle_timeout_secs: Option<u64>,
    /// The stdout access log's format (`--access-log`).
    pub access_log: AccessLog,
    /// The rate limit service's endpoint (`--rls-address`): the cluster
    /// `envoy_settings.rate_limit_service.cluster` names, when the config has one.
    pub rls_address: Addr,
}

/// The access-log line `envoy` writes: the default text line, or one JSON object per line with
/// the spend attribution fields (what `llm-router spend` reads).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AccessLog {
    #[default]
    Text,
    Json,
}

pub const DEFAULT_WASM: &str = "target/wasm32-wasip1/release/llm_router.wasm";
pub const DEFAULT_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Where the rate limit service listens unless `--rls-address` says (Limitador's and
/// envoyproxy/ratelimit's gRPC port).
pub const DEFAULT_RLS_ADDRESS: &str = "127.0.0.1:8081";
const CONNECT_TIMEOUT: &str = "5s";
/// The RLS cluster's: a call waits at most `rate_limit_service.timeout_ms` (default 50 ms) anyway.
const RLS_CONNECT_TIMEOUT: &str = "1s";

// ---- Wiring hardening: one constant or function per concern. tests/e2e/support/envoy.py (the
// end-to-end harness) and envoy/demo.yaml carry the same values; tests/e2e/test_demo.py and
// tests/e2e/test_wiring_hardening.py fail when they drift apart.

/// The routes' total timeout: none (`0s`; Envoy's default would be 15 s). An SSE answer may
/// stream for many minutes and must not be cut. An attempt is bounded by the router's per-try
/// timeout (`x-envoy-upstream-rq-per-try-timeout-ms`, from the deployment's `timeout`): time to
/// response headers, never a stream already flowing.
pub const ROUTE_TIMEOUT: &str = "0s";
/// The HCM's `stream_idle_timeout` (both directions) unless the config has a longer `timeout`:
/// long enough for a slow model's first byte (a non-streamed answer sends nothing until it is
/// complete), short enough to free a connection on which nothing moves.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 600;
/// Added to `max_request_body_bytes` for the listener's buffer limit. The router accepts bodies
/// up to that limit and then lengthens them (the deployment's `model`, `default_params`; a
/// failover keeps the defaults a previous deployment added). Measured on Envoy 1.40: the
/// listener's `per_connection_buffer_limit_bytes` is the limit that answers 413 (a 1 MiB − 10 B
/// body whose rewrite lengthened `model` was Envoy's 413 with the listener at 1 MiB; with the
/// listener at 1 MiB + 64 KiB, even a 64 KiB cluster limit forwarded and replayed it).
/// [`buffer_limit`] takes the config's own bound when it is larger.
pub const REWRITE_HEADROOM_BYTES: u64 = 64 * 1024;
/// Every threshold of every cluster's circuit breaker. Envoy's defaults (1024 connections,
/// pending and requests, 3 retries) are sized for short RPCs: with failover, every attempt that
/// got no response is retried once onto the redirector, and beyond 3 retries in flight the rest
/// are not attempted and the client gets Envoy's plain-text 503 (measured: 98 of 256 requests, 64
/// concurrent, against a refusing deployment). A request has at most one retry in flight
/// (`num_retries: 1`) and one request per cluster at a time (redirect passes are sequential), so
/// `max_retries` equal to `max_requests` can never overflow first. LLM requests are long (a
/// stream lasts minutes), so thousands may be in flight per deployment; upstreams are HTTP/1.1
/// (a connection per request), hence the same figure for connections and pending requests. The
/// breaker is not admission control (the providers' 429s and the router's cooldowns are); it
/// only caps a runaway.
pub const CIRCUIT_BREAKER_LIMIT: u64 = 10_000;
/// One request's failover passes: each internal redirect is one more upstream attempt with the
/// body replayed. 10 covers LiteLLM's defaults (`max_fallbacks` 5, one attempt per group, plus a
/// retry onto the redirector) with room for `num_retries`; when it is reached the router answers
/// with the failure the last 307 stood for.
pub const MAX_INTERNAL_REDIRECTS: u64 = 10;
/// The route a failover location leads to. The internal redirect policy follows only redirects
/// to it: without that, Envoy also follows a *provider's* 3xx and replays the request (rewritten,
/// provider key included) to wherever it points. The router sets the cluster header on a pass it
/// verified, so those take the routed route; an unrecognised pass (forged, or a config reload
/// between two passes) gets this route's 404 and reaches no upstream.
pub const FAILOVER_ROUTE_NAME: &str = "llm_router_failover";

const WASM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
const ROUTER_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
const HCM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const HTTP_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
pub const REDIRECTOR_HEADER: &str = "x-llm-router-redirector";
/// Endpoint metadata that selects the plain-text transport for the redirector endpoint of a TLS cluster.
const REDIRECTOR_MATCH: &str = "llm_router_redirector";

const TOO_LARGE_BODY: &str = r#"{"error":{"message":"Request body too large","type":"invalid_request_error","param":null,"code":"request_too_large"}}"#;
const REDIRECTOR_BODY: &str = r#"{"error":{"message":"The deployment did not answer (connection failed or timed out)","type":"api_error","param":null,"code":"upstream_unavailable"}}"#;
const NOT_FOUND_BODY: &str = r#"{"error":{"message":"Not found: this gateway serves the OpenAI-style API of its configured models (e.g. POST /v1/chat/completions)","type":"invalid_request_error","param":null,"code":"not_found"}}"#;

fn typed(type_url: &str, rest: impl IntoIterator<Item = (&'static str, Value)>) -> Value {
    let mut entries: Vec<(String, Value)> = vec![("@type".to_string(), Value::from(type_url))];
    entries.extend(rest.into_iter().map(|(k, v)| (k.to_string(), v)));
    Value::Map(entries)
}

/// The upstream role's own VM when background health probes are on: a probe dispatched from the
/// router's VM through a cluster whose upstream filter runs in that same VM would re-enter it.
const UPSTREAM_PROBE_VM_ID: &str = "llm_router_upstream";

fn vm_config(opts: &Options, env_keys: &[String], vm_id: &str) -> Value {
    let mut vm = vec![
        ("vm_id", Value::from(vm_id)),
        ("runtime", Value::from("envoy.wasm.runtime.v8")),
        ("code", Value::map([("local", Value::map([("filename", Value::from(opts.wasm.as_str()))]))])),
    ];
    if !env_keys.is_empty() {
        vm.push((
            "environment_variables",
            Value::map([("host_env_keys", Value::seq(env_keys.iter().map(|k| Value::from(k.as_str()))))]),
        ));
    }
    Value::map(vm)
}

fn wasm_filter(config_json: &str, opts: &Options, env_keys: &[String]) -> Value {
    Value::map([
        ("name", Value::from("envoy.filters.http.wasm")),
        (
            "typed_config",
            typed(
                WASM_TYPE,
                [(
                    "config",
                    Value::map([
                        ("name", Value::from("llm_router")),
                        ("root_id", Value::from("llm_router")),
                        // Required: the filter holds the headers until it has read the body.
                        ("allow_on_headers_stop_iteration", Value::from(true)),
                        ("vm_config", vm_config(opts, env_keys, "llm_router")),
                        (
                            "configuration",
                            typed("type.googleapis.com/google.protobuf.StringValue", [("value", Value::from(config_json))]),
                        ),
                    ]),
                )],
            ),
        ),
    ])
}

fn upstream_wasm_filter(opts: &Options, vm_id: &str) -> Value {
    Value::map([
        ("name", Value::from("envoy.filters.http.wasm")),
        (
            "typed_config",
            typed(
                WASM_TYPE,
                [(
                    "config",
                    Value::map([
                        ("name", Value::from("llm_router_upstream")),
                        ("root_id", Value::from("llm_router_upstream")),
                        // It holds a 400's headers while reading its body (context-window errors).
                        ("allow_on_headers_stop_iteration", Value::from(true)),
                        // Same vm_id, runtime and code: it shares the router's VM (its own VM
                        // with background health probes, see UPSTREAM_PROBE_VM_ID).
                        ("vm_config", vm_config(opts, &[], vm_id)),
                    ]),
                )],
            ),
        ),
    ])
}

fn router_filter() -> Value {
    Value::map([("name", Value::from("envoy.filters.http.router")), ("typed_config", typed(ROUTER_TYPE, []))])
}

fn json_header(key: &str, value: &str) -> Value {
    Value::map([
        ("header", Value::map([("key", Value::from(key)), ("value", Value::from(value))])),
        ("append_action", Value::from("OVERWRITE_IF_EXISTS_OR_ADD")),
    ])
}

/// The HCM's `http_protocol_options`: HTTP/1.0 clients get 426 without it (OpenAI's API and
/// common servers accept 1.0).
pub fn http_protocol_options() -> Value {
    Value::map([("accept_http_10", Value::from(true))])
}

/// Every cluster's `circuit_breakers` (see [`CIRCUIT_BREAKER_LIMIT`]).
pub fn circuit_breakers() -> Value {
    let n = || Value::from(CIRCUIT_BREAKER_LIMIT);
    Value::map([(
        "thresholds",
        Value::seq([Value::map([("max_connections", n()), ("max_pending_requests", n()), ("max_requests", n()), ("max_retries", n())])]),
    )])
}

/// The routed route's `internal_redirect_policy`: what the router's failover needs and nothing
/// more — its one code (307), at most [`MAX_INTERNAL_REDIRECTS`], only to the failover route, and
/// never across schemes: the router's location is `http://`, so only a TLS listener needs
/// `listener_tls`.
pub fn internal_redirect_policy(listener_tls: bool) -> Value {
    Value::map([
        ("redirect_response_codes", Value::seq([Value::from(307u64)])),
        ("max_internal_redirects", Value::from(MAX_INTERNAL_REDIRECTS)),
        ("allow_cross_scheme_redirect", Value::from(listener_tls)),
        (
            "predicates",
            Value::seq([Value::map([
                ("name", Value::from("envoy.internal_redirect_predicates.allow_listed_routes")),
                (
                    "typed_config",
                    typed(
                        "type.googleapis.com/envoy.extensions.internal_redirect.allow_listed_routes.v3.AllowListedRoutesConfig",
                        [("allowed_route_names", Value::seq([Value::from(FAILOVER_ROUTE_NAME)]))],
                    ),
                ),
            ])]),
        ),
    ])
}

/// Where failover locations lead when the router does not take the pass: a 404, no upstream.
fn failover_route() -> Value {
    Value::map([
        ("name", Value::from(FAILOVER_ROUTE_NAME)),
        ("match", Value::map([("path", Value::from(FAILOVER_PATH))])),
        not_found_response(),
        ("response_headers_to_add", Value::seq([json_header("content-type", "application/json")])),
    ])
}

fn not_found_response() -> (&'static str, Value) {
    ("direct_response", Value::map([("status", Value::from(404u64)), ("body", Value::map([("inline_string", Value::from(NOT_FOUND_BODY))]))]))
}

fn route_config(cfg: &RouterConfig, opts: &Options) -> Value {
    let header = cfg.envoy.cluster_header.as_str();
    let mut routed = vec![("cluster_header", Value::from(header)), ("timeout", Value::from(ROUTE_TIMEOUT))];
    if opts.failover {
        routed.push((
            "retry_policy",
            Value::map([
                // Only attempts that got no response (refused, reset, per-try timeout) are retried,
                // onto the cluster's priority-1 endpoint (the redirector); a 5xx response is the
                // upstream filter's to handle.
                ("retry_on", Value::from("connect-failure,reset")),
                ("num_retries", Value::from(1u64)),
                (
                    "retry_priority",
                    Value::map([
                        ("name", Value::from("envoy.retry_priorities.previous_priorities")),
                        (
                            "typed_config",
                            typed(
                                "type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig",
                                [("update_frequency", Value::from(1u64))],
                            ),
                        ),
                    ]),
                ),
            ]),
        ));
        // The generated listener is plain HTTP.
        routed.push(("internal_redirect_policy", internal_redirect_policy(false)));
    }
    let mut routes = vec![Value::map([
        (
            "match",
            Value::map([
                ("prefix", Value::from("/")),
                ("headers", Value::seq([Value::map([("name", Value::from(header)), ("present_match", Value::from(true))])])),
            ]),
        ),
        ("route", Value::map(routed)),
        // The router's header names a cluster; it never leaves Envoy.
        ("request_headers_to_remove", Value::seq([Value::from(header)])),
    ])];
    if opts.failover {
        routes.push(failover_route());
    }
    // What the filter does not route gets an OpenAI-shaped 404; nothing passes through.
    routes.push(Value::map([
        ("match", Value::map([("prefix", Value::from("/"))])),
        not_found_response(),
        ("response_headers_to_add", Value::seq([json_header("content-type", "application/json")])),
    ]));
    Value::map([
        ("name", Value::from("llm_router_routes")),
        (
            "virtual_hosts",
            Value::seq([Value::map([
                ("name", Value::from("llm")),
                ("domains", Value::seq([Value::from("*")])),
                ("routes", Value::Seq(routes)),
            ])]),
        ),
    ])
}

fn local_reply_config() -> Value {
    Value::map([(
        "mappers",
        Value::seq([Value::map([
            (
                "filter",
                Value::map([(
                    "extension_filter",
                    Value::map([
                        ("name", Value::from("envoy.access_loggers.extension_filters.cel")),
                        (
                            "typed_config",
                            typed(
                                "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
                                [("expression", Value::from("response.code == 413 && response.code_details == 'request_payload_too_large'"))],
                            ),
                        ),
                    ]),
                )]),
            ),
            ("body", Value::map([("inline_string", Value::from(TOO_LARGE_BODY))])),
            (
                "body_format_override",
                Value::map([
                    ("text_format_source", Value::map([("inline_string", Value::from("%LOCAL_REPLY_BODY%"))])),
                    ("content_type", Value::from("application/json")),
                ]),
            ),
        ])]),
    )])
}

/// Every request on stdout, with the router's deployment, group, attempts, fallback and token
/// counts (filter state the filter sets; envoy/access-log.md): the text line, or with
/// `--access-log json` one JSON object per line that also carries the spend attribution (key
/// alias, team, user, tags, cost).
fn access_log(format: AccessLog) -> Value {
    let log_format = match format {
        AccessLog::Text => Value::map([("text_format_source", Value::map([("inline_string", Value::from(ACCESS_LOG_FORMAT))]))]),
        AccessLog::Json => Value::map([("json_format", access_log_json())]),
    };
    Value::seq([Value::map([
        ("name", Value::from("envoy.access_loggers.stdout")),
        ("typed_config", typed("type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog", [("log_format", log_format)])),
    ])])
}

/// `json_format` of the JSON access log (`llm_router::cli_api::ACCESS_LOG_JSON`, in order).
pub fn access_log_json() -> Value {
    Value::Map(ACCESS_LOG_JSON.iter().map(|(k, v)| (k.to_string(), Value::from(*v))).collect())
}

fn ingress_listener(source: &Source, cfg: &RouterConfig, opts: &Options, env_keys: &[String], idle_timeout: &str, body_limit: u64) -> Value {
    let header = cfg.envoy.cluster_header.as_str();
    let hcm = typed(
        HCM_TYPE,
        [
            ("stat_prefix", Value::from("ingress")),
            ("codec_type", Value::from("AUTO")),
            ("http_protocol_options", http_protocol_options()),
            // Runs before the route is chosen: a client cannot pick an upstream cluster by sending
            // the router's header itself.
            (
                "early_header_mutation_extensions",
                Value::seq([Value::map([
                    ("name", Value::from("envoy.http.early_header_mutation.header_mutation")),
                    (
                        "typed_config",
                        typed(
                            "type.googleapis.com/envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation",
                            [("mutations", Value::seq([Value::map([("remove", Value::from(header))])]))],
                        ),
                    ),
                ])]),
            ),
            // LLM answers can take minutes before the first byte; routes have no total timeout.
            ("stream_idle_timeout", Value::from(idle_timeout)),
            ("route_config", route_config(cfg, opts)),
            ("local_reply_config", local_reply_config()),
            ("access_log", access_log(opts.access_log)),
            ("http_filters", Value::seq([wasm_filter(&source.json(), opts, env_keys), router_filter()])),
        ],
    );
    Value::map([
        ("name", Value::from("ingress")),
        ("address", opts.listen.socket_address()),
        // The filter buffers whole request bodies (up to envoy_settings.max_request_body_bytes)
        // and lengthens them; retries and failover redirects replay them: this limit (also the
        // per-request buffer limit, since the route sets none) is the one that answers 413, so it
        // holds the largest rewritten body (see buffer_limit).
        ("per_connection_buffer_limit_bytes", Value::from(body_limit)),
        (
            "filter_chains",
            Value::seq([Value::map([(
                "filters",
                Value::seq([Value::map([("name", Value::from("envoy.filters.network.http_connection_manager")), ("typed_config", hcm)])]),
            )])]),
        ),
    ])
}

fn redirector_listener(opts: &Options) -> Value {
    let hcm = typed(
        HCM_TYPE,
        [
            ("stat_prefix", Value::from("llm_router_redirector")),
            (
                "route_config",
                Value::map([(
                    "virtual_hosts",
                    Value::seq([Value::map([
                        ("name", Value::from("redirector")),
                        ("domains", Value::seq([Value::from("*")])),
                        (
                            "routes",
                            Value::seq([Value::map([
                                ("match", Value::map([("prefix", Value::from("/"))])),
                                (
                                    "direct_response",
                                    Value::map([
                                        ("status", Value::from(307u64)),
                                        ("body", Value::map([("inline_string", Value::from(REDIRECTOR_BODY))])),
                                    ]),
                                ),
                                (
                                    "response_headers_to_add",
                                    Value::seq([json_header(REDIRECTOR_HEADER, "1"), json_header("content-type", "application/json")]),
                                ),
                            ])]),
                        ),
                    ])]),
                )]),
            ),
            ("http_filters", Value::seq([router_filter()])),
        ],
    );
    Value::map([
        ("name", Value::from("llm_router_redirector")),
        ("address", opts.redirector.socket_address()),
        (
            "filter_chains",
            Value::seq([Value::map([(
                "filters",
                Value::seq([Value::map([("name", Value::from("envoy.filters.network.http_connection_manager")), ("typed_config", hcm)])]),
            )])]),
        ),
    ])
}

fn lb_endpoint(addr: &Addr, hostname: Option<&str>, metadata: Option<Value>) -> Value {
    let mut endpoint = vec![("address", addr.socket_address())];
    if let Some(h) = hostname {
        endpoint.push(("hostname", Value::from(h)));
    }
    let mut e = vec![("endpoint", Value::map(endpoint))];
    if let Some(m) = metadata {
        e.push(("metadata", m));
    }
    Value::map(e)
}

fn tls_transport_socket(ep: &Endpoint, opts: &Options) -> Value {
    let san_type = if ep.is_ip() { "IP_ADDRESS" } else { "DNS" };
    Value::map([
        ("name", Value::from("envoy.transport_sockets.tls")),
        (
            "typed_config",
            typed(
                "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                [
                    ("sni", Value::from(ep.host.as_str())),
                    (
                        "common_tls_context",
                        Value::map([(
                            "validation_context",
                            Value::map([
                                ("trusted_ca", Value::map([("filename", Value::from(opts.ca_file.as_str()))])),
                                (
                                    "match_typed_subject_alt_names",
                                    Value::seq([Value::map([
                                        ("san_type", Value::from(san_type)),
                                        ("matcher", Value::map([("exact", Value::from(ep.host.as_str()))])),
                                    ])]),
                                ),
                            ]),
                        )]),
                    ),
                ],
            ),
        ),
    ])
}

fn cluster(ep: &Endpoint, opts: &Options, body_limit: u64, upstream_vm_id: &str) -> Value {
    let mut protocol = vec![
        ("@type".to_string(), Value::from("type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions")),
        ("explicit_http_config".to_string(), Value::map([("http_protocol_options", Value::map(Vec::<(String, Value)>::new()))])),
    ];
    if opts.failover {
        // The filter's upstream role turns a failed attempt into the redirect back through the router.
        protocol.push((
            "http_filters".to_string(),
            Value::seq([
                upstream_wasm_filter(opts, upstream_vm_id),
                Value::map([
                    ("name", Value::from("envoy.filters.http.upstream_codec")),
                    ("typed_config", typed("type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec", [])),
                ]),
            ]),
        ));
    }
    let provider = Addr { host: ep.host.clone(), port: ep.port };
    let mut endpoints = vec![Value::map([(
        "lb_endpoints",
        Value::seq([lb_endpoint(&provider, (!ep.is_ip()).then_some(ep.host.as_str()), None)]),
    )])];
    if opts.failover {
        let metadata = ep.tls.then(|| {
            Value::map([(
                "filter_metadata",
                Value::map([("envoy.transport_socket_match", Value::map([(REDIRECTOR_MATCH, Value::from(true))]))]),
            )])
        });
        endpoints.push(Value::map([
            ("priority", Value::from(1u64)),
            ("lb_endpoints", Value::seq([lb_endpoint(&opts.redirector, None, metadata)])),
        ]));
    }
    let mut c = vec![
        ("name", Value::from(ep.cluster.as_str())),
        // STRICT_DNS, not LOGICAL_DNS: the cluster also holds the redirector endpoint.
        ("type", Value::from(if ep.is_ip() { "STATIC" } else { "STRICT_DNS" })),
    ];
    if !ep.is_ip() {
        c.push(("dns_lookup_family", Value::from("V4_PREFERRED")));
        c.push(("respect_dns_ttl", Value::from(true)));
    }
    c.extend([
        ("connect_timeout", Value::from(CONNECT_TIMEOUT)),
        ("lb_policy", Value::from("ROUND_ROBIN")),
        ("circuit_breakers", circuit_breakers()),
        // Not what answers 413 (the listener's limit is, see REWRITE_HEADROOM_BYTES): on the
        // upstream connection it is only the flow-control watermark. Same figure, so one number
        // in the bootstrap says how large a body may be.
        ("per_connection_buffer_limit_bytes", Value::from(body_limit)),
        ("typed_extension_protocol_options", Value::Map(vec![(HTTP_OPTIONS.to_string(), Value::Map(protocol))])),
        ("load_assignment", Value::map([("cluster_name", Value::from(ep.cluster.as_str())), ("endpoints", Value::Seq(endpoints))])),
    ]);
    if ep.tls {
        c.push(("transport_socket", tls_transport_socket(ep, opts)));
        if opts.failover {
            // The redirector speaks plain HTTP: its endpoint (marked in its metadata) skips TLS.
            c.push((
                "transport_socket_matches",
                Value::seq([Value::map([
                    ("name", Value::from("redirector")),
                    ("match", Value::map([(REDIRECTOR_MATCH, Value::from(true))])),
                    (
                        "transport_socket",
                        Value::map([
                            ("name", Value::from("envoy.transport_sockets.raw_buffer")),
                            ("typed_config", typed("type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer", [])),
                        ]),
                    ),
                ])]),
            ));
        }
    }
    Value::map(c)
}

/// The rate limit service's cluster: gRPC, so HTTP/2 (the filter's `dispatch_grpc_call` speaks
/// the cluster's protocol); no upstream filter (the failover role is for deployments only).
pub fn rls_cluster(name: &str, addr: &Addr) -> Value {
    let ip = addr.host.parse::<std::net::IpAddr>().is_ok();
    let mut c = vec![("name", Value::from(name)), ("type", Value::from(if ip { "STATIC" } else { "STRICT_DNS" }))];
    if !ip {
        c.push(("dns_lookup_family", Value::from("V4_PREFERRED")));
        c.push(("respect_dns_ttl", Value::from(true)));
    }
    let protocol = typed(
        "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        [("explicit_http_config", Value::map([("http2_protocol_options", Value::map(Vec::<(String, Value)>::new()))]))],
    );
    c.extend([
        ("connect_timeout", Value::from(RLS_CONNECT_TIMEOUT)),
        ("lb_policy", Value::from("ROUND_ROBIN")),
        // Every admission and settlement is one request on it (Envoy's default cap is 1024).
        ("circuit_breakers", circuit_breakers()),
        ("typed_extension_protocol_options", Value::Map(vec![(HTTP_OPTIONS.to_string(), protocol)])),
        (
            "load_assignment",
            Value::map([
                ("cluster_name", Value::from(name)),
                ("endpoints", Value::seq([Value::map([("lb_endpoints", Value::seq([lb_endpoint(addr, (!ip).then_some(addr.host.as_str()), None)]))])])),
            ]),
        ),
    ]);
    Value::map(c)
}

/// The stream idle timeout in seconds: `--idle-timeout`, else [`DEFAULT_IDLE_TIMEOUT_SECS`] or
/// the config's longest `timeout` if longer (an attempt's per-try budget must run out before the
/// idle timeout does, or the client gets Envoy's local reply instead of a failover).
pub fn idle_timeout_secs(cfg: &RouterConfig, opts: &Options) -> u64 {
    if let Some(t) = opts.idle_timeout_secs {
        return t;
    }
    let longest = cfg
        .table
        .deployments
        .iter()
        .filter_map(|d| d.timeout_secs)
        .chain(cfg.router.timeout_secs)
        .fold(0.0_f64, f64::max);
    DEFAULT_IDLE_TIMEOUT_SECS.max(longest.ceil() as u64)
}

/// The buffer limit for listener and clusters: whole request bodies up to the filter's
/// `max_request_body_bytes`, as the router rewrites them, must fit (the filter reads the body
/// before routing; retries and failover redirects replay it): the limit plus
/// [`REWRITE_HEADROOM_BYTES`] or, when larger, [`rewrite_growth_bound`].
pub fn buffer_limit(cfg: &RouterConfig) -> u64 {
    cfg.envoy.max_request_body_bytes.saturating_add(REWRITE_HEADROOM_BYTES.max(rewrite_growth_bound(cfg)))
}

/// How many bytes the router's rewrites can add to a body, at most: the longest deployment
/// `model` (it replaces the client's, at least an empty string), plus every deployment's
/// `default_params` (`"key":value,` each; across failover passes the defaults of several
/// deployments may accumulate).
pub fn rewrite_growth_bound(cfg: &RouterConfig) -> u64 {
    use llm_router::cli_api::string_len;
    let deployments = &cfg.table.deployments;
    let model = deployments.iter().map(|d| string_len(&d.model)).max().unwrap_or(0);
    let defaults: usize = deployments
        .iter()
        .flat_map(|d| d.info.default_params.iter())
        .map(|(key, value)| string_len(key) + 1 + value.len() + 1)
        .sum();
    u64::try_from(model.saturating_add(defaults)).unwrap_or(u64::MAX)
}

/// The whole bootstrap. `env_keys`: the variables the config refers to (passed to the VM by name).
pub fn bootstrap(source: &Source, cfg: &RouterConfig, endpoints: &[Endpoint], env_keys: &[String], opts: &Options) -> Value {
    let idle_timeout = format!("{}s", idle_timeout_secs(cfg, opts));
    let body_limit = buffer_limit(cfg);
    let upstream_vm_id = if cfg.health_checks.enabled { UPSTREAM_PROBE_VM_ID } else { "llm_router" };
    let mut listeners = vec![ingress_listener(source, cfg, opts, env_keys, &idle_timeout, body_limit)];
    if opts.failover {
        listeners.push(redirector_listener(opts));
    }
    let rls = cfg.envoy.rate_limit_service.as_ref().map(|r| rls_cluster(&r.cluster, &opts.rls_address));
    let mut top = vec![("admin".to_string(), Value::map([("address", opts.admin.socket_address())]))];
    if cfg.envoy.metrics {
        top.push(("stats_config".to_string(), stats_config()));
    }
    top.push((
        "static_resources".to_string(),
        Value::map([
            ("listeners", Value::Seq(listeners)),
            ("clusters", Value::seq(endpoints.iter().map(|ep| cluster(ep, opts, body_limit, upstream_vm_id)).chain(rls))),
        ]),
    ));
    Value::Map(top)
}

/// `stats_config.stats_tags`: one tag per metric label, so the filter's `llm_router_*` stats
/// reach `/stats/prometheus` with labels (the labels ride in the stat name; see
/// `llm_router::metrics`).
pub fn stats_config() -> Value {
    use llm_router::cli_api::{tag_regex, TAGS};
    let tags = TAGS.iter().map(|t| Value::map([("tag_name", Value::from(*t)), ("regex", Value::from(tag_regex(t)))]));
    Value::map([("stats_tags", Value::seq(tags))])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_log_is_stdout_with_the_router_fields() {
        let json = access_log(AccessLog::Json);
        let fields = json.as_seq().and_then(|s| s.first()).and_then(|e| e.get("typed_config")).and_then(|t| t.get("log_format")).and_then(|f| f.get("json_format"));
        assert_eq!(fields.and_then(|f| f.get("cost_usd")).and_then(Value::as_str), Some("%FILTER_STATE(wasm.llm_router.cost_usd:PLAIN)%"));
        assert_eq!(fields.and_then(|f| f.get("status")).and_then(Value::as_str), Some("%RESPONSE_CODE%"));
        let log = access_log(AccessLog::Text);
        let entry = log.as_seq().and_then(|s| s.first()).unwrap_or_else(|| panic!("no access log"));
        assert_eq!(entry.get("name").and_then(Value::as_str), Some("envoy.access_loggers.stdout"));
        let format = entry
            .get("typed_config")
            .and_then(|t| t.get("log_format"))
            .and_then(|f| f.get("text_format_source"))
            .and_then(|f| f.get("inline_string"))
            .and_then(Value::as_str);
        assert_eq!(format, Some(ACCESS_LOG_FORMAT));
        assert!(ACCESS_LOG_FORMAT.contains("deployment=%FILTER_STATE(wasm.llm_router.deployment:PLAIN)%"));
    }

    #[test]
    fn addresses() {
        assert_eq!(Addr::parse("127.0.0.1:10000"), Ok(Addr { host: "127.0.0.1".into(), port: 10000 }));
        assert_eq!(Addr::parse("[::]:80"), Ok(Addr { host: "::".into(), port: 80 }));
        assert!(Addr::parse("10000").is_err());
        assert!(Addr::parse("h:99999").is_err());
        assert!(Addr::parse(":80").is_err());
    }

    #[test]
    fn stats_tags_cover_every_metric_label() {
        let Value::Map(top) = stats_config() else { panic!("not a map") };
        let Some((_, Value::Seq(tags))) = top.first() else { panic!("no stats_tags") };
        assert_eq!(tags.len(), llm_router::cli_api::TAGS.len());
        assert_eq!(
            tags.first(),
            Some(&Value::map([("tag_name", Value::from("model_group")), ("regex", Value::from(r"(model_group=\.=(.*?);\.;)"))]))
        );
    }
}
