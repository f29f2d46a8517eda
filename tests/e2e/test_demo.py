"""The demo works (`scripts/demo --check`), and envoy/demo.yaml stays in step with examples/demo-config.json
and with the bootstrap this harness builds; envoy/demo-keys.yaml (the virtual-keys gateway) is what
`llm-router envoy` writes for examples/demo-keys.yaml, and its keys allow, deny (401) and rate-limit (429)."""

from __future__ import annotations

import json
import subprocess
import textwrap

import pytest

from .support.envoy import REPO, Envoy, stats_config

DEMO_YAML = REPO / "envoy" / "demo.yaml"
DEMO_CONFIG = REPO / "examples" / "demo-config.json"
DUMP = REPO / ".run" / "demo" / "config_dump.json"
DEMO_KEYS_YAML = REPO / "envoy" / "demo-keys.yaml"
# How envoy/demo-keys.yaml is made (its header says so too).
DEMO_KEYS_CMD = ["cargo", "run", "-q", "-p", "llm-router-cli", "--", "envoy", "examples/demo-keys.yaml",
                 "--listen", "127.0.0.1:10010", "--admin", "127.0.0.1:9911", "--redirector", "127.0.0.1:10011"]


def embedded_config_text() -> str:
    """The block scalar between the BEGIN/END markers of envoy/demo.yaml, as YAML reads it."""
    lines = DEMO_YAML.read_text().splitlines()
    begin = next(i for i, line in enumerate(lines) if "# BEGIN examples/demo-config.json" in line)
    end = next(i for i, line in enumerate(lines) if "# END examples/demo-config.json" in line)
    assert lines[begin + 1].strip() == "value: |", lines[begin + 1]
    return textwrap.dedent("\n".join(lines[begin + 2:end])).strip("\n") + "\n"


def test_demo_yaml_embeds_examples_demo_config_verbatim():
    assert json.loads(embedded_config_text()) == json.loads(DEMO_CONFIG.read_text())
    assert embedded_config_text() == DEMO_CONFIG.read_text(), "keep the copy verbatim (paste the whole file)"


def ingress_listener(dump: dict) -> dict:
    by_type = {c["@type"].rsplit(".", 1)[-1]: c for c in dump["configs"]}
    listeners = [ls["listener"] for ls in by_type["ListenersConfigDump"]["static_listeners"]]
    (ingress,) = [ls for ls in listeners if ls["name"] == "ingress"]
    return ingress


def hcm_and_clusters(dump: dict) -> tuple:
    """(the ingress listener's HttpConnectionManager, the static clusters by name) from a /config_dump."""
    by_type = {c["@type"].rsplit(".", 1)[-1]: c for c in dump["configs"]}
    hcm = ingress_listener(dump)["filter_chains"][0]["filters"][0]["typed_config"]
    clusters = {c["cluster"]["name"]: c["cluster"] for c in by_type["ClustersConfigDump"]["static_clusters"]}
    return hcm, clusters


def wasm_config(hcm: dict) -> dict:
    (wasm,) = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.wasm"]
    return wasm["typed_config"]["config"]


@pytest.fixture(scope="module")
def demo_run(wasm):
    DUMP.unlink(missing_ok=True)
    proc = subprocess.run(["scripts/demo", "--check"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"scripts/demo --check failed:\n{proc.stdout}\n{proc.stderr}"
    assert "demo: check passed" in proc.stdout, proc.stdout
    return proc.stdout, json.loads(DUMP.read_text())


@pytest.fixture(scope="module")
def demo_dump(demo_run):
    return demo_run[1]


def test_the_demo_s_keys_gateway_allows_denies_and_rate_limits(demo_run):
    out = demo_run[0]
    for line in ("research-app -> gpt-4o: HTTP 200", "support-bot -> gpt-4o: HTTP 401, code 'team_model_access_denied'",
                 "support-bot -> gpt-4o-mini: HTTP 200", "support-bot -> gpt-4o-mini: HTTP 429, code '429'"):
        assert line in out, out


def test_demo_keys_yaml_is_what_the_cli_writes():
    proc = subprocess.run(DEMO_KEYS_CMD, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == DEMO_KEYS_YAML.read_text(), \
        "envoy/demo-keys.yaml is out of date: regenerate it with " + " ".join(DEMO_KEYS_CMD) + " -o envoy/demo-keys.yaml"


def test_the_demo_starts_routes_a_request_and_stops(demo_dump):
    hcm, clusters = hcm_and_clusters(demo_dump)
    assert set(clusters) == {"passthrough", "outbound|18001||127.0.0.1", "outbound|18002||127.0.0.1",
                             "outbound|18003||127.0.0.1"}


def test_the_demo_runs_examples_demo_config(demo_dump):
    hcm, _ = hcm_and_clusters(demo_dump)
    value = wasm_config(hcm)["configuration"]["value"]
    assert json.loads(value) == json.loads(DEMO_CONFIG.read_text())


def test_demo_yaml_matches_the_harness_bootstrap(demo_dump):
    demo_hcm, demo_clusters = hcm_and_clusters(demo_dump)
    env = wasm_config(demo_hcm)["vm_config"]["environment_variables"]["key_values"]
    clusters = {name: ("127.0.0.1", c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
                       ["socket_address"]["port_value"]) for name, c in demo_clusters.items()}
    clusters = {"passthrough": clusters.pop("passthrough"), **clusters}
    redirector = [ls for ls in (l["listener"] for l in next(c for c in demo_dump["configs"] if c["@type"].endswith(
        "ListenersConfigDump"))["static_listeners"]) if ls["name"] == "llm_router_redirector"]
    port = redirector[0]["address"]["socket_address"]["port_value"]
    with Envoy(DEMO_CONFIG.read_text(), clusters, env=env, passthrough="passthrough", label="demo-twin",
               failover=port, access_log="stdout") as twin:
        twin_dump = twin.config_dump()
        twin_hcm, twin_clusters = hcm_and_clusters(twin_dump)
    # The listener's buffer limit (the one that answers 413) is outside the HCM: compared on its own.
    assert ingress_listener(demo_dump)["per_connection_buffer_limit_bytes"] == \
        ingress_listener(twin_dump)["per_connection_buffer_limit_bytes"]
    for hcm in (demo_hcm, twin_hcm):  # the demo names the wasm relative to the repo, the harness absolutely
        wasm_config(hcm)["vm_config"]["code"]["local"]["filename"] = "<llm_router.wasm>"
    for cs in (demo_clusters, twin_clusters):
        for c in cs.values():
            for f in c.get("typed_extension_protocol_options", {}).get(
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions", {}).get("http_filters", []):
                if f["name"] == "envoy.filters.http.wasm":
                    f["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"] = "<llm_router.wasm>"
    assert demo_hcm == twin_hcm
    assert demo_clusters == twin_clusters


def test_demo_yaml_has_the_harness_metric_tags(demo_dump):
    (boot,) = [c for c in demo_dump["configs"] if c["@type"].endswith("BootstrapConfigDump")]
    assert boot["bootstrap"]["stats_config"]["stats_tags"] == stats_config()["stats_tags"]
