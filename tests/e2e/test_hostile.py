"""Hostile clients (and careless operators) against real Envoy: each test is one attack, written the way the
attacker would try it, and asserts the behaviour that keeps the gateway's trust boundary — the provider keys,
the provider accounts, the deployments' health and the operator's logs belong to the gateway, never to a client.

The failover wiring (support/envoy.py `failover=True`) is on wherever the attack goes through it: the upstream
role of the filter on every deployment cluster, the redirector, the route's retry and internal-redirect policies.
The passthrough cluster stands in for any host an attacker would like a request (and its key) to reach."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.parse
from typing import Callable, Iterable, Optional

import pytest

from .support import client
from .support.checks import expect_error, expect_no_secrets, expect_routed, expect_upstream, response_text
from .support.client import Response
from .support.envoy import Envoy, clusters_for, free_port
from .support.mock_provider import MockProvider
from .support.plugin import chat, deployment, plugin_config
from .support.prometheus import scrape

ROUTE = "/v1/chat/completions"
STATE_HEADER = "x-llm-router-state"
ROUTER_PREFIX = "x-llm-router-"
KEY_A1, KEY_A2, KEY_B1, KEY_B2, KEY_SOLO = (f"sk-hostile-{n}-0123456789" for n in ("a1", "a2", "b1", "b2", "solo"))
KEY_AZURE, KEY_WILD = "sk-hostile-azure-0123456789", "sk-hostile-wild-0123456789"
ALL_KEYS = (KEY_A1, KEY_A2, KEY_B1, KEY_B2, KEY_SOLO, KEY_AZURE, KEY_WILD)
AZURE_VERSION = "2024-10-21"
# Every line of the harness's access log (support/envoy.py ACCESS_LOG_FORMAT) starts like this.
ACCESS_LINE = re.compile(r'^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\] "[A-Z]+ ')


# ---- helpers: the attacker's tools ------------------------------------------------------------------------------

def post(envoy, body, headers: Optional[dict] = None, path: str = ROUTE, timeout: float = 5) -> Response:
    return client.post_json(envoy.base_url, path, body, headers, timeout=timeout)


def forged_state(*, model: str, group: str, tried: str, authority: str, path: str = ROUTE, hop: int = 0) -> str:
    """An attempt state in the router's own format (src/failover/state.rs `AttemptState::encode`), claiming that
    another attempt is possible (`c=1`) and that the client's authority is `authority`; the MAC is made up."""
    return (f"v=1;h={hop};m={model};o={group};g={group};f=0;r=0;t={tried};p={path};a={authority};"
            f"s={int(time.time() * 1000)};b=;c=1;x=0;w=0;mac=0123456789abcdef")


def expect_openai_error(resp: Response) -> dict:
    """Some 4xx/5xx in OpenAI's error shape (the provider's own error, passed through, has it too)."""
    assert 400 <= resp.status < 600, f"expected an error, got {resp!r}"
    return expect_error(resp, resp.status, None)


def error_code(resp: Response) -> Optional[str]:
    """The OpenAI error code of a JSON error answer (None for anything else)."""
    try:
        return (json.loads(resp.body).get("error") or {}).get("code")
    except (ValueError, AttributeError):
        return None


def router_headers_seen(*mocks: MockProvider) -> list:
    """(mock, header, value) for every `x-llm-router-*` request header any of `mocks` received."""
    return [(m.name, k, v) for m in mocks for rec in m.requests for k, v in rec.headers.items()
            if k.startswith(ROUTER_PREFIX)]


def requests_carrying(mock: MockProvider, secrets: Iterable[str]) -> list:
    """The requests `mock` received that carry any of `secrets` (headers or body)."""
    secrets = tuple(secrets)
    return [(rec.method, rec.path, rec.headers) for rec in mock.requests
            if any(s in json.dumps(rec.headers) or s.encode() in rec.body for s in secrets)]


def health(envoy) -> dict:
    """The router's health report, by deployment id."""
    resp = client.get(envoy.base_url, "/llm-router/health")
    assert resp.status == 200, resp
    return {d["id"]: d for d in resp.json()["deployments"]}


def failures_metric(envoy, deployment_id: str) -> float:
    """llm_router_failures_total of one deployment, summed over classes."""
    return sum(v for labels, v in scrape(envoy).series("llm_router_failures_total")
               if labels.get("deployment") == deployment_id)


def expect_not_cooling(envoy, deployment_id: str) -> dict:
    d = health(envoy)[deployment_id]
    assert d["state"] == "healthy" and d["cooling_until_ms"] is None, f"{deployment_id} was cooled by a client: {d}"
    return d


def expect_no_failures(envoy, deployment_id: str) -> None:
    d = expect_not_cooling(envoy, deployment_id)
    assert d["failures_in_window"] == 0 and d["last_error_class"] is None, \
        f"a failure was recorded against {deployment_id}: {d}"
    assert failures_metric(envoy, deployment_id) == 0, scrape(envoy)


def poll(check: Callable[[], object], timeout: float = 5.0, interval: float = 0.05):
    """check()'s first truthy value, or its last value once `timeout` has passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def access_lines(envoy, at_least: int) -> list:
    """The access log once it holds `at_least` lines (Envoy flushes it every 100 ms here)."""
    poll(lambda: len(envoy.access_lines()) >= at_least)
    return envoy.access_lines()


def failover_group(mocks: dict, group: str, first: str, second: str, keys=(KEY_A1, KEY_A2), **params) -> list:
    """Two deployments of `group`: `first` is always picked first (weight 1), `second` only as the retry."""
    return [deployment(group, f"openai/{group}-one", mocks[first].url + "/v1", api_key=keys[0], id=first, weight=1,
                       **params),
            deployment(group, f"openai/{group}-two", mocks[second].url + "/v1", api_key=keys[1], id=second, weight=0,
                       **params)]


# ---- 1. forged failover state ------------------------------------------------------------------------------------

def test_forged_failover_state_cannot_send_the_provider_key_to_the_attackers_host(start_envoy, make_mock):
    """Attack: key exfiltration through a forged `x-llm-router-state`. The client sends a state in the router's
    format naming `attacker.example` as its authority and claiming another attempt is possible (`c=1`), on a
    one-deployment group (the router attaches no state of its own there). When the provider fails, the upstream
    role would turn the failure into a 307 to `http://attacker.example/...`, which Envoy follows with the
    rewritten request — the gateway's provider key included — to wherever the attacker's authority routes."""
    provider = make_mock("openai", "provider")
    attacker = make_mock("openai", "attacker.example")  # the passthrough cluster: where any authority lands
    cfg = plugin_config([deployment("solo", "openai/solo-model", provider.url + "/v1", api_key=KEY_SOLO, id="solo")],
                        allowed_fails=100)
    envoy = start_envoy(cfg, clusters_for(provider, passthrough=attacker), failover=True)
    provider.respond(status=500)
    for authority in ("attacker.example", attacker.authority):
        resp = post(envoy, chat("solo"), {STATE_HEADER: forged_state(model="solo", group="solo", tried="solo",
                                                                     authority=authority)})
        # The provider's own failure (or an OpenAI-shaped error of the router's) — never the attacker's answer.
        assert resp.headers.get("x-mock-name") != attacker.name, f"the attacker's host answered: {resp!r}"
        expect_openai_error(resp)
        expect_no_secrets(response_text(resp), ALL_KEYS, "the response")
    assert requests_carrying(attacker, ALL_KEYS) == [], "the provider key reached the attacker's host"
    assert attacker.count == 0, [(r.path, r.headers) for r in attacker.requests]
    assert provider.count == 2
    assert router_headers_seen(provider) == [], "an x-llm-router-* header reached the provider"


# ---- 2. captured state replayed; a provider's redirect -----------------------------------------------------------

def captured_failover_path(envoy) -> str:
    """A real failover pass's path, as the operator's access log recorded it."""
    lines = poll(lambda: [line for line in envoy.access_lines() if "/__llm_router/failover?" in line])
    assert lines, f"no failover pass in the access log: {envoy.access_lines()}"
    return re.search(r'"POST (\S+) HTTP', lines[0]).group(1)


def test_a_captured_failover_state_replayed_from_outside_is_worthless(start_envoy, make_mock):
    """Attack: replay. A real, signed failover `location` leaks (here: from the access log). The attacker
    replays it (a) as the failover path itself, with `x-envoy-original-url` set so it looks like Envoy's own
    redirect, and (b) as the `x-llm-router-state` header of its own request to another, failing group — hoping
    the router takes the signed state for a pass of the captured request: the captured deployment blamed for a
    failure it never had, and the attacker's request served by (and billed to) the captured group."""
    mocks = {n: make_mock("openai", n) for n in ("a1", "a2", "s1", "passthrough")}
    models = failover_group(mocks, "a", "a1", "a2") + [
        deployment("s", "openai/s-one", mocks["s1"].url + "/v1", api_key=KEY_SOLO, id="s1")]
    cfg = plugin_config(models, allowed_fails=100, num_retries=1)
    envoy = start_envoy(cfg, clusters_for(mocks["a1"], mocks["a2"], mocks["s1"], passthrough=mocks["passthrough"]),
                        failover=True, access_log=True)
    mocks["a1"].respond(status=500, times=1)
    expect_routed(post(envoy, chat("a")), "a2", "a")  # a real failover: a1's 500, retried on a2
    captured = captured_failover_path(envoy)
    state = urllib.parse.parse_qs(urllib.parse.urlsplit(captured).query)["state"][0]
    assert ";mac=" in state and "c=1" in state, state
    a1_failures = health(envoy)["a1"]["failures_in_window"]
    for m in mocks.values():
        m.reset()

    # (a) the failover path, replayed with Envoy's redirect marker.
    resp = post(envoy, chat("a"), {"x-envoy-original-url": f"http://{mocks['a1'].authority}{ROUTE}"}, path=captured)
    for m in mocks.values():
        assert requests_carrying(m, ALL_KEYS) == [], f"a replayed failover pass reached {m.name} with a key"
    if resp.headers.get("x-mock-name") != "passthrough":  # else: passed through, without credentials (checked)
        expect_openai_error(resp)

    # (b) the signed state as a header of the attacker's own request, to a group whose deployment fails.
    for m in mocks.values():
        m.reset()
    mocks["s1"].respond(status=500)
    resp = post(envoy, chat("s"), {STATE_HEADER: state})
    assert resp.headers.get("x-llm-router-model-group") in (None, "s"), f"served by the captured group: {resp!r}"
    expect_openai_error(resp)
    assert mocks["a1"].count == 0 and mocks["a2"].count == 0, \
        [(m.name, r.path, r.model) for m in (mocks["a1"], mocks["a2"]) for r in m.requests]
    assert mocks["passthrough"].count == 0, mocks["passthrough"].requests
    assert router_headers_seen(*mocks.values()) == []
    assert health(envoy)["a1"]["failures_in_window"] == a1_failures, "a replayed state blamed the captured deployment"


@pytest.mark.parametrize("group", ["single-deployment", "with-a-retry-target"])
def test_a_provider_redirect_is_never_followed_to_another_host(start_envoy, make_mock, group):
    """Attack: a compromised or malicious provider (or anything on its path) answers
    `307 location: http://127.0.0.1:<another host>/steal`. Envoy's internal-redirect policy, there for the
    router's own failover 307s, would replay the client's request — with the gateway's provider key — to it."""
    mocks = {n: make_mock("openai", n) for n in ("p1", "p2", "other")}
    if group == "single-deployment":
        models = [deployment("g", "openai/g-one", mocks["p1"].url + "/v1", api_key=KEY_A1, id="p1")]
    else:
        models = failover_group(mocks, "g", "p1", "p2")
    cfg = plugin_config(models, allowed_fails=100, num_retries=1)
    envoy = start_envoy(cfg, clusters_for(mocks["p1"], mocks["p2"], passthrough=mocks["other"]), failover=True)
    mocks["p1"].respond(status=307, headers={"location": f"http://{mocks['other'].authority}/steal"},
                        body={"redirect": True})
    resp = post(envoy, chat("g"))
    assert mocks["other"].count == 0, [(r.path, r.headers) for r in mocks["other"].requests]
    assert resp.headers.get("x-mock-name") != "other", resp
    assert "location" not in resp.headers, resp
    expect_no_secrets(response_text(resp), ALL_KEYS, "the response")
    if group == "single-deployment":
        expect_error(resp, 502, "upstream_redirect_refused")
        assert mocks["p1"].count == 1
    elif resp.status != 200:  # a retry target may serve instead; if not, an OpenAI-shaped error
        expect_openai_error(resp)
    else:
        expect_routed(resp, "p2", "g")


# ---- 3. client-chosen x-request-id -------------------------------------------------------------------------------

def test_a_shared_x_request_id_does_not_mix_two_requests_attempts(start_envoy, make_mock):
    """Attack: a client picks the `x-request-id` of someone else's request (ids are often logged, echoed,
    guessable). Request A goes to a group whose first deployment refuses connections (Envoy retries it onto the
    redirector, and the upstream role looks the attempt up by `x-request-id`); requests B, with the SAME id, go to
    another group, on the same worker (`--concurrency 1`). A must be answered by A's group, B by B's, and A's
    connect failure must never be recorded against B's deployment. (A may lose its own retry while the id is
    ambiguous: a 503 of A's group, never B's state.)"""
    mocks = {n: make_mock("openai", n) for n in ("a2", "b1", "b2", "passthrough")}
    dead = free_port()  # nothing listens there
    models = [
        deployment("a", "openai/a-dead", f"http://127.0.0.1:{dead}/v1", api_key=KEY_A1, id="a-dead", weight=1),
        deployment("a", "openai/a-two", mocks["a2"].url + "/v1", api_key=KEY_A2, id="a2", weight=0),
    ] + failover_group(mocks, "b", "b1", "b2", keys=(KEY_B1, KEY_B2))
    cfg = plugin_config(models, allowed_fails=100, num_retries=1)
    clusters = clusters_for(mocks["a2"], mocks["b1"], mocks["b2"], passthrough=mocks["passthrough"])
    clusters[f"outbound|{dead}||127.0.0.1"] = ("127.0.0.1", dead)
    envoy = start_envoy(cfg, clusters, failover=True)
    mocks["b1"].respond(delay=0.3)  # B's attempts stay open while A fails over
    wrong = []
    for trial in range(8):
        rid = f"victim-request-{trial}"
        answers: dict = {}

        def send(name: str, model: str) -> None:
            answers[name] = post(envoy, chat(model), {"x-request-id": rid})

        threads = [threading.Thread(target=send, args=("A", "a"))] + \
                  [threading.Thread(target=send, args=(f"B{i}", "b")) for i in range(5)]
        for t in threads:
            t.start()
            time.sleep(0.002)  # pacing: A first, then B's attempts while A's connect failure is retried
        for t in threads:
            t.join(timeout=10)
        for name, resp in sorted(answers.items()):
            group = "a" if name == "A" else "b"
            served = (resp.status, resp.headers.get("x-llm-router-model-group"), resp.headers.get("x-llm-router-deployment"))
            if name == "A" and served[1] == "a" and resp.status != 200:
                # An id shared by two live attempts is ambiguous: A may lose its retry (the redirector's answer
                # then ends it, as a 503 of A's own group) — but is never continued with B's state.
                expect_error(resp, 503, "upstream_unavailable")
            elif served != (200, group, {"a": "a2", "b": "b1"}[group]):
                wrong.append((trial, name, served))
        assert len(answers) == 6, answers
    assert wrong == [], f"requests answered by the wrong group/deployment (trial, request, answer): {wrong}"
    for dep in ("b1", "b2"):
        expect_no_failures(envoy, dep)
    assert mocks["b2"].count == 0, "B's retry target served someone"


# ---- 4. model names as syntax ------------------------------------------------------------------------------------

AZURE_HOSTILE_MODELS = ["azure/../../../admin", "azure/x?api-version=evil&", "azure/a#b", "azure/a/b", "azure/a b",
                        "azure/a\r\nx-injected: 1"]
FORGED_LINE = '[2099-01-01T00:00:00.000Z] "GET /forged-by-the-client HTTP/1.1" 200 - 0ms deployment=admin'


def azure_wildcard(azure: MockProvider, **params) -> dict:
    return deployment("azure/*", "azure/*", azure.url, api_key=KEY_AZURE, id="azure-wild", api_version=AZURE_VERSION,
                      **params)


def test_model_names_cannot_rewrite_the_azure_path(start_envoy, make_mock):
    """Attack: model names that are URL syntax. Under a wildcard Azure group the captured name becomes the
    deployment segment of `/openai/deployments/{name}/...`: `..` walks out of it, `?` and `#` end it, `/` adds
    segments, a space or CR/LF breaks the request line. Each must be refused (400 `invalid_model`) before any
    provider sees it — and refusing them must not cool the deployment for honest clients."""
    azure, passthrough = make_mock("azure", "azure"), make_mock("openai", "passthrough")
    cfg = plugin_config([azure_wildcard(azure)], allowed_fails=3, cooldown_time=30)
    envoy = start_envoy(cfg, clusters_for(azure, passthrough=passthrough))
    problems = []
    for model in AZURE_HOSTILE_MODELS:
        resp = post(envoy, chat(model))
        seen = [r.path for r in azure.requests + passthrough.requests]
        if not (resp.status == 400 and error_code(resp) == "invalid_model" and not seen):
            problems.append((model, resp.status, resp.body[:120], seen))
        azure.reset()
        passthrough.reset()
    assert problems == [], "hostile model names not refused with 400 invalid_model (model, status, body, " \
                           "paths a mock received):\n" + "\n".join(map(repr, problems))
    resp = post(envoy, chat("azure/gpt-4o"))
    expect_routed(resp, "azure-wild", "azure/*")
    expect_upstream(azure.last(), path=f"/openai/deployments/gpt-4o/chat/completions?api-version={AZURE_VERSION}",
                    host=azure.authority, headers={"api-key": KEY_AZURE})
    expect_not_cooling(envoy, "azure-wild")


def test_control_characters_oversized_and_empty_model_names_are_400_and_forge_no_log_line(start_envoy, make_mock):
    """Attack: a model name carrying CR/LF (to forge a line of the operator's access log, or a header), one of
    300+ characters, and the empty string — bare, and under a wildcard group whose provider would take them as
    they are. Each is 400 `invalid_model` (the empty name too: never a 404 that says it was looked up), no
    provider sees any of them, and the access log holds exactly one well-formed line per request."""
    openai, azure, passthrough = make_mock("openai", "openai"), make_mock("azure", "azure"), make_mock("openai", "pt")
    cfg = plugin_config([deployment("gpt-4o", "openai/gpt-4o", openai.url + "/v1", api_key=KEY_A1, id="gpt-4o"),
                         deployment("openai/*", "openai/*", openai.url + "/v1", api_key=KEY_WILD, id="openai-wild"),
                         azure_wildcard(azure)], allowed_fails=3, cooldown_time=30)
    envoy = start_envoy(cfg, clusters_for(openai, azure, passthrough=passthrough), access_log=True)
    models = ["gpt-4o\r\nx-injected: 1", "gpt-4o\n" + FORGED_LINE, "x" * 301, "",
              "openai/gpt-4o\r\nx-injected: 1", "openai/" + "y" * 300,
              "azure/gpt-4o\n" + FORGED_LINE, "azure/" + "z" * 300]
    problems = []
    for model in models:
        resp = post(envoy, chat(model))
        seen = [(r.path, r.model) for r in openai.requests + azure.requests + passthrough.requests]
        if not (resp.status == 400 and error_code(resp) == "invalid_model") or seen:
            problems.append((model[:60], resp.status, resp.body[:100], seen[:1]))
        for m in (openai, azure, passthrough):
            m.reset()
    lines = access_lines(envoy, len(models))
    forged = [line for line in lines if not ACCESS_LINE.match(line) or line.startswith(FORGED_LINE[:12])]
    assert problems == [] and forged == [] and len(lines) == len(models), \
        "model names not refused with 400 invalid_model (model, status, body, upstream):\n" + \
        "\n".join(map(repr, problems)) + f"\naccess-log lines forged by a model name: {forged}" + \
        f"\n{len(lines)} access-log lines for {len(models)} requests"
    resp = post(envoy, chat("gpt-4o"))
    expect_routed(resp, "gpt-4o", "gpt-4o")


def test_an_empty_wildcard_capture_is_not_sent_as_an_empty_model(start_envoy, make_mock):
    """Attack: the empty name, smuggled past the empty-string check inside a wildcard: `openai/` matches
    `openai/*` with nothing captured, and the provider would be sent `"model": ""`. It is refused like the empty
    name (400 `invalid_model`) — or not matched at all (404 `model_not_found`) — and no provider sees it."""
    envoy, openai = wildcard_openai(start_envoy, make_mock)
    resp = post(envoy, chat("openai/"))
    assert (resp.status, error_code(resp)) in ((400, "invalid_model"), (404, "model_not_found")), \
        (resp, [(r.path, r.body) for r in openai.requests])
    assert openai.count == 0, [(r.path, r.body) for r in openai.requests]


# ---- 5. local replies the request caused --------------------------------------------------------------------------

def test_replies_the_request_itself_caused_do_not_count_against_the_deployment(start_envoy, make_mock):
    """Attack: cool a deployment for everyone with requests that cannot succeed anywhere. Six requests whose
    model name puts a control character into the upstream `:path` (Envoy itself answers them: 503 "invalid
    header value") on a group with `allowed_fails: 3`; then an honest client. The requests' own faults are not
    the deployment's: the honest request is served and no failure is recorded."""
    azure, passthrough = make_mock("azure", "azure"), make_mock("openai", "passthrough")
    cfg = plugin_config([azure_wildcard(azure)], allowed_fails=3, cooldown_time=30)
    envoy = start_envoy(cfg, clusters_for(azure, passthrough=passthrough))
    replies = [post(envoy, chat(m)) for m in
               ("azure/a\r\nb", "azure/a\nb", "azure/a\rb", "azure/a\x00b", "azure/\r\n\r\n", "azure/\x00")]
    assert all(400 <= r.status < 600 for r in replies), replies
    assert azure.count == 0, [r.path for r in azure.requests]
    resp = post(envoy, chat("azure/gpt-4o"))
    expect_routed(resp, "azure-wild", "azure/*")
    expect_no_failures(envoy, "azure-wild")


# ---- 6. client-chosen cluster, router headers --------------------------------------------------------------------

CLIENT_ROUTER_HEADERS = {
    STATE_HEADER: forged_state(model="solo", group="solo", tried="solo", authority="attacker.example"),
    "x-llm-router-redirector": "1",
    "x-llm-router-tags": "premium,internal",
    "x-llm-router-deployment": "solo",
    "x-llm-router-model-group": "solo",
    "x-llm-router-attempts": "9",
}


@pytest.mark.parametrize("failover", [False, True], ids=["plain", "failover-wiring"])
def test_a_client_can_neither_pick_the_cluster_nor_send_router_headers(start_envoy, make_mock, failover):
    """Attack: steer Envoy with the router's own headers. On a pass-through path (`GET /other`) the client sets
    `x-llm-router-cluster` to a deployment's cluster, so the request would reach the provider instead of the
    passthrough upstream; on routed and pass-through paths it sends every `x-llm-router-*` header (state,
    cluster, redirector, tags, response markers). No mock may receive any of them."""
    provider, passthrough = make_mock("openai", "provider"), make_mock("openai", "passthrough")
    cfg = plugin_config([deployment("solo", "openai/solo-model", provider.url + "/v1", api_key=KEY_SOLO, id="solo")],
                        allowed_fails=100)
    envoy = start_envoy(cfg, clusters_for(provider, passthrough=passthrough), failover=failover)
    hostile = {**CLIENT_ROUTER_HEADERS, "x-llm-router-cluster": provider.cluster_name}
    resp = client.get(envoy.base_url, "/other", headers=hostile)
    assert resp.status == 200 and resp.headers.get("x-mock-name") == "passthrough", resp
    assert provider.count == 0, f"the client picked the deployment's cluster: {provider.requests}"
    client.request("POST", envoy.base_url, "/v1/not-a-routed-endpoint", b"{}", hostile)
    assert provider.count == 0, provider.requests
    resp = post(envoy, chat("solo"), hostile)
    expect_routed(resp, "solo", "solo")
    assert provider.count == 1 and passthrough.count == 2
    assert router_headers_seen(provider, passthrough) == [], "client-sent router headers reached an upstream"


# ---- 7. unknown provider prefixes --------------------------------------------------------------------------------

@pytest.mark.parametrize("model", ["novita/x", "mistralai/x", "anthropic.claude-3-sonnet-20240229-v1:0", "mycorp/x"])
def test_an_unknown_provider_without_api_base_is_skipped_never_sent_anywhere(start_envoy, make_mock, model):
    """Careless operator: a model with a provider prefix the router does not know (or a bare Bedrock id), an
    api_key and no api_base. Taking it for OpenAI would send that provider's key to api.openai.com; the deployment
    is skipped with a warning naming the field, the rest of the config serves, and a request for that group gets
    400 `model_not_servable` while no upstream receives anything."""
    openai, passthrough = make_mock("openai", "openai"), make_mock("openai", "passthrough")
    secret = "sk-careless-0123456789"
    cfg = plugin_config([deployment("ok", "openai/gpt-4o", openai.url + "/v1", api_key="sk-ok", id="ok"),
                         deployment("careless", model, api_key=secret, id="careless")])
    envoy = start_envoy(cfg, clusters_for(openai, passthrough=passthrough))
    resp = post(envoy, chat("careless"))
    err = expect_error(resp, 400, "model_not_servable", param="model")
    assert "`careless`" in err["message"], err
    assert secret not in resp.text
    assert openai.count == 0 and passthrough.count == 0, [(r.path, r.body) for r in openai.requests + passthrough.requests]
    lines = [line for line in envoy.log_text().splitlines() if "model_list[1].litellm_params.model" in line]
    assert lines and "skipped" in lines[0], f"no skip warning names model_list[1].litellm_params.model:\n{envoy.log_tail()}"
    expect_no_secrets(envoy.log_text(), (secret,), "the Envoy log")
    expect_routed(post(envoy, chat("ok")), "ok")
    assert requests_carrying(passthrough, (secret,)) == [] and requests_carrying(openai, (secret,)) == []


def test_a_config_with_nothing_servable_is_still_refused(wasm):
    """Fail closed: when every deployment is skipped, Envoy refuses the plugin rather than serve only errors."""
    cfg = plugin_config([deployment("careless", "mycorp/x", api_key="sk-careless-0123456789", id="careless")])
    exited, log = Envoy.expect_refused(cfg)
    assert exited
    lines = [line for line in log.splitlines() if "model_list[0].litellm_params.model" in line]
    assert lines and "no deployment in model_list can be served" in lines[0], log[-3000:]
    expect_no_secrets(log, ("sk-careless-0123456789",), "the Envoy log")


# ---- 8. headers that bind the gateway's provider account, Envoy control headers ----------------------------------

ACCOUNT_HEADERS = {"OpenAI-Organization": "org-evil", "OpenAI-Project": "proj-evil"}
ENVOY_CONTROL_HEADERS = {"x-envoy-max-retries": "50", "x-envoy-retry-on": "5xx,reset,connect-failure",
                         "x-envoy-upstream-rq-timeout-ms": "1", "x-envoy-upstream-rq-per-try-timeout-ms": "1"}
# ... sent while claiming to be an internal caller, whose x-envoy-* headers Envoy would honour.
CLAIM_INTERNAL = {"x-forwarded-for": "10.0.0.1", "x-envoy-internal": "true"}


def test_client_headers_cannot_bind_the_gateways_provider_account(start_envoy, make_mock):
    """Attack: the gateway's key, the attacker's organization/project. `OpenAI-Organization` and
    `OpenAI-Project` choose which of the key's accounts is billed and whose data policies apply; a client's
    must never reach the provider with the gateway's key."""
    provider, passthrough = make_mock("openai", "provider"), make_mock("openai", "passthrough")
    cfg = plugin_config([deployment("solo", "openai/solo-model", provider.url + "/v1", api_key=KEY_SOLO, id="solo")])
    envoy = start_envoy(cfg, clusters_for(provider, passthrough=passthrough), failover=True)
    expect_routed(post(envoy, chat("solo"), ACCOUNT_HEADERS), "solo", "solo")
    expect_upstream(provider.last(), path=ROUTE, host=provider.authority, model="solo-model",
                    headers={"authorization": f"Bearer {KEY_SOLO}"},
                    absent=[k.lower() for k in ACCOUNT_HEADERS])


def test_client_envoy_control_headers_neither_reach_the_provider_nor_steer_envoy(start_envoy, make_mock):
    """Attack: retry amplification and timeouts chosen by the client. `x-envoy-max-retries: 50` with
    `x-envoy-retry-on: 5xx` on a failing deployment would turn one request into 51 upstream requests billed to
    the gateway; 1 ms timeouts would make healthy deployments look dead. None of these headers reaches the
    provider and none changes what Envoy does."""
    provider, passthrough = make_mock("openai", "provider"), make_mock("openai", "passthrough")
    cfg = plugin_config([deployment("solo", "openai/solo-model", provider.url + "/v1", api_key=KEY_SOLO, id="solo")],
                        allowed_fails=100)
    envoy = start_envoy(cfg, clusters_for(provider, passthrough=passthrough), failover=True)
    provider.respond(delay=0.3, times=1)  # slower than the client's 1 ms timeouts, well within the route's
    resp = post(envoy, chat("solo"), {**CLAIM_INTERNAL, **ENVOY_CONTROL_HEADERS})
    expect_routed(resp, "solo", "solo")
    rec = provider.last()
    leaked = {k: rec.headers[k] for k in ENVOY_CONTROL_HEADERS if k in rec.headers}
    assert leaked == {}, f"client Envoy control headers reached the provider: {leaked}"
    expect_no_failures(envoy, "solo")
    provider.reset()
    provider.respond(status=500)
    resp = post(envoy, chat("solo"), {**CLAIM_INTERNAL, **{k: v for k, v in ENVOY_CONTROL_HEADERS.items() if "retr" in k}})
    assert resp.status == 500, resp
    assert provider.count == 1, f"one client request became {provider.count} upstream requests"


# ---- 9. a client cools a deployment for everyone -----------------------------------------------------------------

def wildcard_openai(start_envoy, make_mock):
    openai, passthrough = make_mock("openai", "openai"), make_mock("openai", "passthrough")
    cfg = plugin_config([deployment("openai/*", "openai/*", openai.url + "/v1", api_key=KEY_WILD, id="openai-wild")],
                        allowed_fails=3, cooldown_time=30)
    return start_envoy(cfg, clusters_for(openai, passthrough=passthrough)), openai


def test_invented_model_names_do_not_cool_the_wildcard_deployment(start_envoy, make_mock):
    """Attack: denial of service by 404. Five requests for invented names under `openai/*`; the provider
    rightly answers 404 "model not found" to each. That is the request's fault, not the deployment's: the
    wildcard deployment keeps serving everyone else."""
    envoy, openai = wildcard_openai(start_envoy, make_mock)
    openai.respond(404, times=5)
    answers = [post(envoy, chat(f"openai/invented-model-{i}")) for i in range(5)]
    assert [r.status for r in answers] == [404] * 5, [(r.status, r.body[:100]) for r in answers]
    resp = post(envoy, chat("openai/gpt-4o"))
    expect_routed(resp, "openai-wild", "openai/*")
    expect_not_cooling(envoy, "openai-wild")


def test_a_foreign_organization_header_does_not_cool_the_deployment(start_envoy, make_mock):
    """Attack: denial of service by 401. Five requests carrying `OpenAI-Organization: org-not-ours`, which the
    provider refuses with 401 for the gateway's key. The header is the client's and is dropped, so the provider
    serves them, and nothing cools."""
    envoy, openai = wildcard_openai(start_envoy, make_mock)
    openai.respond_when(lambda rec: "openai-organization" in rec.headers, status=401)
    answers = [post(envoy, chat("openai/gpt-4o"), {"OpenAI-Organization": "org-not-ours"}) for _ in range(5)]
    assert [r.status for r in answers] == [200] * 5, [(r.status, r.body[:100]) for r in answers]
    resp = post(envoy, chat("openai/gpt-4o"))
    expect_routed(resp, "openai-wild", "openai/*")
    expect_not_cooling(envoy, "openai-wild")


# ---- 10. header smuggling around the body rewrite ----------------------------------------------------------------

def raw_request(body: bytes, *headers: str, path: str = ROUTE) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n" + \
           "".join(h + "\r\n" for h in headers) + "\r\n"
    return head.encode() + body


def chunked(body: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)


def test_smuggled_framing_never_forwards_a_body_other_than_the_routed_one(start_envoy, make_mock):
    """Attack: request smuggling around the router's body rewrite. Conflicting framing (`content-length` with
    `transfer-encoding: chunked`, two `content-length`s, a body longer than declared whose tail is a second
    request) tries to make Envoy, the router and the provider disagree on where the body ends — so the
    provider would read a body (a `model`) the router never routed, or the next request on the pooled upstream
    connection would be corrupted."""
    provider, passthrough = make_mock("openai", "provider"), make_mock("openai", "passthrough")
    cfg = plugin_config([deployment("plain", "openai/plain-upstream-model-name", provider.url + "/v1",
                                    api_key=KEY_SOLO, id="plain")])
    envoy = start_envoy(cfg, clusters_for(provider, passthrough=passthrough))
    body = json.dumps(chat("plain", "outer")).encode()
    inner = json.dumps(chat("smuggled-model", "inner")).encode()
    inner_request = raw_request(inner, f"content-length: {len(inner)}")
    cases = {
        "content-length + chunked": raw_request(chunked(body), f"content-length: {len(body)}",
                                                "transfer-encoding: chunked"),
        "chunked + content-length": raw_request(chunked(body) + inner_request, "transfer-encoding: chunked",
                                                "content-length: 4"),
        "two content-lengths": raw_request(body + b"12345", f"content-length: {len(body)}",
                                           f"content-length: {len(body) + 5}"),
        "body longer than declared": raw_request(body + inner_request, f"content-length: {len(body)}"),
        "chunked body, smuggled tail": raw_request(chunked(body) + inner_request, "transfer-encoding: chunked"),
    }
    # The same at the JSON level: a second `model` key the provider's parser would read (last one wins) and the
    # router's scanner must see too, escaped or not.
    for dup in (rb'{"model":"plain","mod\u0065l":"gpt-4-expensive","messages":[]}',
                rb'{"mod\u0065l":"plain","model":"gpt-4-expensive","messages":[]}',
                rb'{"model":"plain","messages":[]} {"model":"gpt-4-expensive"}'):
        cases[f"json {dup.decode()}"] = raw_request(dup, f"content-length: {len(dup)}", "connection: close")
    seen = {}
    with client.Session(envoy.base_url) as honest:
        for i, (name, data) in enumerate(cases.items()):
            answers = client.parse_responses(client.send_raw(envoy.base_url, data, timeout=1.0))
            seen[name] = [a.status for a in answers]
            resp = honest.post_json(ROUTE, chat("plain", f"honest after case {i}"))
            expect_routed(resp, "plain", "plain")
            rec = expect_upstream(provider.last(), path=ROUTE, host=provider.authority,
                                  model="plain-upstream-model-name")
            assert rec.json["messages"][0]["content"] == f"honest after case {i}", (name, rec.body)
    bodies = [(r.model, r.json["messages"][0]["content"] if isinstance(r.json, dict) else r.body[:80])
              for r in provider.requests]
    print("answers per case:", seen, "| provider saw:", bodies)
    for rec in provider.requests:
        assert rec.model == "plain-upstream-model-name" and b"gpt-4-expensive" not in rec.body, \
            f"the provider read a body that was not routed: {rec.body!r}"
        assert rec.headers.get("content-length") == str(len(rec.body)), rec.headers
    assert passthrough.count == 0, [(r.path, r.body[:80]) for r in passthrough.requests]
    upstream = {k.rsplit(".", 1)[1]: v for k, v in envoy.stats().items()
                if k.startswith(f"cluster.{provider.cluster_name}.upstream_")}
    print("provider connections:", {k: upstream.get(k) for k in ("upstream_cx_total", "upstream_cx_protocol_error",
                                                                  "upstream_rq_rx_reset", "upstream_rq_total")})
    assert upstream.get("upstream_cx_protocol_error", 0) == 0 and upstream.get("upstream_rq_rx_reset", 0) == 0, upstream
    assert upstream.get("upstream_cx_total") == 1, f"every request shares one pooled upstream connection: {upstream}"


# ---- 11. tags header, unbounded model names ----------------------------------------------------------------------

def envoy_rss_kb(envoy) -> Optional[int]:
    try:
        for line in open(f"/proc/{envoy.proc.pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def router_stat_lines(envoy) -> int:
    text = client.get(envoy.admin_url, "/stats/prometheus").text
    return sum(1 for line in text.splitlines() if "llm_router_" in line and not line.startswith("#"))


def test_client_tags_header_never_reaches_the_provider(start_envoy, make_mock):
    """Attack: `x-llm-router-tags` is the router's routing input; forwarded, it would tell the provider (and
    anything logging there) the gateway's internal routing labels."""
    provider, passthrough = make_mock("openai", "provider"), make_mock("openai", "passthrough")
    cfg = plugin_config([deployment("solo", "openai/solo-model", provider.url + "/v1", api_key=KEY_SOLO, id="solo")])
    envoy = start_envoy(cfg, clusters_for(provider, passthrough=passthrough), failover=True)
    expect_routed(post(envoy, chat("solo"), {"x-llm-router-tags": "premium, internal"}), "solo", "solo")
    expect_upstream(provider.last(), path=ROUTE, host=provider.authority, absent=["x-llm-router-tags"])


def test_unbounded_model_names_do_not_grow_envoys_stats(start_envoy, make_mock):
    """Attack: memory exhaustion by cardinality. 2,000 distinct names under `openai/*`: if any stat (a metric
    label, a per-model counter) were keyed by the client's name, each one would create stats that live as long
    as Envoy. The number of stats must not grow with the number of names."""
    envoy, openai = wildcard_openai(start_envoy, make_mock)
    expect_routed(post(envoy, chat("openai/warm-up")), "openai-wild")
    stats_before, lines_before, rss_before = len(envoy.stats()), router_stat_lines(envoy), envoy_rss_kb(envoy)
    statuses: dict = {}
    with client.Session(envoy.base_url) as s:
        for i in range(2000):
            status = s.post_json(ROUTE, chat(f"openai/rand-{i}")).status
            statuses[status] = statuses.get(status, 0) + 1
    stats_after, lines_after, rss_after = len(envoy.stats()), router_stat_lines(envoy), envoy_rss_kb(envoy)
    print(f"2000 distinct names: answers {statuses}; stats {stats_before} -> {stats_after}; "
          f"llm_router_ lines {lines_before} -> {lines_after}; Envoy RSS {rss_before} kB -> {rss_after} kB")
    assert stats_after - stats_before < 50, (stats_before, stats_after)
    assert lines_after - lines_before < 50, (lines_before, lines_after)


# ---- 12. a body that ends in trailers ---------------------------------------------------------------------------

MASTER_KEY = "sk-hostile-master-0123456789"


@pytest.mark.parametrize("failover", [False, True], ids=["plain", "failover-wiring"])
def test_a_body_ending_in_trailers_is_routed_not_passed_on_unrewritten(start_envoy, make_mock, failover):
    """Attack: skip the router. Over HTTP/2 the request's last DATA frame need not end the stream: trailers do.
    The router buffers the body until its end; if it only looked for that end in the body callback, the request
    would continue when the trailers arrive, unrouted — its headers as the client sent them (the gateway key,
    the client's `x-llm-router-*` headers) to the passthrough upstream, or with a client-sent cluster header
    (no early header mutation in front) to a cluster the client chose."""
    provider, passthrough = make_mock("openai", "provider"), make_mock("openai", "passthrough")
    cfg = plugin_config([deployment("solo", "openai/solo-model", provider.url + "/v1", api_key=KEY_SOLO, id="solo")],
                        master_key=MASTER_KEY)
    envoy = start_envoy(cfg, clusters_for(provider, passthrough=passthrough), failover=failover)
    headers = {"content-type": "application/json", "authorization": f"Bearer {MASTER_KEY}",
               STATE_HEADER: forged_state(model="solo", group="solo", tried="solo", authority="attacker.example"),
               "x-llm-router-tags": "internal"}
    body = json.dumps(chat("solo", "sent with trailers")).encode()
    resp = client.h2_post(envoy.base_url, ROUTE, headers, body, {"x-checksum": "abc"})
    assert resp.status == 200, resp
    assert passthrough.count == 0, f"passed on unrouted: {[(r.path, r.headers) for r in passthrough.requests]}"
    rec = expect_upstream(provider.last(), path=ROUTE, host=provider.authority, model="solo-model",
                          headers={"authorization": f"Bearer {KEY_SOLO}"})
    assert rec.json["messages"][0]["content"] == "sent with trailers"
    assert provider.count == 1 and router_headers_seen(provider) == []
    for m in (provider, passthrough):
        assert requests_carrying(m, [MASTER_KEY]) == [], f"the gateway key reached {m.name}"
    # Trailers after a body that is not JSON: the router's own 400, not a pass-through.
    resp = client.h2_post(envoy.base_url, ROUTE, headers, b"not json", {"x-checksum": "abc"})
    assert resp.status == 400 and error_code(resp) is not None, resp
    assert passthrough.count == 0 and provider.count == 1
