"""Cooldowns (LiteLLM semantics): a deployment whose failures in the last minute exceed allowed_fails, or that
answers 429 while its group has another deployment, is skipped by every worker for cooldown_time seconds
(or the upstream's Retry-After, capped by envoy_settings.max_cooldown_time)."""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from .support import client
from .support.checks import expect_error, expect_routed
from .support.envoy import clusters_for
from .support.plugin import chat, deployment, plugin_config


def start_router(start_envoy, make_mock, *, deployments: int = 1, allowed_fails: int = 0, cooldown_time: float = 30,
                 max_cooldown_time: float = 300, concurrency: int = 1, route_timeout: str = "30s"):
    """A group `solo` (one deployment, id "a") or `pair` (ids "a" and "b"), each on its own mock."""
    group = "solo" if deployments == 1 else "pair"
    mocks = [make_mock("openai", name) for name in "ab"[:deployments]]
    cfg = plugin_config(
        [deployment(group, f"openai/model-{m.name}", m.url + "/v1", api_key="k", id=m.name) for m in mocks],
        allowed_fails=allowed_fails, cooldown_time=cooldown_time,
        envoy_settings={"max_cooldown_time": max_cooldown_time})
    envoy = start_envoy(cfg, clusters_for(*mocks), concurrency=concurrency, route_timeout=route_timeout)

    def send(**kw):
        return client.post_json(envoy.base_url, "/v1/chat/completions", chat(group), **kw)

    return send, mocks


def expect_no_healthy(r, group: str) -> int:
    """The router's own 429 when every deployment of the group is cooling; returns its Retry-After."""
    err = expect_error(r, 429, "no_healthy_deployments", type="rate_limit_error")
    assert group in err["message"], err
    assert r.headers.get("retry-after", "").isdigit(), r.headers
    assert "x-mock-provider" not in r.headers, "this 429 must come from the router, not a provider"
    return int(r.headers["retry-after"])


def until_hit(send, mock, n: int = 1, tries: int = 60) -> None:
    """Send requests until `mock` has received `n` (shuffle chooses which deployment serves)."""
    for _ in range(tries):
        if mock.count >= n:
            return
        send()
    assert mock.count >= n, f"{mock.name} received {mock.count} request(s) in {tries} tries"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- when a deployment is cooled ------------------------------------------------------------------------

def test_a_deployment_is_cooled_once_its_failures_exceed_allowed_fails(start_envoy, make_mock):
    send, (a,) = start_router(start_envoy, make_mock, allowed_fails=1, cooldown_time=30)
    a.respond(status=500)
    expect_routed(send(), "a", "solo", status=500)  # 1 failure: not more than allowed_fails
    expect_routed(send(), "a", "solo", status=500)  # 2 failures > 1: cooled
    retry_after = expect_no_healthy(send(), "solo")
    assert 28 <= retry_after <= 30
    assert a.count == 2


def test_a_429_cools_a_deployment_at_once_when_its_group_has_another(start_envoy, make_mock):
    send, (a, b) = start_router(start_envoy, make_mock, deployments=2, allowed_fails=3, cooldown_time=30)
    a.respond(status=429, times=1)
    until_hit(send, a)
    served = [send() for _ in range(30)]
    assert all(r.status == 200 and r.headers["x-llm-router-deployment"] == "b" for r in served), \
        [(r.status, r.headers.get("x-llm-router-deployment")) for r in served]
    assert a.count == 1


def test_a_429_in_a_single_deployment_group_is_just_a_failure(start_envoy, make_mock):
    send, (a,) = start_router(start_envoy, make_mock, allowed_fails=1, cooldown_time=30)
    a.respond(status=429, times=2)
    assert send().status == 429 and a.count == 1  # the provider's 429
    assert send().status == 429 and a.count == 2  # still tried: 1 failure was allowed
    expect_no_healthy(send(), "solo")
    assert a.count == 2


@pytest.mark.parametrize("status", [401, 404, 408, 500, 502, 503, 504])
def test_these_upstream_statuses_count_as_failures(start_envoy, make_mock, status):
    send, (a,) = start_router(start_envoy, make_mock, allowed_fails=0, cooldown_time=30)
    a.respond(status=status, times=1)
    expect_routed(send(), "a", "solo", status=status)
    expect_no_healthy(send(), "solo")
    assert a.count == 1


def test_other_client_errors_and_successes_never_cool(start_envoy, make_mock):
    send, (a,) = start_router(start_envoy, make_mock, allowed_fails=0, cooldown_time=30)
    a.respond(status=400, times=2)
    a.respond(status=422, times=1)
    a.respond(status=413, times=1)
    statuses = [send().status for _ in range(10)]
    assert statuses == [400, 400, 422, 413] + [200] * 6
    assert a.count == 10


# ---- Envoy's own failures: connect, reset, timeout -----------------------------------------------------------

def test_a_deployment_that_refuses_connections_is_cooled(start_envoy, make_mock):
    port = free_port()  # nothing listens there
    cfg = plugin_config([deployment("down", "openai/m", f"http://127.0.0.1:{port}/v1", api_key="k", id="down")],
                        allowed_fails=0, cooldown_time=30)
    envoy = start_envoy(cfg, {f"outbound|{port}||127.0.0.1": ("127.0.0.1", port)})
    assert client.post_json(envoy.base_url, "/v1/chat/completions", chat("down")).status == 503
    expect_no_healthy(client.post_json(envoy.base_url, "/v1/chat/completions", chat("down")), "down")


def test_a_connection_reset_by_the_provider_counts(start_envoy, make_mock):
    send, (a,) = start_router(start_envoy, make_mock, allowed_fails=0, cooldown_time=30)
    a.respond(close=True, times=1)
    assert send().status in (502, 503)
    expect_no_healthy(send(), "solo")
    assert a.count == 1


def test_an_upstream_timeout_counts(start_envoy, make_mock):
    send, (a,) = start_router(start_envoy, make_mock, allowed_fails=0, cooldown_time=30, route_timeout="0.5s")
    a.respond(delay=1.0, times=1)
    assert send().status == 504
    expect_no_healthy(send(), "solo")
    assert a.count == 1


# ---- how long a cooldown lasts -------------------------------------------------------------------------------

def test_the_deployment_serves_again_after_cooldown_time(start_envoy, make_mock):
    send, (a,) = start_router(start_envoy, make_mock, allowed_fails=0, cooldown_time=1)
    a.respond(status=500, times=1)
    t0 = time.monotonic()
    assert send().status == 500
    assert expect_no_healthy(send(), "solo") == 1
    time.sleep(max(0.0, t0 + 1.2 - time.monotonic()))
    expect_routed(send(), "a", "solo")
    assert a.count == 2


def test_an_upstream_retry_after_sets_the_cooldown(start_envoy, make_mock):
    send, (a,) = start_router(start_envoy, make_mock, allowed_fails=0, cooldown_time=30)
    a.respond(status=429, headers={"retry-after": "1"}, times=1)
    t0 = time.monotonic()
    assert send().status == 429
    assert expect_no_healthy(send(), "solo") == 1
    time.sleep(max(0.0, t0 + 1.2 - time.monotonic()))
    expect_routed(send(), "a", "solo")


def test_retry_after_is_capped_by_max_cooldown_time(start_envoy, make_mock):
    send, (a,) = start_router(start_envoy, make_mock, allowed_fails=0, cooldown_time=1, max_cooldown_time=2)
    a.respond(status=503, headers={"retry-after": "3600"}, times=1)
    t0 = time.monotonic()
    assert send().status == 503
    assert expect_no_healthy(send(), "solo") == 2
    time.sleep(max(0.0, t0 + 1.4 - time.monotonic()))
    expect_no_healthy(send(), "solo")  # Retry-After (capped to 2 s) wins over cooldown_time (1 s)
    time.sleep(max(0.0, t0 + 2.3 - time.monotonic()))
    expect_routed(send(), "a", "solo")


def _in_flight_then_cooled(send, a, first: dict, second: dict):
    """Request 1 is held by the mock (then fails as `first` says); meanwhile request 2 fails as `second` says
    and cools the deployment. Returns the time request 2 was answered and the thread of request 1."""
    a.respond(times=1, **first)
    a.respond(times=1, **second)
    results = []
    t = threading.Thread(target=lambda: results.append(send()))
    t.start()
    a.wait_for(1, timeout=5)
    r2 = send()
    assert r2.status == second["status"] and a.count == 2, r2
    return time.monotonic(), t, results


def test_a_failure_during_cooldown_extends_it(start_envoy, make_mock):
    send, (a,) = start_router(start_envoy, make_mock, allowed_fails=0, cooldown_time=2)
    t0, slow, results = _in_flight_then_cooled(send, a, dict(status=500, delay=0.6),
                                               dict(status=429, headers={"retry-after": "1"}))
    slow.join(timeout=5)
    assert results[0].status == 500  # answered ~0.6 s in: cooled again for cooldown_time (2 s) from then
    time.sleep(max(0.0, t0 + 1.4 - time.monotonic()))
    assert expect_no_healthy(send(), "solo") >= 1  # the 1 s Retry-After alone would have expired
    time.sleep(max(0.0, t0 + 2.9 - time.monotonic()))
    expect_routed(send(), "a", "solo")


def test_a_failure_during_cooldown_never_shortens_it(start_envoy, make_mock):
    send, (a,) = start_router(start_envoy, make_mock, allowed_fails=0, cooldown_time=1)
    t0, slow, results = _in_flight_then_cooled(send, a, dict(status=500, delay=1.0),
                                               dict(status=429, headers={"retry-after": "3"}))
    slow.join(timeout=5)
    assert results[0].status == 500  # at ~1 s: cooldown_time alone would end the cooldown at ~2 s
    time.sleep(max(0.0, t0 + 2.4 - time.monotonic()))
    assert expect_no_healthy(send(), "solo") >= 1
    time.sleep(max(0.0, t0 + 3.3 - time.monotonic()))
    expect_routed(send(), "a", "solo")


def test_when_every_deployment_cools_the_router_answers_429_with_the_shortest_wait(start_envoy, make_mock):
    send, (a, b) = start_router(start_envoy, make_mock, deployments=2, allowed_fails=3, cooldown_time=30)
    a.respond(status=429, headers={"retry-after": "2"}, times=1)
    b.respond(status=429, headers={"retry-after": "20"}, times=1)
    first, second = send(), send()  # whichever is tried first is cooled, so the other serves the next
    assert {first.status, second.status} == {429} and a.count == b.count == 1
    assert expect_no_healthy(send(), "pair") == 2
    assert a.count == b.count == 1


# ---- every worker sees the same state -----------------------------------------------------------------------

def test_a_cooled_deployment_is_skipped_by_every_worker(start_envoy, make_mock):
    send, (a, b) = start_router(start_envoy, make_mock, deployments=2, allowed_fails=3, cooldown_time=30,
                                concurrency=2)
    a.respond(status=429, times=1)
    until_hit(send, a)
    with ThreadPoolExecutor(max_workers=8) as pool:  # a new connection per request: both workers serve
        served = list(pool.map(lambda _: send(), range(80)))
    assert [r.status for r in served] == [200] * 80
    assert {r.headers["x-llm-router-deployment"] for r in served} == {"b"}
    assert a.count == 1


def test_failures_are_counted_across_workers(start_envoy, make_mock):
    send, (a,) = start_router(start_envoy, make_mock, allowed_fails=2, cooldown_time=30, concurrency=2)
    a.respond(status=500)
    with ThreadPoolExecutor(max_workers=3) as pool:
        first = list(pool.map(lambda _: send(), range(3)))
    assert [r.status for r in first] == [500] * 3
    with ThreadPoolExecutor(max_workers=4) as pool:
        later = list(pool.map(lambda _: send(), range(8)))
    for r in later:
        expect_no_healthy(r, "solo")
    assert a.count == 3


def test_cooldown_state_survives_a_plugin_config_reload_for_unchanged_deployment_ids(make_mock, start_envoy):
    primary, backup, extra = make_mock("openai", "primary"), make_mock("openai", "backup"), make_mock("openai", "extra")
    models = [
        deployment("gpt-4o", "openai/gpt-4o", primary.url + "/v1", api_key="sk-1", id="primary"),
        deployment("gpt-4o", "openai/gpt-4o", backup.url + "/v1", api_key="sk-2", id="backup"),
    ]
    envoy = start_envoy(plugin_config(models, allowed_fails=0, cooldown_time=60),
                        clusters_for(primary, backup, extra), dynamic_listener=True)
    primary.respond(status=500)
    for _ in range(20):  # until the primary has failed once (allowed_fails 0: cooled on its first failure)
        client.post_json(envoy.base_url, "/v1/chat/completions", chat("gpt-4o"))
        if primary.count:
            break
    assert primary.count == 1
    # A new config: one more group, the same two deployment ids.
    models.append(deployment("other", "openai/other", extra.url + "/v1", api_key="sk-3", id="extra"))
    envoy.reload_plugin_config(plugin_config(models, allowed_fails=0, cooldown_time=60))
    resp = client.post_json(envoy.base_url, "/v1/chat/completions", chat("other"))
    assert resp.headers.get("x-llm-router-deployment") == "extra", "the new config is live"
    for _ in range(20):
        resp = client.post_json(envoy.base_url, "/v1/chat/completions", chat("gpt-4o"))
        assert resp.headers.get("x-llm-router-deployment") == "backup"
    assert primary.count == 1, "the cooled deployment stayed cooled across the reload"


def test_a_reload_drops_the_state_of_removed_deployments(make_mock, start_envoy):
    """A deployment removed by a reload loses its cooldown and failure window: when a later config brings the
    same id back, it starts healthy (cooled for 60 s before, now taking traffic at once)."""
    primary, backup = make_mock("openai", "primary"), make_mock("openai", "backup")
    both = [
        deployment("gpt-4o", "openai/gpt-4o", primary.url + "/v1", api_key="sk-1", id="primary"),
        deployment("gpt-4o", "openai/gpt-4o", backup.url + "/v1", api_key="sk-2", id="backup"),
    ]
    envoy = start_envoy(plugin_config(both, allowed_fails=0, cooldown_time=60), clusters_for(primary, backup),
                        dynamic_listener=True, concurrency=2)
    primary.respond(status=500)
    until_hit(lambda: client.post_json(envoy.base_url, "/v1/chat/completions", chat("gpt-4o")), primary)
    assert primary.count == 1
    for _ in range(10):  # cooled: every request goes to the backup
        assert client.post_json(envoy.base_url, "/v1/chat/completions", chat("gpt-4o")) \
            .headers.get("x-llm-router-deployment") == "backup"
    envoy.reload_plugin_config(plugin_config(both[1:], allowed_fails=0, cooldown_time=60))
    assert client.post_json(envoy.base_url, "/v1/chat/completions", chat("gpt-4o")) \
        .headers.get("x-llm-router-deployment") == "backup"
    primary.respond(status=200)
    envoy.reload_plugin_config(plugin_config(both, allowed_fails=0, cooldown_time=60))
    served = {client.post_json(envoy.base_url, "/v1/chat/completions", chat("gpt-4o"))
              .headers.get("x-llm-router-deployment") for _ in range(30)}
    assert served == {"primary", "backup"}, f"the re-added primary starts healthy: served by {served}"
    assert "dropped the shared state of 1 removed deployment(s): primary" in envoy.log_text()
