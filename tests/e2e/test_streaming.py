"""Streaming: `"stream": true` answers (server-sent events) reach the client as the provider sends them."""

from __future__ import annotations

import json

import pytest

from .support import client
from .support.checks import expect_routed, expect_upstream
from .support.envoy import clusters_for
from .support.plugin import chat, deployment, plugin_config

EVENT_GAP = 0.5  # seconds the mock waits between two events


def data_lines(raw: bytes) -> list:
    return [line[len("data: "):] for line in raw.decode().splitlines() if line.startswith("data: ")]


@pytest.fixture(scope="module")
def world_(make_module_mock, start_module_envoy):
    openai = make_module_mock("openai", "openai")
    anthropic = make_module_mock("anthropic", "anthropic")
    cfg = plugin_config([
        deployment("gpt-4o", "openai/gpt-4o", openai.url + "/v1", api_key="sk-stream", id="openai-1"),
        deployment("claude", "anthropic/claude-3-5-sonnet-latest", anthropic.url, api_key="sk-ant-stream",
                   id="anthropic-1"),
    ])
    envoy = start_module_envoy(cfg, clusters_for(openai, anthropic), label="streaming")
    return envoy, openai, anthropic


@pytest.fixture
def world(world_):
    for m in world_[1:]:
        m.reset()
    return world_


def test_chat_completion_chunks_arrive_as_they_are_sent(world):
    envoy, openai, _ = world
    openai.respond(stream_delay=EVENT_GAP)
    s = client.stream_post(envoy.base_url, "/v1/chat/completions", chat("gpt-4o", stream=True), timeout=15)
    assert s.status == 200 and s.headers["content-type"].startswith("text/event-stream")
    expect_routed(client.Response(s.status, s.headers, b""), "openai-1", "gpt-4o")
    first_at, first = next(s)
    assert first_at < 0.4, f"the first event took {first_at:.2f}s: the stream was buffered"
    assert b"chat.completion.chunk" in first
    s.read_all()
    last_at = s.chunks[-1][0]
    assert last_at >= 3 * EVENT_GAP * 0.9, "the mock spaces its events; the stream cannot end sooner"
    events = data_lines(s.body)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert len(chunks) == 4 and all(c["model"] == "gpt-4o" for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "Hello from the openai mock."
    expect_upstream(openai.last(), path="/v1/chat/completions", host=openai.authority, model="gpt-4o",
                    headers={"authorization": "Bearer sk-stream"})
    assert openai.last().json["stream"] is True


def test_events_are_not_held_back_between_chunks(world):
    envoy, openai, _ = world
    openai.respond(stream_delay=EVENT_GAP)
    s = client.stream_post(envoy.base_url, "/v1/chat/completions", chat("gpt-4o", stream=True), timeout=15)
    s.read_all()
    # Every event is delivered about when the mock writes it, not all at the end.
    arrival = [t for t, c in s.chunks]
    assert arrival[0] < 0.4
    assert any(0.3 < t < s.chunks[-1][0] - 0.3 for t in arrival), f"chunks arrived at {arrival}"


def test_anthropic_message_events_stream_through(world):
    envoy, _, anthropic = world
    anthropic.respond(stream_delay=0.25)
    body = {"model": "claude", "max_tokens": 32, "stream": True, "messages": [{"role": "user", "content": "Hi"}]}
    s = client.stream_post(envoy.base_url, "/v1/messages", body, timeout=15)
    expect_routed(client.Response(s.status, s.headers, b""), "anthropic-1", "claude")
    first_at, first = next(s)
    assert first_at < 0.2 and b"message_start" in first
    s.read_all()
    assert s.chunks[-1][0] >= 7 * 0.25 * 0.9
    types = [json.loads(d)["type"] for d in data_lines(s.body)]
    assert types[0] == "message_start" and types[-1] == "message_stop"
    assert types.count("content_block_delta") == 3
    expect_upstream(anthropic.last(), path="/v1/messages", host=anthropic.authority,
                    model="claude-3-5-sonnet-latest", headers={"x-api-key": "sk-ant-stream"})


def test_a_stream_with_usage_at_the_end(world):
    envoy, openai, _ = world
    body = chat("gpt-4o", stream=True, stream_options={"include_usage": True})
    s = client.stream_post(envoy.base_url, "/v1/chat/completions", body).read_all()
    events = data_lines(s.body)
    assert events[-1] == "[DONE]" and json.loads(events[-2])["usage"]["total_tokens"] > 0
    assert openai.last().json["stream_options"] == {"include_usage": True}
