"""Virtual keys' budgets against real Envoy with two workers (`--concurrency 2`): spend is the response's
usage priced at the serving deployment's `model_info` prices, counted in Envoy's shared data with
compare-and-swap; admission reserves the worst case, so concurrent requests overshoot `max_budget` by at most
one reservation; over budget is LiteLLM's 429 `budget_exceeded` (the OpenAI SDK raises `RateLimitError`);
`soft_budget` only flags responses; spend survives a config reload that keeps the key.

No timing assertion: concurrency comes from a barrier; waits poll with a deadline."""

from __future__ import annotations

import hashlib
import json
import time

import openai
import pytest

from .support import client
from .support.envoy import clusters_for
from .support.plugin import chat, deployment, plugin_config
from .test_rate_limits import concurrently, expect_both_workers

CHAT = "/v1/chat/completions"
PROVIDER = "sk-provider-b7d2"
# $1 / $2 per million tokens: a token costs 1000 / 2000 nano-USD.
PRICES = {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}
IN_NANOS, OUT_NANOS = 1_000, 2_000
# Every answer reports this usage (fixed, so the cost of a request is known before Envoy starts).
PROMPT, COMPLETION = 10, 20
COST = PROMPT * IN_NANOS + COMPLETION * OUT_NANOS  # 50_000 nano-USD = $0.00005
ANSWER = {"id": "chatcmpl-b", "object": "chat.completion", "created": 1, "model": "gpt-4o",
          "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
          "usage": {"prompt_tokens": PROMPT, "completion_tokens": COMPLETION, "total_tokens": PROMPT + COMPLETION}}
MAX_TOKENS = 100


def litellm_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def nanos(usd: str) -> int:
    whole, _, frac = usd.partition(".")
    return int(whole) * 10**9 + int((frac + "0" * 9)[:9])


def config(oa, keys: list, teams: list | None = None, users: list | None = None) -> dict:
    cfg = plugin_config([deployment("gpt-4o", "openai/gpt-4o", oa.url + "/v1", api_key=PROVIDER, id="gpt4o",
                                    model_info=PRICES)], master_key="sk-master-bud")
    cfg["keys"] = keys
    if teams:
        cfg["teams"] = teams
    if users:
        cfg["users"] = users
    return cfg


def post(envoy, key: str, body: dict | None = None) -> client.Response:
    return client.post_json(envoy.base_url, CHAT, body or chat("gpt-4o", max_tokens=MAX_TOKENS),
                            headers={"authorization": f"Bearer {key}"}, timeout=30)


def settled(envoy, lines: int) -> None:
    """Waits until Envoy logged `lines` requests: the filter settles a request's spend in its `on_log`, which
    Envoy runs before the access loggers, so a logged request's spend is counted (polls with a deadline)."""
    deadline = time.monotonic() + 15
    while len(envoy.access_lines()) < lines:
        assert time.monotonic() < deadline, f"{len(envoy.access_lines())} of {lines} requests logged"
        time.sleep(0.05)


def post_settled(envoy, key: str, body: dict | None = None) -> client.Response:
    """One request, returned once its spend is settled."""
    before = len(envoy.access_lines())
    r = post(envoy, key, body)
    settled(envoy, before + 1)
    return r


def reservation(body: dict) -> int:
    """The worst case a request reserves: input estimate (ceil(body bytes / 4)) and max_tokens, priced."""
    return -(-len(json.dumps(body).encode()) // 4) * IN_NANOS + body["max_tokens"] * OUT_NANOS


def expect_over_budget(resp, message_start: str):
    assert resp.status == 429, resp
    err = resp.json()["error"]
    assert (err["type"], err["code"]) == ("budget_exceeded", "429"), err
    assert err["message"].startswith(message_start), err


def test_a_budget_stops_a_key_within_one_reservation_under_concurrent_load(make_mock, start_envoy):
    key = "sk-budget-0c51"
    budget = 20 * COST  # $0.001: twenty answers' worth
    oa = make_mock("openai", "oa")
    oa.respond(body=ANSWER)
    envoy = start_envoy(config(oa, [{"token": litellm_hash(key), "key_alias": "bud-app", "max_budget": budget / 1e9}]),
                        clusters_for(oa), concurrency=2, access_log=True)
    body = chat("gpt-4o", max_tokens=MAX_TOKENS)
    assert reservation(body) >= COST, "the mock's usage stays within the reservation"
    # A burst of three budgets' worth at once, then one at a time until the first refusal.
    burst = concurrently(60, lambda: post(envoy, key, body))
    expect_both_workers(envoy)
    settled(envoy, 60)
    admitted = sum(r.status == 200 for r in burst)
    for r in burst:
        if r.status != 200:
            expect_over_budget(r, "ExceededTokenBudget: Current spend for token: ")
    refusal = None
    for _ in range(40):
        r = post_settled(envoy, key, body)
        if r.status != 200:
            refusal = r
            break
        admitted += 1
    assert refusal is not None, "the budget never refused"
    expect_over_budget(refusal, "ExceededTokenBudget: Current spend for token: ")
    assert key not in refusal.text and litellm_hash(key) not in refusal.text
    spend = admitted * COST
    # LiteLLM's rule: refuse once spend has reached the budget. The bound: under the budget plus one
    # reservation (once a reservation crosses it, no other request is admitted).
    assert budget <= spend < budget + reservation(body), (admitted, spend, budget)
    assert oa.count == admitted, "refused requests never reach the provider"
    msg = refusal.json()["error"]["message"]
    assert f"Current spend for token: {spend / 1e9:.6f}".rstrip("0") in msg, (msg, spend)
    assert "Max Budget for Token: 0.001" in msg, msg
    assert "retry-after" not in refusal.headers, "a budget without budget_duration never resets"

    # The OpenAI SDK raises RateLimitError for it.
    sdk = openai.OpenAI(base_url=envoy.base_url + "/v1", api_key=key, max_retries=0, timeout=10)
    try:
        with pytest.raises(openai.RateLimitError) as e:
            sdk.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hello!"}])
        assert e.value.status_code == 429 and e.value.code == "429"
    finally:
        sdk.close()


def test_soft_budget_flags_responses_and_spend_headers_follow_the_priced_usage(make_mock, start_envoy):
    key = "sk-soft-91aa"
    oa = make_mock("openai", "oa")
    oa.respond(body=ANSWER)
    envoy = start_envoy(config(oa, [{"token": litellm_hash(key), "max_budget": 1, "soft_budget": 2 * COST / 1e9,
                                     "budget_duration": "1d"}]), clusters_for(oa), concurrency=2, access_log=True)
    seen = []
    for _ in range(4):
        r = post_settled(envoy, key)
        assert r.status == 200, r
        seen.append((nanos(r.headers["x-litellm-key-spend"]), r.headers.get("x-llm-router-soft-budget-exceeded")))
        assert r.headers["x-litellm-key-max-budget"] == "1.0"
    # Spend before each request: 0, 1, 2, 3 answers; the soft budget (2 answers) is reached from the third on.
    assert seen == [(0, None), (COST, None), (2 * COST, "key"), (3 * COST, "key")], seen


def test_streamed_usage_settles_the_spend(make_mock, start_envoy):
    key = "sk-stream-5d03"
    oa = make_mock("openai", "oa")
    envoy = start_envoy(config(oa, [{"token": litellm_hash(key), "max_budget": 1}]), clusters_for(oa), concurrency=2, access_log=True)
    body = chat("gpt-4o", stream=True, stream_options={"include_usage": True}, max_tokens=MAX_TOKENS)
    s = client.stream_post(envoy.base_url, CHAT, body, headers={"authorization": f"Bearer {key}"}, timeout=30)
    assert s.status == 200
    s.read_all()
    usage = None
    for line in s.body.decode().splitlines():
        if line.startswith("data: {") and json.loads(line[6:]).get("usage"):
            usage = json.loads(line[6:])["usage"]
    assert usage, s.body[:300]
    cost = usage["prompt_tokens"] * IN_NANOS + usage["completion_tokens"] * OUT_NANOS
    settled(envoy, 1)
    r = post(envoy, key)
    spent = nanos(r.headers["x-litellm-key-spend"])
    assert spent == cost, (spent, usage)


def test_team_and_user_budgets_are_shared_by_their_keys(make_mock, start_envoy):
    a, b, solo = "sk-team-a-17", "sk-team-b-28", "sk-solo-39"
    oa = make_mock("openai", "oa")
    oa.respond(body=ANSWER)
    keys = [{"token": litellm_hash(a), "key_alias": "a", "team_id": "research"},
            {"token": litellm_hash(b), "key_alias": "b", "team_id": "research", "user_id": "ann"},
            {"token": litellm_hash(solo), "key_alias": "solo", "user_id": "ann"}]
    envoy = start_envoy(config(oa, keys, teams=[{"team_id": "research", "max_budget": 2 * COST / 1e9}],
                               users=[{"user_id": "ann", "max_budget": COST / 1e9}]), clusters_for(oa), concurrency=2, access_log=True)
    # The team's two answers' worth, spent by either key; b's user budget does not apply (b is in a team).
    assert [post_settled(envoy, k).status for k in (a, b)] == [200, 200]
    expect_over_budget(post(envoy, a), "Budget has been exceeded! Team=research Current cost: 0.0001, Max budget: 0.0001")
    expect_over_budget(post(envoy, b), "Budget has been exceeded! Team=research")
    # The teamless key spends its user's budget.
    assert post_settled(envoy, solo).status == 200
    expect_over_budget(post(envoy, solo), "Budget has been exceeded! User=ann Current cost: 0.00005, Max budget: 0.00005")


def test_spend_survives_a_config_reload_that_keeps_the_key_and_model_budgets_apply(make_mock, start_envoy):
    key, other = "sk-keep-62e0", "sk-new-73f1"
    oa = make_mock("openai", "oa")
    oa.respond(body=ANSWER)

    def cfg(extra: list, budget_usd: float) -> dict:
        return config(oa, [*extra, {"token": litellm_hash(key), "key_alias": "kept", "max_budget": budget_usd,
                                    "model_max_budget": {"gpt-4o": {"budget_limit": 3 * COST / 1e9, "time_period": "30d"}}}])

    envoy = start_envoy(cfg([], 1), clusters_for(oa), concurrency=2, dynamic_listener=True, access_log=True)
    assert [post_settled(envoy, key).status for _ in range(2)] == [200, 200]
    envoy.reload_plugin_config(cfg([{"token": litellm_hash(other)}], 1))
    r = post_settled(envoy, key)
    assert r.status == 200 and nanos(r.headers["x-litellm-key-spend"]) == 2 * COST, r.headers
    # The key's per-model budget (three answers) is spent now.
    expect_over_budget(post(envoy, key), "Budget has been exceeded! Key=kept Model=gpt-4o Current cost: 0.00015")
    assert post(envoy, other).status == 200
