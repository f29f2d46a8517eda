"""Requests the router refuses itself, with OpenAI-shaped errors, before any provider sees them; the master
key; and secrets that must never show up in a response or in Envoy's log."""

from __future__ import annotations

import json

import pytest

from .support import client
from .support.checks import expect_error, expect_no_secrets, expect_routed, expect_upstream, response_text
from .support.envoy import clusters_for
from .support.plugin import chat, deployment, plugin_config

OPENAI_KEY = "sk-test-openai-secret-1111"
ANTHROPIC_KEY = "sk-ant-test-secret-2222"
MASTER_KEY = "sk-master-secret-3333"
SECRETS = (OPENAI_KEY, ANTHROPIC_KEY, MASTER_KEY)
BODY_LIMIT = 4096


class Router:
    def __init__(self, envoy, openai, anthropic):
        self.envoy, self.openai, self.anthropic = envoy, openai, anthropic

    def post(self, path, body, headers=None):
        return client.post_json(self.envoy.base_url, path, body, headers)

    def nothing_reached_a_provider(self):
        assert self.openai.count == 0 and self.anthropic.count == 0, (self.openai.requests, self.anthropic.requests)


def _router(make_module_mock, start_module_envoy, label, master_key=None):
    openai = make_module_mock("openai", f"openai-{label}")
    anthropic = make_module_mock("anthropic", f"anthropic-{label}")
    cfg = plugin_config(
        [deployment("gpt-4o", "openai/gpt-4o", openai.url + "/v1", api_key="os.environ/OPENAI_API_KEY",
                    id="openai-1"),
         deployment("claude", "anthropic/claude-3-5-sonnet-latest", anthropic.url,
                    api_key="os.environ/ANTHROPIC_API_KEY", id="anthropic-1")],
        master_key="os.environ/MASTER_KEY" if master_key else None,
        envoy_settings={"max_request_body_bytes": BODY_LIMIT})
    env = {"OPENAI_API_KEY": OPENAI_KEY, "ANTHROPIC_API_KEY": ANTHROPIC_KEY}
    if master_key:
        env["MASTER_KEY"] = master_key
    envoy = start_module_envoy(cfg, clusters_for(openai, anthropic), env=env, label=label)
    return Router(envoy, openai, anthropic)


@pytest.fixture(scope="module")
def open_router_(make_module_mock, start_module_envoy):
    return _router(make_module_mock, start_module_envoy, "open")


@pytest.fixture(scope="module")
def locked_router_(make_module_mock, start_module_envoy):
    return _router(make_module_mock, start_module_envoy, "locked", master_key=MASTER_KEY)


@pytest.fixture
def router(open_router_):
    open_router_.openai.reset()
    open_router_.anthropic.reset()
    return open_router_


@pytest.fixture
def locked(locked_router_):
    locked_router_.openai.reset()
    locked_router_.anthropic.reset()
    return locked_router_


# ---- malformed requests ---------------------------------------------------------------------------------

def test_an_unknown_model_is_a_404(router):
    expect_error(router.post("/v1/chat/completions", chat("gpt-5-turbo-nonexistent")), 404, "model_not_found",
                 param="model")
    router.nothing_reached_a_provider()


@pytest.mark.parametrize("body", [b'{"model": "gpt-4o", "messages": [', b"model=gpt-4o", b'{"model": "gpt-4o"}}'])
def test_a_body_that_is_not_json_is_a_400(router, body):
    expect_error(router.post("/v1/chat/completions", body, {"content-type": "application/json"}), 400,
                 "invalid_json")
    router.nothing_reached_a_provider()


@pytest.mark.parametrize("body", [{"messages": []}, {"model": 4, "messages": []}, {"model": None},
                                  {"model": ["gpt-4o"]}])
def test_a_missing_or_non_string_model_is_a_400(router, body):
    expect_error(router.post("/v1/chat/completions", body), 400, "missing_model", param="model")
    router.nothing_reached_a_provider()


def test_a_body_over_max_request_body_bytes_is_a_413(router):
    body = chat("gpt-4o", "x" * (BODY_LIMIT + 100))
    expect_error(router.post("/v1/chat/completions", body), 413, "request_too_large")
    router.nothing_reached_a_provider()


def test_a_body_just_under_the_limit_is_routed(router):
    body = chat("gpt-4o", "")
    body["messages"][0]["content"] = "x" * (BODY_LIMIT - len(json.dumps(body).encode()) - 10)
    expect_routed(router.post("/v1/chat/completions", body), "openai-1")


def test_a_chunked_body_too_large_for_envoys_buffer_is_a_413_in_openai_shape(router):
    # No content-length: the router cannot refuse it up front; whichever answers (the router while buffering,
    # or Envoy's 1 MiB buffer limit through local_reply_config) answers in OpenAI's shape.
    chunks = [b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "'] + [b"x" * 65536] * 20 + [b'"}]}']
    r = client.post_chunked(router.envoy.base_url, "/v1/chat/completions", chunks)
    err = expect_error(r, 413, "request_too_large")
    assert err["type"] == "invalid_request_error"
    router.nothing_reached_a_provider()


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; b=x"])
def test_a_non_json_content_type_is_a_415(router, ctype):
    r = router.post("/v1/chat/completions", b'{"model": "gpt-4o", "messages": []}', {"content-type": ctype})
    expect_error(r, 415, "unsupported_media_type")
    router.nothing_reached_a_provider()


@pytest.mark.parametrize("ctype", ["application/json", "application/json; charset=utf-8", None])
def test_json_content_types_and_none_are_accepted(router, ctype):
    headers = {"content-type": ctype} if ctype else {}
    r = router.post("/v1/chat/completions", b'{"model": "gpt-4o", "messages": []}', headers)
    expect_routed(r, "openai-1")


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_other_methods_on_a_routed_endpoint_are_a_405(router, method):
    r = client.request(method, router.envoy.base_url, "/v1/chat/completions",
                       None if method in ("GET", "DELETE") else b"{}")
    expect_error(r, 405, "method_not_allowed")
    router.nothing_reached_a_provider()


# ---- the master key -------------------------------------------------------------------------------------

@pytest.mark.parametrize("headers", [{}, {"authorization": "Bearer wrong-key"}, {"api-key": "wrong"},
                                     {"x-api-key": MASTER_KEY[:-1]}, {"authorization": f"Bearer {MASTER_KEY}x"}])
def test_without_the_master_key_requests_are_a_401(locked, headers):
    r = locked.post("/v1/chat/completions", chat("gpt-4o"), headers)
    expect_error(r, 401, "invalid_api_key", type="authentication_error")
    locked.nothing_reached_a_provider()


@pytest.mark.parametrize("headers", [{"authorization": f"Bearer {MASTER_KEY}"}, {"api-key": MASTER_KEY},
                                     {"x-api-key": MASTER_KEY}])
def test_with_the_master_key_requests_are_routed_with_the_provider_key_only(locked, headers):
    r = locked.post("/v1/chat/completions", chat("gpt-4o"), headers)
    expect_routed(r, "openai-1", "gpt-4o")
    rec = expect_upstream(locked.openai.last(), path="/v1/chat/completions", host=locked.openai.authority,
                          model="gpt-4o", headers={"authorization": f"Bearer {OPENAI_KEY}"},
                          absent=("api-key", "x-api-key"))
    expect_no_secrets(str(rec.headers) + rec.body.decode(), [MASTER_KEY], "the upstream request")


def test_anthropic_clients_authenticate_with_x_api_key(locked):
    body = {"model": "claude", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    r = locked.post("/v1/messages", body, {"x-api-key": MASTER_KEY, "anthropic-version": "2023-06-01"})
    expect_routed(r, "anthropic-1", "claude")
    expect_upstream(locked.anthropic.last(), path="/v1/messages", host=locked.anthropic.authority,
                    model="claude-3-5-sonnet-latest", headers={"x-api-key": ANTHROPIC_KEY},
                    absent=("authorization", "api-key"))


# ---- secrets --------------------------------------------------------------------------------------------

def test_no_secret_appears_in_any_response_or_in_envoys_log(router, locked):
    seen = []
    for r_ in (router, locked):
        auth = {"authorization": f"Bearer {MASTER_KEY}"}
        seen.append(r_.post("/v1/chat/completions", chat("gpt-4o"), auth))
        seen.append(r_.post("/v1/messages", {"model": "claude", "max_tokens": 4, "messages": []}, auth))
        seen.append(r_.post("/v1/chat/completions", chat("nope"), auth))
        seen.append(r_.post("/v1/chat/completions", b"{", {**auth, "content-type": "application/json"}))
        seen.append(r_.post("/v1/chat/completions", chat("gpt-4o")))  # 401 when locked
        seen.append(r_.post("/v1/chat/completions", chat("gpt-4o"), {"authorization": "Bearer nearly-" + MASTER_KEY}))
        r_.openai.respond(status=401, times=1)
        seen.append(r_.post("/v1/chat/completions", chat("gpt-4o"), auth))
        r_.openai.respond(status=500, times=1)
        seen.append(r_.post("/v1/chat/completions", chat("gpt-4o"), auth))
        seen.append(r_.post("/v1/chat/completions", chat("gpt-4o", stream=True), auth))
    assert {r.status for r in seen} >= {200, 400, 401, 404, 500}
    for r in seen:
        # The client may echo its own (wrong) credentials nowhere either; provider keys never.
        expect_no_secrets(response_text(r), (OPENAI_KEY, ANTHROPIC_KEY), f"a {r.status} response")
        if r.status in (401, 404, 400):
            expect_no_secrets(response_text(r), (MASTER_KEY,), f"a {r.status} response")
    for r_ in (router, locked):
        expect_no_secrets(r_.envoy.log_text(), SECRETS, f"the Envoy log {r_.envoy.log_path}")
