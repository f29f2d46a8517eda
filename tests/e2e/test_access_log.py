"""Access logs: the filter sets `llm_router.*` filter-state properties that an Envoy access log prints with
`%FILTER_STATE(wasm.llm_router.<name>:PLAIN)%` (format: support/envoy.py ACCESS_LOG_FORMAT, the same as in
envoy/demo.yaml and the CLI's bootstrap; envoy/access-log.md)."""

from __future__ import annotations

import re
import time
import uuid

from .support import client
from .support.envoy import clusters_for
from .support.plugin import chat, deployment, plugin_config

LINE = re.compile(r'^\[[^\]]+\] "(?P<method>\S+) (?P<path>\S+) \S+" (?P<code>\d+) (?P<flags>\S+) (?P<duration>\d+)ms '
                  r'(?P<rest>.*)$')


def parse(line: str) -> dict:
    m = LINE.match(line)
    assert m, f"unexpected access-log line: {line!r}"
    fields = dict(kv.split("=", 1) for kv in m.group("rest").split(" "))
    return {**{k: m.group(k) for k in ("method", "path", "code", "flags")}, **fields}


def lines_for(envoy, request_id: str, n: int, timeout: float = 10.0) -> list:
    """The parsed lines of one client request once `n` are there (Envoy flushes the file about once a second)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [parse(l) for l in envoy.access_lines() if l.endswith(f"request_id={request_id}")]
        if len(found) >= n or time.monotonic() > deadline:
            assert len(found) == n, f"{len(found)} line(s) for {request_id}, expected {n}: {envoy.access_lines()}"
            return found
        time.sleep(0.1)


def send(envoy, body: dict) -> tuple:
    rid = str(uuid.uuid4())
    return rid, client.post_json(envoy.base_url, "/v1/chat/completions", body, {"x-request-id": rid})


def test_routed_request_line_names_deployment_group_attempts_and_tokens(start_envoy, make_mock):
    a1, other = make_mock("openai", "a1"), make_mock("openai", "other")
    cfg = plugin_config([deployment("gpt-4o", "openai/gpt-4o", a1.url + "/v1", api_key="sk-a1", id="a1")],
                        aliases={"gpt4": "gpt-4o"},
                        envoy_settings={"access_log_properties": True, "access_log_tokens": True})
    envoy = start_envoy(cfg, clusters_for(a1, passthrough=other), access_log=True)
    rid, resp = send(envoy, chat("gpt4"))
    assert resp.status == 200, resp
    usage = resp.json()["usage"]
    [line] = lines_for(envoy, rid, 1)
    assert line == {
        "method": "POST", "path": "/v1/chat/completions", "code": "200", "flags": "-",
        "deployment": "a1", "group": "gpt-4o", "attempts": "1", "fallback_from": "-",
        "prompt_tokens": str(usage["prompt_tokens"]), "completion_tokens": str(usage["completion_tokens"]),
        "upstream": a1.cluster_name, "request_id": rid,
    }
    # Not routed: the router's fields are unset.
    rid2 = str(uuid.uuid4())
    client.get(envoy.base_url, "/not-routed", {"x-request-id": rid2})
    [line] = lines_for(envoy, rid2, 1)
    assert (line["path"], line["deployment"], line["attempts"], line["prompt_tokens"]) == ("/not-routed", "-", "-", "-")


def test_tokens_only_when_asked_and_properties_off_by_default(start_envoy, make_mock):
    a1, other = make_mock("openai", "a1"), make_mock("openai", "other")
    models = [deployment("m", "openai/m", a1.url + "/v1", api_key="sk-a1", id="a1")]
    on = plugin_config(models, envoy_settings={"access_log_properties": True})
    envoy = start_envoy(on, clusters_for(a1, passthrough=other), access_log=True)
    rid, _ = send(envoy, chat("m"))
    [line] = lines_for(envoy, rid, 1)
    assert (line["deployment"], line["prompt_tokens"], line["completion_tokens"]) == ("a1", "-", "-")

    # Off by default (no host calls for operators who do not log them), access_log_tokens included.
    off = plugin_config(models, envoy_settings={"access_log_tokens": True})
    envoy = start_envoy(off, clusters_for(a1, passthrough=other), access_log=True)
    rid, resp = send(envoy, chat("m"))
    assert resp.headers["x-llm-router-deployment"] == "a1"
    [line] = lines_for(envoy, rid, 1)
    assert {line[k] for k in ("deployment", "group", "attempts", "prompt_tokens", "completion_tokens")} == {"-"}


def test_failover_writes_one_line_per_pass_and_the_last_names_the_final_deployment(start_envoy, make_mock):
    a1, a2, b1 = (make_mock("openai", n) for n in ("a1", "a2", "b1"))
    models = [  # a2 weighs 0: a1 first, a2 as the retry, then the fallback group b
        deployment("a", "openai/a-one", a1.url + "/v1", api_key="sk-a1", id="a1", weight=1),
        deployment("a", "openai/a-two", a2.url + "/v1", api_key="sk-a2", id="a2", weight=0),
        deployment("b", "openai/b-one", b1.url + "/v1", api_key="sk-b1", id="b1"),
    ]
    cfg = plugin_config(models, allowed_fails=100, num_retries=1, fallbacks=[{"a": ["b"]}],
                        envoy_settings={"access_log_properties": True, "access_log_tokens": True})
    envoy = start_envoy(cfg, clusters_for(a1, a2, b1, passthrough=a1), failover=True, access_log=True)
    a1.respond(status=500, times=1)
    a2.respond(status=429, times=1)
    rid, resp = send(envoy, chat("a"))
    assert (resp.status, resp.headers["x-llm-router-deployment"], resp.headers["x-llm-router-attempts"]) == \
        (200, "b1", "3"), resp
    lines = lines_for(envoy, rid, 3)
    # Each failed pass ends at its internal redirect (a 307 to the failover path) with its own line.
    assert [(l["code"], l["deployment"], l["group"], l["attempts"], l["fallback_from"]) for l in lines] == [
        ("307", "a1", "a", "1", "-"), ("307", "a2", "a", "2", "-"), ("200", "b1", "b", "3", "a")]
    assert all(l["path"].startswith("/__llm_router/failover?status=") for l in lines[:2]), lines
    final = lines[-1]
    assert (final["path"], final["upstream"]) == ("/v1/chat/completions", b1.cluster_name), final
    usage = resp.json()["usage"]
    assert (final["prompt_tokens"], final["completion_tokens"]) == \
        (str(usage["prompt_tokens"]), str(usage["completion_tokens"])), final
    assert {l["prompt_tokens"] for l in lines[:2]} == {"-"}, "a failed pass has no token counts"
