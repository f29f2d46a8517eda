"""Start a real Envoy with the llm_router wasm filter in front of mock providers.

    with Envoy(plugin_config, {"outbound|18001||127.0.0.1": ("127.0.0.1", 18001)}) as envoy:
        post_json(envoy.base_url, "/v1/chat/completions", {...})

The bootstrap is JSON (Envoy reads it as YAML's subset) built by `bootstrap()`; envoy/demo.yaml holds the
same listener, routes and filters in YAML (tests/e2e/test_demo.py compares them through Envoy's config dump).

Ports: the listener and admin bind port 0 and Envoy picks free ones (no race with other processes); the admin
address comes back through --admin-address-path and the listener port through the admin /listeners.
Logs: every instance writes bootstrap.json and envoy.log under .run/e2e/<pid>-<n>-<label>/ and keeps them after the
run for post-mortems (the session fixture empties .run/e2e at the start of each run).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path
from typing import Optional, Union

REPO = Path(__file__).resolve().parents[3]
ENVOY_BIN = REPO / ".venv" / "bin" / "envoy"
WASM_PATH = REPO / "target" / "wasm32-wasip1" / "release" / "llm_router.wasm"
RUN_DIR = REPO / ".run" / "e2e"
CLUSTER_HEADER = "x-llm-router-cluster"
PASSTHROUGH_CLUSTER = "passthrough"

# The OpenAI-shaped body for Envoy's own 413 (request body over the listener's buffer limit, see buffer_limit()).
TOO_LARGE_BODY = ('{"error":{"message":"Request body too large","type":"invalid_request_error",'
                  '"param":null,"code":"request_too_large"}}')
# Only Envoy's own 413 is rewritten: a 413 the filter sends itself keeps its message, and upstream errors
# and 503/504 local replies are left alone.
ENVOY_413_FILTER = "response.code == 413 && response.code_details == 'request_payload_too_large'"

# Lines of the Envoy log that mean the wasm filter (hence its listener) was refused. Measured on Envoy 1.40:
# when on_configure returns false (or the module does not load), Envoy logs
#   [error][wasm] Wasm VM failed Failed to configure base Wasm plugin
#   [critical][wasm] Plugin llm_router failed to load
#   [critical][main] error `Unable to create Wasm plugin llm_router` initializing config '.../bootstrap.json'
# and exits with code 1 within ~0.2 s (a static listener's filter cannot be created, so the server stops).
REFUSAL_PATTERNS = (
    r"Wasm VM failed",
    r"Plugin \S+ failed to load",
    r"Unable to create Wasm plugin",
    r"error adding listener",
)

# The access-log line the router's properties feed (envoy/access-log.md; the same format is in envoy/demo.yaml and
# the CLI's bootstrap). The filter sets filter state `wasm.llm_router.*`; `-` when a value is unset.
ACCESS_LOG_FORMAT = (
    "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% "
    "%DURATION%ms deployment=%FILTER_STATE(wasm.llm_router.deployment:PLAIN)% "
    "group=%FILTER_STATE(wasm.llm_router.model_group:PLAIN)% attempts=%FILTER_STATE(wasm.llm_router.attempts:PLAIN)% "
    "fallback_from=%FILTER_STATE(wasm.llm_router.fallback_from:PLAIN)% "
    "prompt_tokens=%FILTER_STATE(wasm.llm_router.prompt_tokens:PLAIN)% "
    "completion_tokens=%FILTER_STATE(wasm.llm_router.completion_tokens:PLAIN)% "
    "upstream=%UPSTREAM_CLUSTER% request_id=%REQ(X-REQUEST-ID)%\n")

_counter = itertools.count(1)
_live: "weakref.WeakSet" = weakref.WeakSet()


def live_envoys() -> list:
    """Envoys started and not yet stopped (their logs are what a failing test wants to see)."""
    return [e for e in list(_live) if e.proc.poll() is None]


def plugin_config_json(plugin_config: Union[dict, str]) -> str:
    return plugin_config if isinstance(plugin_config, str) else json.dumps(plugin_config, indent=2)


def wasm_filter(plugin_config: Union[dict, str], wasm_path: Union[str, Path] = WASM_PATH,
                env: Optional[dict] = None, host_env_keys: tuple = ()) -> dict:
    """The http_filters entry of the llm_router filter (see shared notes: envoy-facts.md)."""
    env_vars: dict = {"key_values": dict(env or {})}
    if host_env_keys:
        env_vars["host_env_keys"] = list(host_env_keys)
    return {
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "llm_router",
                "root_id": "llm_router",
                "allow_on_headers_stop_iteration": True,
                "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                  "value": plugin_config_json(plugin_config)},
                "vm_config": {
                    "vm_id": "llm_router",
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": str(wasm_path)}},
                    "environment_variables": env_vars,
                },
            },
        },
    }


def strip_client_cluster_header() -> dict:
    """An HCM early header mutation: it runs before the route is chosen, so a client cannot pick the upstream
    cluster by sending the router's header itself (the first route matches on that header; the wasm filter sets
    it only on requests it routes, and a later removal would not clear the already-chosen route)."""
    return {"name": "envoy.http.early_header_mutation.header_mutation",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.http.early_header_mutation"
                                      ".header_mutation.v3.HeaderMutation",
                             "mutations": [{"remove": CLUSTER_HEADER}]}}


def buffer_filter(max_request_bytes: int = 1048576) -> dict:
    """Stand-in for the wasm filter in harness smoke tests: buffers bodies like the router does."""
    return {"name": "envoy.filters.http.buffer",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
                             "max_request_bytes": max_request_bytes}}


def local_reply_config() -> dict:
    return {"mappers": [{
        "filter": {"extension_filter": {
            "name": "envoy.access_loggers.extension_filters.cel",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3"
                                      ".ExpressionFilter",
                             "expression": ENVOY_413_FILTER}}},
        "body": {"inline_string": TOO_LARGE_BODY},
        "body_format_override": {"text_format_source": {"inline_string": "%LOCAL_REPLY_BODY%"},
                                 "content_type": "application/json"},
    }]}


# ---- wiring hardening: one constant or helper per concern. cli/src/envoy.rs (`llm-router envoy`) and envoy/demo.yaml
# carry the same values; tests/e2e/test_demo.py and tests/e2e/test_wiring_hardening.py fail when they drift.

# Routes have no total timeout (0s = none; Envoy's default would be 15 s): an SSE answer may stream for many minutes
# and must not be cut. What bounds an attempt is the router's per-try timeout (x-envoy-upstream-rq-per-try-timeout-ms,
# from the deployment's `timeout`): time to response headers, never a stream already flowing. STREAM_IDLE_TIMEOUT
# (the HCM's, both directions) ends a stream on which nothing moved for that long: long enough for a slow model's
# first byte (a non-streamed answer sends nothing until it is complete), short enough to free a hung connection.
# The CLI uses the same 600 s unless the config has a longer `timeout`.
ROUTE_TIMEOUT = "0s"
STREAM_IDLE_TIMEOUT = "600s"

# The listener's per-connection buffer limit is what answers 413 (measured: with the listener at 1 MiB + 64 KiB a
# 64 KiB cluster limit still forwarded and replayed a 1 MiB body; with the listener at 1 MiB a 1 MiB - 10 B body
# whose rewrite lengthened `model` was Envoy's 413). The router accepts bodies up to max_request_body_bytes and
# then lengthens them (the deployment's `model`, default_params; a failover keeps a previous deployment's defaults),
# so the buffer holds the limit plus REWRITE_HEADROOM_BYTES. The CLI computes the bound from the config and uses
# it when it is larger.
DEFAULT_MAX_REQUEST_BODY_BYTES = 1048576  # src/config/settings.rs DEFAULT_MAX_BODY_BYTES
REWRITE_HEADROOM_BYTES = 65536


def max_request_body_bytes(plugin_config: Union[dict, str]) -> int:
    """envoy_settings.max_request_body_bytes of a plugin config (the filter's default when absent or unreadable)."""
    try:
        cfg = json.loads(plugin_config_json(plugin_config))
        return int((cfg.get("envoy_settings") or {}).get("max_request_body_bytes", DEFAULT_MAX_REQUEST_BODY_BYTES))
    except (ValueError, TypeError, AttributeError):
        return DEFAULT_MAX_REQUEST_BODY_BYTES


def buffer_limit(plugin_config: Union[dict, str]) -> int:
    return max_request_body_bytes(plugin_config) + REWRITE_HEADROOM_BYTES


# HTTP/1.0 clients (OpenAI's API and common servers accept them) get 426 without this.
HTTP_PROTOCOL_OPTIONS = {"accept_http_10": True}

# Circuit breakers on every cluster. Envoy's defaults (1024 connections / pending / requests, 3 retries) are sized for
# short RPCs: with failover, every attempt that gets no response is retried once onto the redirector, and with more
# than 3 such retries in flight the rest are not attempted and the client gets Envoy's plain-text 503 (measured: 98
# of 256 requests, 64 concurrent, against a refusing deployment). One request has at most one retry in flight
# (num_retries 1) and one request per cluster at a time (redirect passes are sequential), so max_retries equal to
# max_requests can never overflow first. LLM requests are long (a stream lasts minutes), so thousands may be in
# flight per deployment; upstreams are HTTP/1.1 (one connection per request), hence the same figure for
# connections and pending requests. The breaker is not admission control (the providers' 429s and the router's
# cooldowns are); it only caps a runaway.
CIRCUIT_BREAKER_LIMIT = 10000


def circuit_breakers() -> dict:
    n = CIRCUIT_BREAKER_LIMIT
    return {"thresholds": [{"max_connections": n, "max_pending_requests": n, "max_requests": n, "max_retries": n}]}


# Failover (see ARCHITECTURE.md): the router route retries an attempt that got no response (connect failure,
# reset, per-try timeout) once, onto the cluster's priority-1 endpoint, the local redirector; its 307 and
# the upstream filter's 307s are followed as internal redirects back through the router.
FAILOVER_RETRY_POLICY = {
    # Only attempts that got no response (refused, reset, per-try timeout) are retried: a 5xx response is
    # the upstream filter's to handle (with the router's state), never Envoy's.
    "retry_on": "connect-failure,reset",
    "num_retries": 1,
    "retry_priority": {
        "name": "envoy.retry_priorities.previous_priorities",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3"
                                  ".PreviousPrioritiesConfig",
                         "update_frequency": 1}},
}
# The router's failover redirects all go to FAILOVER_PATH (src/failover/report.rs), so the policy follows only
# those: a 307 (the one code the router sends), never across schemes (the router's location is http://; a TLS
# listener would need true), and only when the location matches the named failover route. Without that predicate
# Envoy also follows a *provider's* 3xx and replays the request (rewritten, provider key included) to wherever it
# points (measured: a provider 307 to /steal reached the passthrough cluster). MAX_INTERNAL_REDIRECTS bounds one
# request's passes: each redirect is one more upstream attempt with the body replayed; 10 covers LiteLLM's
# defaults (max_fallbacks 5, one attempt per group, plus a retry onto the redirector) with room for num_retries;
# when it is reached the router answers with the failure the last 307 stood for.
FAILOVER_PATH = "/__llm_router/failover"
FAILOVER_ROUTE_NAME = "llm_router_failover"
MAX_INTERNAL_REDIRECTS = 10


def failover_redirect_policy(listener_tls: bool = False) -> dict:
    return {
        "redirect_response_codes": [307],
        "max_internal_redirects": MAX_INTERNAL_REDIRECTS,
        "allow_cross_scheme_redirect": listener_tls,
        "predicates": [{
            "name": "envoy.internal_redirect_predicates.allow_listed_routes",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.internal_redirect.allow_listed_routes.v3"
                                      ".AllowListedRoutesConfig",
                             "allowed_route_names": [FAILOVER_ROUTE_NAME]}}],
    }


FAILOVER_REDIRECT_POLICY = failover_redirect_policy()
# What a failover location leads to when the router does not recognise the pass (a forged location, a config
# reload between two passes): an OpenAI-shaped 404, never an upstream. The router sets the cluster header on a
# pass it verified, so those take the routed route before this one.
NOT_FOUND_BODY = ('{"error":{"message":"Not found: this gateway serves the OpenAI-style API of its configured models '
                  '(e.g. POST /v1/chat/completions)","type":"invalid_request_error","param":null,"code":"not_found"}}')


def failover_route() -> dict:
    return {"name": FAILOVER_ROUTE_NAME,
            "match": {"path": FAILOVER_PATH},
            "direct_response": {"status": 404, "body": {"inline_string": NOT_FOUND_BODY}},
            "response_headers_to_add": [{"header": {"key": "content-type", "value": "application/json"},
                                         "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]}


REDIRECTOR_HEADER = "x-llm-router-redirector"
REDIRECTOR_BODY = ('{"error":{"message":"The deployment did not answer (connection failed or timed out)",'
                   '"type":"api_error","param":null,"code":"upstream_unavailable"}}')


def route_config(passthrough: str = PASSTHROUGH_CLUSTER, route_timeout: str = ROUTE_TIMEOUT,
                 failover: bool = False) -> dict:
    routed = {"cluster_header": CLUSTER_HEADER, "timeout": route_timeout}
    if failover:
        routed["retry_policy"] = FAILOVER_RETRY_POLICY
        routed["internal_redirect_policy"] = FAILOVER_REDIRECT_POLICY
    routes = [
        {"match": {"prefix": "/", "headers": [{"name": CLUSTER_HEADER, "present_match": True}]},
         "route": routed,
         "request_headers_to_remove": [CLUSTER_HEADER]},
    ]
    if failover:
        routes.append(failover_route())
    routes.append({"match": {"prefix": "/"}, "route": {"cluster": passthrough, "timeout": route_timeout}})
    return {
        "name": "llm_router_routes",
        "virtual_hosts": [{"name": "llm", "domains": ["*"], "routes": routes}],
    }


def access_log(path: Union[str, Path], log_format: str = ACCESS_LOG_FORMAT) -> dict:
    """An access log with the router's fields (envoy/access-log.md explains each): to a file, or to Envoy's
    stdout for path "stdout" (as envoy/demo.yaml and the CLI's bootstrap do)."""
    log_format_field = {"log_format": {"text_format_source": {"inline_string": log_format}}}
    if str(path) == "stdout":
        return {"name": "envoy.access_loggers.stdout",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3"
                                          ".StdoutAccessLog", **log_format_field}}
    return {"name": "envoy.access_loggers.file",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                             "path": str(path), **log_format_field}}


def http_connection_manager(http_filters: list, passthrough: str = PASSTHROUGH_CLUSTER,
                            route_timeout: str = ROUTE_TIMEOUT, strip_cluster_header: bool = True,
                            failover: bool = False, access_log_path: Optional[Union[str, Path]] = None) -> dict:
    hcm = {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
                     ".HttpConnectionManager",
            "stat_prefix": "ingress",
            "codec_type": "AUTO",
            "http_protocol_options": HTTP_PROTOCOL_OPTIONS,
            "stream_idle_timeout": STREAM_IDLE_TIMEOUT,
            "route_config": route_config(passthrough, route_timeout, failover),
            "local_reply_config": local_reply_config(),
            "http_filters": http_filters + [{
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
        },
    }
    if strip_cluster_header:
        hcm["typed_config"]["early_header_mutation_extensions"] = [strip_client_cluster_header()]
    if access_log_path is not None:
        hcm["typed_config"]["access_log"] = [access_log(access_log_path)]
    return hcm


def upstream_wasm_filter(wasm_path: Union[str, Path] = WASM_PATH) -> dict:
    """The filter's upstream role (root_id llm_router_upstream) on a deployment cluster: it turns a failed
    attempt into the 307 that sends the request back through the router. Same VM as the router."""
    return {
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "llm_router_upstream",
                "root_id": "llm_router_upstream",
                # It holds a 400's headers while reading its body (context-window errors).
                "allow_on_headers_stop_iteration": True,
                "vm_config": {"vm_id": "llm_router", "runtime": "envoy.wasm.runtime.v8",
                              "code": {"local": {"filename": str(wasm_path)}}},
            },
        },
    }


def redirector_listener(port: int) -> dict:
    """The local endpoint a failed connection or a timed-out attempt is retried onto: it answers 307 (marked),
    which the upstream filter points back at the router."""
    return {
        "name": "llm_router_redirector",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
                         ".HttpConnectionManager",
                "stat_prefix": "llm_router_redirector",
                "route_config": {"virtual_hosts": [{"name": "redirector", "domains": ["*"], "routes": [{
                    "match": {"prefix": "/"},
                    "direct_response": {"status": 307, "body": {"inline_string": REDIRECTOR_BODY}},
                    "response_headers_to_add": [
                        {"header": {"key": REDIRECTOR_HEADER, "value": "1"}},
                        {"header": {"key": "content-type", "value": "application/json"}}]}]}]},
                "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
            }}]}],
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def static_cluster(name: str, host: str, port: int, redirector_port: Optional[int] = None,
                   wasm_path: Union[str, Path] = WASM_PATH) -> dict:
    """A deployment cluster; with `redirector_port`, wired for failover (upstream filter, priority-1
    redirector endpoint)."""
    cluster = _plain_cluster(name, host, port)
    if redirector_port is not None:
        cluster["load_assignment"]["endpoints"].append({"priority": 1, "lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": redirector_port}}}}]})
        cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"][
            "http_filters"] = [
            upstream_wasm_filter(wasm_path),
            {"name": "envoy.filters.http.upstream_codec", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"}}]
    return cluster


def grpc_cluster(name: str, host: str, port: int) -> dict:
    """A cluster speaking HTTP/2 (gRPC), without the upstream filter role."""
    cluster = _plain_cluster(name, host, port)
    cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"][
        "explicit_http_config"] = {"http2_protocol_options": {}}
    return cluster


def _plain_cluster(name: str, host: str, port: int) -> dict:
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "lb_policy": "ROUND_ROBIN",
        "circuit_breakers": circuit_breakers(),
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http_protocol_options": {}}}},
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}]}]},
    }


def bootstrap(plugin_config: Union[dict, str], clusters: dict, *, listener_port: int = 0, admin_port: int = 0,
              env: Optional[dict] = None, host_env_keys: tuple = (), passthrough: Optional[str] = None,
              wasm: bool = True, wasm_path: Union[str, Path] = WASM_PATH, route_timeout: str = ROUTE_TIMEOUT,
              failover_port: Optional[int] = None, access_log_path: Optional[Union[str, Path]] = None) -> dict:
    """The whole bootstrap. `clusters` maps cluster name -> (host, port); `passthrough` names the cluster for
    requests the filter does not route (default: the first of `clusters`). `failover_port`: wire in-request
    failover, with the redirector listening on that port (the passthrough cluster is left plain).
    `access_log_path`: the ingress listener writes ACCESS_LOG_FORMAT lines to that file ("stdout": Envoy's stdout)."""
    if not clusters:
        raise ValueError("at least one cluster is needed (the passthrough cluster)")
    passthrough = passthrough or next(iter(clusters))
    # A value (host, port, "h2") is a plain HTTP/2 cluster (a gRPC service such as the rate limit service).
    cluster_list = [grpc_cluster(name, v[0], v[1]) if len(v) == 3 and v[2] == "h2"
                    else static_cluster(name, v[0], v[1], None if name == passthrough else failover_port, wasm_path)
                    for name, v in clusters.items()]
    if passthrough not in clusters:
        raise ValueError(f"passthrough cluster {passthrough!r} is not among the clusters")
    if failover_port is not None and isinstance(plugin_config, dict):
        # The wiring is there: declare it, as an operator would (envoy_settings.failover), unless the test says.
        plugin_config = json.loads(json.dumps(plugin_config))
        plugin_config.setdefault("envoy_settings", {}).setdefault("failover", True)
    filters = [wasm_filter(plugin_config, wasm_path, env, host_env_keys)] if wasm else [buffer_filter()]
    extra_listeners = [redirector_listener(failover_port)] if failover_port is not None else []
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "stats_config": stats_config(),
        "static_resources": {
            "listeners": [{
                "name": "ingress",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": listener_port}},
                "per_connection_buffer_limit_bytes": buffer_limit(plugin_config),
                "filter_chains": [{"filters": [http_connection_manager(
                    filters, passthrough, route_timeout,
                    # Without the wasm filter (harness smoke tests) the client sets the header itself.
                    strip_cluster_header=wasm, failover=failover_port is not None,
                    access_log_path=access_log_path)]}],
            }] + extra_listeners,
            "clusters": cluster_list,
        },
    }


# The filter's metric labels ride in the stat name as `<label>=.=<value>;.;` segments before the metric name
# (src/metrics/encode.rs, Istio's convention); one stats_tags entry per label turns them into Prometheus labels (the
# first capture is cut from the name, the second is the value). Must list every label of src/metrics/catalogue.rs.
# The labels of the router's metrics (src/metrics/catalogue.rs TAGS; `llm-router envoy` writes the same).
METRIC_TAGS = ("model_group", "deployment", "class", "fallback_from", "error_code", "team", "key_alias", "scope", "scope_name", "rls_call", "rls_result")


def stats_config() -> dict:
    return {"stats_tags": [{"tag_name": t, "regex": f"({t}=\\.=(.*?);\\.;)"} for t in METRIC_TAGS]}


class EnvoyError(AssertionError):
    pass


def stop_process_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process group of `proc` (started with start_new_session), SIGKILL after 5 s."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


class _EnvoyProcess:
    """What both Envoy wrappers share: the log, and the admin endpoint found through --admin-address-path.

    Subclasses set log_path, _log (its open file), admin_address_path, admin_port (None until discovered) and proc."""

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def _admin_get(self, path: str, timeout: float = 2.0) -> tuple:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=timeout) as r:
            return r.status, r.read()

    def admin_ready(self) -> bool:
        """The admin port is known (read from --admin-address-path) and /ready answers 200."""
        if self.admin_port is None:
            try:
                addr = self.admin_address_path.read_text().strip()
            except FileNotFoundError:
                return False
            if not addr:
                return False
            self.admin_port = int(addr.rsplit(":", 1)[1])
        try:
            return self._admin_get("/ready")[0] == 200
        except (urllib.error.URLError, OSError):
            return False

    def listener_ports(self) -> dict:
        """Active listeners by name -> bound port (a warming listener is not listed)."""
        _, raw = self._admin_get("/listeners?format=json")
        out = {}
        for ls in json.loads(raw).get("listener_statuses", []):
            port = ls.get("local_address", {}).get("socket_address", {}).get("port_value")
            if port:
                out[ls["name"]] = int(port)
        return out

    def stats(self, prefix: str = "") -> dict:
        _, raw = self._admin_get("/stats?format=json" + (f"&filter={prefix}" if prefix else ""))
        return {s["name"]: s.get("value") for s in json.loads(raw).get("stats", []) if "name" in s}

    def config_dump(self) -> dict:
        return json.loads(self._admin_get("/config_dump")[1])

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL after 5 s; closes the log."""
        _live.discard(self)
        stop_process_group(self.proc)
        if not self._log.closed:
            self._log.close()


class Envoy(_EnvoyProcess):
    """One Envoy process. Starts at construction; `wait_ready()` (or `with Envoy(...) as e:`) waits for it.

    env: the wasm VM's environment (vm_config.environment_variables.key_values).
    host_env: variables set in Envoy's own process environment and passed to the VM by name (host_env_keys),
    as a production deployment would do with secrets.
    wasm=False: a buffer filter instead of the wasm filter (harness smoke tests).
    bootstrap_overrides: top-level bootstrap fields set over the built bootstrap (e.g. stats_flush_interval).
    """

    def __init__(self, plugin_config: Union[dict, str], clusters: dict, concurrency: int = 1,
                 env: Optional[dict] = None, extra_args: tuple = (), *, passthrough: Optional[str] = None,
                 wasm: bool = True, wasm_path: Union[str, Path, None] = None, route_timeout: str = ROUTE_TIMEOUT,
                 host_env: Optional[dict] = None, label: Optional[str] = None, failover: Union[bool, int] = False,
                 dynamic_listener: bool = False, access_log: Union[bool, str] = False,
                 bootstrap_overrides: Optional[dict] = None):
        self.concurrency = concurrency
        self._bootstrap_args = dict(env=env, host_env_keys=tuple(host_env or ()), passthrough=passthrough, wasm=wasm,
                                    route_timeout=route_timeout)
        self._clusters = clusters
        self.wasm_path = Path(wasm_path) if wasm_path else WASM_PATH
        n = next(_counter)
        if label is None:  # name the log folder after the running test, if any
            label = os.environ.get("PYTEST_CURRENT_TEST", "envoy").split("::")[-1].split(" ")[0]
        self.dir = RUN_DIR / f"{os.getpid()}-{n:03d}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', label)}"
        self.dir.mkdir(parents=True, exist_ok=True)
        # access_log=True: the ingress listener logs ACCESS_LOG_FORMAT lines to access.log (see access_lines());
        # "stdout": to Envoy's stdout (its log file), as envoy/demo.yaml does.
        self.access_log_path: Optional[Union[Path, str]] = (
            "stdout" if access_log == "stdout" else self.dir / "access.log" if access_log else None)
        self._bootstrap_args["access_log_path"] = self.access_log_path  # kept by reload_plugin_config
        self.bootstrap = bootstrap(plugin_config, clusters, env=env, host_env_keys=tuple(host_env or ()),
                                   passthrough=passthrough, wasm=wasm, wasm_path=self.wasm_path,
                                   route_timeout=route_timeout,
                                   failover_port=(failover if failover is not True else free_port()) or None,
                                   access_log_path=self.access_log_path)
        self.bootstrap.update(bootstrap_overrides or {})
        self.lds_path: Optional[Path] = None
        if dynamic_listener:
            # The ingress listener comes from a watched LDS file, so a test can reload the plugin config
            # the way a control plane would (reload_plugin_config). A fixed port: the listener keeps it.
            ingress = self.bootstrap["static_resources"]["listeners"][0]
            ingress["address"]["socket_address"]["port_value"] = free_port()
            self.bootstrap["static_resources"]["listeners"] = self.bootstrap["static_resources"]["listeners"][1:]
            self.lds_path = self.dir / "lds" / "lds.json"
            self.lds_path.parent.mkdir(exist_ok=True)
            self._write_lds(ingress)
            self.bootstrap["dynamic_resources"] = {"lds_config": {"resource_api_version": "V3", "path_config_source": {
                "path": str(self.lds_path), "watched_directory": {"path": str(self.lds_path.parent)}}}}
            self.bootstrap["node"] = {"id": "llm-router-e2e", "cluster": "e2e"}
        self.bootstrap_path = self.dir / "bootstrap.json"
        self.bootstrap_path.write_text(json.dumps(self.bootstrap, indent=2))
        self.log_path = self.dir / "envoy.log"
        self.admin_address_path = self.dir / "admin-address"
        self.listener_port: Optional[int] = None
        self.admin_port: Optional[int] = None
        if not ENVOY_BIN.exists():
            raise EnvoyError(f"{ENVOY_BIN} is missing: run scripts/setup")
        if wasm and not self.wasm_path.exists():
            raise EnvoyError(f"{self.wasm_path} is missing: run scripts/build")
        cmd = [str(ENVOY_BIN), "-c", str(self.bootstrap_path), "--concurrency", str(concurrency),
               "--log-level", "info", "--component-log-level", os.environ.get("E2E_WASM_LOG", "wasm:debug"), "--use-dynamic-base-id",
               "--admin-address-path", str(self.admin_address_path), *extra_args]
        if isinstance(self.access_log_path, Path):
            cmd += ["--file-flush-interval-msec", "100"]  # Envoy's default is 10 s
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=REPO, start_new_session=True, env={**os.environ, **(host_env or {})})
        _live.add(self)

    # ---- addresses -------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        if self.listener_port is None:
            self.wait_ready()
        return f"http://127.0.0.1:{self.listener_port}"

    @property
    def admin_url(self) -> str:
        if self.admin_port is None:
            self.wait_ready()
        return f"http://127.0.0.1:{self.admin_port}"

    # ---- logs --------------------------------------------------------------------------------
    def access_lines(self) -> list:
        """The access log file's lines so far (flushed every 100 ms here, Envoy's default is 10 s: poll)."""
        try:
            if not isinstance(self.access_log_path, Path):
                return []
            return self.access_log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []

    # ---- readiness ---------------------------------------------------------------------------
    def _discover(self) -> bool:
        if not self.admin_ready():
            return False
        if self.listener_port is None:
            try:
                self.listener_port = self.listener_ports().get("ingress")
            except (urllib.error.URLError, OSError):
                return False
            if self.listener_port is None:
                return False
        try:
            socket.create_connection(("127.0.0.1", self.listener_port), timeout=1).close()
        except OSError:
            return False
        return True

    def wait_ready(self, timeout: float = 20.0) -> "Envoy":
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise EnvoyError(f"Envoy exited with code {self.proc.returncode} before it was ready; "
                                 f"log {self.log_path}:\n{self.log_tail()}")
            if self._discover():
                return self
            if time.monotonic() > deadline:
                raise EnvoyError(f"Envoy was not ready within {timeout}s; log {self.log_path}:\n{self.log_tail()}")
            time.sleep(0.05)

    # ---- plugin config reload (dynamic_listener=True) ---------------------------------------
    def _write_lds(self, listener: dict) -> None:
        assert self.lds_path is not None
        tmp = self.lds_path.parent / "lds.json.tmp"
        tmp.write_text(json.dumps({"resources": [
            {"@type": "type.googleapis.com/envoy.config.listener.v3.Listener", **listener}]}, indent=2))
        os.replace(tmp, self.lds_path)

    def reload_plugin_config(self, plugin_config: Union[dict, str], timeout: float = 10.0) -> None:
        """Pushes a new plugin config through LDS and waits until Envoy has applied it."""
        assert self.lds_path is not None, "start the Envoy with dynamic_listener=True"
        before = self.stats("listener_manager.lds.update_success").get("listener_manager.lds.update_success", 0)
        fresh = bootstrap(plugin_config, self._clusters, wasm_path=self.wasm_path, **self._bootstrap_args)
        listener = fresh["static_resources"]["listeners"][0]
        listener["address"]["socket_address"]["port_value"] = self.listener_port
        self._write_lds(listener)
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats("listener_manager")
            if stats.get("listener_manager.lds.update_success", 0) > before and \
                    stats.get("listener_manager.total_listeners_warming", 0) == 0:
                return
            if stats.get("listener_manager.lds.update_rejected", 0):
                raise EnvoyError("Envoy rejected the new listener; log tail:\n" + self.log_tail())
            if time.monotonic() > deadline:
                raise EnvoyError("the listener update did not apply in time; log tail:\n" + self.log_tail())
            time.sleep(0.05)

    # ---- admin helpers -----------------------------------------------------------------------
    def __enter__(self) -> "Envoy":
        try:
            return self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()

    def __del__(self):
        try:
            self.stop()
        except Exception:
            pass

    # ---- configs that must be refused --------------------------------------------------------
    @classmethod
    def expect_refused(cls, plugin_config: Union[dict, str], clusters: Optional[dict] = None,
                       env: Optional[dict] = None, timeout: float = 20.0, **kwargs) -> tuple:
        """Start Envoy with a plugin config the filter must refuse.

        Returns (exited, log_text) once Envoy has exited or its log shows the filter/listener was refused.
        Raises EnvoyError when Envoy instead comes up serving the listener, or nothing happens in `timeout`.
        """
        if clusters is None:
            clusters = {PASSTHROUGH_CLUSTER: ("127.0.0.1", 9)}
        envoy = cls(plugin_config, clusters, env=env, **kwargs)
        refusal = re.compile("|".join(REFUSAL_PATTERNS))
        deadline = time.monotonic() + timeout
        try:
            while True:
                if envoy.proc.poll() is not None:
                    envoy.stop()
                    return True, envoy.log_text()
                if refusal.search(envoy.log_text()):
                    # Give it a moment to exit (a static listener's filter failure ends the process).
                    try:
                        envoy.proc.wait(timeout=2)
                    except subprocess.TimeoutExpired:
                        pass
                    exited = envoy.proc.poll() is not None
                    envoy.stop()
                    return exited, envoy.log_text()
                if envoy._discover():
                    envoy.stop()
                    raise EnvoyError("Envoy accepted the config and serves the listener; log tail:\n"
                                     + envoy.log_tail())
                if time.monotonic() > deadline:
                    envoy.stop()
                    raise EnvoyError(f"Envoy neither exited nor logged a refusal within {timeout}s; log tail:\n"
                                     + envoy.log_tail())
                time.sleep(0.05)
        finally:
            envoy.stop()


def clusters_for(*mocks, passthrough=None) -> dict:
    """Istio-style clusters (`outbound|PORT||127.0.0.1`) for mocks, plus an optional `passthrough` cluster
    pointing at the given mock (it comes first, so it is the default passthrough)."""
    out: dict = {}
    if passthrough is not None:
        out[PASSTHROUGH_CLUSTER] = (passthrough.host, passthrough.port)
    for m in mocks:
        out[m.cluster_name] = (m.host, m.port)
    return out


class BootstrapEnvoy(_EnvoyProcess):
    """Envoy on a bootstrap built elsewhere (e.g. support/istio_translate.py): listeners by name, ports 0 allowed.

    Same process handling, log folder and failure reports as `Envoy` (it joins the live set the conftest reports).
    """

    def __init__(self, bootstrap_path: Union[str, Path], env: Optional[dict] = None, label: str = "bootstrap",
                 concurrency: int = 1):
        n = next(_counter)
        self.dir = RUN_DIR / f"{os.getpid()}-{n:03d}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', label)}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.bootstrap_path = Path(bootstrap_path)
        self.log_path = self.dir / "envoy.log"
        self.admin_address_path = self.dir / "admin-address"
        self.admin_port: Optional[int] = None
        self.ports: dict = {}
        if not ENVOY_BIN.exists():
            raise EnvoyError(f"{ENVOY_BIN} is missing: run scripts/setup")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [str(ENVOY_BIN), "-c", str(self.bootstrap_path), "--concurrency", str(concurrency), "--log-level", "info",
             "--component-log-level", os.environ.get("E2E_WASM_LOG", "wasm:debug"), "--use-dynamic-base-id",
             "--admin-address-path", str(self.admin_address_path), "--file-flush-interval-msec", "100"],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO, start_new_session=True,
            env={**os.environ, **(env or {})})
        _live.add(self)

    def wait_ready(self, names: tuple, timeout: float = 30.0) -> "BootstrapEnvoy":
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise EnvoyError(f"Envoy exited with code {self.proc.returncode}; log {self.log_path}:\n{self.log_tail()}")
            try:
                if self.admin_ready():
                    ports = self.listener_ports()
                    if all(n in ports for n in names):
                        for n in names:
                            socket.create_connection(("127.0.0.1", ports[n]), timeout=1).close()
                        self.ports = ports
                        return self
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise EnvoyError(f"Envoy was not ready within {timeout}s; log {self.log_path}:\n{self.log_tail()}")
            time.sleep(0.05)

    def url(self, listener: str) -> str:
        return f"http://127.0.0.1:{self.ports[listener]}"

