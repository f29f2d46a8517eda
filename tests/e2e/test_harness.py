"""The harness itself, without the filter: mocks speak the real wire shapes, the Envoy helper's bootstrap
routes by the cluster header, passes everything else through, streams, and maps Envoy's own 413."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from .support import client
from .support.envoy import REPO, TOO_LARGE_BODY, Envoy, clusters_for
from .support.plugin import chat


def sse_events(raw: bytes) -> list:
    """The `data:` payloads of an SSE body, in order."""
    out = []
    for block in raw.decode().split("\n\n"):
        for line in block.splitlines():
            if line.startswith("data: "):
                out.append(line[len("data: "):])
    return out


# ---- mocks on their own ------------------------------------------------------------------------------

def test_openai_mock_answers_chat_completions_like_openai(make_mock):
    mock = make_mock("openai", name="east")
    r = client.post_json(mock.url, "/v1/chat/completions", chat("gpt-4o", "hi"),
                         headers={"authorization": "Bearer sk-x", "X-Custom": "a"})
    assert r.status == 200
    assert r.headers["x-mock-provider"] == "openai" and r.headers["x-mock-name"] == "east"
    body = r.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == "gpt-4o" and isinstance(body["created"], int)
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    rec = mock.last()
    assert (rec.method, rec.path, rec.model) == ("POST", "/v1/chat/completions", "gpt-4o")
    assert rec.headers["authorization"] == "Bearer sk-x" and rec.headers["x-custom"] == "a"
    assert json.loads(rec.body) == rec.json == chat("gpt-4o", "hi")


@pytest.mark.parametrize("path, obj", [
    ("/v1/completions", "text_completion"),
    ("/openai/v1/chat/completions", "chat.completion"),
    ("/v1/embeddings", "list"),
    ("/v1/responses", "response"),
    ("/v1/chat/completions?foo=bar", "chat.completion"),
])
def test_openai_mock_serves_every_endpoint_under_any_prefix(make_mock, path, obj):
    mock = make_mock("openai")
    r = client.post_json(mock.url, path, {"model": "m", "input": ["a", "b"], "prompt": "p",
                                          "messages": [{"role": "user", "content": "x"}]})
    assert r.status == 200 and r.json()["object"] == obj and r.json()["model"] == "m"
    assert mock.last().path == path
    if obj == "list":
        assert [d["index"] for d in r.json()["data"]] == [0, 1]


def test_azure_mock_takes_the_model_from_the_deployment_path(make_mock):
    mock = make_mock("azure")
    r = client.post_json(mock.url, "/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21",
                         chat("ignored"), headers={"api-key": "k"})
    assert r.status == 200 and r.json()["model"] == "gpt-4o-prod"
    assert r.headers["x-mock-provider"] == "azure"
    assert mock.last().query == {"api-version": "2024-10-21"}
    r = client.post_json(mock.url, "/openai/deployments/emb/embeddings?api-version=2024-10-21", {"input": "x"})
    assert r.json()["object"] == "list" and r.json()["model"] == "emb"
    # Like Azure: no api-version, no resource.
    r = client.post_json(mock.url, "/openai/deployments/gpt-4o-prod/chat/completions", chat("x"))
    assert r.status == 404


def test_anthropic_mock_speaks_messages_and_openai_chat(make_mock):
    mock = make_mock("anthropic")
    r = client.post_json(mock.url, "/v1/messages", {"model": "claude-3-5-sonnet-latest", "max_tokens": 10,
                                                    "messages": [{"role": "user", "content": "hi"}]})
    body = r.json()
    assert r.status == 200 and body["type"] == "message" and body["model"] == "claude-3-5-sonnet-latest"
    assert body["content"][0]["type"] == "text" and set(body["usage"]) == {"input_tokens", "output_tokens"}
    r = client.post_json(mock.url, "/v1/chat/completions", chat("claude-3-5-sonnet-latest"))
    assert r.json()["object"] == "chat.completion"


def test_unknown_paths_get_an_echo(make_mock):
    mock = make_mock("openai", name="pt")
    r = client.get(mock.url, "/v1/files?purpose=batch")
    assert r.status == 200 and r.json() == {"object": "mock.echo", "method": "GET", "path": "/v1/files?purpose=batch",
                                            "provider": "openai", "name": "pt"}


def test_openai_stream_is_sent_event_by_event(make_mock):
    mock = make_mock("openai")
    mock.respond(stream_delay=0.2)
    s = client.stream_post(mock.url, "/v1/chat/completions", chat("gpt-4o", stream=True))
    chunks = list(s)
    assert s.status == 200 and s.headers["content-type"].startswith("text/event-stream")
    assert s.headers["transfer-encoding"] == "chunked"
    assert chunks[0][0] < 0.15, "the first event must not wait for the others"
    assert chunks[-1][0] >= 0.7
    events = sse_events(s.body)
    assert events[-1] == "[DONE]"
    parsed = [json.loads(e) for e in events[:-1]]
    assert all(p["object"] == "chat.completion.chunk" and p["model"] == "gpt-4o" for p in parsed)
    assert parsed[0]["choices"][0]["delta"]["role"] == "assistant"
    assert parsed[-1]["choices"][0]["finish_reason"] == "stop"
    assert len(parsed) == 4


def test_anthropic_stream_has_message_events(make_mock):
    mock = make_mock("anthropic")
    s = client.stream_post(mock.url, "/v1/messages", {"model": "c", "max_tokens": 5, "stream": True,
                                                      "messages": [{"role": "user", "content": "x"}]}).read_all()
    types = [json.loads(e)["type"] for e in sse_events(s.body)]
    assert types[0] == "message_start" and types[-1] == "message_stop" and "content_block_delta" in types
    assert b"event: message_start\n" in s.body


def test_scripted_behaviours_are_used_in_order_then_the_default_returns(make_mock):
    mock = make_mock("openai")
    mock.respond(status=429, headers={"retry-after": "7"}, times=1)
    mock.respond(status=500, times=2)
    mock.respond(status=401, times=1)
    mock.respond(status=200, body={"custom": True}, times=1)
    mock.respond(status=400, body=b"not json", times=1)
    seen = [client.post_json(mock.url, "/v1/chat/completions", chat("m")) for _ in range(7)]
    assert [r.status for r in seen] == [429, 500, 500, 401, 200, 400, 200]
    assert seen[0].headers["retry-after"] == "7"
    assert seen[0].json()["error"]["code"] == "rate_limit_exceeded"
    assert seen[1].json()["error"]["type"] == "server_error"
    assert seen[3].json()["error"]["code"] == "invalid_api_key"
    assert seen[4].json() == {"custom": True}
    assert seen[5].body == b"not json"
    assert seen[6].json()["object"] == "chat.completion"
    assert mock.count == 7


def test_open_ended_behaviour_lasts_until_changed_and_reset_forgets(make_mock):
    mock = make_mock("openai")
    mock.respond(status=503)
    assert [client.post_json(mock.url, "/v1/chat/completions", chat("m")).status for _ in range(3)] == [503] * 3
    mock.respond(status=502)
    assert client.post_json(mock.url, "/v1/chat/completions", chat("m")).status == 502
    mock.reset()
    assert mock.count == 0
    assert client.post_json(mock.url, "/v1/chat/completions", chat("m")).status == 200


def test_delay_and_close(make_mock):
    mock = make_mock("openai")
    mock.respond(delay=0.3, times=1)
    t = time.monotonic()
    assert client.post_json(mock.url, "/v1/chat/completions", chat("m")).status == 200
    assert time.monotonic() - t >= 0.3
    mock.respond(close=True, times=1)
    with pytest.raises((ConnectionError, OSError)):
        client.post_json(mock.url, "/v1/chat/completions", chat("m"))
    assert client.post_json(mock.url, "/v1/chat/completions", chat("m")).status == 200
    assert mock.wait_for(3, timeout=1)[1].model == "m"


def test_mock_reads_chunked_request_bodies(make_mock):
    mock = make_mock("openai")
    r = client.post_chunked(mock.url, "/v1/chat/completions", [b'{"model": ', b'"chunky"}'])
    assert r.status == 200 and r.json()["model"] == "chunky"
    assert mock.last().body == b'{"model": "chunky"}' and "content-length" not in mock.last().headers


def test_keep_alive_session_reuses_one_connection(make_mock):
    mock = make_mock("openai")
    with client.Session(mock.url) as s:
        for _ in range(5):
            assert s.post_json("/v1/chat/completions", chat("m")).status == 200
    assert mock.count == 5


def test_mock_runs_standalone_from_the_command_line():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "tests.e2e.support.mock_provider", "--kind", "azure",
                             "--port", str(port), "--name", "cli"], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert "listening on" in proc.stdout.readline()
        r = client.post_json(f"http://127.0.0.1:{port}", "/openai/deployments/d/chat/completions?api-version=1",
                             chat("x"))
        assert r.status == 200 and r.headers["x-mock-name"] == "cli" and r.json()["model"] == "d"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0


# ---- the Envoy helper, without the wasm filter -------------------------------------------------------

@pytest.fixture(scope="module")
def plain(make_module_mock, start_module_envoy):
    """Envoy built by the harness, with a buffer filter instead of the wasm filter."""
    a = make_module_mock("openai", "a")
    b = make_module_mock("anthropic", "b")
    passthrough = make_module_mock("openai", "passthrough")
    clusters = clusters_for(a, b, passthrough=passthrough)
    clusters["plain-name"] = (b.host, b.port)
    envoy = start_module_envoy({}, clusters, wasm=False, concurrency=2)
    return envoy, a, b, passthrough


@pytest.fixture
def world(plain):
    for m in plain[1:]:
        m.reset()
    return plain


def test_cluster_header_routes_and_is_removed(world):
    envoy, a, b, passthrough = world
    r = client.post_json(envoy.base_url, "/v1/chat/completions", chat("m"),
                         headers={"x-llm-router-cluster": a.cluster_name})
    assert r.status == 200 and r.headers["x-mock-name"] == "a"
    assert "x-llm-router-cluster" not in a.last().headers
    r = client.post_json(envoy.base_url, "/v1/messages", chat("m"), headers={"x-llm-router-cluster": "plain-name"})
    assert r.headers["x-mock-name"] == "b" and b.last().path == "/v1/messages"
    assert passthrough.count == 0


def test_requests_without_the_header_go_to_passthrough_unchanged(world):
    envoy, a, b, passthrough = world
    r = client.request("PUT", envoy.base_url, "/some/path?q=1", b"\x00raw body", headers={"x-thing": "1"})
    assert r.status == 200 and r.headers["x-mock-name"] == "passthrough"
    rec = passthrough.last()
    assert (rec.method, rec.path, rec.body, rec.headers["x-thing"]) == ("PUT", "/some/path?q=1", b"\x00raw body", "1")


def test_sse_passes_through_envoy_incrementally(world):
    envoy, a, _, _ = world
    a.respond(stream_delay=0.3)
    s = client.stream_post(envoy.base_url, "/v1/chat/completions", chat("m", stream=True),
                           headers={"x-llm-router-cluster": a.cluster_name})
    first = next(iter(s))
    assert first[0] < 0.25
    rest = list(s)
    assert sse_events(first[1] + b"".join(c for _, c in rest))[-1] == "[DONE]"


def test_envoy_413_becomes_an_openai_error(world):
    envoy, a, _, _ = world
    big = [b"x" * 65536] * 20  # 1.25 MiB, chunked: over the 1 MiB buffer
    r = client.post_chunked(envoy.base_url, "/v1/chat/completions", big,
                            headers={"x-llm-router-cluster": a.cluster_name})
    assert r.status == 413
    assert r.headers["content-type"] == "application/json"
    assert r.body == TOO_LARGE_BODY.encode()
    assert r.json()["error"]["code"] == "request_too_large"
    r = client.post_json(envoy.base_url, "/v1/chat/completions", b"y" * (1 << 21),
                         headers={"x-llm-router-cluster": a.cluster_name})
    assert r.status == 413 and r.json()["error"]["code"] == "request_too_large"
    assert a.count == 0


def test_upstream_errors_and_other_local_replies_are_not_rewritten(world):
    envoy, a, _, _ = world
    a.respond(status=413, body=b"upstream says too large", times=1)
    r = client.post_json(envoy.base_url, "/v1/chat/completions", chat("m"),
                         headers={"x-llm-router-cluster": a.cluster_name})
    assert (r.status, r.body) == (413, b"upstream says too large")
    r = client.post_json(envoy.base_url, "/v1/chat/completions", chat("m"),
                         headers={"x-llm-router-cluster": "no-such-cluster"})
    assert r.status in (404, 503) and b"request_too_large" not in r.body


def test_connect_failure_is_an_envoy_503(make_mock, start_envoy):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    envoy = start_envoy({}, {"passthrough": ("127.0.0.1", dead_port)}, wasm=False)
    r = client.post_json(envoy.base_url, "/v1/chat/completions", chat("m"))
    assert r.status == 503 and b"request_too_large" not in r.body


def test_helper_reports_a_refused_wasm(tmp_path):
    bogus = tmp_path / "bogus.wasm"
    bogus.write_bytes(b"\x00asm not really")
    exited, log = Envoy.expect_refused({"model_list": []}, wasm_path=bogus)
    assert exited
    assert "Unable to create Wasm plugin llm_router" in log


def test_helper_fails_loudly_when_envoy_cannot_start():
    e = Envoy({}, {"passthrough": ("127.0.0.1", 9)}, wasm=False, extra_args=("--no-such-flag",), label="bad")
    with pytest.raises(AssertionError, match="exited"):
        e.wait_ready(timeout=5)
    e.stop()


def test_bootstrap_is_kept_for_post_mortems(world):
    envoy = world[0]
    assert json.loads(envoy.bootstrap_path.read_text())["static_resources"]["listeners"][0]["name"] == "ingress"
    assert "starting main dispatch loop" in envoy.log_text()
    assert os.path.isfile(envoy.log_path)
