"""The filter's own endpoints: `GET /v1/models` (and `/models`) from the routing table, and
`GET /llm-router/health` with each deployment's state — answered by the filter, never forwarded."""

from __future__ import annotations

import time

import pytest

from .support import client
from .support.checks import expect_error, expect_no_secrets, response_text
from .support.envoy import clusters_for
from .support.plugin import chat, deployment, plugin_config

MASTER_KEY = "sk-gateway-master-7f3a"
KEYS = {"a1": "sk-secret-a1-9c1e", "a2": "sk-secret-a2-44d0", "b1": "sk-secret-b1-e7aa"}


@pytest.fixture(scope="module")
def mocks(make_module_mock):
    return {name: make_module_mock("openai", name) for name in ("a1", "a2", "b1", "pass")}


def models(mocks) -> list:
    return [
        deployment("gpt-4o", "openai/gpt-4o", mocks["a1"].url + "/v1", api_key=KEYS["a1"], id="a1", weight=1),
        deployment("gpt-4o", "openai/gpt-4o-mini", mocks["a2"].url + "/v1", api_key=KEYS["a2"], id="a2", weight=0),
        deployment("claude", "openai/claude-like", mocks["b1"].url + "/v1", api_key=KEYS["b1"], id="b1"),
        deployment("openai/*", "openai/*", mocks["b1"].url + "/v1", api_key=KEYS["b1"], id="wild"),
    ]


ALIASES = {"gpt4": "gpt-4o", "legacy": {"model": "claude", "hidden": True}, "sonnet": {"model": "claude"}}


@pytest.fixture(scope="module")
def envoy(start_module_envoy, mocks):
    cfg = plugin_config(models(mocks), aliases=ALIASES, allowed_fails=0, cooldown_time=30)
    return start_module_envoy(cfg, clusters_for(mocks["a1"], mocks["a2"], mocks["b1"], passthrough=mocks["pass"]))


def ids(resp) -> list:
    body = resp.json()
    assert body["object"] == "list", body
    for m in body["data"]:
        assert set(m) == {"id", "object", "created", "owned_by"}, m
        assert m["object"] == "model" and isinstance(m["created"], int) and isinstance(m["owned_by"], str), m
    return [m["id"] for m in body["data"]]


def test_models_lists_groups_and_visible_aliases_on_both_paths(envoy, mocks):
    before = {n: m.count for n, m in mocks.items()}
    for path in ("/v1/models", "/models", "/v1/models?limit=1"):
        resp = client.get(envoy.base_url, path)
        assert resp.status == 200, resp
        assert resp.headers["content-type"] == "application/json"
        # Groups in config order (the wildcard under its pattern), then non-hidden aliases by name.
        assert ids(resp) == ["gpt-4o", "claude", "openai/*", "gpt4", "sonnet"], path
    assert "legacy" not in resp.text
    expect_no_secrets(response_text(resp), KEYS.values(), "the model list")
    head = client.request("HEAD", envoy.base_url, "/v1/models")
    assert head.status == 200 and head.body == b"", head
    assert {n: m.count for n, m in mocks.items()} == before, "a local endpoint reached a provider"


@pytest.mark.parametrize("method,path", [("POST", "/v1/models"), ("DELETE", "/llm-router/health"),
                                         ("PUT", "/models")])
def test_other_methods_get_405_with_allow(envoy, method, path):
    resp = client.request(method, envoy.base_url, path, b"{}", {"content-type": "application/json"})
    expect_error(resp, 405, "method_not_allowed")
    assert resp.headers["allow"] == "GET, HEAD"


def test_health_reports_a_cooling_deployment_and_no_secret(envoy, mocks):
    # a1 weighs 1 and a2 0: a1 serves first; with allowed_fails 0 its 500 cools it at once.
    mocks["a1"].respond(status=500, times=1)
    t0 = int(time.time() * 1000)
    resp = client.post_json(envoy.base_url, "/v1/chat/completions", chat("gpt-4o"))
    assert resp.status == 500 and resp.headers["x-llm-router-deployment"] == "a1", resp
    resp = client.get(envoy.base_url, "/llm-router/health?verbose=1")
    t1 = int(time.time() * 1000)
    assert resp.status == 200, resp
    assert resp.headers["content-type"] == "application/json"
    expect_no_secrets(response_text(resp), [*KEYS.values(), MASTER_KEY, "api_key", "authorization"], "the health report")
    doc = resp.json()
    assert (doc["healthy_count"], doc["unhealthy_count"]) == (3, 1), doc
    by_id = {d["id"]: d for d in doc["deployments"]}
    assert list(by_id) == ["a1", "a2", "b1", "wild"]
    a1 = by_id["a1"]
    assert a1["state"] == "cooling", a1
    assert t0 + 30_000 <= a1["cooling_until_ms"] <= t1 + 30_000, a1
    assert 0 < a1["cooldown_remaining_ms"] <= 30_000, a1
    assert (a1["failures_in_window"], a1["last_error_class"], a1["last_probe"]) == (1, "server_error", None), a1
    assert (a1["model_group"], a1["provider"], a1["model"]) == ("gpt-4o", "openai", "gpt-4o"), a1
    assert a1["cluster"] == mocks["a1"].cluster_name, a1
    for other in ("a2", "b1", "wild"):
        d = by_id[other]
        assert (d["state"], d["cooling_until_ms"], d["cooldown_remaining_ms"], d["failures_in_window"],
                d["last_error_class"]) == ("healthy", None, None, 0, None), d
    # The cooled deployment is skipped for routing, as the report says.
    resp = client.post_json(envoy.base_url, "/v1/chat/completions", chat("gpt-4o"))
    assert resp.headers["x-llm-router-deployment"] == "a2", resp


def test_master_key_guards_both_endpoints(start_envoy, mocks):
    cfg = plugin_config(models(mocks), aliases=ALIASES, master_key=MASTER_KEY)
    envoy = start_envoy(cfg, clusters_for(mocks["a1"], mocks["a2"], mocks["b1"], passthrough=mocks["pass"]))
    for path in ("/v1/models", "/llm-router/health"):
        expect_error(client.get(envoy.base_url, path), 401, "invalid_api_key")
        expect_error(client.get(envoy.base_url, path, {"authorization": "Bearer wrong"}), 401, "invalid_api_key")
        for header in ({"authorization": f"Bearer {MASTER_KEY}"}, {"x-api-key": MASTER_KEY}):
            resp = client.get(envoy.base_url, path, header)
            assert resp.status == 200, resp
            expect_no_secrets(response_text(resp), [MASTER_KEY, *KEYS.values()], path)


def test_custom_paths_and_disabled_endpoints_pass_through(start_envoy, mocks):
    cfg = plugin_config(models(mocks), envoy_settings={"models_paths": ["/gw/models"], "health_path": "/gw/health"})
    envoy = start_envoy(cfg, clusters_for(mocks["a1"], mocks["a2"], mocks["b1"], passthrough=mocks["pass"]))
    assert ids(client.get(envoy.base_url, "/gw/models")) == ["gpt-4o", "claude", "openai/*"]
    assert client.get(envoy.base_url, "/gw/health").json()["healthy_count"] == 4
    mocks["pass"].reset()
    for path in ("/v1/models", "/models", "/llm-router/health"):
        resp = client.get(envoy.base_url, path)
        assert resp.json().get("object") == "mock.echo", resp  # the passthrough cluster answered
    assert [r.path for r in mocks["pass"].requests] == ["/v1/models", "/models", "/llm-router/health"]

    off = plugin_config(models(mocks), envoy_settings={"models_paths": [], "health_path": None})
    envoy = start_envoy(off, clusters_for(mocks["a1"], mocks["a2"], mocks["b1"], passthrough=mocks["pass"]))
    mocks["pass"].reset()
    for path in ("/v1/models", "/gw/models", "/llm-router/health"):
        assert client.get(envoy.base_url, path).json().get("object") == "mock.echo", path
    assert mocks["pass"].count == 3


def test_a_local_path_on_a_routed_endpoint_refuses_the_config(mocks):
    from .support.envoy import Envoy
    cfg = plugin_config(models(mocks), envoy_settings={"health_path": "/v1/chat/completions"})
    _, log = Envoy.expect_refused(cfg)
    assert "envoy_settings.health_path: is a routed endpoint" in log
