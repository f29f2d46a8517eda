"""Global limits (issue 13): two Envoy replicas — separate processes, two workers each — behind one rate limit
service (tools/rls: Limitador's engine) and one Redis with append-only persistence. The RLS's limits file is what
`llm-router rls --format limitador` writes for the same plugin config.

Scenarios: one `rpm_limit` exact across both replicas; one `tpm_limit` reconciled from streamed usage, seen by the
other replica; one budget within its documented bound under concurrent load; spend surviving a restart of both
Envoys, the RLS and Redis; and the RLS down or hung: the configured policy, never a hung request.

No timing assertion: concurrency comes from a barrier; waits poll with a deadline; latencies are printed, and only
bounded by wide margins ("it answered at all")."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path

import pytest

from .support import client
from .support.envoy import REPO, RUN_DIR, clusters_for
from .support.plugin import chat, deployment, plugin_config
from .support.prometheus import scrape
from .support.rls import Redis, Rls, Silent
from .test_rate_limits import concurrently, reservation, usage_of

CHAT = "/v1/chat/completions"
PROVIDER = "sk-provider-g1"
RLS_CLUSTER = "llm_router_rls"
PRICES = {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}
PROMPT, COMPLETION = 10, 20
COST = PROMPT * 1_000 + COMPLETION * 2_000  # nano-USD
ANSWER = {"id": "chatcmpl-g", "object": "chat.completion", "created": 1, "model": "gpt-4o",
          "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
          "usage": {"prompt_tokens": PROMPT, "completion_tokens": COMPLETION, "total_tokens": PROMPT + COMPLETION}}


def litellm_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def config(oa, keys: list, timeout_ms: int = 2000, **rls) -> dict:
    cfg = plugin_config([deployment("gpt-4o", "openai/gpt-4o", oa.url + "/v1", api_key=PROVIDER, id="gpt4o",
                                    model_info=PRICES)], master_key="sk-master-glob")
    cfg["keys"] = keys
    cfg["envoy_settings"] = {"rate_limit_service": {"cluster": RLS_CLUSTER, "timeout_ms": timeout_ms, **rls}}
    return cfg


def limits_file(cfg: dict, path: Path) -> Path:
    """`llm-router rls --format limitador` for the plugin config: the RLS's own limits."""
    src = path.with_suffix(".plugin.json")
    src.write_text(json.dumps(cfg))
    out = subprocess.run(["cargo", "run", "-q", "-p", "llm-router-cli", "--", "rls", str(src), "--format", "limitador"],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    path.write_text(out.stdout)
    return path


class World:
    """Redis + the RLS + Envoy replicas for one plugin config."""

    def __init__(self, dir: Path, start_envoy, cfg: dict, oa):
        self.dir, self.start_envoy, self.cfg, self.oa = dir, start_envoy, cfg, oa
        self.redis = Redis(dir / "redis")
        self.limits = limits_file(cfg, dir / "limits.yaml")
        self.rls = Rls(dir, self.redis, self.limits)
        self.envoys = [self.replica() for _ in range(2)]

    def replica(self, rls_port: int | None = None):
        clusters = {**clusters_for(self.oa), RLS_CLUSTER: ("127.0.0.1", rls_port or self.rls.port, "h2")}
        return self.start_envoy(self.cfg, clusters, concurrency=2)

    def stop(self) -> None:
        self.rls.stop()
        self.redis.stop()


@pytest.fixture
def world(request, make_mock, start_envoy):
    made = []

    def make(keys: list, **kw) -> World:
        oa = make_mock("openai", "oa")
        dir = RUN_DIR / f"rls-{request.node.name}-{len(made)}"
        dir.mkdir(parents=True, exist_ok=True)
        w = World(dir, start_envoy, config(oa, keys, **kw), oa)
        made.append(w)
        return w

    yield make
    for w in made:
        w.stop()


def post(envoy, key: str, body: dict | None = None, timeout: float = 30) -> client.Response:
    return client.post_json(envoy.base_url, CHAT, body or chat("gpt-4o", max_tokens=50),
                            headers={"authorization": f"Bearer {key}"}, timeout=timeout)


def rls_calls(envoy, call: str, result: str) -> int:
    return scrape(envoy).count("llm_router_rls_calls_total", rls_call=call, rls_result=result)


def wait_settled(envoys, n: int, timeout: float = 15.0) -> None:
    """Until the replicas have had `n` settlements applied by the RLS."""
    deadline = time.monotonic() + timeout
    while sum(rls_calls(e, "settlement", "ok") for e in envoys) < n:
        assert time.monotonic() < deadline, f"settlements: {[scrape(e) for e in envoys]}"
        time.sleep(0.05)


def test_two_replicas_enforce_one_rpm_limit_exactly(world):
    key, limit = "sk-glob-rpm-1", 7
    w = world([{"token": litellm_hash(key), "key_alias": "glob-rpm", "rpm_limit": limit}])
    a, b = w.envoys
    # 24 at once, half on each replica: each replica's own gate would admit 7 (its local limit), 14 in all.
    results = concurrently(24, lambda i=iter(range(24)): post((a, b)[next(i) % 2], key))
    statuses = sorted(r.status for r in results)
    assert statuses.count(200) == limit, statuses
    assert statuses.count(429) == 24 - limit, statuses
    refused = next(r for r in results if r.status == 429)
    err = refused.json()["error"]
    assert "Rate limit exceeded for api_key: glob-rpm. Limit type: requests. Current limit: 7" in err["message"], err
    assert w.oa.count == limit, "the provider saw exactly the admitted requests"
    # Both replicas asked the RLS: each lets at most 7 through its own gate at a time, and a request the RLS
    # refused gives its local count back (so a replica may ask more than 7 times).
    asked = [rls_calls(e, "admission", "ok") + rls_calls(e, "admission", "over_limit") for e in (a, b)]
    assert all(n >= limit for n in asked), asked
    assert rls_calls(a, "admission", "ok") + rls_calls(b, "admission", "ok") == limit


def test_a_tpm_limit_is_reconciled_from_streamed_usage_on_every_replica(world):
    key, tpm = "sk-glob-tpm-1", 300
    w = world([{"token": litellm_hash(key), "tpm_limit": tpm}])
    a, b = w.envoys
    w.oa.respond(stream_delay=0.4)
    body = chat("gpt-4o", stream=True, stream_options={"include_usage": True}, max_tokens=200)
    reserved = reservation(body)
    assert 2 * reserved > tpm, "the test needs two reservations not to fit"
    first = client.stream_post(a.base_url, CHAT, body, headers={"authorization": f"Bearer {key}"}, timeout=30)
    assert first.status == 200
    # While it streams on replica A, its reservation holds globally: replica B's own counter is empty, yet
    # the RLS refuses.
    blocked = post(b, key, body)
    assert blocked.status == 429, blocked
    assert "Limit type: tokens. Current limit: 300" in blocked.json()["error"]["message"]
    first.read_all()
    used = usage_of(first.body)
    assert used < reserved
    wait_settled([a], 1)
    w.oa.respond()
    plain = chat("gpt-4o", max_tokens=200)
    again = post(b, key, plain)
    assert again.status == 200, again
    # B reports the global remaining: the limit minus A's *actual* tokens minus this reservation.
    assert int(again.headers["x-ratelimit-remaining-tokens"]) == tpm - used - reservation(plain), (used, again.headers)


def test_a_budget_holds_within_its_bound_under_concurrent_load_and_survives_restarts(world):
    key, control = "sk-glob-bud-1", "sk-glob-ctl-1"
    budget_nanos = 1_000_000  # $0.001: 20 requests of COST
    w = world([{"token": litellm_hash(key), "key_alias": "glob-bud", "max_budget": budget_nanos / 1e9},
               {"token": litellm_hash(control), "max_budget": 1.0}])
    w.oa.respond(body=ANSWER)
    a, b = w.envoys
    body = chat("gpt-4o", max_tokens=50)
    # The worst case the router reserves: the input estimate at the input price + max_tokens at the output price
    # (above the answer's actual cost: the bound without usage beyond the reservation).
    worst = -(-len(json.dumps(body).encode()) // 4) * 1_000 + 50 * 2_000
    assert worst > COST
    results = concurrently(40, lambda i=iter(range(40)): post((a, b)[next(i) % 2], key, body))
    admitted = sum(r.status == 200 for r in results)
    wait_settled([a, b], admitted)
    # Then one at a time until the RLS refuses.
    for n in range(200):
        r = post((a, b)[n % 2], key, body)
        if r.status != 200:
            break
        admitted += 1
        wait_settled([a, b], admitted)
    assert r.status == 429 and r.json()["error"]["type"] == "budget_exceeded", r
    spend = admitted * COST
    # The documented bound: admission must fit the whole reservation, so spend never passes the budget (usage is
    # below the reservation); the refusal came when what was left no longer fit one reservation (µUSD rounding:
    # at most 1 µUSD per request).
    assert spend <= budget_nanos, (admitted, spend, budget_nanos)
    assert spend > budget_nanos - worst - 1_000 * (admitted + 1), (admitted, spend, budget_nanos, worst)

    # Restart everything: both Envoys, the RLS, Redis. The spend is still there.
    for e in w.envoys:
        e.stop()
    w.rls.stop()
    w.redis.stop()
    w.redis.start()
    w.rls.start()
    a2, b2 = w.replica(), w.replica()
    for e in (a2, b2):
        r = post(e, key, body)
        assert r.status == 429 and r.json()["error"]["type"] == "budget_exceeded", r
    assert post(a2, control, body).status == 200, "a key with budget left is still served"


def test_rls_down_or_hung_follows_the_failure_policy_and_never_hangs(world):
    rpm_key, budget_key = "sk-glob-down-rpm", "sk-glob-down-bud"
    w = world([{"token": litellm_hash(rpm_key), "rpm_limit": 100}, {"token": litellm_hash(budget_key), "max_budget": 1.0}],
              timeout_ms=300)
    a = w.envoys[0]
    assert post(a, rpm_key).status == 200
    w.rls.stop()
    t0 = time.monotonic()
    open_ = post(a, rpm_key, timeout=10)
    down_ms = (time.monotonic() - t0) * 1000
    assert open_.status == 200, open_  # rate limits fail open
    closed = post(a, budget_key, timeout=10)
    assert closed.status == 503, closed  # budgets fail closed
    err = closed.json()["error"]
    assert err["code"] == "rate_limit_service_unavailable" and set(err) == {"message", "type", "param", "code"}, err
    failures = {r: rls_calls(a, "admission", r) for r in ("unavailable", "timeout", "grpc_error", "dispatch")}
    assert sum(failures.values()) >= 2, failures

    # An RLS that accepts connections and never answers: the call's timeout (300 ms) bounds the wait.
    silent = Silent()
    try:
        hung = w.replica(rls_port=silent.port)
        t0 = time.monotonic()
        r = post(hung, rpm_key, timeout=10)
        hung_ms = (time.monotonic() - t0) * 1000
        assert r.status == 200, r
        # Envoy 1.40 ends a call that got no answer within its timeout with UNAVAILABLE (14), measured.
        hung_failures = {labels["rls_result"]: int(v) for labels, v in scrape(hung).series("llm_router_rls_calls_total")}
        assert sum(hung_failures.values()) == 1 and "ok" not in hung_failures, hung_failures
        assert post(hung, budget_key, timeout=10).status == 503
    finally:
        silent.stop()
    print(f"\nRLS down: answered in {down_ms:.0f} ms ({failures}); RLS hung: answered in {hung_ms:.0f} ms "
          f"(timeout 300 ms; {hung_failures})")
    assert hung_ms < 5_000, "bounded by the call's timeout, not the route's"


def test_limits_hold_across_in_request_failover_in_global_mode(make_mock, start_envoy):
    """With in-request failover each pass asks the RLS: the retry pass peeks at rpm (the request counts once,
    globally too) and at the parallel slot its first pass took (with `max_parallel_requests: 1`, asking for a
    second one was refused: the first pass's settlement was still on its way); the failed pass's reservations
    are refunded by its settlement and the last pass releases the slot, so the next request gets it."""
    from .test_budgets import ANSWER, PRICES as BUDGET_PRICES

    key = "sk-glob-fo-1"
    a1, a2 = make_mock("openai", "a1"), make_mock("openai", "a2")
    models = [  # a2 weighs 0: a1 is always tried first, a2 serves the retry
        deployment("a", "openai/a-one", a1.url + "/v1", api_key="sk-a1", id="a1", weight=1, model_info=BUDGET_PRICES),
        deployment("a", "openai/a-two", a2.url + "/v1", api_key="sk-a2", id="a2", weight=0, model_info=BUDGET_PRICES),
    ]
    cfg = plugin_config(models, allowed_fails=100, num_retries=1, master_key="sk-master-gfo")
    cfg["keys"] = [{"token": litellm_hash(key), "key_alias": "gfo-app", "rpm_limit": 3, "tpm_limit": 100_000, "max_parallel_requests": 1,
                    "max_budget": 1}]
    cfg["envoy_settings"] = {"rate_limit_service": {"cluster": RLS_CLUSTER, "timeout_ms": 2000}}
    dir = RUN_DIR / "rls-failover"
    dir.mkdir(parents=True, exist_ok=True)
    redis = Redis(dir / "redis")
    rls = Rls(dir, redis, limits_file(cfg, dir / "limits.yaml"))
    try:
        clusters = {**clusters_for(a1, a2, passthrough=a1), RLS_CLUSTER: ("127.0.0.1", rls.port, "h2")}
        envoy = start_envoy(cfg, clusters, failover=True, concurrency=2)
        a1.respond(status=500)
        a2.respond(body=ANSWER)
        body = chat("a", max_tokens=100)
        for n in range(3):
            r = post(envoy, key, body)
            assert r.status == 200, r
            assert (r.headers["x-llm-router-deployment"], r.headers["x-llm-router-attempts"]) == ("a2", "2")
            assert r.headers["x-ratelimit-remaining-requests"] == str(2 - n), "one request each, globally too"
            wait_settled([envoy], 2 * (n + 1))  # both passes settle
        assert rls_calls(envoy, "admission", "ok") == 6, "each pass asked"
        fourth = post(envoy, key, body)
        assert fourth.status == 429 and "Limit type: requests. Current limit: 3" in fourth.json()["error"]["message"], fourth
        assert (a1.count, a2.count) == (3, 3)
    finally:
        rls.stop()
        redis.stop()
