"""Turn Istio objects (what `llm-router istio` writes) into the Envoy config istiod and istio-agent would give a gateway.

    t = translate(objects, proxy=Proxy(), upstreams={"api.openai.com:443": ("127.0.0.1", 41001)},
                  modules={"https://m.example/llm_router.wasm": WASM_PATH}, root_ca=ca_pem,
                  env_patch=patch, secrets={"llm-router-keys": {"OPENAI_API_KEY": "sk-..."}}, workdir=tmp)
    envoy = BootstrapEnvoy(t.bootstrap_path, env=t.env)      # support/envoy.py

Every rule below follows one Istio source file (istio/istio at tag 1.28.0, the first release whose istiod keeps
`allow_on_headers_stop_iteration`; the same code at 1.30.0 unless said otherwise), cited where it is applied:

  R1  pilot/pkg/model/push_context.go `mergeGateways`: a Gateway applies to a proxy whose labels contain its `selector`,
      from any namespace. pilot/pkg/model/gateway.go `gatewayRDSRouteName`: every HTTP server on port N shares the
      route configuration `http.N`.
  R2  push_context.go `EnvoyFilters` / `getMatchedEnvoyFilters`: EnvoyFilters of the root namespace and of the
      proxy's namespace whose workloadSelector the proxy's labels contain, sorted by priority, root first, then
      name; `proxyMatch` keeps a patch only when `match.proxy.proxyVersion` (a regex) matches the proxy's version.
  R3  visibility (pilot/pkg/model/push_context.go, pkg/config/visibility): an object is visible to a namespace when its
      `exportTo` is absent (mesh default `*`), holds `*`, holds that namespace, or holds `.` and it lives there.
  R4  pilot/pkg/networking/core/gateway.go `buildGatewayListeners` / `createGatewayHTTPFilterChainOpts` /
      `buildGatewayConnectionManager` and listener_builder.go `buildHTTPConnectionManager`: one listener
      `0.0.0.0_N` per port, its HCM: codec AUTO, use_remote_address, normalize_path (mesh default BASE),
      path_with_escaped_slashes_action KEEP_UNCHANGED, websocket upgrades, stream_idle_timeout 0s, empty
      http_protocol_options (accept_http_10 only with PILOT_HTTP10 / ISTIO_META_HTTP10), SANITIZE_SET client-cert
      details, RDS `http.N` with initial_fetch_timeout 0s.
  R5  listener_builder.go `buildHTTPConnectionManager`: HTTP filters of a gateway without RequestAuthentication,
      AuthorizationPolicy, WasmPlugin or Telemetry: istio.metadata_exchange, grpc_stats (pilot/pkg/xds/filters
      `GrpcStats`: emit_filter_state, stats_for_all_methods false), istio.alpn, fault, cors, istio.stats, router.
  R6  pilot/pkg/networking/core/envoyfilter/listener_patch.go `ApplyListenerPatches`: LISTENER MERGE, then
      NETWORK_FILTER (MERGE merges typed_config of the same type, util.MergeAnyWithAny), then HTTP_FILTER
      (ADD / INSERT_FIRST / INSERT_BEFORE / INSERT_AFTER with a subFilter match); `listenerMatch` (name,
      portNumber of the listener address), `filterChainMatch`, `networkFilterMatch`, `httpFilterMatch`.
      Merging follows proto.Merge (pkg/proto/merge): scalars replaced, messages merged, lists appended.
  R7  pilot/pkg/networking/core/extension_config_builder.go `BuildExtensionConfiguration` and
      envoyfilter/extension_configuration_patch.go `InsertedExtensionConfigurations`: the ECDS answer for a name an
      HTTP filter's config_discovery asks for is the EXTENSION_CONFIG ADD value of that name, as written.
  R8  pkg/wasm/convert.go `MaybeConvertWasmExtensionConfig` / `rewriteVMConfig` (istio-agent, every ECDS response):
      a Wasm config whose code is remote is downloaded, checked against `sha256` (pkg/wasm/cache.go: the binary's
      sha256 for http(s), the manifest digest for oci; "nil" means none), ISTIO_META_* key_values are stripped and
      `code` becomes a local file; when the fetch fails the resource becomes an RBAC filter, allow-all for
      FAIL_OPEN, deny-all otherwise. Local code passes unchanged.
  R9  gateway.go `buildGatewayHTTPRouteConfig`: for each server of the route, the VirtualServices bound to its Gateway
      (push_context.go `VirtualServicesForGateway`; a `gateways` entry without `/` is in the VirtualService's
      namespace) whose hosts intersect the server's (`ns/host`, `./host` = the Gateway's namespace, `*/host`);
      one virtual host per host, named `host:port`, `domains: [host]` (1.28.0+: no `host:*` entry, the route
      configuration sets ignore_port_in_host_matching instead), routes of every VirtualService for that host
      appended, catch-all routes last (route/route.go `SortVHostRoutes`), hosts with identical route lists
      collapsed into one virtual host (`collapseDuplicateRoutes`); none at all: one `blackhole:N` vhost on `*` with
      no routes (404 NR). validate_clusters false, max_direct_response_body_size_bytes 1 MiB.
  R10 route/route.go `BuildHTTPRoutesForVirtualService` / `TranslateRoute` / `TranslateRouteMatch` /
      `translateHeaderMatch` / `TranslateHeadersOperations` / `setTimeout` / `GetDestinationCluster`: a route per
      match (stopping after a catch-all), prefix `/` by default, header matchers sorted by name, case_sensitive
      unless ignoreUriCase, cluster `outbound|PORT||HOST` (the destination's port, else the service's only port),
      timeout = the VirtualService's or 0s, max_grpc_timeout 0s (= timeout when set), headers.request.remove ->
      request_headers_to_remove (pseudo-headers and host dropped), decorator `host:port/*`.
  R11 route/retry/retry.go `ConvertPolicy`: no `retries` -> Istio's default (2 retries on
      connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes, previous_hosts predicate,
      host_selection_retry_max_attempts 5); attempts 0 -> none; otherwise the default with attempts, retryOn (status
      codes split into retriable_status_codes) and perTryTimeout replaced.
  R12 pilot/pkg/serviceregistry/serviceentry/conversion.go `convertServices` / `convertServiceEntryToInstances`:
      one service per ServiceEntry host, its ports; a DNS entry without endpoints has the host itself as its endpoint
      (on targetPort, else the port). cluster_builder.go `buildCluster` and cluster.go: one cluster `outbound|P||H` per
      service port, STRICT_DNS for DNS (dns_lookup_family V4_ONLY, respect_dns_ttl, dns_refresh_rate 60s) or STATIC,
      connect_timeout 10s (mesh default, pkg/config/mesh/mesh.go), lb_policy LEAST_REQUEST
      (cluster_traffic_policy.go), circuit breakers at max uint32 with track_remaining
      (`getDefaultCircuitBreakerThresholds`) unless a DestinationRule's connectionPool sets them (`applyConnectionPool`:
      tcp.maxConnections, http.http1MaxPendingRequests, http.http2MaxRequests -> max_requests, http.maxRetries).
  R13 cluster_tls.go `buildUpstreamTLSContext` / `constructUpstreamTLS`: DestinationRule tls SIMPLE -> an
      UpstreamTlsContext with `sni`, a combined validation context of `match_subject_alt_names` (exact; the
      subjectAltNames, else the ServiceEntry's) and the SDS secret `file-root:system` (no caCertificates: the node's
      system roots, pkg/security/security.go `FileRootSystemCACert`), served by istio-agent; with `sni` set or
      subjectAltNames given istiod sets no auto_sni / auto_san_validation. DISABLE: no transport socket.
  R14 the gateway container's environment: the Deployment's `env` (value, or valueFrom.secretKeyRef read from the
      Secret), which `host_env_keys` passes to the VM by name.

What differs from a cluster, and only this (each marked DEVIATION where it is applied):
  D1  upstream addresses: a ServiceEntry host's endpoint (the host name, resolved by DNS in a cluster) is replaced by
      the loopback address of the mock standing in for it (`upstreams["host:port"]`); the mocks speak TLS with a
      certificate for that host from a test CA, and that CA is what the SDS secret `file-root:system` holds (a static
      secret of the same name instead of istio-agent's SDS answer).
  D2  transport: ADS from istiod becomes files read by Envoy (ECDS and RDS as path_config_source subscriptions, same
      resource names, same initial_fetch_timeout); listeners and clusters are static. The listener binds 127.0.0.1
      on a free port instead of 0.0.0.0:N.
  D3  the module: istio-agent's download is the test's local file for that URL, checked against the sha256 exactly
      as the agent checks a download (R8).
  D4  the istio-proxy-only HTTP filters of R5 (istio.metadata_exchange, istio.alpn, istio.stats) are left out: stock
      Envoy does not have them. They sit before (mx) and after (alpn, stats) the filter and do not touch routing or
      request headers (mx adds x-envoy-peer-metadata only for mesh peers, alpn sets upstream ALPN for in-mesh mTLS).
  D5  an access log on the listener (for the test's post-mortems; it changes nothing else).

Anything else in the objects (another kind, field, operation, match or value shape) raises Untranslatable: the
test fails instead of silently running something istiod would build differently.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

ISTIO_SOURCE = "istio/istio@1.28.0"

WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
HCM_NAME = "envoy.filters.network.http_connection_manager"
HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
TEC_TYPE = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"
ROUTE_CONFIG_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
SYSTEM_ROOTS = "file-root:system"
MAX_U32 = 4294967295


class Untranslatable(AssertionError):
    """An object or field the translator does not know how to translate (the test must fail, not skip it)."""


@dataclass
class Proxy:
    """The gateway pod istiod builds for: its namespace, labels and Istio version (node metadata ISTIO_VERSION)."""

    namespace: str = "istio-system"
    labels: dict = field(default_factory=lambda: {"istio": "ingressgateway", "app": "istio-ingressgateway"})
    version: str = "1.28.0"
    root_namespace: str = "istio-system"  # meshConfig.rootNamespace default


@dataclass
class Translation:
    bootstrap: dict
    bootstrap_path: Path
    env: dict  # the gateway container's environment (R14)
    listeners: dict  # server port -> listener name
    ecds: dict  # resource name -> the resource as Envoy receives it (after R8)
    routes: dict  # route name -> RouteConfiguration
    clusters: list


# ---- strict reading --------------------------------------------------------------------------------------------

def _keys(obj: Any, where: str, allowed: set, required: tuple = ()) -> dict:
    if not isinstance(obj, dict):
        raise Untranslatable(f"{where}: expected a mapping, got {type(obj).__name__}")
    unknown = set(obj) - allowed
    if unknown:
        raise Untranslatable(f"{where}: fields {sorted(unknown)} are not translated (known: {sorted(allowed)})")
    for r in required:
        if r not in obj:
            raise Untranslatable(f"{where}: missing {r}")
    return obj


def _one_of(value: Any, where: str, allowed: tuple) -> Any:
    if value not in allowed:
        raise Untranslatable(f"{where}: {value!r} is not translated (known: {list(allowed)})")
    return value


def _duration_s(d: str, where: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)", str(d))
    if not m:
        raise Untranslatable(f"{where}: duration {d!r}")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


API_VERSIONS = {
    "EnvoyFilter": ("networking.istio.io/v1alpha3",),
    "Gateway": ("networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3"),
    "VirtualService": ("networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3"),
    "ServiceEntry": ("networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3"),
    "DestinationRule": ("networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3"),
}


def _object(o: Any, i: int) -> tuple:
    where = f"object {i}"
    _keys(o, where, {"apiVersion", "kind", "metadata", "spec"}, ("apiVersion", "kind", "metadata", "spec"))
    kind = o["kind"]
    if kind not in API_VERSIONS:
        raise Untranslatable(f"{where}: kind {kind!r} is not translated (known: {sorted(API_VERSIONS)})")
    _one_of(o["apiVersion"], f"{where} ({kind}) apiVersion", API_VERSIONS[kind])
    meta = _keys(o["metadata"], f"{where} metadata", {"name", "namespace", "labels"}, ("name", "namespace"))
    return kind, meta["namespace"], meta["name"], o["spec"]


def _visible(spec: dict, obj_ns: str, to_ns: str) -> bool:
    """R3."""
    export = spec.get("exportTo")
    if export is None:
        return True
    return "*" in export or to_ns in export or ("." in export and obj_ns == to_ns)


def _subset(selector: Optional[dict], labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in (selector or {}).items())


# ---- proto-ish merge (R6) ----------------------------------------------------------------------------------------

def _merge(dst: Any, src: Any) -> Any:
    """proto.Merge on the JSON form: messages merged field by field, lists appended, scalars replaced; an Any
    (`@type`) merges only into an Any of the same type (util.MergeAnyWithAny)."""
    if isinstance(dst, dict) and isinstance(src, dict):
        if "@type" in dst and "@type" in src and dst["@type"] != src["@type"]:
            raise Untranslatable(f"MERGE of {src['@type']} into {dst['@type']}")
        out = dict(dst)
        for k, v in src.items():
            out[k] = _merge(out[k], v) if k in out else copy.deepcopy(v)
        return out
    if isinstance(dst, list) and isinstance(src, list):
        return dst + copy.deepcopy(src)
    return copy.deepcopy(src)


# ---- EnvoyFilter (R2, R6, R7) ------------------------------------------------------------------------------------

PATCH_OPS = {
    "EXTENSION_CONFIG": ("ADD",),
    "LISTENER": ("MERGE",),
    "NETWORK_FILTER": ("MERGE",),
    "HTTP_FILTER": ("ADD", "INSERT_FIRST", "INSERT_BEFORE", "INSERT_AFTER"),
}


def _patches(filters: list, proxy: Proxy) -> dict:
    """R2: the patches that reach `proxy`, by applyTo, in istiod's order."""
    def key(f):
        ns, name, spec = f
        return (spec.get("priority", 0), ns != proxy.root_namespace, name)

    out: dict = {k: [] for k in PATCH_OPS}
    for ns, name, spec in sorted(filters, key=key):
        where = f"EnvoyFilter {ns}/{name}"
        _keys(spec, where, {"workloadSelector", "configPatches", "priority"}, ("configPatches",))
        if ns not in (proxy.root_namespace, proxy.namespace):
            continue
        sel = _keys(spec.get("workloadSelector", {}), f"{where} workloadSelector", {"labels"}).get("labels")
        if not _subset(sel, proxy.labels):
            continue
        for j, cp in enumerate(spec["configPatches"]):
            w = f"{where} configPatches[{j}]"
            _keys(cp, w, {"applyTo", "match", "patch"}, ("applyTo", "patch"))
            apply_to = _one_of(cp["applyTo"], f"{w} applyTo", tuple(PATCH_OPS))
            patch = _keys(cp["patch"], f"{w} patch", {"operation", "value"}, ("operation", "value"))
            _one_of(patch["operation"], f"{w} patch.operation", PATCH_OPS[apply_to])
            match = _keys(cp.get("match", {}), f"{w} match", {"context", "proxy", "listener"})
            context = _one_of(match.get("context", "ANY"), f"{w} match.context", ("GATEWAY", "ANY"))
            if "proxy" in match:
                pm = _keys(match["proxy"], f"{w} match.proxy", {"proxyVersion"})
                if "proxyVersion" in pm and not re.search(pm["proxyVersion"], proxy.version):
                    continue  # proxyMatch
            if "listener" in match:
                lm = _keys(match["listener"], f"{w} match.listener", {"name", "portNumber", "filterChain"})
                if "filterChain" in lm:
                    fc = _keys(lm["filterChain"], f"{w} match.listener.filterChain", {"filter"})
                    if "filter" in fc:
                        fm = _keys(fc["filter"], f"{w} match.listener.filterChain.filter", {"name", "subFilter"}, ("name",))
                        if "subFilter" in fm:
                            _keys(fm["subFilter"], f"{w} ...subFilter", {"name"}, ("name",))
                            if apply_to != "HTTP_FILTER":
                                raise Untranslatable(f"{w}: subFilter match on {apply_to}")
            if apply_to == "EXTENSION_CONFIG":
                _keys(patch["value"], f"{w} value", {"name", "typed_config"}, ("name", "typed_config"))
            if apply_to in ("HTTP_FILTER", "NETWORK_FILTER"):
                _keys(patch["value"], f"{w} value", {"name", "typed_config", "config_discovery"}, ("name",))
            out[apply_to].append({"where": w, "context": context, "match": match, "op": patch["operation"],
                                  "value": patch["value"]})
    return out


def _listener_match(p: dict, listener: dict) -> bool:
    lm = p["match"].get("listener")
    if not lm:
        return True
    if "name" in lm and lm["name"] != listener["name"]:
        return False
    if lm.get("portNumber") and lm["portNumber"] != listener["_port"]:
        return False
    return True


def _filter_match(p: dict, f: dict) -> bool:
    fm = ((p["match"].get("listener") or {}).get("filterChain") or {}).get("filter")
    return fm is None or fm["name"] == f["name"]


def _sub_filter(p: dict) -> Optional[str]:
    fm = ((p["match"].get("listener") or {}).get("filterChain") or {}).get("filter") or {}
    return (fm.get("subFilter") or {}).get("name")


def _apply_listener_patches(listener: dict, patches: dict) -> dict:
    """R6, in ApplyListenerPatches' order."""
    for p in patches["LISTENER"]:
        if _listener_match(p, listener):
            listener = _merge(listener, p["value"])
    for chain in listener["filter_chains"]:
        for i, f in enumerate(chain["filters"]):
            for p in patches["NETWORK_FILTER"]:
                if _listener_match(p, listener) and _filter_match(p, f):
                    f = _merge(f, p["value"])
            chain["filters"][i] = f
            if f["name"] != HCM_NAME:
                continue
            hcm = f["typed_config"]
            filters = hcm["http_filters"]
            for p in patches["HTTP_FILTER"]:
                if not (_listener_match(p, listener) and _filter_match(p, f)):
                    continue
                value, sub = copy.deepcopy(p["value"]), _sub_filter(p)
                if p["op"] == "ADD":
                    filters.append(value)
                elif p["op"] == "INSERT_FIRST" or (p["op"] == "INSERT_BEFORE" and sub is None):
                    filters.insert(0, value)
                elif p["op"] == "INSERT_AFTER" and sub is None:
                    filters.append(value)
                else:
                    at = next((k for k, h in enumerate(filters) if h["name"] == sub), None)
                    if at is not None:  # insertBeforeFunc/insertAfterFunc: no match, no insert
                        filters.insert(at if p["op"] == "INSERT_BEFORE" else at + 1, value)
    return listener


# ---- istio-agent (R8) --------------------------------------------------------------------------------------------

def _agent_convert(resource: dict, modules: dict) -> dict:
    tc = resource["typed_config"]
    if tc.get("@type") != WASM_TYPE:
        raise Untranslatable(f"ECDS resource {resource['name']}: typed_config {tc.get('@type')} is not translated")
    cfg = copy.deepcopy(tc)
    config = _keys(cfg.get("config"), f"ECDS {resource['name']} config",
                   {"name", "root_id", "vm_config", "configuration", "failure_policy", "allow_on_headers_stop_iteration",
                    "fail_open"}, ("vm_config",))
    vm = _keys(config["vm_config"], f"ECDS {resource['name']} vm_config",
               {"vm_id", "runtime", "code", "environment_variables"}, ("code",))
    env = vm.get("environment_variables")
    if env is not None:
        _keys(env, "environment_variables", {"host_env_keys", "key_values"})
        kv = {k: v for k, v in (env.get("key_values") or {}).items() if not k.startswith("ISTIO_META_")}
        if kv:
            env["key_values"] = kv
        else:
            env.pop("key_values", None)
            if not env.get("host_env_keys"):
                vm.pop("environment_variables")
    code = _keys(vm["code"], "vm_config.code", {"local", "remote"})
    if "local" in code:
        return {"name": resource["name"], "typed_config": cfg}
    remote = _keys(code["remote"], "code.remote", {"http_uri", "sha256", "retry_policy"}, ("http_uri",))
    uri = _keys(remote["http_uri"], "http_uri", {"uri", "cluster", "timeout"}, ("uri",))["uri"]
    expected = "" if remote.get("sha256") in (None, "nil") else remote["sha256"]
    path = modules.get(uri)
    failure = None
    if path is None:
        failure = f"cannot fetch Wasm module {uri}"
    else:
        data = Path(path).read_bytes()
        got = hashlib.sha256(data).hexdigest()
        if uri.startswith("oci://"):
            raise Untranslatable("oci:// modules: the test has no registry to take the manifest digest from")
        if expected and got != expected:
            failure = f"module downloaded from {uri} has checksum {got}, which does not match: {expected}"
        elif not data.startswith(b"\0asm"):
            failure = f"fetched Wasm binary from {uri} is invalid"
    if failure is not None:
        # createHTTPDefaultFilter: RBAC allow-all for FAIL_OPEN, deny-all otherwise.
        fail_open = config.get("failure_policy") == "FAIL_OPEN" or (
            config.get("failure_policy") in (None, "UNSPECIFIED") and config.get("fail_open"))
        rbac = {"@type": RBAC_TYPE, "rules_stat_prefix": "wasm-default-allow" if fail_open else "wasm-default-deny"}
        if not fail_open:
            rbac["rules"] = {}
        return {"name": resource["name"], "typed_config": rbac, "_agent_error": failure}
    vm["code"] = {"local": {"filename": str(path)}}
    return {"name": resource["name"], "typed_config": cfg}


# ---- routes (R9, R10, R11) ---------------------------------------------------------------------------------------

def _string_match(m: Any, where: str) -> Optional[dict]:
    m = _keys(m if m is not None else {}, where, {"exact", "prefix", "regex"})
    if not m or m.get("regex") == "*":
        return None  # canBeConvertedToPresentMatch
    (kind, value), = m.items()
    return {"exact": value} if kind == "exact" else {"prefix": value} if kind == "prefix" else \
        {"safe_regex": {"regex": value}}


def _retry_policy(r: Optional[dict], where: str) -> Optional[dict]:
    """R11."""
    default = {"retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
               "num_retries": 2,
               "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts",
                                         "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host"
                                                                   ".previous_hosts.v3.PreviousHostsPredicate"}}],
               "host_selection_retry_max_attempts": 5}
    if r is None:
        return default
    _keys(r, f"{where} retries", {"attempts", "retryOn", "perTryTimeout"})
    if r.get("attempts", 0) <= 0:
        return None
    out = dict(default, num_retries=r["attempts"])
    if r.get("retryOn"):
        parts = [p.strip() for p in r["retryOn"].split(",") if p.strip()]
        codes = [int(p) for p in parts if p.isdigit()]
        rest = [p for p in parts if not p.isdigit()]
        out["retry_on"] = ",".join(rest)
        if codes:
            out["retriable_status_codes"] = codes
            if "retriable-status-codes" not in out["retry_on"]:
                out["retry_on"] += ",retriable-status-codes"
    if "perTryTimeout" in r:
        out["per_try_timeout"] = r["perTryTimeout"]
    return out


def _translate_route(http: dict, match: Optional[dict], port: int, services: dict, where: str) -> dict:
    """R10."""
    _keys(http, where, {"name", "match", "route", "headers", "timeout", "retries"}, ("route",))
    name = http.get("name", "")
    rm: dict = {"prefix": "/"}
    if match is not None:
        _keys(match, f"{where} match", {"name", "uri", "headers", "ignoreUriCase"})
        if match.get("name"):
            name = f"{name}.{match['name']}"
        headers = []
        for hname, sm in sorted((match.get("headers") or {}).items()):
            m = _string_match(sm, f"{where} match.headers.{hname}")
            headers.append({"name": hname, **({"present_match": True} if m is None else {"string_match": m})})
        if headers:
            rm["headers"] = headers
        if "uri" in match:
            m = _string_match(match["uri"], f"{where} match.uri") or {"prefix": "/"}
            rm.pop("prefix")
            if "exact" in m:
                rm["path"] = m["exact"]
            elif "prefix" in m:
                rm["prefix"] = m["prefix"]
            else:
                rm["safe_regex"] = m["safe_regex"]
        rm["case_sensitive"] = not match.get("ignoreUriCase", False)
    if len(http["route"]) != 1:
        raise Untranslatable(f"{where}: weighted destinations are not translated")
    dst = _keys(http["route"][0], f"{where} route[0]", {"destination"}, ("destination",))
    d = _keys(dst["destination"], f"{where} route[0].destination", {"host", "port"}, ("host",))
    svc_ports = services.get(d["host"], [])
    if "port" in d:
        dport = _keys(d["port"], f"{where} destination.port", {"number"}, ("number",))["number"]
    elif len(svc_ports) == 1:
        dport = svc_ports[0]
    else:
        dport = port
    timeout = http.get("timeout", "0s")
    secs = _duration_s(timeout, f"{where} timeout")
    action = {"cluster": f"outbound|{dport}||{d['host']}", "timeout": timeout,
              "max_grpc_timeout": "0s" if secs == 0 else timeout}
    policy = _retry_policy(http.get("retries"), where)
    if policy is not None:
        action["retry_policy"] = policy
    out = {"name": name, "match": rm, "route": action, "decorator": {"operation": f"{d['host']}:{dport}/*"}}
    if "headers" in http:
        hd = _keys(http["headers"], f"{where} headers", {"request"})
        req = _keys(hd.get("request", {}), f"{where} headers.request", {"remove"})
        remove = [h for h in req.get("remove", []) if not (h.startswith(":") or h.lower() == "host")]
        if remove:
            out["request_headers_to_remove"] = remove
    return out


def _catch_all(r: dict) -> bool:
    m = r["match"]
    return (m.get("prefix") == "/" or m.get("safe_regex", {}).get("regex") == ".*") and not m.get("headers")


def _host_matches(a: str, b: str) -> bool:
    def m(w, h):
        return w == "*" or h == w or (w.startswith("*.") and h.endswith(w[1:]))
    return m(a, b) or m(b, a)


def _intersect(server_hosts: list, vs_hosts: list) -> list:
    """host.Names.Intersection: for each pair that matches, the more specific of the two."""
    out = []
    for v in vs_hosts:
        for s in server_hosts:
            if _host_matches(v, s):
                pick = v if not v.startswith("*") or (s.startswith("*") and len(v) >= len(s)) else s
                if pick not in out:
                    out.append(pick)
    return out


# ---- clusters (R12, R13) -----------------------------------------------------------------------------------------

def _thresholds(pool: Optional[dict], where: str) -> dict:
    t = {"max_connections": MAX_U32, "max_pending_requests": MAX_U32, "max_requests": MAX_U32,
         "max_retries": MAX_U32, "track_remaining": True}
    if pool:
        _keys(pool, f"{where} connectionPool", {"tcp", "http"})
        tcp = _keys(pool.get("tcp", {}), f"{where} connectionPool.tcp", {"maxConnections"})
        http = _keys(pool.get("http", {}), f"{where} connectionPool.http",
                     {"http1MaxPendingRequests", "http2MaxRequests", "maxRetries"})
        for src, dst, v in (("maxConnections", "max_connections", tcp), ("http1MaxPendingRequests",
                            "max_pending_requests", http), ("http2MaxRequests", "max_requests", http),
                            ("maxRetries", "max_retries", http)):
            if v.get(src, 0) > 0:
                t[dst] = v[src]
    return t


def _tls(tls: dict, where: str, se_sans: list) -> Optional[dict]:
    _keys(tls, where, {"mode", "sni", "subjectAltNames"}, ("mode",))
    mode = _one_of(tls["mode"], f"{where} mode", ("DISABLE", "SIMPLE"))
    if mode == "DISABLE":
        return None
    sans = tls.get("subjectAltNames") or se_sans
    ctx: dict = {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                 "common_tls_context": {"combined_validation_context": {
                     "default_validation_context": {"match_subject_alt_names": [{"exact": s} for s in sans]},
                     # DEVIATION D1: istio-agent serves this name over SDS; here a static secret of the same name.
                     "validation_context_sds_secret_config": {"name": SYSTEM_ROOTS}}}}
    if tls.get("sni"):
        ctx["sni"] = tls["sni"]
    if not tls.get("sni") or not sans:
        raise Untranslatable(f"{where}: auto_sni / auto_san_validation (sni or subjectAltNames unset) are not translated")
    return {"name": "envoy.transport_sockets.tls", "typed_config": ctx}


def _clusters(entries: list, rules: list, upstreams: dict, proxy: Proxy) -> tuple:
    """R12 + R13. Returns (clusters, {host: [ports]})."""
    services: dict = {}
    out = []
    by_host = {}
    for ns, name, spec in rules:
        w = f"DestinationRule {ns}/{name}"
        _keys(spec, w, {"host", "exportTo", "trafficPolicy"}, ("host",))
        if not _visible(spec, ns, proxy.namespace):
            continue
        if spec["host"] in by_host:
            raise Untranslatable(f"{w}: a second DestinationRule for {spec['host']} (merging is not translated)")
        by_host[spec["host"]] = (w, spec)
    for ns, name, spec in entries:
        w = f"ServiceEntry {ns}/{name}"
        _keys(spec, w, {"hosts", "addresses", "location", "ports", "resolution", "endpoints", "exportTo",
                        "subjectAltNames"}, ("hosts", "ports"))
        if not _visible(spec, ns, proxy.namespace):
            continue
        _one_of(spec.get("location", "MESH_EXTERNAL"), f"{w} location", ("MESH_EXTERNAL", "MESH_INTERNAL"))
        resolution = _one_of(spec.get("resolution", "NONE"), f"{w} resolution", ("DNS", "STATIC"))
        for host in spec["hosts"]:
            rule = by_host.get(host)
            policy = _keys((rule[1].get("trafficPolicy") if rule else None) or {}, f"{w} trafficPolicy",
                           {"connectionPool", "portLevelSettings", "tls"})
            if "tls" in policy:
                raise Untranslatable(f"{rule[0]}: trafficPolicy.tls (only portLevelSettings[].tls) is not translated")
            port_settings = {}
            for k, pls in enumerate(policy.get("portLevelSettings", [])):
                _keys(pls, f"{rule[0]} portLevelSettings[{k}]", {"port", "tls", "connectionPool"}, ("port",))
                port_settings[_keys(pls["port"], "port", {"number"}, ("number",))["number"]] = pls
            for p in spec["ports"]:
                _keys(p, f"{w} port", {"number", "name", "protocol", "targetPort"}, ("number", "name"))
                _one_of(p.get("protocol", "HTTP"), f"{w} port protocol", ("HTTP",))
                services.setdefault(host, []).append(p["number"])
                cname = f"outbound|{p['number']}||{host}"
                if resolution == "DNS":
                    if spec.get("endpoints"):
                        raise Untranslatable(f"{w}: DNS endpoints are not translated")
                    target = p.get("targetPort", p["number"])
                    # R12: the endpoint is the host itself. DEVIATION D1: the mock standing in for it.
                    addr = upstreams.get(f"{host}:{target}")
                    if addr is None:
                        raise Untranslatable(f"{w}: no stand-in upstream for {host}:{target} (the test resolves no DNS)")
                    lb = [{"endpoint": {"address": {"socket_address": {"address": addr[0], "port_value": addr[1]}},
                                        "hostname": host}}]
                    ctype = "STRICT_DNS"
                else:
                    lb = []
                    for e in spec.get("endpoints", []):
                        _keys(e, f"{w} endpoint", {"address", "ports"}, ("address",))
                        port = (e.get("ports") or {}).get(p["name"], p.get("targetPort", p["number"]))
                        lb.append({"endpoint": {"address": {"socket_address": {"address": e["address"],
                                                                               "port_value": port}}}})
                    ctype = "STATIC"
                pls = port_settings.get(p["number"], {})
                c = {"name": cname, "type": ctype, "connect_timeout": "10s", "lb_policy": "LEAST_REQUEST",
                     "common_lb_config": {},
                     "circuit_breakers": {"thresholds": [_thresholds(pls.get("connectionPool") or
                                                                     policy.get("connectionPool"), w)]},
                     "load_assignment": {"cluster_name": cname, "endpoints": [{"lb_endpoints": lb}]}}
                if ctype == "STRICT_DNS":
                    c.update(dns_lookup_family="V4_ONLY", respect_dns_ttl=True, dns_refresh_rate="60s")
                if "tls" in pls:
                    ts = _tls(pls["tls"], f"{rule[0]} port {p['number']} tls", spec.get("subjectAltNames", []))
                    if ts is not None:
                        c["transport_socket"] = ts
                out.append(c)
    return out, services


# ---- environment (R14) -------------------------------------------------------------------------------------------

def _environment(patch: Optional[dict], secrets: dict) -> dict:
    env: dict = {}
    if patch is None:
        return env
    spec = _keys(patch, "Deployment patch", {"spec"}, ("spec",))["spec"]
    pod = _keys(_keys(spec, "spec", {"template"})["template"], "template", {"spec"})["spec"]
    for c in _keys(pod, "template.spec", {"containers"})["containers"]:
        _keys(c, "container", {"name", "env"}, ("name",))
        _one_of(c["name"], "container name", ("istio-proxy",))
        for e in c.get("env", []):
            _keys(e, "env", {"name", "value", "valueFrom"}, ("name",))
            if "value" in e:
                env[e["name"]] = e["value"]
            else:
                ref = _keys(_keys(e["valueFrom"], "valueFrom", {"secretKeyRef"})["secretKeyRef"], "secretKeyRef",
                            {"name", "key"}, ("name", "key"))
                try:
                    env[e["name"]] = secrets[ref["name"]][ref["key"]]
                except KeyError:
                    raise Untranslatable(f"Secret {ref['name']} has no key {ref['key']} (the pod would not start)")
    return env


# ---- the whole gateway -------------------------------------------------------------------------------------------

def _hcm(route_name: str, rds_path: Path, access_log: Path) -> dict:
    """R4 + R5 (D2 for the RDS source, D4 for the filters, D5 for the access log)."""
    def typed(name, t, **rest):
        return {"name": name, "typed_config": {"@type": t, **rest}}
    return {"name": HCM_NAME, "typed_config": {
        "@type": HCM_TYPE,
        "stat_prefix": f"outbound_{route_name}",
        "codec_type": "AUTO",
        "http_protocol_options": {},
        "use_remote_address": True,
        "normalize_path": True,
        "path_with_escaped_slashes_action": "KEEP_UNCHANGED",
        "upgrade_configs": [{"upgrade_type": "websocket"}],
        "stream_idle_timeout": "0s",
        "forward_client_cert_details": "SANITIZE_SET",
        "set_current_client_cert_details": {"subject": True, "cert": True, "dns": True, "uri": True},
        "rds": {"route_config_name": route_name,
                "config_source": {"path_config_source": {"path": str(rds_path)}, "resource_api_version": "V3",
                                  "initial_fetch_timeout": "0s"}},
        "access_log": [{"name": "envoy.access_loggers.file", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": str(access_log),
            "log_format": {"text_format_source": {"inline_string":
                "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%\" %RESPONSE_CODE% "
                "%RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% authority=%REQ(:AUTHORITY)% route=%ROUTE_NAME% "
                "upstream=%UPSTREAM_CLUSTER%\n"}}}}],
        "http_filters": [
            # (D4: istio.metadata_exchange)
            typed("envoy.filters.http.grpc_stats",
                  "type.googleapis.com/envoy.extensions.filters.http.grpc_stats.v3.FilterConfig",
                  emit_filter_state=True, stats_for_all_methods=False),
            # (D4: istio.alpn)
            typed("envoy.filters.http.fault", "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"),
            typed("envoy.filters.http.cors", "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"),
            # (D4: istio.stats)
            typed("envoy.filters.http.router", "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"),
        ],
    }}


def translate(objects: list, *, proxy: Proxy, upstreams: dict, modules: dict, root_ca: Path, workdir: Path,
              env_patch: Optional[dict] = None, secrets: Optional[dict] = None) -> Translation:
    workdir.mkdir(parents=True, exist_ok=True)
    by_kind: dict = {k: [] for k in API_VERSIONS}
    for i, o in enumerate(objects):
        kind, ns, name, spec = _object(o, i)
        by_kind[kind].append((ns, name, spec))

    # R1: the Gateways of this proxy and their servers, by port.
    servers_by_port: dict = {}
    for ns, name, spec in by_kind["Gateway"]:
        _keys(spec, f"Gateway {ns}/{name}", {"selector", "servers"}, ("servers",))
        if not _subset(spec.get("selector"), proxy.labels):
            continue
        for k, s in enumerate(spec["servers"]):
            w = f"Gateway {ns}/{name} servers[{k}]"
            _keys(s, w, {"port", "hosts", "name"}, ("port", "hosts"))
            port = _keys(s["port"], f"{w} port", {"number", "name", "protocol"}, ("number", "protocol"))
            _one_of(port["protocol"], f"{w} port.protocol", ("HTTP",))
            servers_by_port.setdefault(port["number"], []).append((f"{ns}/{name}", ns, s))

    patches = _patches(by_kind["EnvoyFilter"], proxy)
    clusters, services = _clusters(by_kind["ServiceEntry"], by_kind["DestinationRule"], upstreams, proxy)

    # Virtual services visible to the proxy, with their gateways resolved (R3, R9).
    vss = []
    for ns, name, spec in by_kind["VirtualService"]:
        w = f"VirtualService {ns}/{name}"
        _keys(spec, w, {"hosts", "gateways", "exportTo", "http"}, ("hosts",))
        if not _visible(spec, ns, proxy.namespace):
            continue
        gws = [g if "/" in g else f"{ns}/{g}" for g in spec.get("gateways", ["mesh"]) if g != "mesh"]
        vss.append((ns, name, spec, gws))

    routes: dict = {}
    listeners = []
    listener_names: dict = {}
    for port, servers in sorted(servers_by_port.items()):
        route_name = f"http.{port}"
        vhosts: dict = {}  # host -> (routes, [(vs key, id)])
        built: dict = {}  # (gateway, vs) -> routes
        for gw, gw_ns, server in servers:
            for vs_ns, vs_name, spec, gws in vss:
                if gw not in gws:
                    continue
                server_hosts = []
                for h in server["hosts"]:
                    hns, _, hh = h.rpartition("/")
                    hns = gw_ns if hns == "." else hns or "*"
                    if hns in ("*", vs_ns):
                        server_hosts.append(hh)
                hosts = _intersect(server_hosts, spec["hosts"])
                if not hosts:
                    continue
                key = (gw, f"{vs_ns}/{vs_name}")
                if key not in built:
                    rs = []
                    for k, http in enumerate(spec.get("http", [])):
                        w = f"VirtualService {vs_ns}/{vs_name} http[{k}]"
                        for match in (http.get("match") or [None]):
                            r = _translate_route(http, match, port, services, w)
                            rs.append(r)
                            if _catch_all(r):
                                break
                        if not http.get("match") or _catch_all(rs[-1]):
                            break
                    built[key] = rs
                for h in hosts:
                    h = h.lower()
                    vh = vhosts.setdefault(h, {"routes": [], "ids": []})
                    vh["routes"] += built[key]
                    vh["ids"].append(key)
        vlist = []
        if not vhosts:
            vlist = [{"name": f"blackhole:{port}", "domains": ["*"], "routes": []}]
        else:
            seen: dict = {}
            for h in sorted(vhosts):  # collapseDuplicateRoutes: first alphabetically is the primary
                ids = tuple(vhosts[h]["ids"])
                if ids in seen:
                    seen[ids]["domains"].append(h)
                    continue
                rs = vhosts[h]["routes"]
                rs = [r for r in rs if not _catch_all(r)] + [r for r in rs if _catch_all(r)]
                seen[ids] = {"name": f"{h}:{port}", "domains": [h], "routes": copy.deepcopy(rs)}
                vlist.append(seen[ids])
        routes[route_name] = {"name": route_name, "virtual_hosts": vlist, "validate_clusters": False,
                              "ignore_port_in_host_matching": True, "max_direct_response_body_size_bytes": 1048576}
        rds_path = workdir / f"rds-{port}.json"
        rds_path.write_text(json.dumps({"version_info": "1", "resources": [
            {"@type": ROUTE_CONFIG_TYPE, **routes[route_name]}]}, indent=2))
        lname = f"0.0.0.0_{port}"
        listener = {"name": lname, "_port": port,
                    # DEVIATION D2: loopback, a free port (the harness reads it back from the admin).
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                    "filter_chains": [{"filters": [_hcm(route_name, rds_path, workdir / f"access-{port}.log")]}]}
        listener = _apply_listener_patches(listener, patches)
        listener.pop("_port")
        listeners.append(listener)
        listener_names[port] = lname

    # R7 + R8: the ECDS resources the HTTP filters ask for, as istio-agent forwards them.
    ecds: dict = {}
    for listener in listeners:
        for chain in listener["filter_chains"]:
            for f in chain["filters"]:
                if f["name"] != HCM_NAME:
                    continue
                for h in f["typed_config"]["http_filters"]:
                    if "config_discovery" not in h:
                        continue
                    cd = _keys(h["config_discovery"], f"HTTP filter {h['name']} config_discovery",
                               {"config_source", "type_urls", "default_config", "apply_default_config_without_warming"},
                               ("config_source", "type_urls"))
                    if "default_config" in cd or "apply_default_config_without_warming" in cd:
                        raise Untranslatable(f"HTTP filter {h['name']}: default_config is not translated")
                    src = _keys(cd["config_source"], "config_source", {"ads", "initial_fetch_timeout",
                                                                       "resource_api_version"}, ("ads",))
                    value = next((p["value"] for p in patches["EXTENSION_CONFIG"] if p["value"]["name"] == h["name"]),
                                 None)
                    path = workdir / f"ecds-{re.sub(r'[^A-Za-z0-9_.-]', '_', h['name'])}.json"
                    resources = []
                    if value is not None:
                        converted = _agent_convert(value, modules)
                        ecds[h["name"]] = converted
                        resources = [{"@type": TEC_TYPE, "name": converted["name"],
                                      "typed_config": converted["typed_config"]}]
                    path.write_text(json.dumps({"version_info": "1", "resources": resources}, indent=2))
                    # DEVIATION D2: the ADS subscription becomes a file subscription, same name and timeout.
                    cd["config_source"] = {"path_config_source": {"path": str(path)},
                                           "resource_api_version": src.get("resource_api_version", "V3"),
                                           "initial_fetch_timeout": src.get("initial_fetch_timeout", "15s")}
    for p in patches["EXTENSION_CONFIG"]:
        if p["value"]["name"] not in ecds:
            raise Untranslatable(f"{p['where']}: no HTTP filter references {p['value']['name']} (istiod would "
                                 "never send it)")

    env = _environment(env_patch, secrets or {})
    bootstrap = {
        "node": {"id": f"router~127.0.0.1~gateway.{proxy.namespace}~{proxy.namespace}.svc.cluster.local",
                 "cluster": f"gateway.{proxy.namespace}",
                 "metadata": {"ISTIO_VERSION": proxy.version, "NAMESPACE": proxy.namespace, "LABELS": proxy.labels}},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": listeners,
            "clusters": clusters,
            "secrets": [{"name": SYSTEM_ROOTS, "validation_context": {"trusted_ca": {"filename": str(root_ca)}}}],
        },
    }
    path = workdir / "bootstrap.json"
    path.write_text(json.dumps(bootstrap, indent=2))
    return Translation(bootstrap, path, env, listener_names, ecds, routes, clusters)


def documents(text: str) -> list:
    """The objects of `llm-router istio --format json` output (a v1 List)."""
    doc = json.loads(text)
    if doc.get("kind") != "List" or doc.get("apiVersion") != "v1":
        raise Untranslatable("expected a v1 List")
    return doc["items"]
