"""Failover inside one client request: retries within the model group, fallback groups, connect failures and
timeouts — and a streamed answer still streams when a fallback serves it.

The Envoy here is wired for failover (support/envoy.py `failover=True`): the upstream role of the filter on every
deployment cluster, a priority-1 redirector endpoint, the route's retry and internal-redirect policies."""

from __future__ import annotations

import time

import pytest

from .support import client
from .support.checks import expect_error, expect_routed, expect_upstream
from .support.envoy import clusters_for, free_port
from .support.plugin import chat, deployment, plugin_config

STATE_HEADER = "x-llm-router-state"


@pytest.fixture
def mocks(make_mock):
    return {name: make_mock("openai", name) for name in ("a1", "a2", "b1", "c1")}


def failover_envoy(start_envoy, mocks, extra_clusters=None, **router_settings):
    a1, a2, b1, c1 = (mocks[n] for n in ("a1", "a2", "b1", "c1"))
    models = router_settings.pop("model_list", None) or [
        deployment("a", "openai/a-one", a1.url + "/v1", api_key="sk-a1", id="a1"),
        deployment("a", "openai/a-two", a2.url + "/v1", api_key="sk-a2", id="a2"),
        deployment("b", "openai/b-one", b1.url + "/v1", api_key="sk-b1", id="b1"),
        deployment("c", "openai/c-one", c1.url + "/v1", api_key="sk-c1", id="c1"),
    ]
    cfg = plugin_config(models, allowed_fails=100, cooldown_time=30, **router_settings)
    clusters = clusters_for(a1, a2, b1, c1, passthrough=a1)
    clusters.update(extra_clusters or {})
    return start_envoy(cfg, clusters, failover=True)


def served_by(resp):
    return resp.headers.get("x-llm-router-deployment")


def test_a_500_is_retried_on_the_other_deployment_of_the_group(start_envoy, mocks):
    models = [  # a2 weighs 0: a1 is always picked first, a2 only as the retry
        deployment("a", "openai/a-one", mocks["a1"].url + "/v1", api_key="sk-a1", id="a1", weight=1),
        deployment("a", "openai/a-two", mocks["a2"].url + "/v1", api_key="sk-a2", id="a2", weight=0),
    ]
    envoy = failover_envoy(start_envoy, mocks, model_list=models, num_retries=1)
    mocks["a1"].respond(status=500)
    resp = client.post_json(envoy.base_url, "/v1/chat/completions", chat("a"))
    expect_routed(resp, "a2", "a")
    assert resp.headers["x-llm-router-attempts"] == "2"
    assert resp.json()["model"] == "a-two"
    assert "x-llm-router-fallback-from" not in resp.headers
    assert mocks["a1"].count == 1 and mocks["a2"].count == 1
    rec = expect_upstream(mocks["a2"].last(), path="/v1/chat/completions", host=mocks["a2"].authority,
                          model="a-two", headers={"authorization": "Bearer sk-a2"}, absent=[STATE_HEADER])
    assert rec.json["messages"] == chat("a")["messages"]
    assert STATE_HEADER not in mocks["a1"].last().headers


def test_model_group_retry_policy_overrides_retry_policy_for_its_group(start_envoy, mocks):
    models = [  # a2 / b2 weigh 0: only ever the retry
        deployment("a", "openai/a-one", mocks["a1"].url + "/v1", api_key="sk-a1", id="a1", weight=1),
        deployment("a", "openai/a-two", mocks["a2"].url + "/v1", api_key="sk-a2", id="a2", weight=0),
        deployment("b", "openai/b-one", mocks["b1"].url + "/v1", api_key="sk-b1", id="b1", weight=1),
        deployment("b", "openai/b-two", mocks["c1"].url + "/v1", api_key="sk-c1", id="b2", weight=0),
    ]
    envoy = failover_envoy(start_envoy, mocks, model_list=models, retry_policy={"InternalServerErrorRetries": 0},
                           model_group_retry_policy={"a": {"InternalServerErrorRetries": 1}})
    mocks["a1"].respond(status=500, times=1)
    resp = client.post_json(envoy.base_url, "/v1/chat/completions", chat("a"))
    expect_routed(resp, "a2", "a")
    assert resp.headers["x-llm-router-attempts"] == "2"
    # `b` has no entry: retry_policy applies, no retry.
    mocks["b1"].respond(status=500, times=1)
    resp = client.post_json(envoy.base_url, "/v1/chat/completions", chat("b"))
    assert resp.status == 500 and resp.headers["x-llm-router-attempts"] == "1"
    assert mocks["c1"].count == 0


def test_429_with_retry_after_falls_back_to_the_next_group_and_cools_the_deployment(start_envoy, mocks):
    models = [
        deployment("a", "openai/a-one", mocks["a1"].url + "/v1", api_key="sk-a1", id="a1", weight=1),
        deployment("a", "openai/a-two", mocks["a2"].url + "/v1", api_key="sk-a2", id="a2", weight=0),
        deployment("b", "openai/b-one", mocks["b1"].url + "/v1", api_key="sk-b1", id="b1"),
    ]
    # a2 weighs 0 so a1 is always first; no retries: a 429 goes straight to the fallback group.
    envoy = failover_envoy(start_envoy, mocks, model_list=models, fallbacks=[{"a": ["b"]}])
    mocks["a1"].respond(status=429, headers={"retry-after": "20"})
    resp = client.post_json(envoy.base_url, "/v1/chat/completions", chat("a"))
    expect_routed(resp, "b1", "b")
    assert resp.headers["x-llm-router-attempts"] == "2"
    assert resp.headers["x-llm-router-fallback-from"] == "a"
    assert resp.json()["model"] == "b-one"
    expect_upstream(mocks["b1"].last(), path="/v1/chat/completions", host=mocks["b1"].authority, model="b-one",
                    headers={"authorization": "Bearer sk-b1"})
    # The 429 cooled a1 (for its Retry-After): the next request goes to a2 without touching a1.
    resp = client.post_json(envoy.base_url, "/v1/chat/completions", chat("a"))
    expect_routed(resp, "a2", "a")
    assert resp.headers["x-llm-router-attempts"] == "1"
    assert mocks["a1"].count == 1


def test_chained_fallbacks_a_to_b_to_c(start_envoy, mocks):
    models = [
        deployment("a", "openai/a-one", mocks["a1"].url + "/v1", api_key="sk-a1", id="a1"),
        deployment("b", "openai/b-one", mocks["b1"].url + "/v1", api_key="sk-b1", id="b1"),
        deployment("c", "openai/c-one", mocks["c1"].url + "/v1", api_key="sk-c1", id="c1"),
    ]
    envoy = failover_envoy(start_envoy, mocks, model_list=models, fallbacks=[{"a": ["b", "c"]}])
    mocks["a1"].respond(status=500)
    mocks["b1"].respond(status=503)
    resp = client.post_json(envoy.base_url, "/v1/chat/completions", chat("a"))
    expect_routed(resp, "c1", "c")
    assert resp.headers["x-llm-router-attempts"] == "3"
    assert resp.headers["x-llm-router-fallback-from"] == "a"
    assert [m.count for m in (mocks["a1"], mocks["b1"], mocks["c1"])] == [1, 1, 1]
    assert mocks["c1"].last().json["model"] == "c-one"


def test_connect_refused_fails_over(start_envoy, mocks):
    dead = free_port()  # nothing listens there
    dead_base = f"http://127.0.0.1:{dead}/v1"
    models = [
        deployment("a", "openai/a-dead", dead_base, api_key="sk-dead", id="dead"),
        deployment("b", "openai/b-one", mocks["b1"].url + "/v1", api_key="sk-b1", id="b1"),
    ]
    envoy = failover_envoy(start_envoy, mocks, model_list=models, fallbacks=[{"a": ["b"]}],
                           extra_clusters={f"outbound|{dead}||127.0.0.1": ("127.0.0.1", dead)})
    started = time.monotonic()
    resp = client.post_json(envoy.base_url, "/v1/chat/completions", chat("a"))
    assert time.monotonic() - started < 2.0
    expect_routed(resp, "b1", "b")
    assert resp.headers["x-llm-router-attempts"] == "2"
    assert mocks["b1"].last().json["model"] == "b-one"


def test_an_upstream_timeout_fails_over_within_the_deployment_timeout(start_envoy, mocks):
    models = [
        deployment("a", "openai/a-slow", mocks["a1"].url + "/v1", api_key="sk-a1", id="slow", timeout=0.5),
        deployment("b", "openai/b-one", mocks["b1"].url + "/v1", api_key="sk-b1", id="b1"),
    ]
    envoy = failover_envoy(start_envoy, mocks, model_list=models, fallbacks=[{"a": ["b"]}])
    mocks["a1"].respond(delay=3.0)
    started = time.monotonic()
    resp = client.post_json(envoy.base_url, "/v1/chat/completions", chat("a"))
    elapsed = time.monotonic() - started
    expect_routed(resp, "b1", "b")
    assert 0.45 < elapsed < 2.0, f"failover took {elapsed:.2f}s with a 0.5 s deployment timeout"
    assert mocks["b1"].count == 1


def test_a_streamed_answer_still_streams_when_a_fallback_serves_it(start_envoy, mocks):
    models = [
        deployment("a", "openai/a-one", mocks["a1"].url + "/v1", api_key="sk-a1", id="a1"),
        deployment("b", "openai/b-one", mocks["b1"].url + "/v1", api_key="sk-b1", id="b1"),
    ]
    envoy = failover_envoy(start_envoy, mocks, model_list=models, fallbacks=[{"a": ["b"]}])
    mocks["a1"].respond(status=500)
    mocks["b1"].respond(stream_delay=0.5)
    s = client.stream_post(envoy.base_url, "/v1/chat/completions", chat("a", stream=True), timeout=15)
    assert s.status == 200 and s.headers["content-type"].startswith("text/event-stream")
    assert s.headers["x-llm-router-deployment"] == "b1"
    assert s.headers["x-llm-router-fallback-from"] == "a"
    first_at, first = next(s)
    s.read_all()
    last_at = s.chunks[-1][0]
    assert b"chat.completion.chunk" in first
    assert first_at < 0.4, f"first event after {first_at:.2f}s: the fallback's stream was buffered"
    assert last_at > first_at + 1.0, "the fallback spaces its events 0.5 s apart"
    assert mocks["b1"].last().json["stream"] is True


def test_a_400_is_not_retried(start_envoy, mocks):
    envoy = failover_envoy(start_envoy, mocks, num_retries=3, fallbacks=[{"a": ["b"]}])
    mocks["a1"].respond(status=400)
    mocks["a2"].respond(status=400)
    resp = client.post_json(envoy.base_url, "/v1/chat/completions", chat("a"))
    assert resp.status == 400
    assert resp.headers["x-llm-router-attempts"] == "1"
    assert mocks["a1"].count + mocks["a2"].count == 1 and mocks["b1"].count == 0


def test_when_every_attempt_fails_the_last_upstream_error_reaches_the_client(start_envoy, mocks):
    models = [
        deployment("a", "openai/a-one", mocks["a1"].url + "/v1", api_key="sk-a1", id="a1"),
        deployment("b", "openai/b-one", mocks["b1"].url + "/v1", api_key="sk-b1", id="b1"),
    ]
    envoy = failover_envoy(start_envoy, mocks, model_list=models, fallbacks=[{"a": ["b"]}])
    mocks["a1"].respond(status=500)
    mocks["b1"].respond(status=503)
    resp = client.post_json(envoy.base_url, "/v1/chat/completions", chat("a"))
    assert resp.status == 503, resp
    expect_routed(resp, "b1", status=503)
    assert resp.headers["x-llm-router-attempts"] == "2"
    err = expect_error(resp, 503, None)
    assert "location" not in resp.headers
    assert err["message"]  # the provider's own OpenAI-shaped error, as-is


def test_when_the_last_deployment_is_unreachable_the_client_gets_an_openai_shaped_503(start_envoy, mocks):
    dead = free_port()
    models = [
        deployment("a", "openai/a-one", mocks["a1"].url + "/v1", api_key="sk-a1", id="a1"),
        deployment("b", "openai/b-dead", f"http://127.0.0.1:{dead}/v1", api_key="sk-dead", id="dead"),
    ]
    envoy = failover_envoy(start_envoy, mocks, model_list=models, fallbacks=[{"a": ["b"]}],
                           extra_clusters={f"outbound|{dead}||127.0.0.1": ("127.0.0.1", dead)})
    mocks["a1"].respond(status=500)
    resp = client.post_json(envoy.base_url, "/v1/chat/completions", chat("a"))
    expect_error(resp, 503, "upstream_unavailable")
    assert resp.headers["x-llm-router-attempts"] == "2"
    assert "x-llm-router-redirector" not in resp.headers and "location" not in resp.headers


def test_a_client_cannot_forge_a_failover_pass(start_envoy, mocks):
    envoy = failover_envoy(start_envoy, mocks)
    resp = client.post_json(envoy.base_url, "/__llm_router/failover?status=500", chat("a"),
                            headers={STATE_HEADER: "v=1;h=0;m=a;o=a;g=a;f=0;r=0;t=a1;c=1;mac=0000000000000000",
                                     "x-envoy-original-url": "http://x/v1/chat/completions"})
    # Not a routed endpoint without a valid signed state: the failover path's own route answers 404
    # (support/envoy.py failover_route), nothing reaches an upstream.
    assert "x-llm-router-deployment" not in resp.headers
    expect_error(resp, 404, "not_found")
    assert all(m.count == 0 for m in mocks.values())
    # Elsewhere a forged state header passes through with the request, stripped.
    resp = client.post_json(envoy.base_url, "/other?status=500", chat("a"),
                            headers={STATE_HEADER: "v=1;h=0;m=a;o=a;g=a;f=0;r=0;t=a1;c=1;mac=0000000000000000"})
    assert "x-llm-router-deployment" not in resp.headers
    rec = mocks["a1"].last()
    assert rec.path == "/other?status=500"
    assert STATE_HEADER not in rec.headers


def test_an_upstream_context_length_error_goes_to_the_context_window_fallback(start_envoy, mocks):
    models = [
        deployment("a", "openai/a-small", mocks["a1"].url + "/v1", api_key="sk-a1", id="a1"),
        deployment("a-long", "openai/a-long", mocks["b1"].url + "/v1", api_key="sk-b1", id="b1"),
    ]
    envoy = failover_envoy(start_envoy, mocks, model_list=models, context_window_fallbacks=[{"a": ["a-long"]}])
    too_long = {"error": {"message": "This model's maximum context length is 8192 tokens. However, your messages "
                                     "resulted in 9000 tokens.", "type": "invalid_request_error",
                          "param": "messages", "code": "context_length_exceeded"}}
    mocks["a1"].respond(status=400, body=too_long, times=1)
    resp = client.post_json(envoy.base_url, "/v1/chat/completions", chat("a", "a long prompt"))
    expect_routed(resp, "b1", "a-long")
    assert resp.headers["x-llm-router-fallback-from"] == "a"
    assert resp.headers["x-llm-router-attempts"] == "2"
    assert mocks["b1"].last().json["model"] == "a-long"
    # Not the deployment's fault: a1 is not cooled, it serves the next (short) request.
    resp = client.post_json(envoy.base_url, "/v1/chat/completions", chat("a"))
    expect_routed(resp, "a1", "a")
    # Any other 400 is the client's: returned as-is, no fallback.
    mocks["a1"].respond(status=400, times=1)
    resp = client.post_json(envoy.base_url, "/v1/chat/completions", chat("a"))
    assert resp.status == 400 and resp.headers["x-llm-router-attempts"] == "1"
    assert mocks["b1"].count == 1


AZURE_CONTENT_FILTER = {"error": {
    "message": "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. "
               "Please modify your prompt and retry.",
    "type": None, "param": "prompt", "code": "content_filter", "status": 400,
    "innererror": {"code": "ResponsibleAIPolicyViolation",
                   "content_filter_result": {"hate": {"filtered": True, "severity": "high"}}}}}


def content_policy_envoy(start_envoy, mocks, make_mock, **router_settings):
    """Group `a`: an Azure deployment (always picked first: the other member weighs 0) and a2; `safe`: b1."""
    az = make_mock("azure", "az1")
    models = [
        deployment("a", "azure/gpt-prod", az.url, api_key="az-key", id="az1", api_version="2024-10-21", weight=1),
        deployment("a", "openai/a-two", mocks["a2"].url + "/v1", api_key="sk-a2", id="a2", weight=0),
        deployment("safe", "openai/b-one", mocks["b1"].url + "/v1", api_key="sk-b1", id="b1"),
    ]
    return az, failover_envoy(start_envoy, mocks, model_list=models, extra_clusters=clusters_for(az),
                              num_retries=2, **router_settings)


def test_a_content_policy_rejection_goes_to_the_content_policy_fallback(start_envoy, mocks, make_mock):
    az, envoy = content_policy_envoy(start_envoy, mocks, make_mock, fallbacks=[{"a": ["a"]}],
                                     content_policy_fallbacks=[{"a": ["safe"]}])
    az.respond(status=400, body=AZURE_CONTENT_FILTER, times=1)
    resp = client.post_json(envoy.base_url, "/v1/chat/completions", chat("a", "something the filter refuses"))
    expect_routed(resp, "b1", "safe")
    assert resp.headers["x-llm-router-fallback-from"] == "a"
    assert resp.headers["x-llm-router-attempts"] == "2"
    assert resp.json()["model"] == "b-one"
    # No retry in the group (a2 untouched, num_retries notwithstanding): LiteLLM sends the error straight to
    # content_policy_fallbacks.
    assert (az.count, mocks["a2"].count, mocks["b1"].count) == (1, 0, 1)
    expect_upstream(mocks["b1"].last(), path="/v1/chat/completions", host=mocks["b1"].authority, model="b-one",
                    headers={"authorization": "Bearer sk-b1"}, absent=[STATE_HEADER, "api-key"])
    # The prompt's fault, not the deployment's: no failure recorded against az1.
    doc = client.get(envoy.base_url, "/llm-router/health?verbose=1").json()
    az1 = {d["id"]: d for d in doc["deployments"]}["az1"]
    assert (az1["state"], az1["failures_in_window"], az1["last_error_class"]) == ("healthy", 0, None), az1
    # Any other 400 is the client's: returned as-is, no fallback.
    az.respond(status=400, body={"error": {"message": "Invalid 'temperature'", "type": "invalid_request_error",
                                           "code": "decimal_above_max_value"}}, times=1)
    resp = client.post_json(envoy.base_url, "/v1/chat/completions", chat("a"))
    assert resp.status == 400 and resp.headers["x-llm-router-attempts"] == "1"
    assert resp.json()["error"]["code"] == "decimal_above_max_value"
    assert mocks["b1"].count == 1


def test_with_no_fallback_a_content_policy_rejection_reaches_the_client_unchanged(start_envoy, mocks, make_mock):
    # content_policy_fallbacks names another group, not `a`: like LiteLLM, no entry means no fallback.
    az, envoy = content_policy_envoy(start_envoy, mocks, make_mock, content_policy_fallbacks=[{"safe": ["a"]}])
    az.respond(status=400, body=AZURE_CONTENT_FILTER, times=1)
    resp = client.post_json(envoy.base_url, "/v1/chat/completions", chat("a", "something the filter refuses"))
    assert resp.status == 400, resp
    assert resp.headers["x-llm-router-deployment"] == "az1"
    assert resp.headers["x-llm-router-attempts"] == "1"
    assert resp.json() == AZURE_CONTENT_FILTER
    assert (az.count, mocks["a2"].count, mocks["b1"].count) == (1, 0, 0)


def test_without_content_policy_fallbacks_the_rejection_continues_the_fallbacks(start_envoy, mocks, make_mock):
    # LiteLLM: "No content_policy_fallback set. Defaulting to fallbacks, if available" (no retry in the group).
    az, envoy = content_policy_envoy(start_envoy, mocks, make_mock, fallbacks=[{"a": ["safe"]}])
    az.respond(status=400, body=AZURE_CONTENT_FILTER, times=1)
    resp = client.post_json(envoy.base_url, "/v1/chat/completions", chat("a", "something the filter refuses"))
    expect_routed(resp, "b1", "safe")
    assert resp.headers["x-llm-router-attempts"] == "2"
    assert (az.count, mocks["a2"].count, mocks["b1"].count) == (1, 0, 1)


def test_without_the_wiring_the_attempt_state_never_reaches_the_provider(start_envoy, mocks):
    """Retries and fallbacks configured, Envoy not wired for failover, envoy_settings.failover left off (its
    default): the failed attempt is the answer, and the provider sees no x-llm-router-state header."""
    models = [deployment("a", "openai/a-one", mocks["a1"].url + "/v1", api_key="sk-a1", id="a1", weight=1),
              deployment("a", "openai/a-two", mocks["a2"].url + "/v1", api_key="sk-a2", id="a2", weight=0),
              deployment("b", "openai/b-one", mocks["b1"].url + "/v1", api_key="sk-b1", id="b1")]
    cfg = plugin_config(models, allowed_fails=100, num_retries=2, fallbacks=[{"a": ["b"]}])
    envoy = start_envoy(cfg, clusters_for(mocks["a1"], mocks["a2"], mocks["b1"]))
    mocks["a1"].respond(status=500)
    resp = client.post_json(envoy.base_url, "/v1/chat/completions", chat("a"))
    assert resp.status == 500 and served_by(resp) == "a1", (resp.status, resp.headers)
    expect_upstream(mocks["a1"].last(), path="/v1/chat/completions", host=mocks["a1"].authority, model="a-one",
                    absent=[STATE_HEADER])
    assert mocks["a2"].count == 0 and mocks["b1"].count == 0
