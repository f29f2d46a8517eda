"""Virtual keys' rate limits against real Envoy with two workers (`--concurrency 2`): `rpm_limit`,
`max_parallel_requests` and `tpm_limit` are counted in Envoy's shared data with compare-and-swap, so they
hold exactly across the workers, and a refused request is LiteLLM's 429 (the OpenAI SDK raises
`RateLimitError`) with `retry-after` and OpenAI's `x-ratelimit-*` headers, which admitted responses carry too.

No timing assertion: concurrency comes from a barrier and slow mock streams; waits poll with a deadline."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from .support import client
from .support.envoy import clusters_for
from .support.plugin import chat, deployment, plugin_config

CHAT = "/v1/chat/completions"
PROVIDER = "sk-provider-9a1e"


def litellm_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def gateway(make_mock, start_envoy, key: dict):
    oa = make_mock("openai", "oa")
    cfg = plugin_config([deployment("gpt-4o", "openai/gpt-4o", oa.url + "/v1", api_key=PROVIDER, id="gpt4o")],
                        master_key="sk-master-rl")
    cfg["keys"] = [key]
    envoy = start_envoy(cfg, clusters_for(oa), concurrency=2)
    return envoy, oa


def post(envoy, key: str, body: dict) -> client.Response:
    return client.post_json(envoy.base_url, CHAT, body, headers={"authorization": f"Bearer {key}"}, timeout=30)


def concurrently(n: int, fn) -> list:
    """Runs fn() n times at once (each on its own connection), released together by a barrier."""
    barrier = threading.Barrier(n)

    def one(_):
        barrier.wait(timeout=30)
        return fn()

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(one, range(n)))


def worker_connections(envoy) -> list:
    stats = envoy.stats("worker_")
    return sorted(v for k, v in stats.items() if re.match(r"listener\.127\.0\.0\.1_\d+\.worker_\d+\.downstream_cx_total$", k))


def expect_both_workers(envoy):
    per_worker = worker_connections(envoy)
    assert len(per_worker) == 2 and all(c > 0 for c in per_worker), f"both workers must serve: {per_worker}"


def expect_rate_limited(resp, limit_type: str, limit: int, remaining: int = 0):
    assert resp.status == 429, resp
    err = resp.json()["error"]
    # LiteLLM's body for its limiter's HTTPException: type "None", code "429".
    assert (err["type"], err["code"]) == ("None", "429"), err
    assert f"Limit type: {limit_type}. Current limit: {limit}, Remaining: {remaining}" in err["message"], err
    assert int(resp.headers["retry-after"]) >= 1, resp.headers


def test_rpm_limit_admits_exactly_n_of_3n_concurrent_requests_across_both_workers(make_mock, start_envoy):
    key, n = "sk-rpm-7f01", 10
    envoy, oa = gateway(make_mock, start_envoy, {"token": litellm_hash(key), "key_alias": "rpm-app", "rpm_limit": n})
    results = concurrently(3 * n, lambda: post(envoy, key, chat("gpt-4o")))
    ok = [r for r in results if r.status == 200]
    refused = [r for r in results if r.status != 200]
    assert len(ok) == n, [r.status for r in results]
    assert oa.count == n, "refused requests never reach the provider"
    expect_both_workers(envoy)
    for r in refused:
        expect_rate_limited(r, "requests", n)
        assert "for api_key: rpm-app." in r.json()["error"]["message"]
        assert litellm_hash(key) not in r.text and key not in r.text, "named by alias, never by key or hash"
        assert r.headers["x-ratelimit-limit-requests"] == str(n)
        assert r.headers["x-ratelimit-remaining-requests"] == "0"
        assert r.headers["x-ratelimit-reset-requests"].endswith("s")
    # Admitted responses carry the headers too: remaining counts down from n-1 to 0, each value once.
    assert sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in ok) == list(range(n))
    assert all(r.headers["x-ratelimit-limit-requests"] == str(n) for r in ok)

    # The OpenAI SDK sees a RateLimitError, with the headers.
    sdk = openai.OpenAI(base_url=envoy.base_url + "/v1", api_key=key, max_retries=0, timeout=10)
    try:
        with pytest.raises(openai.RateLimitError) as e:
            sdk.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hello!"}])
        assert e.value.status_code == 429
        assert e.value.response.headers["x-ratelimit-remaining-requests"] == "0"
        assert int(e.value.response.headers["retry-after"]) >= 1
    finally:
        sdk.close()
    # Envoy's log names the key by alias, never by key or hash.
    text = envoy.log_text()
    assert "key `rpm-app` rate limited" in text
    assert key not in text and litellm_hash(key) not in text


def test_max_parallel_requests_is_exact_under_32_concurrent_slow_streams(make_mock, start_envoy):
    key, limit = "sk-par-22b4", 4
    envoy, oa = gateway(make_mock, start_envoy, {"token": litellm_hash(key), "max_parallel_requests": limit})
    # Admitted streams last a few seconds (events 0.5 s apart): every refusal happens while they run.
    oa.respond(stream_delay=0.5)

    def stream():
        s = client.stream_post(envoy.base_url, CHAT, chat("gpt-4o", stream=True),
                               headers={"authorization": f"Bearer {key}"}, timeout=60)
        s.read_all()
        return s

    results = concurrently(32, stream)
    ok = [s for s in results if s.status == 200]
    refused = [s for s in results if s.status != 200]
    assert len(ok) == limit, [s.status for s in results]
    assert all(b"[DONE]" in s.body for s in ok)
    expect_both_workers(envoy)
    for s in refused:
        assert s.status == 429
        err = json.loads(s.body)["error"]
        assert (err["type"], err["code"]) == ("None", "429")
        assert f"Limit type: max_parallel_requests. Current limit: {limit}" in err["message"], err
        assert s.headers["retry-after"] == "1"

    # Every slot came back exactly once: the next wave gets exactly `limit` again (poll: the last stream's
    # slot is released when Envoy closes it, just after the client read its end).
    oa.respond()
    deadline = time.monotonic() + 15
    while True:
        wave = concurrently(limit, lambda: post(envoy, key, chat("gpt-4o")))
        if all(r.status == 200 for r in wave) or time.monotonic() > deadline:
            break
    assert [r.status for r in wave] == [200] * limit


def reservation(body: dict) -> int:
    """The router's tpm reservation: ceil(body bytes / 4) + max_tokens (the client sends json.dumps(body))."""
    return -(-len(json.dumps(body).encode()) // 4) + body["max_tokens"]


def usage_of(sse: bytes) -> int:
    for line in sse.decode().splitlines():
        if line.startswith("data: {"):
            event = json.loads(line[len("data: "):])
            if event.get("usage"):
                return event["usage"]["total_tokens"]
    raise AssertionError(f"no usage in the stream: {sse[:300]!r}")


def test_tpm_limit_is_reconciled_from_the_streamed_usage(make_mock, start_envoy):
    key, tpm = "sk-tpm-31c9", 300
    envoy, oa = gateway(make_mock, start_envoy, {"token": litellm_hash(key), "tpm_limit": tpm})
    oa.respond(stream_delay=0.4)
    body = chat("gpt-4o", stream=True, stream_options={"include_usage": True}, max_tokens=200)
    first = client.stream_post(envoy.base_url, CHAT, body, headers={"authorization": f"Bearer {key}"}, timeout=30)
    assert first.status == 200
    assert first.headers["x-ratelimit-limit-tokens"] == str(tpm)
    # Reserved: the input estimate (body bytes / 4, rounded up) plus max_tokens.
    reserved = reservation(body)
    assert int(first.headers["x-ratelimit-remaining-tokens"]) == tpm - reserved, first.headers
    assert 2 * reserved > tpm, "the test needs two reservations not to fit"

    # While the first streams, its reservation holds: a second one does not fit.
    second = post(envoy, key, body)
    expect_rate_limited(second, "tokens", tpm, remaining=tpm - reserved)
    assert second.headers["x-ratelimit-limit-tokens"] == str(tpm)
    assert int(second.headers["x-ratelimit-remaining-tokens"]) == tpm - reserved

    first.read_all()
    used = usage_of(first.body)
    assert used < reserved, "the mock's usage is below the reservation"

    # Once the first stream is settled with its actual usage, the second fits, and what remains is the limit
    # minus the first's *actual* tokens minus the second's reservation (poll: settlement runs when Envoy
    # closes the stream, just after the client read its end).
    oa.respond()
    plain = chat("gpt-4o", max_tokens=200)
    deadline = time.monotonic() + 15
    while True:
        again = post(envoy, key, plain)
        if again.status == 200 or time.monotonic() > deadline:
            break
    assert again.status == 200, again
    assert int(again.headers["x-ratelimit-remaining-tokens"]) == tpm - used - reservation(plain), (used, again.headers)


def test_a_client_that_hangs_up_mid_stream_gives_its_parallel_slot_back(make_mock, start_envoy):
    key = "sk-reset-5e77"
    envoy, oa = gateway(make_mock, start_envoy, {"token": litellm_hash(key), "max_parallel_requests": 1})
    # Events 30 s apart: the provider's stream outlasts the poll below by far, so only the reset frees the slot.
    oa.respond(stream_delay=30.0)
    held = client.stream_post(envoy.base_url, CHAT, chat("gpt-4o", stream=True),
                              headers={"authorization": f"Bearer {key}"}, timeout=30)
    assert held.status == 200
    next(iter(held))  # the first event arrived: the stream is running
    blocked = post(envoy, key, chat("gpt-4o"))
    expect_rate_limited(blocked, "max_parallel_requests", 1)
    held._conn.close()  # the client resets; the provider is still streaming
    oa.respond()
    deadline = time.monotonic() + 15
    while True:
        after = post(envoy, key, chat("gpt-4o"))
        if after.status == 200 or time.monotonic() > deadline:
            break
    assert after.status == 200, after


def test_counters_survive_a_config_reload_that_keeps_the_key(make_mock, start_envoy):
    key, other = "sk-reload-81d0", "sk-other-4c2a"
    oa = make_mock("openai", "oa")

    def config(rpm: int, extra_keys: list) -> dict:
        cfg = plugin_config([deployment("gpt-4o", "openai/gpt-4o", oa.url + "/v1", api_key=PROVIDER, id="gpt4o")],
                            master_key="sk-master-rl")
        # New keys go first: the kept key moves, its hash (which keys its counters) does not.
        cfg["keys"] = [*extra_keys, {"token": litellm_hash(key), "key_alias": "kept", "rpm_limit": rpm}]
        return cfg

    envoy = start_envoy(config(3, []), clusters_for(oa), concurrency=2, dynamic_listener=True)
    assert [post(envoy, key, chat("gpt-4o")).status for _ in range(4)] == [200, 200, 200, 429]
    # A reload that adds a key keeps this key's window: still refused.
    envoy.reload_plugin_config(config(3, [{"token": litellm_hash(other), "rpm_limit": 1}]))
    expect_rate_limited(post(envoy, key, chat("gpt-4o")), "requests", 3)
    assert post(envoy, other, chat("gpt-4o")).status == 200
    # Raising the limit counts on from the same window: 2 more, then refused.
    envoy.reload_plugin_config(config(5, []))
    assert [post(envoy, key, chat("gpt-4o")).status for _ in range(3)] == [200, 200, 429]
    # `other` left with that reload: its record was emptied, so added back it starts from zero (its window
    # would otherwise still be full).
    envoy.reload_plugin_config(config(5, [{"token": litellm_hash(other), "rpm_limit": 1}]))
    assert [post(envoy, other, chat("gpt-4o")).status for _ in range(2)] == [200, 429]
    expect_rate_limited(post(envoy, key, chat("gpt-4o")), "requests", 5)


def test_limits_hold_across_in_request_failover(make_mock, start_envoy):
    """With `envoy_settings.failover`, each pass admits and settles its own hold: the request counts once on
    rpm (a retry pass counts no request, as LiteLLM's limiter runs once before its router retries), a pass that
    failed over costs nothing, and its parallel slot is back before the retry pass asks for one."""
    from .test_budgets import ANSWER, COST, PRICES, nanos, post_settled

    key = "sk-fo-4410"
    a1, a2 = make_mock("openai", "a1"), make_mock("openai", "a2")
    models = [  # a2 weighs 0: a1 is always tried first, a2 serves the retry
        deployment("a", "openai/a-one", a1.url + "/v1", api_key="sk-a1", id="a1", weight=1, model_info=PRICES),
        deployment("a", "openai/a-two", a2.url + "/v1", api_key="sk-a2", id="a2", weight=0, model_info=PRICES),
    ]
    cfg = plugin_config(models, allowed_fails=100, num_retries=1, master_key="sk-master-rl")
    cfg["keys"] = [{"token": litellm_hash(key), "key_alias": "fo-app", "rpm_limit": 3, "max_parallel_requests": 1,
                    "tpm_limit": 100_000, "max_budget": 1}]
    envoy = start_envoy(cfg, clusters_for(a1, a2, passthrough=a1), failover=True, concurrency=2, access_log=True)
    a1.respond(status=500)
    a2.respond(body=ANSWER)
    body = chat("a", max_tokens=100)
    served = [post_settled(envoy, key, body) for _ in range(3)]
    for n, r in enumerate(served):
        assert r.status == 200, r
        assert (r.headers["x-llm-router-deployment"], r.headers["x-llm-router-attempts"]) == ("a2", "2")
        assert r.headers["x-ratelimit-remaining-requests"] == str(2 - n), "one request each, retry or not"
        assert nanos(r.headers["x-litellm-key-spend"]) == n * COST, "the failed pass cost nothing"
    assert (a1.count, a2.count) == (3, 3)
    # The fourth is refused by rpm — not by a parallel slot a failed-over pass kept (parallel is checked first).
    fourth = client.post_json(envoy.base_url, CHAT, body, headers={"authorization": f"Bearer {key}"}, timeout=30)
    expect_rate_limited(fourth, "requests", 3)
    assert (a1.count, a2.count) == (3, 3)
