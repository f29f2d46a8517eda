"""Routing strategies and LiteLLM's pre-strategy filters, end to end: for each one a crafted scenario whose
right answer is known, and the deployment that served each request (the `x-llm-router-deployment` header,
checked against what the mocks received).

* least-busy: fewest in-flight attempts, shared by every worker;
* usage-based-routing-v2: per-minute `rpm`/`tpm` caps, then the lowest tokens used this minute;
* latency-based-routing: unseen deployments first, then the lowest latency;
* cost-based-routing: lowest input + output price per token (unpriced ranks last);
* `order`: only the lowest order serves while it is available;
* tags (`enable_tag_filtering`): `tags` / `metadata.tags`, `default`-tagged deployments, no match → 400;
* context window (`enable_pre_call_checks` + `model_info.max_input_tokens`): `context_window_fallbacks`, else 400;
  the same checks enforce `rpm` caps under simple-shuffle.

The scenarios are deterministic: concurrent requests are launched one at a time, each only once a mock has
received the previous one (so the router's in-flight counts are known when the next one is routed), and the
per-minute usage scenarios start well inside a wall-clock minute (the counters reset when it changes)."""

from __future__ import annotations

import collections
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

import pytest

from .support import client
from .support.checks import expect_error, expect_routed
from .support.envoy import clusters_for
from .support.plugin import chat, deployment, plugin_config

PATH = "/v1/chat/completions"
# ~1000 estimated input tokens (the router estimates body bytes / 4).
LONG = "lorem ipsum " * 340


def served_by(resp) -> str:
    assert resp.status == 200, resp
    return resp.headers.get("x-llm-router-deployment")


def route(envoy, body, headers=None) -> str:
    return served_by(client.post_json(envoy.base_url, PATH, body, headers))


def routes(envoy, body, n: int) -> collections.Counter:
    with client.Session(envoy.base_url) as s:
        return collections.Counter(served_by(s.post_json(PATH, body)) for _ in range(n))


def deployments_on(mocks, group: str, **params) -> list:
    """One deployment per mock, its id the mock's name and its upstream model `model-<name>`."""
    return [deployment(group, f"openai/model-{m.name}", m.url + "/v1", api_key="k", id=m.name, **params)
            for m in mocks]


def inside_one_minute(needed: float = 5.0) -> None:
    """Usage counters belong to a wall-clock minute (Envoy's clock is the system clock): make sure the next
    `needed` seconds do not cross into the next minute."""
    left = 60.0 - time.time() % 60.0
    if left < needed:
        time.sleep(left + 0.2)


def wait_received(mocks, total: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while sum(m.count for m in mocks) < total:
        assert time.monotonic() < deadline, f"the mocks received {[m.count for m in mocks]}, expected {total} in all"
        time.sleep(0.002)


def staggered(pool, envoy, body, mocks, n: int) -> list:
    """Launch `n` concurrent requests one at a time, each once the previous one reached a mock: when request k
    is routed, the k-1 before it are in flight (a mock delay keeps them there)."""
    base = sum(m.count for m in mocks)
    futures = []
    for i in range(n):
        futures.append(pool.submit(client.post_json, envoy.base_url, PATH, body))
        wait_received(mocks, base + i + 1)
    return futures


# ---- least-busy --------------------------------------------------------------------------------------------

def worker_connections(envoy) -> dict:
    """Downstream connections accepted per worker of the ingress listener (Envoy's per-worker listener stats)."""
    _, raw = envoy._admin_get("/stats?filter=worker_.*downstream_cx_total")
    out = {}
    for line in raw.decode().splitlines():
        name, _, value = line.partition(": ")
        if name.startswith("listener.127.0.0.1_") and ".worker_" in name:
            out[name.split(".worker_")[1].split(".")[0]] = int(value)
    return out


@pytest.mark.parametrize("concurrency", [1, 2])
def test_least_busy_routes_around_in_flight_requests(start_envoy, make_mock, concurrency):
    n = 3
    slow, idle = make_mock("openai", "slow"), make_mock("openai", "idle")
    envoy = start_envoy(plugin_config(deployments_on([slow, idle], "lb"), routing_strategy="least-busy"),
                        clusters_for(slow, idle), concurrency=concurrency)
    slow.respond(delay=1.5)
    idle.respond(delay=0.4, times=n)  # busy for its first n requests, then answers at once
    with ThreadPoolExecutor(2 * n) as pool:
        # 2n concurrent requests: each goes to the deployment with fewer in flight, so they split n / n exactly.
        burst = staggered(pool, envoy, chat("lb"), [slow, idle], 2 * n)
        assert (slow.count, idle.count) == (n, n)
        # idle's n finish after 0.4 s; slow still holds n in flight, so everything now goes to idle.
        done, pending = wait(burst, timeout=5, return_when=FIRST_COMPLETED)
        while len(done) < n:
            more, pending = wait(pending, timeout=5, return_when=FIRST_COMPLETED)
            done |= more
        assert [served_by(f.result()) for f in done] == ["idle"] * n
        assert routes(envoy, chat("lb"), 10) == {"idle": 10}
        assert slow.count == n and not any(f.done() for f in pending), "the slow requests must still be in flight"
        assert [served_by(f.result(timeout=5)) for f in pending] == ["slow"] * n
    # Every slow request ended: in-flight is back to 0 on both, so a new concurrent burst splits n / n again.
    slow.clear()
    idle.clear()
    slow.respond(delay=0.4)
    idle.respond(delay=0.4)
    with ThreadPoolExecutor(2 * n) as pool:
        burst = staggered(pool, envoy, chat("lb"), [slow, idle], 2 * n)
        assert (slow.count, idle.count) == (n, n)
        assert collections.Counter(served_by(f.result(timeout=5)) for f in burst) == {"slow": n, "idle": n}
    if concurrency == 2:
        # One fresh connection per request: both workers took some, and still agreed on the counts.
        per_worker = worker_connections(envoy)
        assert len(per_worker) == 2 and all(per_worker.values()), per_worker


# ---- usage-based-routing-v2: rpm/tpm caps, lowest tpm -------------------------------------------------------

@pytest.fixture(scope="module")
def usage(make_module_mock, start_module_envoy):
    mocks = {name: make_module_mock("openai", name)
             for name in ("cap-a", "cap-b", "ex-a", "ex-b", "tok-a", "tok-b", "tc-small", "tc-big")}
    m = mocks
    models = (deployments_on([m["cap-a"]], "capped", rpm=3) + deployments_on([m["cap-b"]], "capped", rpm=100)
              + deployments_on([m["ex-a"], m["ex-b"]], "exhausted", rpm=2)
              + deployments_on([m["tok-a"], m["tok-b"]], "tokens")
              + deployments_on([m["tc-small"]], "tpm-capped", tpm=200) + deployments_on([m["tc-big"]], "tpm-capped"))
    envoy = start_module_envoy(plugin_config(models, routing_strategy="usage-based-routing-v2"),
                               clusters_for(*mocks.values()), label="usage")
    return envoy, mocks


def test_usage_based_skips_a_deployment_at_its_rpm_cap(usage):
    envoy, m = usage
    inside_one_minute()
    # Equal requests alternate on the lowest tpm, so cap-a gets its 3 within the first 6; then it is capped.
    assert routes(envoy, chat("capped"), 12) == {"cap-a": 3, "cap-b": 9}
    assert (m["cap-a"].count, m["cap-b"].count) == (3, 9)
    assert {r.model for r in m["cap-a"].requests} == {"model-cap-a"}


def test_usage_based_answers_429_when_every_deployment_is_at_its_rpm_cap(usage):
    envoy, m = usage
    inside_one_minute()
    assert routes(envoy, chat("exhausted"), 4) == {"ex-a": 2, "ex-b": 2}
    resp = client.post_json(envoy.base_url, PATH, chat("exhausted"))
    to_next_minute = 60.0 - time.time() % 60.0
    err = expect_error(resp, 429, "rate_limited", type="rate_limit_error")
    assert "exhausted" in err["message"], err
    assert "x-mock-provider" not in resp.headers, "this 429 must come from the router"
    retry_after = int(resp.headers["retry-after"])
    assert 1 <= retry_after <= 60 and abs(retry_after - to_next_minute) <= 2, (retry_after, to_next_minute)
    assert m["ex-a"].count + m["ex-b"].count == 4


def test_usage_based_prefers_the_deployment_with_fewer_tokens_this_minute(usage):
    envoy, m = usage
    inside_one_minute()
    # One long request (~1000 tokens reported by the mock) lands on one deployment...
    heavy = route(envoy, chat("tokens", LONG))
    other = "tok-b" if heavy == "tok-a" else "tok-a"
    assert m[heavy].last().json["messages"][0]["content"] == LONG
    # ... so short ones (~20 tokens each) all go to the other while it has used fewer tokens.
    assert routes(envoy, chat("tokens"), 10) == {other: 10}
    assert (m[heavy].count, m[other].count) == (1, 10)


def test_usage_based_skips_a_deployment_whose_tpm_cap_the_request_would_exceed(usage):
    envoy, m = usage
    inside_one_minute()
    # ~1000 estimated input tokens never fit tc-small's 200 tpm.
    assert routes(envoy, chat("tpm-capped", LONG), 5) == {"tc-big": 5}
    # A short request fits, and tc-small has used fewer tokens.
    assert route(envoy, chat("tpm-capped")) == "tc-small"
    assert (m["tc-small"].count, m["tc-big"].count) == (1, 5)


# ---- latency-based-routing ------------------------------------------------------------------------------------

def test_latency_based_measures_every_deployment_then_prefers_the_fastest(start_envoy, make_mock):
    slow, fast = make_mock("openai", "slow"), make_mock("openai", "fast")
    envoy = start_envoy(plugin_config(deployments_on([slow, fast], "lat"), routing_strategy="latency-based-routing"),
                        clusters_for(slow, fast))
    slow.respond(delay=0.3)
    # Unseen deployments first: the first two requests measure one each.
    assert {route(envoy, chat("lat")), route(envoy, chat("lat"))} == {"slow", "fast"}
    counts = routes(envoy, chat("lat"), 20)
    # The strategy is deterministic here (0.3 s vs a few ms); >= 90% leaves room for nothing but a bug.
    assert counts["fast"] >= 18, counts
    assert (slow.count, fast.count) == (1 + counts["slow"], 1 + counts["fast"])


# ---- cost-based-routing ---------------------------------------------------------------------------------------

def test_cost_based_sends_everything_to_the_cheapest_then_the_next_cheapest(start_envoy, make_mock):
    cheap, dear, unpriced = (make_mock("openai", n) for n in ("cheap", "dear", "unpriced"))
    models = [
        # Prices in model_info or in litellm_params; the ranking is input + output per token.
        deployment("priced", "openai/m-cheap", cheap.url + "/v1", api_key="k", id="cheap",
                   model_info={"input_cost_per_token": 0.000002, "output_cost_per_token": 0.000001}),
        deployment("priced", "openai/m-dear", dear.url + "/v1", api_key="k", id="dear",
                   input_cost_per_token=0.0000005, output_cost_per_token=0.00003),
        deployment("priced", "openai/m-unpriced", unpriced.url + "/v1", api_key="k", id="unpriced"),
    ]
    envoy = start_envoy(plugin_config(models, routing_strategy="cost-based-routing", cooldown_time=30),
                        clusters_for(cheap, dear, unpriced))
    assert routes(envoy, chat("priced"), 20) == {"cheap": 20}
    # A 429 cools the cheapest (its group has others): the next cheapest serves, never the unpriced one.
    cheap.respond(status=429, times=1)
    resp = client.post_json(envoy.base_url, PATH, chat("priced"))
    expect_routed(resp, "cheap", "priced", status=429)
    assert routes(envoy, chat("priced"), 10) == {"dear": 10}
    assert (cheap.count, dear.count, unpriced.count) == (21, 10, 0)


# ---- order ----------------------------------------------------------------------------------------------------

def ordered_models(primary, backup, spare) -> list:
    return (deployments_on([primary], "ordered", order=1) + deployments_on([backup], "ordered", order=2)
            + deployments_on([spare], "ordered"))


def test_order_one_serves_everything_until_it_cools_then_order_two(start_envoy, make_mock):
    primary, backup, spare = (make_mock("openai", n) for n in ("primary", "backup", "spare"))
    envoy = start_envoy(plugin_config(ordered_models(primary, backup, spare), cooldown_time=30),
                        clusters_for(primary, backup, spare))
    assert routes(envoy, chat("ordered"), 20) == {"primary": 20}
    primary.respond(status=429, times=1)
    resp = client.post_json(envoy.base_url, PATH, chat("ordered"))
    expect_routed(resp, "primary", "ordered", status=429)
    assert resp.headers.get("x-mock-provider") == "openai", "the provider's own 429 (no failover wired)"
    # primary cools: the next order serves; a deployment without order only when no ordered one is left.
    assert routes(envoy, chat("ordered"), 10) == {"backup": 10}
    assert (primary.count, backup.count, spare.count) == (21, 10, 0)


def test_order_two_takes_the_retry_when_order_one_answers_429(start_envoy, make_mock):
    primary, backup, spare = (make_mock("openai", n) for n in ("primary", "backup", "spare"))
    envoy = start_envoy(plugin_config(ordered_models(primary, backup, spare), cooldown_time=30, num_retries=1),
                        clusters_for(primary, backup, spare, passthrough=primary), failover=True)
    primary.respond(status=429, times=1)
    resp = client.post_json(envoy.base_url, PATH, chat("ordered"))
    expect_routed(resp, "backup", "ordered")
    assert resp.headers["x-llm-router-attempts"] == "2"
    assert routes(envoy, chat("ordered"), 5) == {"backup": 5}
    assert (primary.count, backup.count, spare.count) == (1, 6, 0)


# ---- tags -----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tagged(make_module_mock, start_module_envoy):
    mocks = {n: make_module_mock("openai", n) for n in ("free", "paid", "dflt", "sa", "sb", "su")}
    m = mocks
    models = [
        deployment("tagged", "openai/m-free", m["free"].url + "/v1", api_key="k", id="free", tags=["free"]),
        # Tags in model_info count too.
        deployment("tagged", "openai/m-paid", m["paid"].url + "/v1", api_key="k", id="paid",
                   model_info={"tags": ["paid", "premium"]}),
        deployment("tagged", "openai/m-dflt", m["dflt"].url + "/v1", api_key="k", id="dflt", tags=["default"]),
        deployment("strict", "openai/m-sa", m["sa"].url + "/v1", api_key="k", id="sa", tags=["a"]),
        deployment("strict", "openai/m-sb", m["sb"].url + "/v1", api_key="k", id="sb", tags=["b"]),
        deployment("strict", "openai/m-su", m["su"].url + "/v1", api_key="k", id="su"),
    ]
    envoy = start_module_envoy(plugin_config(models, enable_tag_filtering=True), clusters_for(*mocks.values()),
                               label="tags")
    return envoy, mocks


@pytest.mark.parametrize("body, expected", [
    (chat("tagged", metadata={"tags": ["paid"]}), {"paid"}),
    (chat("tagged", metadata={"tags": "premium"}), {"paid"}),
    (chat("tagged", tags=["free"]), {"free"}),
    (chat("tagged", tags=["nope", "free"]), {"free"}),
    (chat("tagged", tags=["free"], metadata={"tags": ["paid"]}), {"free", "paid"}),  # match-any
    (chat("tagged"), {"dflt"}),  # untagged → the default-tagged deployment
    (chat("tagged", tags=["unknown"]), {"dflt"}),  # no match, a default exists
    (chat("strict", tags=["b"]), {"sb"}),
    (chat("strict"), {"sa", "sb", "su"}),  # untagged, no default: any
], ids=["metadata-tags", "metadata-tag-string", "top-level-tags", "one-of-two-tags", "both-fields-match-any",
        "untagged-default", "unknown-tag-default", "strict-match", "strict-untagged"])
def test_tag_filtering_routes_on_request_tags(tagged, body, expected):
    envoy, mocks = tagged
    for m in mocks.values():
        m.clear()
    counts = routes(envoy, body, 30)
    if len(expected) == 1:
        assert set(counts) == expected, counts
    else:
        assert set(counts) <= expected, counts
        assert len(counts) > 1, f"30 requests all went to one of {expected}: {counts}"
    assert {n: m.count for n, m in mocks.items() if m.count} == dict(counts)


def test_tag_filtering_without_a_match_or_default_is_a_400(tagged):
    envoy, mocks = tagged
    for m in mocks.values():
        m.clear()
    resp = client.post_json(envoy.base_url, PATH, chat("strict", tags=["zzz"], metadata={"tags": ["yyy"]}))
    err = expect_error(resp, 400, "no_matching_deployment", type="invalid_request_error", param="tags")
    assert "strict" in err["message"], err
    assert sum(m.count for m in mocks.values()) == 0


def test_tag_filtering_reads_the_tags_header(tagged):
    envoy, mocks = tagged
    assert route(envoy, chat("tagged"), headers={"x-llm-router-tags": "vip, premium"}) == "paid"
    assert "x-llm-router-tags" not in mocks["paid"].last().headers, "the router consumes its tags header"


# ---- context window (pre-call checks) ----------------------------------------------------------------------------

def window_models(mocks, **settings) -> dict:
    m = mocks
    models = [
        deployment("small", "openai/m-small", m["small"].url + "/v1", api_key="k", id="small",
                   model_info={"max_input_tokens": 100}),
        deployment("large", "openai/m-large", m["large"].url + "/v1", api_key="k", id="large",
                   model_info={"max_input_tokens": 100_000}),
        deployment("tiny", "openai/m-tiny", m["tiny"].url + "/v1", api_key="k", id="tiny",
                   model_info={"max_input_tokens": 100}),
        deployment("mixed", "openai/m-mixed-small", m["mixed-small"].url + "/v1", api_key="k", id="mixed-small",
                   model_info={"max_input_tokens": 100}),
        deployment("mixed", "openai/m-mixed-big", m["mixed-big"].url + "/v1", api_key="k", id="mixed-big"),
    ] + deployments_on([m["cap2"]], "capped", rpm=2) + deployments_on([m["cap3"]], "capped", rpm=3)
    return plugin_config(models, context_window_fallbacks=[{"small": ["large"]}], **settings)


@pytest.fixture(scope="module")
def window_mocks(make_module_mock):
    return {n: make_module_mock("openai", n) for n in ("small", "large", "tiny", "mixed-small", "mixed-big",
                                                          "cap2", "cap3")}


@pytest.fixture(scope="module")
def checked(window_mocks, start_module_envoy):
    envoy = start_module_envoy(window_models(window_mocks, enable_pre_call_checks=True),
                               clusters_for(*window_mocks.values()), label="pre-call-checks")
    return envoy, window_mocks


@pytest.fixture
def fresh(window_mocks):
    for m in window_mocks.values():
        m.clear()
    return window_mocks


def test_a_short_prompt_is_served_by_its_own_group(checked, fresh):
    envoy, m = checked
    resp = client.post_json(envoy.base_url, PATH, chat("small"))
    expect_routed(resp, "small", "small")
    assert "x-llm-router-fallback-from" not in resp.headers
    assert (m["small"].count, m["large"].count) == (1, 0)


def test_a_prompt_over_the_context_window_goes_to_the_context_window_fallback(checked, fresh):
    envoy, m = checked
    resp = client.post_json(envoy.base_url, PATH, chat("small", LONG))
    expect_routed(resp, "large", "large")
    assert resp.headers["x-llm-router-fallback-from"] == "small"
    assert resp.headers["x-llm-router-attempts"] == "1"
    assert (m["small"].count, m["large"].count) == (0, 1)
    rec = m["large"].last()
    assert rec.json["model"] == "m-large" and rec.json["messages"][0]["content"] == LONG


def test_a_prompt_over_every_context_window_without_fallback_is_a_400(checked, fresh):
    envoy, m = checked
    resp = client.post_json(envoy.base_url, PATH, chat("tiny", LONG))
    err = expect_error(resp, 400, "context_length_exceeded", type="invalid_request_error", param="messages")
    assert "tiny" in err["message"], err
    assert sum(x.count for x in m.values()) == 0
    expect_routed(client.post_json(envoy.base_url, PATH, chat("tiny")), "tiny", "tiny")


def test_within_a_group_a_long_prompt_skips_the_small_window(checked, fresh):
    envoy, m = checked
    assert routes(envoy, chat("mixed", LONG), 10) == {"mixed-big": 10}
    short = routes(envoy, chat("mixed"), 30)
    assert set(short) == {"mixed-small", "mixed-big"}, short
    assert m["mixed-small"].count == short["mixed-small"]


def test_pre_call_checks_enforce_rpm_caps_with_simple_shuffle_too(checked, fresh):
    envoy, m = checked
    inside_one_minute()
    statuses = collections.Counter()
    for _ in range(10):
        resp = client.post_json(envoy.base_url, PATH, chat("capped"))
        if resp.status != 200:
            expect_error(resp, 429, "rate_limited")
        statuses[resp.headers.get("x-llm-router-deployment") or resp.status] += 1
    assert statuses == {"cap2": 2, "cap3": 3, 429: 5}
    assert (m["cap2"].count, m["cap3"].count) == (2, 3)


def test_without_pre_call_checks_neither_max_input_tokens_nor_rpm_caps_are_enforced(window_mocks, fresh,
                                                                                   start_envoy):
    envoy = start_envoy(window_models(window_mocks), clusters_for(*window_mocks.values()))
    counts = routes(envoy, chat("capped"), 10)  # rpm only weighs simple-shuffle here
    assert sum(counts.values()) == 10 and set(counts) <= {"cap2", "cap3"}, counts
    expect_routed(client.post_json(envoy.base_url, PATH, chat("tiny", LONG)), "tiny", "tiny")
    resp = client.post_json(envoy.base_url, PATH, chat("small", LONG))
    expect_routed(resp, "small", "small")
    assert "x-llm-router-fallback-from" not in resp.headers
    assert (fresh["tiny"].count, fresh["small"].count, fresh["large"].count) == (1, 1, 0)
