"""Prometheus metrics: scripted traffic through real Envoy, then exact counts read from the admin
`/stats/prometheus` (the filter's `llm_router_*` stats, labels extracted by the bootstrap's stats_tags).

Histograms reach the admin output only after Envoy's stats flush (every 5 s by default), so histogram counts are
polled; counters and gauges are read at once."""

from __future__ import annotations

import concurrent.futures
import json
import re
import time
from typing import Callable

from .support import client
from .support.checks import expect_error, expect_routed
from .support.envoy import clusters_for
from .support.plugin import chat, deployment, plugin_config
from .support.prometheus import Scrape, scrape

GROUP = "gpt-4.1"  # a dot in the value: tag values may contain dots


def poll(envoy, ok: Callable[[Scrape], bool], timeout: float = 15.0) -> Scrape:
    deadline = time.monotonic() + timeout
    while True:
        s = scrape(envoy)
        if ok(s) or time.monotonic() > deadline:
            return s
        time.sleep(0.2)


def histogram_counts(s: Scrape, name: str, **labels) -> tuple:
    """(_count, the +Inf bucket) of one histogram series (0, 0 when absent)."""
    return s.count(name + "_count", **labels), s.count(name + "_bucket", **labels, le="+Inf")


# ---- the scenarios --------------------------------------------------------------------------------------
def test_parser_reads_names_labels_and_values():
    s = Scrape('# TYPE x counter\nx{a="1",b="g.4 \\"q\\""} 3\ny{} 0\nz_bucket{le="+Inf"} 2\n')
    assert s.samples == [("x", {"a": "1", "b": 'g.4 "q"'}, 3.0), ("y", {}, 0.0), ("z_bucket", {"le": "+Inf"}, 2.0)]
    assert s.count("x", a="1", b='g.4 "q"') == 3 and s.count("x", a="1") == 0


def usage_of(resp_json: dict) -> tuple:
    u = resp_json["usage"]
    return u["prompt_tokens"], u["completion_tokens"]


def stream_usage(body: bytes) -> tuple:
    for line in body.decode().splitlines():
        if line.startswith("data: {"):
            event = json.loads(line[6:])
            if event.get("usage"):
                return event["usage"]["prompt_tokens"], event["usage"]["completion_tokens"]
    raise AssertionError(f"no usage in the stream: {body[:400]!r}")


def test_successes_tokens_latency_in_flight_and_a_rejection(start_envoy, make_mock):
    m1, m2 = make_mock("openai", "one"), make_mock("openai", "two")
    cfg = plugin_config([deployment(GROUP, "openai/gpt-4.1", m1.url + "/v1", api_key="sk-1", id="dep-one"),
                         deployment(GROUP, "openai/gpt-4.1", m2.url + "/v1", api_key="sk-2", id="dep-two")])
    envoy = start_envoy(cfg, clusters_for(m1, m2))
    served = {"dep-one": 0, "dep-two": 0}
    streamed = {"dep-one": 0, "dep-two": 0}
    tokens = {"dep-one": [0, 0], "dep-two": [0, 0]}
    for i in range(6):
        resp = client.post_json(envoy.base_url, "/v1/chat/completions", chat(GROUP, "Hello there number %d" % i))
        assert resp.status == 200, resp
        dep = resp.headers["x-llm-router-deployment"]
        served[dep] += 1
        for k, n in enumerate(usage_of(resp.json())):
            tokens[dep][k] += n
    for _ in range(3):
        stream = client.stream_post(envoy.base_url, "/v1/chat/completions",
                                    chat(GROUP, "Stream it", stream=True, stream_options={"include_usage": True}))
        stream.read_all()
        assert stream.status == 200
        dep = stream.headers["x-llm-router-deployment"]
        served[dep] += 1
        streamed[dep] += 1
        for k, n in enumerate(stream_usage(stream.body)):
            tokens[dep][k] += n
    expect_error(client.post_json(envoy.base_url, "/v1/chat/completions", chat("no-such-model")), 404,
                 "model_not_found")

    s = poll(envoy, lambda s: sum(histogram_counts(s, "llm_router_request_duration_ms", model_group=GROUP,
                                                   deployment=d)[0] for d in served) == 9)
    for dep in served:
        labels = dict(model_group=GROUP, deployment=dep)
        assert s.count("llm_router_requests_total", **labels) == served[dep], s
        assert s.count("llm_router_input_tokens_total", **labels) == tokens[dep][0], (tokens, s)
        assert s.count("llm_router_output_tokens_total", **labels) == tokens[dep][1], (tokens, s)
        assert s.count("llm_router_in_flight", **labels) == 0, s
        assert histogram_counts(s, "llm_router_request_duration_ms", **labels) == (served[dep], served[dep]), s
        assert histogram_counts(s, "llm_router_time_to_first_token_ms", **labels) == (streamed[dep], streamed[dep]), s
        assert s.count("llm_router_retries_total", **labels) == 0
        assert s.count("llm_router_deployment_cooling", **labels) == 0
    assert sum(tokens[d][0] for d in tokens) > 0 and sum(tokens[d][1] for d in tokens) > 0
    assert s.series("llm_router_failures_total") == [] and s.series("llm_router_cooldowns_total") == []
    assert s.series("llm_router_rejected_total") == [({"error_code": "model_not_found"}, 1.0)]
    # Every label was extracted: no name with a leftover (sanitised) tag segment before or after llm_router_.
    ours = [n for n, _, _ in s.samples if "llm_router_" in n and not n.startswith("envoy_")]
    assert ours and all(n.startswith("llm_router_") and not n.endswith("_") for n in ours), ours


def test_failures_cooldown_retries_fallback_and_the_cooling_gauge(start_envoy, make_mock):
    mocks = {n: make_mock("openai", n) for n in ("a1", "a2", "b1")}
    models = [  # a2 weighs 0: a1 is always tried first, a2 only as the retry
        deployment("a", "openai/a-one", mocks["a1"].url + "/v1", api_key="sk-a1", id="a1", weight=1),
        deployment("a", "openai/a-two", mocks["a2"].url + "/v1", api_key="sk-a2", id="a2", weight=0),
        deployment("b", "openai/b-one", mocks["b1"].url + "/v1", api_key="sk-b1", id="b1"),
    ]
    cfg = plugin_config(models, allowed_fails=100, cooldown_time=3, num_retries=1, fallbacks=[{"a": ["b"]}])
    envoy = start_envoy(cfg, clusters_for(*mocks.values(), passthrough=mocks["a1"]), failover=True)

    # 1. a1 answers 500 (under allowed_fails: no cooldown) → retried on a2, which serves.
    mocks["a1"].respond(status=500, times=1)
    expect_routed(client.post_json(envoy.base_url, "/v1/chat/completions", chat("a")), "a2", "a")
    # 2. a1 answers 429 (cools at once: its group has another member) → retry on a2, which answers 500 →
    #    fallback to b1, which serves.
    mocks["a1"].respond(status=429, times=1)
    mocks["a2"].respond(status=500, times=1)
    resp = expect_routed(client.post_json(envoy.base_url, "/v1/chat/completions", chat("a")), "b1", "b")
    assert resp.headers["x-llm-router-attempts"] == "3" and resp.headers["x-llm-router-fallback-from"] == "a"

    s = scrape(envoy)
    a1, a2, b1 = (dict(model_group=g, deployment=d) for g, d in (("a", "a1"), ("a", "a2"), ("b", "b1")))
    assert s.count("llm_router_deployment_cooling", **a1) == 1, s  # set by the failure, not the tick
    assert [s.count("llm_router_requests_total", **l) for l in (a1, a2, b1)] == [2, 2, 1], s
    assert s.count("llm_router_failures_total", **a1, **{"class": "server_error"}) == 1, s
    assert s.count("llm_router_failures_total", **a1, **{"class": "rate_limit"}) == 1, s
    assert s.count("llm_router_failures_total", **a2, **{"class": "server_error"}) == 1, s
    assert len(s.series("llm_router_failures_total")) == 3, s
    assert s.count("llm_router_cooldowns_total", **a1) == 1 and len(s.series("llm_router_cooldowns_total")) == 1, s
    assert s.count("llm_router_retries_total", **a2) == 2 and len(s.series("llm_router_retries_total")) == 1, s
    assert s.series("llm_router_fallbacks_total") == [({"model_group": "b", "fallback_from": "a"}, 1.0)], s
    assert s.series("llm_router_rejected_total") == [], s  # upstream errors are not local replies
    for labels in (a1, a2, b1):
        assert s.count("llm_router_in_flight", **labels) == 0, s

    # The cooldown (3 s) expires: the 1 s tick sets the gauge back to 0; a2 and b1 never cooled.
    s = poll(envoy, lambda s: s.count("llm_router_deployment_cooling", **a1) == 0
             and s.count("llm_router_request_duration_ms_count", **a1) == 2, timeout=15)
    assert s.count("llm_router_deployment_cooling", **a1) == 0, s
    assert s.count("llm_router_deployment_cooling", **a2) == 0 and s.count("llm_router_deployment_cooling", **b1) == 0
    for labels, n in ((a1, 2), (a2, 2), (b1, 1)):
        assert histogram_counts(s, "llm_router_request_duration_ms", **labels) == (n, n), s
    # And a1 serves again, which does not count as a new cooldown.
    mocks["a1"].respond(status=200)
    expect_routed(client.post_json(envoy.base_url, "/v1/chat/completions", chat("a")), "a1", "a")
    s = scrape(envoy)
    assert s.count("llm_router_requests_total", **a1) == 3 and s.count("llm_router_cooldowns_total", **a1) == 1


def worker_connections(envoy) -> list:
    stats = envoy.stats("worker_")
    return sorted(v for k, v in stats.items() if re.match(r"listener\.127\.0\.0\.1_\d+\.worker_\d+\.downstream_cx_total$", k))


def test_counts_sum_across_workers(start_envoy, make_mock):
    m = make_mock("openai", "solo")
    cfg = plugin_config([deployment(GROUP, "openai/gpt-4.1", m.url + "/v1", api_key="sk-1", id="solo")])
    envoy = start_envoy(cfg, clusters_for(m), concurrency=2)
    n = 40

    def one(i: int) -> tuple:
        resp = client.post_json(envoy.base_url, "/v1/chat/completions", chat(GROUP, "hi " * (i % 5 + 1)))
        assert resp.status == 200, resp
        return usage_of(resp.json())

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        usages = list(pool.map(one, range(n)))
    per_worker = worker_connections(envoy)
    assert len(per_worker) == 2 and all(c > 0 for c in per_worker), f"both workers must serve: {per_worker}"

    labels = dict(model_group=GROUP, deployment="solo")
    s = poll(envoy, lambda s: s.count("llm_router_request_duration_ms_count", **labels) == n)
    # One series per label set, whatever the number of VMs that defined it, holding the sum.
    assert s.series("llm_router_requests_total") == [(labels, float(n))], s
    assert s.count("llm_router_input_tokens_total", **labels) == sum(u[0] for u in usages), s
    assert s.count("llm_router_output_tokens_total", **labels) == sum(u[1] for u in usages), s
    assert s.count("llm_router_in_flight", **labels) == 0, s
    assert histogram_counts(s, "llm_router_request_duration_ms", **labels) == (n, n), s


def test_metrics_can_be_turned_off(start_envoy, make_mock):
    m = make_mock("openai", "quiet")
    cfg = plugin_config([deployment(GROUP, "openai/gpt-4.1", m.url + "/v1", api_key="sk-1", id="quiet")],
                        envoy_settings={"metrics": False})
    envoy = start_envoy(cfg, clusters_for(m))
    assert client.post_json(envoy.base_url, "/v1/chat/completions", chat(GROUP)).status == 200
    expect_error(client.post_json(envoy.base_url, "/v1/chat/completions", chat("nope")), 404, "model_not_found")
    s = scrape(envoy)
    assert [n for n, _, _ in s.samples if "llm_router_" in n and not n.startswith("envoy_")] == [], s
