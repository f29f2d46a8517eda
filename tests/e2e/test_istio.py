"""`llm-router istio` output, loaded into real Envoy the way istiod and istio-agent would deliver it to a gateway.

The tool's own objects (EnvoyFilter, Gateway, VirtualServices, ServiceEntries, DestinationRules, and the gateway
Deployment's env patch) go through support/istio_translate.py, which builds the gateway's listener, HTTP filter chain,
route configuration (RDS), ECDS resource and clusters by the rules of Istio's source (each rule cites its file there).
A second team's objects share the gateway: a Gateway on `*` and a VirtualService on `*` with a `prefix: /v1/` route to
its own backend, the setup that used to receive rewritten requests with a provider key.

The providers are mocks speaking TLS with certificates for the real provider hosts (api.openai.com, ...) from a test CA;
the translator points the ServiceEntry hosts at them and serves that CA as the root store (its one deviation for
upstreams, see the module's docstring).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from .support.checks import CLUSTER_HEADER, expect_routed, expect_upstream
from .support.client import get, post_chunked, post_json, request, send_raw, stream_post
from .support.envoy import REPO, WASM_PATH, BootstrapEnvoy
from .support.istio_translate import WASM_TYPE, Proxy, Untranslatable, documents, translate
from .support.mock_provider import MockProvider
from .support.plugin import chat

CLI = ["cargo", "run", "-q", "-p", "llm-router-cli", "--"]
NAMESPACE = "istio-system"
LISTENER = "0.0.0.0_80"
FILTER = f"{NAMESPACE}.llm-router"
MODULE_URL = "https://modules.example.com/llm-router/0.1.0/llm_router.wasm"
AZURE_BASE = "https://my-res.openai.azure.com"
HOSTS = ("api.openai.com", "my-res.openai.azure.com", "api.anthropic.com")
SECRETS = {"OPENAI_API_KEY": "sk-istio-openai", "AZURE_API_KEY": "istio-azure-key", "ANTHROPIC_API_KEY": "sk-ant-istio"}
LONG_MODEL = "gpt-4o-2024-08-06-with-a-deliberately-long-deployment-name"

CONFIG = f"""\
model_list:
  - model_name: gpt-4o
    litellm_params: {{model: openai/gpt-4o, api_key: os.environ/OPENAI_API_KEY}}
    model_info: {{id: openai-gpt-4o}}
  - model_name: long
    litellm_params: {{model: openai/{LONG_MODEL}, api_key: os.environ/OPENAI_API_KEY}}
    model_info: {{id: openai-long}}
  - model_name: azure-4o
    litellm_params:
      model: azure/gpt-4o-prod
      api_base: os.environ/AZURE_API_BASE
      api_key: os.environ/AZURE_API_KEY
      api_version: 2024-10-21
    model_info: {{id: azure-gpt-4o}}
  - model_name: claude
    litellm_params: {{model: anthropic/claude-3-5-sonnet-latest, api_key: os.environ/ANTHROPIC_API_KEY}}
    model_info: {{id: anthropic-claude}}
router_settings:
  num_retries: 2
  fallbacks: [{{gpt-4o: [claude]}}]
"""

# The other team on the same gateway pods (namespace `team`): everything under /v1/ on any host goes to its API.
TEAM_HOST = "team-api.team.svc.cluster.local"


def team_objects(port: int) -> list:
    meta = lambda name: {"name": name, "namespace": "team"}  # noqa: E731
    return [
        {"apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": meta("team-gw"),
         "spec": {"selector": {"istio": "ingressgateway"},
                  "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": meta("team-api"),
         "spec": {"hosts": ["*"], "gateways": ["team-gw"],
                  "http": [{"match": [{"uri": {"prefix": "/v1/"}}],
                            "route": [{"destination": {"host": TEAM_HOST, "port": {"number": 8080}}}]}]}},
        # Stands in for the team's Kubernetes Service (a STATIC entry needs no address mapping).
        {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry", "metadata": meta("team-api"),
         "spec": {"hosts": [TEAM_HOST], "location": "MESH_INTERNAL", "resolution": "STATIC",
                  "ports": [{"number": 8080, "name": "http", "protocol": "HTTP"}],
                  "endpoints": [{"address": "127.0.0.1", "ports": {"http": port}}]}},
    ]


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """A test CA and one server certificate per provider host (SAN = the host), EC P-256."""
    d = tmp_path_factory.mktemp("pki")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=llm-router test CA",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    for host in HOSTS + ("wrong.example.com",):
        openssl("req", *ec, "-keyout", f"{host}.key", "-out", f"{host}.csr", "-subj", f"/CN={host}", cwd=d)
        (d / f"{host}.ext").write_text(f"subjectAltName=DNS:{host}\nbasicConstraints=CA:FALSE\n"
                                       "extendedKeyUsage=serverAuth\n")
        openssl("x509", "-req", "-in", f"{host}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{host}.pem", "-days", "2", "-extfile", f"{host}.ext", cwd=d)
    return d


def tls_mock(kind: str, pki: Path, cert_host: str) -> MockProvider:
    """A mock provider behind TLS with the certificate of `cert_host`."""
    m = MockProvider(kind, name=cert_host, start=False)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki / f"{cert_host}.pem", pki / f"{cert_host}.key")
    m._server.socket = ctx.wrap_socket(m._server.socket, server_side=True)
    return m.start()


@pytest.fixture(scope="module")
def providers(pki):
    mocks = {"api.openai.com": tls_mock("openai", pki, "api.openai.com"),
             "my-res.openai.azure.com": tls_mock("azure", pki, "my-res.openai.azure.com"),
             "api.anthropic.com": tls_mock("anthropic", pki, "api.anthropic.com")}
    team = MockProvider("openai", name="team-api")
    yield mocks, team
    for m in (*mocks.values(), team):
        m.stop()


def cli(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + [str(a) for a in args], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


def wasm_sha256() -> str:
    return hashlib.sha256(WASM_PATH.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def generated(wasm, tmp_path_factory) -> tuple:
    """The tool's output for CONFIG: (objects, Deployment patch)."""
    d = tmp_path_factory.mktemp("istio")
    (d / "config.yaml").write_text(CONFIG)
    proc = cli("istio", d / "config.yaml", "--format", "json", "--namespace", NAMESPACE, "--url", MODULE_URL,
               "--sha256", wasm_sha256(), "--gateway-patch", d / "patch.json", env={"AZURE_API_BASE": AZURE_BASE})
    assert proc.returncode == 0, proc.stderr
    return documents(proc.stdout), json.loads((d / "patch.json").read_text())


def upstreams(mocks: dict) -> dict:
    # DEVIATION D1 (support/istio_translate.py): each provider host's endpoint is its mock on loopback.
    return {f"{h}:443": ("127.0.0.1", m.port) for h, m in mocks.items()}


def build(objects: list, patch: dict, mocks: dict, pki: Path, workdir: Path, modules: dict | None = None):
    return translate(objects, proxy=Proxy(), upstreams=upstreams(mocks), root_ca=pki / "ca.pem", workdir=workdir,
                     modules={MODULE_URL: WASM_PATH} if modules is None else modules, env_patch=patch,
                     secrets={"llm-router-keys": SECRETS})


@pytest.fixture(scope="module")
def gateway(generated, providers, pki, tmp_path_factory):
    objects, patch = generated
    mocks, team = providers
    t = build(objects + team_objects(team.port), patch, mocks, pki, tmp_path_factory.mktemp("gateway"))
    envoy = BootstrapEnvoy(t.bootstrap_path, env=t.env, label="istio-gateway")
    try:
        envoy.wait_ready((LISTENER,))
        yield envoy, t
    finally:
        envoy.stop()


@pytest.fixture
def fresh(providers):
    mocks, team = providers
    for m in (*mocks.values(), team):
        m.reset()
    return mocks, team


def every_request(mocks: dict, team: MockProvider) -> list:
    return [r for m in (*mocks.values(), team) for r in m.requests]


# ---- what the gateway was given -------------------------------------------------------------------------------

def test_the_gateway_config_is_what_istiod_builds(gateway, generated):
    envoy, t = gateway
    (listener,) = t.bootstrap["static_resources"]["listeners"]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    # The EnvoyFilter's HTTP_FILTER patch lands where a WasmPlugin of phase STATS would: before grpc_stats.
    assert [f["name"] for f in hcm["http_filters"]] == [
        FILTER, "envoy.filters.http.grpc_stats", "envoy.filters.http.fault", "envoy.filters.http.cors",
        "envoy.filters.http.router"]
    assert hcm["http_filters"][0]["config_discovery"]["type_urls"][0] == WASM_TYPE
    # The MERGE patches: the buffer limit of `llm-router envoy`, its idle timeout, HTTP/1.0.
    assert listener["per_connection_buffer_limit_bytes"] == 1048576 + 65536
    assert hcm["stream_idle_timeout"] == "600s" and hcm["http_protocol_options"] == {"accept_http_10": True}
    # What Envoy holds: the ECDS resource with the flag, code rewritten to a local file by "istio-agent".
    dump = envoy.config_dump()
    ecds = [c for c in dump["configs"] if c["@type"].endswith("EcdsConfigDump")]
    (entry,) = ecds[0]["ecds_filters"]
    cfg = entry["ecds_filter"]["typed_config"]["config"]
    assert entry["ecds_filter"]["name"] == FILTER
    assert cfg["allow_on_headers_stop_iteration"] is True and cfg["failure_policy"] == "FAIL_CLOSED"
    assert cfg["vm_config"]["code"]["local"]["filename"] == str(WASM_PATH)
    assert cfg["vm_config"]["environment_variables"]["host_env_keys"] == [
        "ANTHROPIC_API_KEY", "AZURE_API_BASE", "AZURE_API_KEY", "OPENAI_API_KEY"]
    plugin_config = json.loads(cfg["configuration"]["value"])
    assert plugin_config["envoy_settings"]["failover"] is False
    assert "sk-" not in cfg["configuration"]["value"], "a key in the plugin config"
    # One virtual host per provider host (exact domain), plus the team's `*`.
    vhosts = {tuple(v["domains"]): v for v in t.routes["http.80"]["virtual_hosts"]}
    assert set(vhosts) == {(h,) for h in HOSTS} | {("*",)}
    route = vhosts[("api.openai.com",)]["routes"][0]
    assert route["match"]["headers"] == [{"name": CLUSTER_HEADER,
                                          "string_match": {"exact": "outbound|443||api.openai.com"}}]
    assert route["request_headers_to_remove"] == [CLUSTER_HEADER]
    assert route["route"]["timeout"] == "0s" and route["route"]["retry_policy"]["retry_on"] == "connect-failure,refused-stream"
    # The environment comes from the Secret through the Deployment patch; the api_base as the tool resolved it.
    assert t.env == {**SECRETS, "AZURE_API_BASE": AZURE_BASE}


# ---- routing --------------------------------------------------------------------------------------------------

def test_routed_posts_reach_each_provider(gateway, fresh):
    envoy, _ = gateway
    mocks, team = fresh
    url = envoy.url(LISTENER)
    resp = post_json(url, "/v1/chat/completions", chat("gpt-4o"), headers={"host": "llm.example.com"})
    expect_routed(resp, "openai-gpt-4o", "gpt-4o")
    expect_upstream(mocks["api.openai.com"].last(), path="/v1/chat/completions", host="api.openai.com",
                    model="gpt-4o", headers={"authorization": f"Bearer {SECRETS['OPENAI_API_KEY']}"})
    resp = post_json(url, "/v1/chat/completions", chat("azure-4o"), headers={"host": "llm.example.com"})
    expect_routed(resp, "azure-gpt-4o", "azure-4o")
    expect_upstream(mocks["my-res.openai.azure.com"].last(),
                    path="/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21",
                    host="my-res.openai.azure.com", headers={"api-key": SECRETS["AZURE_API_KEY"]},
                    absent=("authorization",))
    resp = post_json(url, "/v1/messages", {"model": "claude", "max_tokens": 8,
                                           "messages": [{"role": "user", "content": "hi"}]},
                     headers={"host": "llm.example.com", "anthropic-version": "2023-06-01"})
    expect_routed(resp, "anthropic-claude", "claude")
    expect_upstream(mocks["api.anthropic.com"].last(), path="/v1/messages", host="api.anthropic.com",
                    model="claude-3-5-sonnet-latest", headers={"x-api-key": SECRETS["ANTHROPIC_API_KEY"]},
                    absent=("authorization",))
    assert team.count == 0
    # The filter's own endpoints and metrics, as with Envoy.
    resp = get(url, "/v1/models", headers={"host": "llm.example.com"})
    assert resp.status == 200 and {m["id"] for m in resp.json()["data"]} >= {"gpt-4o", "azure-4o", "claude"}, resp
    resp = get(url, "/llm-router/health")
    assert resp.status == 200 and len(resp.json()["deployments"]) == 4, resp
    assert not any(k in resp.text for k in SECRETS.values())
    counters = envoy.stats("wasmcustom")
    assert any(k.endswith("llm_router_requests_total") and "deployment=.=anthropic-claude" in k and v >= 1
               for k, v in counters.items()), counters


def test_large_and_chunked_bodies(gateway, fresh):
    envoy, _ = gateway
    mocks, _ = fresh
    url = envoy.url(LISTENER)
    openai = mocks["api.openai.com"]
    # ~1 MB.
    body = chat("gpt-4o", "x" * 1_000_000)
    resp = post_json(url, "/v1/chat/completions", body, timeout=30)
    expect_routed(resp, "openai-gpt-4o")
    rec = expect_upstream(openai.last(), path="/v1/chat/completions", host="api.openai.com", model="gpt-4o")
    assert rec.json["messages"] == body["messages"]
    # At max_request_body_bytes, lengthened by the rewrite: over Envoy's default 1 MiB buffer, inside the
    # listener limit the EnvoyFilter's LISTENER MERGE sets.
    head = json.dumps(chat("long", ""))
    near = chat("long", "y" * (1048576 - len(head) - 16))
    assert 1048576 - 64 < len(json.dumps(near)) <= 1048576
    resp = post_json(url, "/v1/chat/completions", near, timeout=30)
    expect_routed(resp, "openai-long")
    rec = expect_upstream(openai.last(), path="/v1/chat/completions", host="api.openai.com", model=LONG_MODEL)
    assert len(rec.body) > 1048576
    # Chunked.
    raw = json.dumps(chat("claude", "chunked " * 5000)).encode()
    resp = post_chunked(url, "/v1/chat/completions", [raw[i:i + 4096] for i in range(0, len(raw), 4096)],
                        headers={"host": "llm.example.com"})
    expect_routed(resp, "anthropic-claude")
    rec = expect_upstream(mocks["api.anthropic.com"].last(), path="/v1/chat/completions", host="api.anthropic.com",
                          model="claude-3-5-sonnet-latest", headers={"x-api-key": SECRETS["ANTHROPIC_API_KEY"]})
    assert rec.json["messages"] == json.loads(raw)["messages"]


def test_streaming_is_incremental(gateway, fresh):
    envoy, _ = gateway
    mocks, _ = fresh
    mocks["api.openai.com"].respond(stream_delay=0.3, times=1)
    s = stream_post(envoy.url(LISTENER), "/v1/chat/completions", chat("gpt-4o", stream=True), timeout=20)
    assert s.status == 200 and s.headers.get("content-type", "").startswith("text/event-stream"), s.headers
    s.read_all()
    assert b"[DONE]" in s.body
    first, last = s.chunks[0][0], s.chunks[-1][0]
    assert last - first >= 0.6, f"the events arrived together ({[round(t, 2) for t, _ in s.chunks]})"
    expect_upstream(mocks["api.openai.com"].last(), path="/v1/chat/completions", host="api.openai.com",
                    headers={"authorization": f"Bearer {SECRETS['OPENAI_API_KEY']}"})


def test_http10_clients_are_served(gateway, fresh):
    envoy, _ = gateway
    body = json.dumps(chat("gpt-4o")).encode()
    raw = send_raw(envoy.url(LISTENER), b"POST /v1/chat/completions HTTP/1.0\r\nhost: llm.example.com\r\n"
                   b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body), timeout=5)
    assert raw.startswith(b"HTTP/1.0 200") or raw.startswith(b"HTTP/1.1 200"), raw[:200]


# ---- who may reach what -------------------------------------------------------------------------------------

def test_a_passthrough_path_cannot_choose_a_cluster(gateway, fresh):
    envoy, _ = gateway
    mocks, team = fresh
    url = envoy.url(LISTENER)
    for host in HOSTS:
        cluster = f"outbound|443||{host}"
        # The provider's own host and its cluster's name, on a path the filter passes through: the filter strips
        # the header, the provider's virtual host has no route without it.
        for method, path in (("POST", "/v1/files"), ("GET", "/v1/files/abc"), ("GET", "/")):
            resp = request(method, url, path, b"{}" if method == "POST" else None,
                           headers={"host": host, CLUSTER_HEADER: cluster, "authorization": "Bearer client"})
            assert resp.status == 404 and not resp.body, (host, path, resp)
    assert all(m.count == 0 for m in mocks.values()), "a provider was reached without the router"
    # Any other host: the team's `*` route, without the header.
    resp = post_json(url, "/v1/files", {"purpose": "x"},
                     headers={"host": "llm.example.com", CLUSTER_HEADER: "outbound|443||api.openai.com"})
    assert resp.status == 200, resp
    assert team.count == 1 and CLUSTER_HEADER not in team.last().headers
    assert all(m.count == 0 for m in mocks.values())


def test_a_team_wildcard_virtual_service_never_receives_a_provider_key(gateway, fresh):
    envoy, _ = gateway
    mocks, team = fresh
    url = envoy.url(LISTENER)
    for model in ("gpt-4o", "azure-4o", "claude", "long"):
        for host in ("llm.example.com", "team.example.com", "api.openai.com"):
            expect_routed(post_json(url, "/v1/chat/completions", chat(model), headers={"host": host}),
                          {"gpt-4o": "openai-gpt-4o", "azure-4o": "azure-gpt-4o", "claude": "anthropic-claude",
                           "long": "openai-long"}[model])
    post_json(url, "/v1/embeddings", {"model": "gpt-4o", "input": "x"}, headers={"host": "team.example.com"})
    post_json(url, "/v1/assistants", {"x": 1}, headers={"host": "team.example.com"})  # passes through: the team's
    for rec in team.requests:
        text = json.dumps(rec.headers) + rec.body.decode(errors="replace")
        assert not any(k in text for k in SECRETS.values()), f"a provider key reached the team's backend: {rec}"
    assert team.count == 1 and team.last().path == "/v1/assistants", team.requests
    assert sum(m.count for m in mocks.values()) == 13


def test_failover_is_off(gateway, fresh):
    envoy, _ = gateway
    mocks, team = fresh
    openai, anthropic = mocks["api.openai.com"], mocks["api.anthropic.com"]
    openai.respond(status=503, times=1)
    resp = post_json(envoy.url(LISTENER), "/v1/chat/completions", chat("gpt-4o"))
    # The provider's 503 goes back to the client: no retry onto another deployment, no fallback to claude.
    assert resp.status == 503, resp
    assert resp.headers.get("x-llm-router-attempts") in (None, "1"), resp.headers
    assert openai.count == 1 and anthropic.count == 0
    resp = post_json(envoy.url(LISTENER), "/v1/chat/completions", chat("gpt-4o"))
    expect_routed(resp, "openai-gpt-4o")
    for rec in every_request(mocks, team):
        assert not any(h.startswith("x-llm-router") for h in rec.headers), f"router state left Envoy: {rec.headers}"


# ---- failing closed -------------------------------------------------------------------------------------------

def with_configuration(objects: list, plugin_config: dict) -> list:
    out = copy.deepcopy(objects)
    (ef,) = [o for o in out if o["kind"] == "EnvoyFilter"]
    (ext,) = [p for p in ef["spec"]["configPatches"] if p["applyTo"] == "EXTENSION_CONFIG"]
    ext["patch"]["value"]["typed_config"]["config"]["configuration"]["value"] = json.dumps(plugin_config)
    return out


def test_a_refused_config_fails_closed(generated, providers, pki, tmp_path):
    """An EnvoyFilter whose plugin config the filter refuses (an edited object: the tool refuses to write it). Envoy
    rejects the ECDS resource (the xDS NACK istiod would get); the HTTP filter then has no config, and Envoy answers
    every request on the listener 500 (NFCF, no filter config found) itself: nothing passes, routed or not."""
    objects, patch = generated
    mocks, team = providers
    for m in (*mocks.values(), team):
        m.reset()
    bad = {"model_list": [{"model_name": "x", "litellm_params": {"model": "bedrock/anthropic.claude-v2"}}],
           "envoy_settings": {"failover": False}}
    t = build(with_configuration(objects + team_objects(team.port), bad), patch, mocks, pki, tmp_path)
    envoy = BootstrapEnvoy(t.bootstrap_path, env=t.env, label="istio-refused")
    try:
        envoy.wait_ready((LISTENER,))
        deadline = time.monotonic() + 20
        while not envoy.stats(f"extension_config_discovery.http_filter.{FILTER}.config_fail").get(
                f"extension_config_discovery.http_filter.{FILTER}.config_fail") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert envoy.stats("extension_config_discovery").get(
            f"extension_config_discovery.http_filter.{FILTER}.config_fail", 0) >= 1, envoy.log_tail()
        log = envoy.log_text()
        assert "llm-router config error: model_list[0].litellm_params.model" in log, envoy.log_tail()
        assert "Filesystem config update rejected: Unable to create Wasm plugin" in log, envoy.log_tail()
        url = envoy.url(LISTENER)
        for resp in (post_json(url, "/v1/chat/completions", chat("gpt-4o")), get(url, "/v1/models"),
                     post_json(url, "/v1/files", {"x": 1}, headers={"host": "team.example.com"})):
            assert resp.status == 500 and not resp.body, resp
    finally:
        envoy.stop()
    assert all(m.count == 0 for m in (*mocks.values(), team))


def test_a_module_that_fails_its_checksum_rejects_every_request(generated, providers, pki, tmp_path):
    """istio-agent's fetch failing (here: a sha256 mismatch) turns the filter into RBAC deny-all under FAIL_CLOSED."""
    objects, patch = generated
    mocks, _ = providers
    for m in mocks.values():
        m.reset()
    impostor = tmp_path / "impostor.wasm"
    impostor.write_bytes(WASM_PATH.read_bytes() + b"\0")
    t = build(objects, patch, mocks, pki, tmp_path / "work", modules={MODULE_URL: impostor})
    assert "checksum" in t.ecds[FILTER]["_agent_error"]
    envoy = BootstrapEnvoy(t.bootstrap_path, env=t.env, label="istio-checksum")
    try:
        envoy.wait_ready((LISTENER,))
        resp = post_json(envoy.url(LISTENER), "/v1/chat/completions", chat("gpt-4o"))
        assert resp.status == 403, resp
    finally:
        envoy.stop()
    assert all(m.count == 0 for m in mocks.values())


def test_a_certificate_for_another_host_is_refused(generated, providers, pki, tmp_path):
    """The DestinationRule checks the provider's certificate names the host (SNI alone would accept any name)."""
    objects, patch = generated
    mocks, _ = providers
    impostor = tls_mock("openai", pki, "wrong.example.com")
    try:
        t = build(objects, patch, {**mocks, "api.openai.com": impostor}, pki, tmp_path)
        envoy = BootstrapEnvoy(t.bootstrap_path, env=t.env, label="istio-san")
        try:
            envoy.wait_ready((LISTENER,))
            resp = post_json(envoy.url(LISTENER), "/v1/chat/completions", chat("gpt-4o"))
            assert resp.status == 503, resp
            assert impostor.count == 0
        finally:
            envoy.stop()
    finally:
        impostor.stop()


# ---- the translator itself ------------------------------------------------------------------------------------

def test_the_translator_refuses_what_it_does_not_know(generated, providers, pki, tmp_path):
    objects, patch = generated
    mocks, _ = providers

    def refused(objs, needle):
        with pytest.raises(Untranslatable, match=needle):
            build(objs, patch, mocks, pki, tmp_path)

    def edit(kind, fn):
        out = copy.deepcopy(objects)
        fn(next(o for o in out if o["kind"] == kind))
        return out

    refused(objects + [{"apiVersion": "extensions.istio.io/v1alpha1", "kind": "WasmPlugin",
                        "metadata": {"name": "x", "namespace": NAMESPACE}, "spec": {}}], "kind 'WasmPlugin'")
    refused(edit("VirtualService", lambda o: o["spec"]["http"][0].update(fault={"abort": {"httpStatus": 500}})),
            "fault")
    refused(edit("VirtualService", lambda o: o["spec"]["http"][0]["match"][0].update(sourceLabels={"a": "b"})),
            "sourceLabels")
    refused(edit("DestinationRule", lambda o: o["spec"]["trafficPolicy"].update(loadBalancer={"simple": "RANDOM"})),
            "loadBalancer")
    refused(edit("Gateway", lambda o: o["spec"]["servers"][0].update(tls={"mode": "SIMPLE"})), "tls")
    refused(edit("EnvoyFilter", lambda o: o["spec"]["configPatches"].append(
        {"applyTo": "CLUSTER", "patch": {"operation": "MERGE", "value": {}}})), "CLUSTER")
    refused(edit("ServiceEntry", lambda o: o["spec"].update(resolution="NONE")), "NONE")
    with pytest.raises(Untranslatable, match="no stand-in upstream"):
        translate(objects, proxy=Proxy(), upstreams={}, root_ca=pki / "ca.pem", workdir=tmp_path,
                  modules={MODULE_URL: WASM_PATH}, env_patch=patch, secrets={"llm-router-keys": SECRETS})
    with pytest.raises(Untranslatable, match="has no key ANTHROPIC_API_KEY"):
        translate(objects, proxy=Proxy(), upstreams=upstreams(mocks), root_ca=pki / "ca.pem", workdir=tmp_path,
                  modules={MODULE_URL: WASM_PATH}, env_patch=patch, secrets={"llm-router-keys": {}})


def test_an_older_gateway_proxy_gets_no_patches(generated, providers, pki, tmp_path):
    """match.proxy.proxyVersion: a 1.27 gateway proxy (its Envoy may lack the flag, and a filter without it hangs
    every routed request) gets neither the filter nor the merges; requests for the providers then find no route."""
    objects, patch = generated
    mocks, _ = providers
    t = translate(objects, proxy=Proxy(version="1.27.3"), upstreams=upstreams(mocks), root_ca=pki / "ca.pem",
                  workdir=tmp_path, modules={MODULE_URL: WASM_PATH}, env_patch=patch,
                  secrets={"llm-router-keys": SECRETS})
    (listener,) = t.bootstrap["static_resources"]["listeners"]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    assert FILTER not in [f["name"] for f in hcm["http_filters"]] and not t.ecds
    assert "per_connection_buffer_limit_bytes" not in listener and hcm["stream_idle_timeout"] == "0s"
