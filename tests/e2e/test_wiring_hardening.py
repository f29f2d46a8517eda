"""The Envoy wiring around the router holds up under load and against a hostile provider.

The values come from one place per concern in support/envoy.py (buffer_limit, HTTP_PROTOCOL_OPTIONS,
ROUTE_TIMEOUT / STREAM_IDLE_TIMEOUT, circuit_breakers, failover_redirect_policy); `llm-router envoy`
(cli/src/envoy.rs) and envoy/demo.yaml carry the same ones: the last test here compares the CLI's output with the
harness, tests/e2e/test_demo.py compares the demo with it.

- a body just under max_request_body_bytes that the router's rewrite lengthens is forwarded, and replayed on
  failover (the listener's buffer limit has room for the rewrite; it is the limit that answers 413);
- an HTTP/1.0 client is answered (not 426);
- routes have no total timeout: a stream outlives the deployment's per-try timeout intact;
- 64 concurrent requests failing over from a refusing deployment never hit the circuit breaker's retry limit
  (Envoy's plain-text 503);
- a provider's own 307 is not followed: the request is never replayed to where it points.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from .support import client
from .support import envoy as envoy_support
from .support.checks import expect_error, expect_routed, expect_upstream
from .support.envoy import REPO, clusters_for, free_port
from .support.plugin import chat, deployment, plugin_config

LIMIT = 1048576  # plugin_config's envoy_settings.max_request_body_bytes
LONG_MODEL = "a-" + "x" * 300  # the deployment's model id: the rewrite lengthens a request for "a" by 300+ bytes
DEFAULTS = {"temperature": 0.25, "max_tokens": 64}  # default_params the rewrite inserts


def body_of_size(size: int, model: str = "a") -> dict:
    body = chat(model, "")
    body["messages"][0]["content"] = "y" * (size - len(json.dumps(body).encode()))
    assert len(json.dumps(body).encode()) == size
    return body


def rewriting_envoy(start_envoy, make_mock, failover: bool = True):
    """Group "a": a1 (always first) and a2 (weight 0: only as the retry), both with a long model id and
    default_params, so the router's rewrite lengthens every body."""
    a1, a2 = make_mock("openai", "a1"), make_mock("openai", "a2")
    models = [deployment("a", "openai/" + LONG_MODEL, a1.url + "/v1", api_key="sk-a1", id="a1", weight=1,
                         model_info={"default_params": DEFAULTS}),
              deployment("a", "openai/" + LONG_MODEL, a2.url + "/v1", api_key="sk-a2", id="a2", weight=0,
                         model_info={"default_params": DEFAULTS})]
    cfg = plugin_config(models, allowed_fails=100, num_retries=1)
    return start_envoy(cfg, clusters_for(a1, a2, passthrough=a1), failover=failover), a1, a2


# ---- (a) the buffer limit leaves room for the router's rewrite ------------------------------------------------

def test_a_body_just_under_the_limit_whose_rewrite_lengthens_it_is_forwarded_and_replayed(start_envoy, make_mock):
    envoy, a1, a2 = rewriting_envoy(start_envoy, make_mock)
    body = body_of_size(LIMIT - 10)
    resp = client.post_json(envoy.base_url, "/v1/chat/completions", body, timeout=30)
    expect_routed(resp, "a1", "a")
    rec = expect_upstream(a1.last(), path="/v1/chat/completions", host=a1.authority, model=LONG_MODEL)
    assert len(rec.body) > LIMIT, "the rewrite did not lengthen the body: the scenario tests nothing"
    assert rec.json["temperature"] == 0.25 and rec.json["messages"] == body["messages"]

    # The same body when a1 fails: Envoy replays the rewritten (longer) body to the next pass, which rewrites it
    # again for a2.
    a1.respond(status=500, times=1)
    resp = client.post_json(envoy.base_url, "/v1/chat/completions", body, timeout=30)
    expect_routed(resp, "a2", "a")
    assert resp.headers["x-llm-router-attempts"] == "2"
    rec = expect_upstream(a2.last(), path="/v1/chat/completions", host=a2.authority, model=LONG_MODEL,
                          headers={"authorization": "Bearer sk-a2"})
    assert len(rec.body) > LIMIT and rec.json["messages"] == body["messages"]


def test_the_headroom_does_not_widen_what_the_router_accepts(start_envoy, make_mock):
    envoy, a1, a2 = rewriting_envoy(start_envoy, make_mock)
    resp = client.post_json(envoy.base_url, "/v1/chat/completions", body_of_size(LIMIT + 1), timeout=30)
    expect_error(resp, 413, "request_too_large")
    assert a1.count == 0 and a2.count == 0


def test_the_listeners_buffer_limit_is_the_one_that_answers_413(start_envoy, make_mock, monkeypatch):
    """Which limit matters, measured: the listener's limit at exactly max_request_body_bytes turns the lengthened
    body into Envoy's 413 after the router routed it; a small cluster limit does not."""
    monkeypatch.setattr(envoy_support, "buffer_limit", envoy_support.max_request_body_bytes)
    envoy, a1, _ = rewriting_envoy(start_envoy, make_mock)
    assert envoy.bootstrap["static_resources"]["listeners"][0]["per_connection_buffer_limit_bytes"] == LIMIT
    resp = client.post_json(envoy.base_url, "/v1/chat/completions", body_of_size(LIMIT - 10), timeout=30)
    expect_error(resp, 413, "request_too_large")
    assert resp.headers.get("x-llm-router-deployment") == "a1", "the router had accepted and routed it"
    assert a1.count == 0


def test_a_small_cluster_buffer_limit_does_not_refuse_the_body(start_envoy, make_mock, monkeypatch):
    plain = envoy_support._plain_cluster

    def small_buffer(name, host, port):
        return {**plain(name, host, port), "per_connection_buffer_limit_bytes": 65536}

    monkeypatch.setattr(envoy_support, "_plain_cluster", small_buffer)
    envoy, a1, a2 = rewriting_envoy(start_envoy, make_mock)
    a1.respond(status=500, times=1)
    resp = client.post_json(envoy.base_url, "/v1/chat/completions", body_of_size(LIMIT - 10), timeout=30)
    expect_routed(resp, "a2", "a")
    assert len(a2.last().body) > LIMIT


# ---- (b) HTTP/1.0 ---------------------------------------------------------------------------------------------

def http10(base_url: str, path: str, body: bytes, headers: dict, timeout: float = 10) -> tuple:
    """One HTTP/1.0 request on a raw socket; the answer is read until the server closes (1.0 has no keep-alive
    unless asked for). Returns (status line, headers, body)."""
    host, port = base_url.rsplit("//", 1)[1].split(":")
    head = f"POST {path} HTTP/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head += f"Content-Length: {len(body)}\r\n\r\n"
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(head.encode() + body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    raw_head, _, payload = data.partition(b"\r\n\r\n")
    status, *lines = raw_head.decode("latin-1").split("\r\n")
    return status, {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}, payload


def test_an_http_1_0_client_is_answered(start_envoy, make_mock):
    a1 = make_mock("openai", "a1")
    cfg = plugin_config([deployment("a", "openai/a-one", a1.url + "/v1", api_key="sk-a1", id="a1")])
    envoy = start_envoy(cfg, clusters_for(a1, passthrough=a1), failover=True)
    body = json.dumps(chat("a")).encode()
    status, headers, payload = http10(envoy.base_url, "/v1/chat/completions", body,
                                      {"Host": "gateway", "Content-Type": "application/json"})
    assert status.split(" ")[1] == "200", (status, payload[:300])
    assert headers["x-llm-router-deployment"] == "a1"
    assert json.loads(payload)["model"] == "a-one"
    expect_upstream(a1.last(), path="/v1/chat/completions", host=a1.authority, model="a-one")

    # A streamed answer too: HTTP/1.0 has no chunked encoding, the end of the stream is the end of the connection.
    a1.respond(stream_delay=0.05)
    status, headers, payload = http10(envoy.base_url, "/v1/chat/completions",
                                      json.dumps(chat("a", stream=True)).encode(),
                                      {"Host": "gateway", "Content-Type": "application/json"})
    assert status.split(" ")[1] == "200", (status, payload[:300])
    assert headers["content-type"].startswith("text/event-stream")
    assert payload.rstrip().endswith(b"data: [DONE]"), payload[-200:]


# ---- (c) no total timeout on the routes -----------------------------------------------------------------------

def routes_of(dump: dict) -> tuple:
    (listeners,) = [c for c in dump["configs"] if c["@type"].endswith("ListenersConfigDump")]
    (ingress,) = [ls["listener"] for ls in listeners["static_listeners"] if ls["listener"]["name"] == "ingress"]
    hcm = ingress["filter_chains"][0]["filters"][0]["typed_config"]
    return hcm, hcm["route_config"]["virtual_hosts"][0]["routes"]


def sse_data(raw: bytes) -> list:
    return [line[len(b"data: "):].decode() for line in raw.split(b"\n") if line.startswith(b"data: ")]


def test_a_stream_longer_than_the_per_try_timeout_passes_intact(start_envoy, make_mock):
    a1 = make_mock("openai", "a1")
    # timeout=1: the router gives each attempt 1 s to its response headers (x-envoy-upstream-rq-per-try-timeout-ms).
    cfg = plugin_config([deployment("a", "openai/a-one", a1.url + "/v1", api_key="sk-a1", id="a1", timeout=1)])
    envoy = start_envoy(cfg, clusters_for(a1, passthrough=a1), failover=True)
    # What Envoy runs: no total timeout on any route (Envoy's default would be 15 s, the demo had 30 s), an idle
    # timeout on the connection manager.
    hcm, routes = routes_of(envoy.config_dump())
    assert hcm["stream_idle_timeout"] == envoy_support.STREAM_IDLE_TIMEOUT == "600s"
    assert [r["route"]["timeout"] for r in routes if "route" in r] == ["0s", "0s"]
    assert all("idle_timeout" not in r.get("route", {}) for r in routes)

    a1.respond(stream_delay=0.6)  # 5 events: 2.4 s of stream after the headers, more than twice the per-try budget
    s = client.stream_post(envoy.base_url, "/v1/chat/completions", chat("a", stream=True), timeout=10)
    assert s.status == 200 and s.headers["x-llm-router-deployment"] == "a1", (s.status, s.headers)
    s.read_all()
    assert s.chunks[-1][0] > 2.0, "the stream ended before its last event was due"
    assert s.chunks[0][0] < 0.5, "the stream was not incremental"
    events = sse_data(s.body)
    assert events[-1] == "[DONE]", events
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1])
    assert text == "Hello from the openai mock (a1).", text
    assert s.headers.get("x-llm-router-attempts") == "1"


# ---- (d) circuit breakers under concurrent failover -----------------------------------------------------------

def test_many_concurrent_failovers_never_get_envoys_plain_text_503(start_envoy, make_mock):
    """64 clients at once; in group "a" the first deployment refuses connections (each attempt is retried onto the
    redirector: a circuit-breaker retry), in group "b" it answers 503 (an internal redirect). Every client gets
    the answer of the second deployment. With Envoy's default max_retries (3) most of group "a" got
    `upstream connect error ...` as text/plain 503 (measured: 98 of 128)."""
    bad, good = make_mock("openai", "bad"), make_mock("openai", "good")
    dead = free_port()
    models = [deployment("a", "openai/a-dead", f"http://127.0.0.1:{dead}/v1", api_key="sk-dead", id="dead", weight=1),
              deployment("a", "openai/a-good", good.url + "/v1", api_key="sk-good", id="good-a", weight=0),
              deployment("b", "openai/b-bad", bad.url + "/v1", api_key="sk-bad", id="bad", weight=1),
              deployment("b", "openai/b-good", good.url + "/v1", api_key="sk-good", id="good-b", weight=0)]
    # Failures never cool a deployment here: every request fails over.
    cfg = plugin_config(models, allowed_fails=1_000_000, num_retries=1)
    clusters = clusters_for(bad, good, passthrough=good)
    dead_cluster = f"outbound|{dead}||127.0.0.1"
    clusters[dead_cluster] = ("127.0.0.1", dead)
    envoy = start_envoy(cfg, clusters, failover=True, concurrency=2)
    bad.respond(status=503, delay=0.1)

    def one(i: int):
        return client.post_json(envoy.base_url, "/v1/chat/completions", chat("a" if i % 2 else "b"), timeout=30)

    with ThreadPoolExecutor(64) as pool:
        answers = list(pool.map(one, range(256)))
    seen = Counter((r.status, r.headers.get("content-type"), r.headers.get("x-llm-router-deployment"))
                   for r in answers)
    assert seen == {(200, "application/json", "good-a"): 128, (200, "application/json", "good-b"): 128}, seen
    stats = envoy.stats("cluster.")
    assert stats.get(f"cluster.{dead_cluster}.upstream_rq_retry", 0) == 128, "the retries did not happen"
    assert stats.get(f"cluster.{dead_cluster}.upstream_rq_retry_overflow", 0) == 0


# ---- (e) a provider's own redirect ----------------------------------------------------------------------------

def evil_envoy(start_envoy, make_mock):
    """Group "a": evil (first) and good; the passthrough cluster is the thief, i.e. where a replayed request the
    router does not route would land in this harness (the CLI's bootstrap has no passthrough at all)."""
    evil, good, thief = make_mock("openai", "evil"), make_mock("openai", "good"), make_mock("openai", "thief")
    models = [deployment("a", "openai/a", evil.url + "/v1", api_key="sk-evil-deployment", id="evil", weight=1),
              deployment("a", "openai/a", good.url + "/v1", api_key="sk-good", id="good", weight=0)]
    cfg = plugin_config(models, allowed_fails=100, num_retries=1)
    clusters = clusters_for(evil, good)
    clusters = {envoy_support.PASSTHROUGH_CLUSTER: (thief.host, thief.port), **clusters}
    return start_envoy(cfg, clusters, failover=True), evil, good, thief


def steal_locations(thief) -> list:
    return [f"http://127.0.0.1:{thief.port}/steal",
            # a path the router routes: the replayed body's model ("a") would be routed afresh
            f"http://127.0.0.1:{thief.port}/v1/chat/completions",
            # the failover path with a state the router did not sign
            f"http://127.0.0.1:{thief.port}/__llm_router/failover?status=500&state=v%3D1"]


def test_a_providers_own_redirect_is_not_followed(start_envoy, make_mock):
    envoy, evil, good, thief = evil_envoy(start_envoy, make_mock)
    for location in steal_locations(thief):
        evil.respond(status=307, headers={"location": location}, times=1)
        resp = client.post_json(envoy.base_url, "/v1/chat/completions", chat("a"))
        # Followed only to the failover route (the allow-listed one), where the router refuses the forged pass;
        # any other redirect is not followed by Envoy, and the router does not pass it on either (the client would
        # follow it with its gateway key): both end as the router's 502.
        expect_error(resp, 502, "upstream_redirect_refused")
        assert "location" not in resp.headers, resp
        assert thief.count == 0, [r.path for r in thief.requests]
        assert good.count == 0, "a provider's redirect must not pick the next deployment either"
    # The router's own failover still works with the restricted policy.
    evil.respond(status=500, times=1)
    resp = client.post_json(envoy.base_url, "/v1/chat/completions", chat("a"))
    expect_routed(resp, "good", "a")
    assert resp.headers["x-llm-router-attempts"] == "2" and thief.count == 0


# The filter-side half of the fix: a wiring without the route predicate (an older or hand-written bootstrap)
# follows the provider's 307, and only the router can then refuse the replayed pass it did not sign.
def test_without_the_route_predicate_the_router_refuses_an_unsigned_replay(start_envoy, make_mock, monkeypatch):
    monkeypatch.setattr(envoy_support, "FAILOVER_REDIRECT_POLICY",
                        {"redirect_response_codes": [307], "max_internal_redirects": 10})
    envoy, evil, good, thief = evil_envoy(start_envoy, make_mock)
    for location in steal_locations(thief):
        evil.respond(status=307, headers={"location": location}, times=1)
        client.post_json(envoy.base_url, "/v1/chat/completions", chat("a"))
        assert thief.count == 0, [(r.path, r.header("authorization")) for r in thief.requests]
        assert good.count == 0


# ---- the CLI writes the same values ---------------------------------------------------------------------------

def test_llm_router_envoy_writes_the_harness_values():
    proc = subprocess.run(["cargo", "run", "-q", "-p", "llm-router-cli", "--", "envoy", "examples/demo-config.json",
                           "--format", "json"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    boot = json.loads(proc.stdout)
    (ingress,) = [ls for ls in boot["static_resources"]["listeners"] if ls["name"] == "ingress"]
    demo_config = (REPO / "examples" / "demo-config.json").read_text()
    assert ingress["per_connection_buffer_limit_bytes"] == envoy_support.buffer_limit(demo_config) == LIMIT + 65536
    hcm = ingress["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["http_protocol_options"] == envoy_support.HTTP_PROTOCOL_OPTIONS
    assert hcm["stream_idle_timeout"] == envoy_support.STREAM_IDLE_TIMEOUT
    assert hcm["early_header_mutation_extensions"] == [envoy_support.strip_client_cluster_header()]
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    routed = routes[0]
    assert routed["route"]["timeout"] == envoy_support.ROUTE_TIMEOUT
    assert routed["route"]["retry_policy"] == envoy_support.FAILOVER_RETRY_POLICY
    assert routed["route"]["internal_redirect_policy"] == envoy_support.failover_redirect_policy()
    assert routed["request_headers_to_remove"] == [envoy_support.CLUSTER_HEADER]
    assert routes[1] == envoy_support.failover_route()
    for c in boot["static_resources"]["clusters"]:
        assert c["circuit_breakers"] == envoy_support.circuit_breakers(), c["name"]
