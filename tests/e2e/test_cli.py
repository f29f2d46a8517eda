"""The operator tool (`cli/`, binary `llm-router`): its `envoy` output boots real Envoy and routes requests.

From a LiteLLM config.yaml to a running gateway in one step, as an operator would do it:

    cargo run -q -p llm-router-cli -- envoy examples/litellm-config-local.yaml -o gateway.yaml
    envoy -c gateway.yaml

The example points at the demo's mock ports (18001-18003); this module starts mocks there. A second scenario
generates a config with an https deployment that refuses connections: its TLS cluster must still reach the
plain-text failover redirector, so the request fails over to the next deployment.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from .support.checks import expect_routed, expect_upstream
from .support.client import get, post_json
from .support.envoy import ACCESS_LOG_FORMAT, ENVOY_BIN, REPO, RUN_DIR, WASM_PATH, free_port, stop_process_group
from .support.mock_provider import MockProvider
from .support.plugin import chat
from .support.prometheus import scrape

CLI = ["cargo", "run", "-q", "-p", "llm-router-cli", "--"]
EXAMPLE = REPO / "examples" / "litellm-config-local.yaml"
KEYS = {"OPENAI_API_KEY": "sk-demo-openai", "AZURE_API_KEY": "demo-azure-key", "ANTHROPIC_API_KEY": "sk-ant-demo"}


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(CLI + [str(a) for a in args], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})
    return proc


class Gateway:
    """Envoy started on a bootstrap file the tool wrote (nothing of the harness's own bootstrap)."""

    def __init__(self, bootstrap: Path, listen: int, admin: int, env: dict, label: str):
        self.listen, self.admin = listen, admin
        self.log_path = RUN_DIR / f"{os.getpid()}-cli-{label}" / "envoy.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [str(ENVOY_BIN), "-c", str(bootstrap), "--concurrency", "1", "--use-dynamic-base-id",
             "--log-level", "info", "--component-log-level", "wasm:debug"],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO, start_new_session=True,
            env={**os.environ, **env})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listen}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin}"

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def wait_ready(self, timeout: float = 20.0) -> "Gateway":
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"Envoy exited ({self.proc.returncode}) on the generated bootstrap:\n"
                                     + self.log_tail())
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/ready", timeout=1) as r:
                    if r.status == 200:
                        socket.create_connection(("127.0.0.1", self.listen), timeout=1).close()
                        return self
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"Envoy was not ready within {timeout}s:\n" + self.log_tail())
            time.sleep(0.05)

    def stop(self) -> None:
        stop_process_group(self.proc)
        self._log.close()


def generate(config: Path, out: Path, *extra: str, env: dict | None = None) -> tuple:
    """`llm-router envoy CONFIG` on fresh ports; returns (listen, admin)."""
    listen, admin, redirector = free_port(), free_port(), free_port()
    proc = cli("envoy", config, "-o", out, "--wasm", WASM_PATH, "--listen", f"127.0.0.1:{listen}",
               "--admin", f"127.0.0.1:{admin}", "--redirector", f"127.0.0.1:{redirector}", *extra, env=env)
    assert proc.returncode == 0, f"llm-router envoy failed:\n{proc.stderr}"
    return listen, admin


@pytest.fixture(scope="module")
def demo_mocks():
    """The mock providers the example config points at, on the demo's fixed ports."""
    mocks = {}
    try:
        for kind, port in (("openai", 18001), ("azure", 18002), ("anthropic", 18003)):
            try:
                mocks[kind] = MockProvider(kind, port=port)
            except OSError as e:
                pytest.fail(f"port {port} is taken ({e}): stop whatever listens there (a running scripts/demo?)",
                            pytrace=False)
        yield mocks
    finally:
        for m in mocks.values():
            m.stop()


@pytest.fixture
def gateways():
    started: list = []
    yield started
    for g in started:
        g.stop()


def test_check_accepts_the_example():
    proc = cli("check", EXAMPLE, env=KEYS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok: 5 deployments in 4 model groups, 3 upstream clusters" in proc.stdout, proc.stdout
    assert ": serves 4 model groups:" in proc.stdout, proc.stdout
    # The same facts for CI: one JSON document, the variables the bootstrap must pass.
    proc = cli("check", EXAMPLE, "--format", "json", env=KEYS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] is True and report["errors"] == [], report
    summary = report["summary"]
    assert summary["deployments"] == 5 and len(summary["groups"]) == 4 and len(summary["clusters"]) == 3, summary
    assert sum(summary["deployments_by_provider"].values()) == 5, summary
    assert set(summary["env"]) <= set(KEYS), summary
    assert not any(v in proc.stdout for v in KEYS.values())


def test_envoy_output_for_the_example_boots_and_routes(wasm, demo_mocks, gateways, tmp_path):
    bootstrap = tmp_path / "gateway.yaml"
    listen, admin = generate(EXAMPLE, bootstrap)
    gw = Gateway(bootstrap, listen, admin, KEYS, "example")
    gateways.append(gw)
    gw.wait_ready()
    openai, azure, anthropic = demo_mocks["openai"], demo_mocks["azure"], demo_mocks["anthropic"]
    for m in demo_mocks.values():
        m.reset()

    # A merged (`<<: *openai_mock`) deployment, with the key from Envoy's environment.
    resp = post_json(gw.url, "/v1/chat/completions", chat("gpt-4o-mini"))
    expect_routed(resp, "gpt-4o-mini-openai", "gpt-4o-mini")
    expect_upstream(openai.last(), path="/v1/chat/completions", host="127.0.0.1:18001", model="gpt-4o-mini",
                    headers={"authorization": "Bearer sk-demo-openai"})

    resp = post_json(gw.url, "/v1/chat/completions", chat("claude-3-5-sonnet"))
    expect_routed(resp, "claude-3-5-sonnet-anthropic")
    assert anthropic.last().header("x-api-key") == "sk-ant-demo"

    # The unquoted `api_version: 2024-10-21` (a date to PyYAML) reaches Azure as written.
    for _ in range(20):
        resp = post_json(gw.url, "/v1/chat/completions", chat("gpt4"))  # the alias
        assert resp.status == 200, resp
        if azure.count:
            break
    assert azure.count, "simple-shuffle never picked the Azure deployment in 20 requests"
    expect_upstream(azure.last(), path="/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21",
                    host="127.0.0.1:18002", headers={"api-key": "demo-azure-key"})

    # Failover wiring: Azure failing (503) is retried on the OpenAI deployment within the same request.
    azure.respond(status=503)
    for _ in range(6):
        resp = post_json(gw.url, "/v1/chat/completions", chat("gpt-4o"))
        expect_routed(resp, "gpt-4o-openai", "gpt-4o")
    azure.reset()

    # Nothing passes through: unknown paths get the OpenAI-shaped 404 of the generated default route.
    resp = post_json(gw.url, "/not/an/endpoint", {"x": 1})
    assert resp.status == 404 and resp.json()["error"]["code"] == "not_found", resp

    # The filter answers the model list itself, before any route.
    resp = get(gw.url, "/v1/models")
    assert resp.status == 200 and "gpt4" in [m["id"] for m in resp.json()["data"]], resp

    # ... and its health report: every deployment of the example, no secret in it.
    resp = get(gw.url, "/llm-router/health")
    assert resp.status == 200, resp
    report = resp.json()
    assert {d["id"] for d in report["deployments"]} >= {"gpt-4o-mini-openai", "claude-3-5-sonnet-anthropic"}, report
    assert not any(secret in resp.body.decode() for secret in KEYS.values()), "a key leaked into the health report"

    # The README's last step: the metrics, labelled by the generated bootstrap's stats_tags.
    s = scrape(gw)
    assert s.count("llm_router_requests_total", model_group="gpt-4o-mini", deployment="gpt-4o-mini-openai") == 1, s
    assert s.count("llm_router_requests_total", model_group="claude-3-5-sonnet",
                   deployment="claude-3-5-sonnet-anthropic") == 1, s


def test_envoy_output_has_the_access_log_the_harness_and_demo_use():
    proc = cli("envoy", EXAMPLE, "--format", "json", env=KEYS)
    assert proc.returncode == 0, proc.stderr
    listeners = json.loads(proc.stdout)["static_resources"]["listeners"]
    (ingress,) = [ls for ls in listeners if ls["name"] == "ingress"]
    (log,) = ingress["filter_chains"][0]["filters"][0]["typed_config"]["access_log"]
    assert log["name"] == "envoy.access_loggers.stdout"
    assert log["typed_config"]["log_format"]["text_format_source"]["inline_string"] == ACCESS_LOG_FORMAT
    assert "envoy_settings.access_log_properties: true" in proc.stderr, proc.stderr


def test_tls_cluster_fails_over_through_the_plain_redirector(wasm, gateways, tmp_path, make_mock):
    """An https deployment whose host refuses connections: Envoy retries onto the cluster's redirector endpoint,
    which must be reached without TLS (transport_socket_matches), and the request fails over."""
    mock = make_mock("openai")
    closed = free_port()  # nothing listens there
    (tmp_path / "models.yaml").write_text(
        "model_list:\n"
        f"  - model_name: m\n    litellm_params: {{model: openai/fallback, api_base: '{mock.url}/v1', "
        "api_key: os.environ/OPENAI_API_KEY, order: 2}\n    model_info: {id: plain-up}\n")
    config = tmp_path / "config.yaml"
    config.write_text(
        "include: [models.yaml]\n"
        "key: &key {api_key: os.environ/OPENAI_API_KEY}\n"
        "model_list:\n"
        "  - model_name: m\n"
        "    litellm_params:\n"
        "      <<: *key\n"
        f"      api_base: https://127.0.0.1:{closed}/v1\n"
        "      model: openai/primary\n"
        "      order: 1\n"
        "    model_info: {id: tls-down}\n"
        "router_settings: {num_retries: 1}\n")
    ca = Path("/etc/ssl/certs/ca-certificates.crt")
    if not ca.exists():
        ca = next(REPO.joinpath(".venv").glob("lib/python*/site-packages/pip/_vendor/certifi/cacert.pem"))
    bootstrap = tmp_path / "gateway.json"
    listen, admin = generate(config, bootstrap, "--ca-file", ca, env=KEYS)
    gw = Gateway(bootstrap, listen, admin, KEYS, "tls-redirector")
    gateways.append(gw)
    gw.wait_ready()
    resp = post_json(gw.url, "/v1/chat/completions", chat("m"))
    expect_routed(resp, "plain-up", "m")
    assert resp.headers.get("x-llm-router-attempts") == "2", resp.headers
    expect_upstream(mock.last(), path="/v1/chat/completions", host=mock.authority, model="fallback",
                    headers={"authorization": "Bearer sk-demo-openai"})


def test_envoy_accepts_the_bootstrap_with_a_rate_limit_service(wasm, gateways, tmp_path):
    """With `envoy_settings.rate_limit_service`, the bootstrap also has the RLS's cluster (HTTP/2, no upstream
    filter): `envoy --mode validate` accepts it, and Envoy boots on it with the filter configured (no RLS needs to
    run: nothing is requested)."""
    config = tmp_path / "config.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: m\n"
        "    litellm_params: {model: openai/m, api_base: 'http://127.0.0.1:18001/v1', api_key: x}\n"
        "envoy_settings:\n"
        "  rate_limit_service: {cluster: llm_router_rls, domain: gw, timeout_ms: 80}\n"
        "keys:\n"
        f"  - token: {'ab' * 32}\n"
        "    rpm_limit: 10\n")
    bootstrap = tmp_path / "gateway.yaml"
    listen, admin = generate(config, bootstrap, "--rls-address", "localhost:8081")
    text = bootstrap.read_text()
    assert "#   rls:       llm_router_rls -> localhost:8081" in text, text[:2000]
    proc = subprocess.run([str(ENVOY_BIN), "--mode", "validate", "-c", str(bootstrap), "--use-dynamic-base-id"],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0 and "OK" in proc.stdout + proc.stderr, proc.stdout[-3000:] + proc.stderr[-3000:]
    gw = Gateway(bootstrap, listen, admin, {}, "rls-cluster")
    gateways.append(gw)
    gw.wait_ready()
    with urllib.request.urlopen(f"{gw.admin_url}/clusters?format=json", timeout=5) as r:
        statuses = json.load(r)["cluster_statuses"]
    assert "llm_router_rls" in [c["name"] for c in statuses], statuses
