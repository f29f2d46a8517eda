"""The fault soak behind scripts/soak: real Envoy (--concurrency 2, failover wiring) with the built filter in front of
mock providers that inject random faults, driven by concurrent stream/non-stream clients for a bounded time. Loopback
only.

    .venv/bin/python -m tests.soak.soak --duration 60 --clients 32 --fault-rate 0.3 --seed 1 [--json [PATH]]

What it checks (exit status 1 on any violation, 2 when the soak could not run):

* every client request ends within --hard-timeout (else: hung), and its answer is one of
    ok_json / ok_stream     a complete chat completion, or an SSE stream of well-formed chunks ending in [DONE];
    cut_after_headers       the answer started (200 + headers) and then ended early (stream without [DONE], or a
                            reset / short body): accepted only when the deployment that served it had a fault injected
                            *after* its headers (reset_mid_body, truncated_sse) — once the headers reached the client
                            no proxy can fail over, so this is the correct outcome, counted apart;
    error_openai            an OpenAI-shaped error {"error": {"message", "type", "param", "code"}} whose status and
                            code fit what happened (router codes: 404 model_not_found, 429 no_healthy_deployments with
                            retry-after, 429 rate_limited, 502 upstream_error, 503 upstream_unavailable,
                            504 upstream_timeout; or the OpenAI provider's own injected error, passed through);
    error_provider          an Azure/Anthropic deployment's own injected error, passed through byte-shaped as that
                            provider sends it (README: "upstream errors pass through as the provider sent them");
  and it agrees with what the mocks saw for that request (correlated by x-request-id): the deployment and attempt
  count the router's headers name, the injected fault of every attempt (only before-headers faults may be failed
  over; the last one decides the answer), the router's local error code;
* Envoy is still up and ready; its log has no wasm panic, no "Function: proxy_on_... failed", no "Plugin ... failed";
* the llm_router_ counters (admin /stats/prometheus) equal what mocks and clients saw — see COUNTERS below for which
  equalities are exact and which can only be bounded.

Artifacts (Envoy log, access log with one line per pass keyed by the client's x-request-id, bootstrap, summary.json)
stay under .run/e2e/<pid>-<n>-soak/.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import random
import re
import socket
import sys
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Optional

from tests.e2e.support.envoy import Envoy, EnvoyError, clusters_for
from tests.e2e.support.mock_provider import AFTER_HEADERS, BEFORE_HEADERS, FAULT_KINDS, MockProvider
from tests.e2e.support.plugin import deployment, plugin_config
from tests.e2e.support.prometheus import Scrape

COUNTERS = """\
Exact (asserted ==), per deployment unless said:
  llm_router_requests_total          == requests that deployment's mock received (every forwarded pass reaches its
                                        mock: no connect failures are injected; Envoy's retry after a reset or a
                                        per-try timeout goes to the local redirector, which no counter or mock sees)
  llm_router_failures_total{class}   == faults that mock injected before its headers, by class: rate_limit (429),
                                        server_error (500/502/503), connect_failure (reset before headers: the
                                        redirector answers well inside the time budget), timeout (stall past the
                                        deployment's timeout). After-headers faults are never failures (a 200 was seen).
  llm_router_in_flight               == 0 once every client is done
  llm_router_retries_total           == passes onto this deployment whose previous attempt was in the same group
  llm_router_fallbacks_total{from}   == passes into this group from another group (from: the group asked for)
  llm_router_rejected_total{code}    == the router's own error replies the clients got (no x-llm-router-deployment)
  llm_router_input/output_tokens     == usage of the complete successful answers this deployment served (cut answers
                                        are cut before their usage)
  llm_router_request_duration_ms_count == requests_total (histograms reach the admin at the stats flush: polled)
  llm_router_time_to_first_token_ms_count == streamed client answers this deployment ended with a non-empty body
  llm_router_deployment_cooling      == 0 for every deployment once the longest cooldown is over (polled)
Bounded (asserted <= / >=), and why:
  llm_router_cooldowns_total         <= failures_total (only a failure starts a cooldown; one during a cooldown
                                        extends it and is not counted), >= 1 when a 429 hit a deployment whose group
                                        has others (cools at once) or its failures exceed allowed_fails in a short
                                        run; the exact number depends on when failures land relative to cooldowns
                                        and to the 60 s window, i.e. on scheduling.
"""

WASM_PANIC_PATTERNS = (
    r"panicked at",
    r"Function: proxy_on_\w+ failed",
    r"Plugin \S+ failed",
    r"Wasm VM failed",
    r"wasm trap",
    r"RefCell already",
)

ROUTER_CODES = {  # the router's own error replies: code -> status
    "model_not_found": 404,
    "no_healthy_deployments": 429,
    "rate_limited": 429,
    "upstream_error": 502,
    "upstream_unavailable": 503,
    "upstream_timeout": 504,
}
# Which router code an exhausted failover gives for the last attempt's fault (pipeline/request.rs exhausted_error).
EXHAUSTED_CODE = {"rate_limit": "rate_limited", "server_error": "upstream_error",
                  "reset_before_headers": "upstream_unavailable", "stall": "upstream_timeout"}
FAILURE_CLASS = {"rate_limit": "rate_limit", "server_error": "server_error",
                 "reset_before_headers": "connect_failure", "stall": "timeout"}
# Every class the router knows (README: metrics); the ones the soak cannot cause must stay at 0.
FAILURE_CLASSES = ("rate_limit", "authentication", "not_found", "timeout", "server_error", "connect_failure", "reset")
ACCEPTED = ("ok_json", "ok_stream", "cut_after_headers", "error_openai", "error_provider")


# ---- the world: mocks, plugin config, Envoy ---------------------------------------------------------------------

@dataclass(frozen=True)
class Dep:
    id: str
    group: str
    kind: str
    model: str  # what the mock echoes as the response's model


DEPLOYMENTS = (
    Dep("g1", "gpt", "openai", "gpt-one"),
    Dep("g2", "gpt", "openai", "gpt-two"),
    Dep("g3", "gpt", "azure", "gpt-az"),
    Dep("c1", "claude", "anthropic", "claude-one"),
    Dep("c2", "claude", "anthropic", "claude-two"),
    Dep("b1", "backup", "openai", "backup-one"),
    Dep("b2", "backup", "azure", "backup-az"),
)
GROUPS = {"gpt": ["g1", "g2", "g3"], "claude": ["c1", "c2"], "backup": ["b1", "b2"]}
# gpt: retries in its group, then falls back to backup (and retries there); claude and backup: retries only, so
# their last deployment's error reaches the client as that provider sent it (Anthropic / Azure / OpenAI shapes).
FALLBACKS = [{"gpt": ["backup"]}]
UNKNOWN_MODEL = "no-such-model"
# What clients ask for (weights); a few ask for a model no deployment serves.
MODEL_MIX = (("gpt", 45), ("claude", 35), ("backup", 17), (UNKNOWN_MODEL, 3))


def build_config(timeout: float, allowed_fails: int, cooldown: float, num_retries: int) -> dict:
    return {"allowed_fails": allowed_fails, "cooldown_time": cooldown, "num_retries": num_retries,
            "fallbacks": FALLBACKS, "timeout": timeout}


def model_list(mocks: dict, timeout: float) -> list:
    out = []
    for d in DEPLOYMENTS:
        m = mocks[d.id]
        if d.kind == "openai":
            out.append(deployment(d.group, f"openai/{d.model}", m.url + "/v1", api_key=f"sk-{d.id}", id=d.id,
                                  timeout=timeout))
        elif d.kind == "azure":
            out.append(deployment(d.group, f"azure/{d.model}", m.url, api_key=f"az-{d.id}", api_version="2024-10-21",
                                  id=d.id, timeout=timeout))
        else:
            out.append(deployment(d.group, f"anthropic/{d.model}", m.url, api_key=f"ak-{d.id}", id=d.id,
                                  timeout=timeout))
    return out


# ---- one client request --------------------------------------------------------------------------------------------

@dataclass
class Result:
    rid: str
    model: str
    stream: bool
    usage_requested: bool
    started: float
    elapsed: float = 0.0
    status: Optional[int] = None
    headers: dict = field(default_factory=dict)
    body: bytes = b""
    transport: Optional[str] = None  # what went wrong on the wire: "hung", "no_response: ...", "cut: ..."
    outcome: str = "?"
    detail: str = ""
    usage: Optional[tuple] = None  # (prompt, completion) of a complete success


def send(host: str, port: int, res: Result, body: dict, hard_timeout: float,
         conn: Optional[http.client.HTTPConnection] = None) -> Optional[http.client.HTTPConnection]:
    """One request, on `conn` (a kept-alive connection) or a fresh one; every socket operation is bounded by what is
    left of hard_timeout. Returns the connection when it can carry the next request, else closes it."""
    deadline = res.started + hard_timeout
    data = json.dumps(body).encode()
    hdrs = {"content-type": "application/json", "x-request-id": res.rid, "authorization": "Bearer soak-client"}
    reused = conn is not None
    if conn is None:
        conn = http.client.HTTPConnection(host, port, timeout=hard_timeout)
    elif conn.sock is not None:
        conn.sock.settimeout(hard_timeout)
    keep = False
    try:
        try:
            conn.request("POST", "/v1/chat/completions", body=data, headers=hdrs)
            resp = conn.getresponse()
        except socket.timeout:
            res.transport = "hung"
            return None
        except (OSError, http.client.HTTPException) as e:
            res.transport = f"no_response{' (kept-alive connection)' if reused else ''}: {type(e).__name__}: {e}"
            return None
        res.status = resp.status
        for k, v in resp.getheaders():
            k = k.lower()
            res.headers[k] = f"{res.headers[k]}, {v}" if k in res.headers else v
        chunks = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                res.transport = "hung"
                break
            if conn.sock is not None:
                conn.sock.settimeout(left)
            try:
                c = resp.read1(65536)
            except socket.timeout:
                res.transport = "hung"
                break
            except (OSError, http.client.HTTPException, ValueError) as e:
                res.transport = f"cut: {type(e).__name__}"
                break
            if not c:
                if resp.length:  # a declared content-length not reached: the connection ended early
                    res.transport = f"cut: {resp.length} bytes short"
                break
            chunks.append(c)
        res.body = b"".join(chunks)
        keep = res.transport is None and not resp.will_close and resp.isclosed()
        return conn if keep else None
    finally:
        res.elapsed = time.monotonic() - res.started
        if not keep:
            conn.close()


def parse_sse(body: bytes) -> tuple:
    """(events, done, problem): the data payloads of the complete events, whether [DONE] ended the stream, and the
    first malformed thing (None if none). An incomplete trailing event is not a problem here (a cut stream)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        # A cut may split a multi-byte character: only the complete events must decode.
        text = body[: body.rfind(b"\n\n") + 2].decode("utf-8", "replace")
    parts = text.split("\n\n")
    complete = parts[:-1]
    events, done = [], False
    for raw in complete:
        if not raw.strip():
            continue
        if done:
            return events, done, f"event after [DONE]: {raw[:120]!r}"
        data = [ln[5:].lstrip() for ln in raw.split("\n") if ln.startswith("data:")]
        others = [ln for ln in raw.split("\n") if ln and not ln.startswith(("data:", "event:", "id:", ":", "retry:"))]
        if others or not data:
            return events, done, f"not an SSE event: {raw[:120]!r}"
        payload = "\n".join(data)
        if payload == "[DONE]":
            done = True
            continue
        try:
            ev = json.loads(payload)
        except ValueError:
            return events, done, f"event data is not JSON: {payload[:120]!r}"
        if not isinstance(ev, dict) or ev.get("object") != "chat.completion.chunk" or not isinstance(
                ev.get("choices"), list):
            return events, done, f"not a chat.completion.chunk: {payload[:120]!r}"
        events.append(ev)
    return events, done, None


def openai_error(res: Result) -> Optional[dict]:
    """The error object of an OpenAI-shaped error body (application/json), else None."""
    if not res.headers.get("content-type", "").startswith("application/json"):
        return None
    try:
        body = json.loads(res.body)
    except ValueError:
        return None
    if not isinstance(body, dict) or set(body) != {"error"} or not isinstance(body["error"], dict):
        return None
    err = body["error"]
    if not {"message", "type", "param", "code"} <= set(err):
        return None
    if not isinstance(err["message"], str) or not err["message"] or not isinstance(err["type"], str):
        return None
    return err


def provider_error_shape(kind: str, res: Result) -> bool:
    """Is the body the provider's own error shape (as the mock writes it: tests/e2e/support/mock_provider.py)?"""
    try:
        body = json.loads(res.body)
    except ValueError:
        return False
    if not isinstance(body, dict):
        return False
    if kind == "anthropic":
        return body.get("type") == "error" and isinstance(body.get("error"), dict) and \
            isinstance(body["error"].get("message"), str) and isinstance(body["error"].get("type"), str)
    if kind == "azure":
        return set(body) == {"error"} and isinstance(body["error"], dict) and \
            isinstance(body["error"].get("message"), str) and isinstance(body["error"].get("code"), str)
    return False


def classify_client_side(res: Result) -> None:
    """A first outcome from the client's view alone; `reconcile` then checks it against the mocks."""
    if res.transport == "hung":
        res.outcome, res.detail = "hung", "no complete answer within the hard timeout"
        return
    if res.status is None:
        res.outcome, res.detail = "no_response", res.transport or ""
        return
    cut = res.transport is not None and res.transport.startswith("cut")
    if res.status == 200:
        if res.stream:
            if not res.headers.get("content-type", "").startswith("text/event-stream"):
                res.outcome, res.detail = "bad_success", f"stream answered with {res.headers.get('content-type')!r}"
                return
            events, done, problem = parse_sse(res.body)
            if problem:
                res.outcome, res.detail = "bad_success", problem
            elif done and not cut:
                if not events or not any(ch.get("choices") for ch in events):
                    res.outcome, res.detail = "bad_success", "stream with no chunk"
                    return
                res.outcome = "ok_stream"
                for ev in events:
                    if isinstance(ev.get("usage"), dict):
                        res.usage = (ev["usage"].get("prompt_tokens", 0), ev["usage"].get("completion_tokens", 0))
            else:
                res.outcome = "cut_after_headers"
                res.detail = res.transport or f"stream ended without [DONE] after {len(events)} event(s)"
            return
        if cut:
            res.outcome, res.detail = "cut_after_headers", res.transport or ""
            return
        try:
            body = json.loads(res.body)
            msg = body["choices"][0]["message"]["content"]
            assert body.get("object") == "chat.completion" and isinstance(msg, str) and msg
        except (ValueError, KeyError, IndexError, TypeError, AssertionError):
            res.outcome, res.detail = "bad_success", f"not a chat completion: {res.body[:200]!r}"
            return
        res.outcome = "ok_json"
        u = body.get("usage") or {}
        res.usage = (u.get("prompt_tokens", 0), u.get("completion_tokens", 0))
        return
    if 400 <= res.status <= 599 and not cut:
        if openai_error(res) is not None:
            res.outcome = "error_openai"
        else:
            res.outcome = "error_provider"  # provisional: reconcile accepts it only for a provider's own error
        return
    res.outcome, res.detail = "bad_status", f"HTTP {res.status} {res.transport or ''}".strip()


# ---- the run -------------------------------------------------------------------------------------------------------

class Soak:
    def __init__(self, args):
        self.args = args
        self.mocks: dict = {}
        self.envoy: Optional[Envoy] = None
        self.results: list = []
        self.lock = threading.Lock()
        self.violations: list = []
        self.rows: list = []  # counter comparison rows

    # -- setup --
    def start(self) -> None:
        a = self.args
        for d in DEPLOYMENTS:
            self.mocks[d.id] = MockProvider(d.kind, name=d.id)
        # Non-routed requests go to their own mock: a request that reaches it is a violation.
        self.passthrough = MockProvider("openai", name="passthrough")
        stall = a.timeout + a.stall_extra
        for d in DEPLOYMENTS:
            self.mocks[d.id].inject_faults(a.fault_rate, a.seed, stall=stall, retry_after=tuple(a.retry_after),
                                           latency=tuple(a.latency), stream_delay=a.stream_delay)
        cfg = plugin_config(model_list(self.mocks, a.timeout),
                            envoy_settings={"access_log_properties": True},
                            **build_config(a.timeout, a.allowed_fails, a.cooldown, a.num_retries))
        clusters = clusters_for(*self.mocks.values(), passthrough=self.passthrough)
        os.environ.setdefault("E2E_WASM_LOG", "wasm:info")  # debug lines per request would slow Envoy down
        self.envoy = Envoy(cfg, clusters, concurrency=a.concurrency, failover=True, label="soak", access_log=True,
                           # The README's route timeout: far above the clients' hard timeout, so a request
                           # stuck inside Envoy shows up as hung rather than as Envoy's 504.
                           route_timeout="300s",
                           bootstrap_overrides={"stats_flush_interval": "1s"})
        self.envoy.wait_ready(timeout=30)

    def stop(self) -> None:
        if self.envoy is not None:
            self.envoy.stop()
        for m in list(self.mocks.values()) + [getattr(self, "passthrough", None)]:
            if m is not None:
                m.stop()

    # -- clients --
    def client(self, n: int, until: float) -> None:
        rng = random.Random(f"{self.args.seed}/client{n}")
        models = [m for m, _ in MODEL_MIX]
        weights = [w for _, w in MODEL_MIX]
        host, port = "127.0.0.1", self.envoy.listener_port
        keep_alive = n % 2 == 1  # half the clients keep their connection, like an SDK's pool; half open one each time
        conn = None
        i = 0
        while time.monotonic() < until:
            i += 1
            model = rng.choices(models, weights)[0]
            stream = rng.random() < 0.5
            usage = stream and rng.random() < 0.5
            rid = f"soak-{self.args.seed}-{n}-{i}"
            body = {"model": model, "messages": [{"role": "user", "content": f"soak request {rid}"}],
                    "max_tokens": 16}
            if stream:
                body["stream"] = True
                if usage:
                    body["stream_options"] = {"include_usage": True}
            res = Result(rid, model, stream, usage, time.monotonic())
            conn = send(host, port, res, body, self.args.hard_timeout, conn)
            if not keep_alive and conn is not None:
                conn.close()
                conn = None
            classify_client_side(res)
            with self.lock:
                self.results.append(res)
            if res.status == 429 and "x-llm-router-deployment" not in res.headers and self.args.client_backoff > 0:
                # Like an SDK: the router said when to come back; wait (capped) before the next request.
                try:
                    wait = float(res.headers.get("retry-after", "1"))
                except ValueError:
                    wait = 1.0
                time.sleep(min(wait, self.args.client_backoff) * rng.uniform(0.5, 1.0))
        if conn is not None:
            conn.close()

    def run_clients(self) -> float:
        start = time.monotonic()
        until = start + self.args.duration
        threads = [threading.Thread(target=self.client, args=(n, until), name=f"soak-client-{n}", daemon=True)
                   for n in range(self.args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            # A client finishes its last request at most hard_timeout after `until` (it then counts as hung).
            t.join(timeout=max(0.0, until - time.monotonic()) + self.args.hard_timeout + 10)
        stuck = [t.name for t in threads if t.is_alive()]
        if stuck:
            self.violations.append({"what": "client threads did not finish", "threads": stuck})
        return time.monotonic() - start

    # -- reconciliation with the mocks --
    def attempts_by_request(self) -> dict:
        by_rid: dict = defaultdict(list)
        self.late: set = set()  # request ids with a fault-free attempt the mock answered near or past the timeout
        for d in DEPLOYMENTS:
            for rec in self.mocks[d.id].requests:
                rid = rec.header("x-request-id")
                by_rid[rid].append((rec.received_at, d.id, rec.fault))
                sent = rec.timing.get("headers_at")
                if rec.fault is None and (sent is None or sent - rec.received_at > 0.9 * self.args.timeout):
                    self.late.add(rid)
        return {rid: [(dep, f) for _, dep, f in sorted(v, key=lambda x: x[0])] for rid, v in by_rid.items()}

    def reconcile(self, attempts: dict) -> None:
        dep_of = {d.id: d for d in DEPLOYMENTS}
        known = set()
        for res in self.results:
            known.add(res.rid)
            tried = attempts.get(res.rid, [])
            problem = self._check(res, tried, dep_of)
            if problem:
                self.violations.append(self._violation(res, tried, problem))
        for rid, tried in attempts.items():
            if rid not in known:
                self.violations.append({"what": "a mock received a request no client sent (or without its id)",
                                        "request_id": rid, "attempts": [f"{d}:{f or 'ok'}" for d, f in tried]})
        for rec in self.passthrough.requests:
            self.violations.append({"what": "a request fell through to the non-routed route",
                                    "request_id": rec.header("x-request-id"), "path": rec.path})

    def _check(self, res: Result, tried: list, dep_of: dict) -> Optional[str]:
        o = res.outcome
        if o not in ACCEPTED:
            return f"{o}: {res.detail}"
        if o == "error_provider" and self.args.strict_openai_errors:
            return f"a provider's own (not OpenAI-shaped) error passed through: {res.body[:200]!r}"
        faults = [f for _, f in tried]
        served = res.headers.get("x-llm-router-deployment")
        for f in faults[:-1]:
            if f is None or f.kind not in BEFORE_HEADERS:
                return f"an attempt before the last one had {f or 'no fault'}: it cannot have been failed over"
        last_dep, last = (tried[-1] if tried else (None, None))
        if served is None:
            # The router's own error reply.
            if o != "error_openai":
                return "an answer without x-llm-router-deployment that is not an OpenAI-shaped error"
            err = openai_error(res) or {}
            code = err.get("code")
            if ROUTER_CODES.get(code) != res.status:
                return f"router error code {code!r} with HTTP {res.status}"
            if code == "model_not_found":
                return None if res.model == UNKNOWN_MODEL and not tried else "model_not_found for a known model"
            if code == "no_healthy_deployments":
                if tried:
                    return "no_healthy_deployments after attempts were forwarded"
                return None if res.headers.get("retry-after", "").isdigit() else "429 without a numeric retry-after"
            if not tried:
                return f"{code} without any forwarded attempt"
            if last is None or EXHAUSTED_CODE.get(last.kind) != code:
                return f"{code} but the last attempt had {last or 'no fault'}"
            return None
        # Answered through a forwarded pass.
        if not tried:
            return f"x-llm-router-deployment {served} but no mock received the request"
        if served != last_dep:
            return f"x-llm-router-deployment {served} but the last attempt went to {last_dep}"
        if res.headers.get("x-llm-router-attempts") != str(len(tried)):
            return f"x-llm-router-attempts {res.headers.get('x-llm-router-attempts')} but {len(tried)} attempt(s)"
        dep = dep_of[served]
        want_from = res.model if dep.group != res.model else None
        if res.headers.get("x-llm-router-fallback-from") != want_from:
            return f"x-llm-router-fallback-from {res.headers.get('x-llm-router-fallback-from')!r}, expected {want_from!r}"
        if o in ("ok_json", "ok_stream"):
            if last is not None:
                return f"a success although the serving attempt had {last}"
            if o == "ok_json" and json.loads(res.body).get("model") != dep.model:
                return f"answer's model {json.loads(res.body).get('model')!r}, expected {dep.model!r}"
            return None
        if o == "cut_after_headers":
            if last is None or last.kind not in AFTER_HEADERS:
                return f"answer cut after its headers ({res.detail}) but the serving attempt had {last or 'no fault'}"
            if last.kind == "truncated_sse" and res.transport is not None:
                return f"truncated SSE (clean end upstream) reached the client as {res.transport}"
            return None
        # An error that a forwarded pass answered: the provider's own, or the redirector's 503.
        if last is None:
            return f"HTTP {res.status} although the serving attempt had no fault"
        if last.kind in ("rate_limit", "server_error"):
            if res.status != last.status:
                return f"HTTP {res.status} but the mock sent {last.status}"
            if o == "error_provider" and not provider_error_shape(dep.kind, res):
                return f"an error body that is neither OpenAI-shaped nor {dep.kind}'s own: {res.body[:200]!r}"
            if o == "error_openai" and dep.kind != "openai":
                return f"an OpenAI-shaped error from a {dep.kind} deployment's {last}"
            return None
        if last.kind in ("reset_before_headers", "stall"):
            err = openai_error(res) or {}
            if (res.status, err.get("code")) != (503, "upstream_unavailable"):
                return f"HTTP {res.status} {err.get('code')!r} after {last} on the last deployment " \
                       f"(expected 503 upstream_unavailable)"
            return None
        return f"HTTP {res.status} after {last}"

    def _violation(self, res: Result, tried: list, problem: str) -> dict:
        if res.rid in self.late:
            # The mock itself was slow (a loaded machine): the router was right to time the attempt out.
            problem += " [a fault-free attempt was answered after ~the deployment timeout: environment, not filter]"
        return {"what": problem, "request_id": res.rid, "model": res.model, "stream": res.stream,
                "status": res.status, "outcome": res.outcome, "elapsed_s": round(res.elapsed, 3),
                "router_headers": {k: v for k, v in res.headers.items() if k.startswith("x-llm-router")
                                   or k in ("content-type", "retry-after")},
                "body": res.body[:300].decode("utf-8", "replace"), "transport": res.transport,
                "attempts": [f"{d}:{f or 'ok'}" for d, f in tried],
                "access_log": [ln for ln in self.envoy.access_lines() if ln.endswith(f" request_id={res.rid}")][:6]}

    # -- counters --
    def expected_counters(self, attempts: dict) -> dict:
        group_of = {d.id: d.group for d in DEPLOYMENTS}
        exp: dict = defaultdict(Counter)
        for d in DEPLOYMENTS:
            for rec in self.mocks[d.id].requests:
                exp["requests"][(d.group, d.id)] += 1
                if rec.fault is not None and rec.fault.kind in BEFORE_HEADERS:
                    exp["failures"][(d.group, d.id, FAILURE_CLASS[rec.fault.kind])] += 1
        by_rid = {r.rid: r for r in self.results}
        for rid, tried in attempts.items():
            res = by_rid.get(rid)
            for i in range(1, len(tried)):
                prev, cur = group_of[tried[i - 1][0]], group_of[tried[i][0]]
                if prev == cur:
                    exp["retries"][(cur, tried[i][0])] += 1
                elif res is not None:
                    exp["fallbacks"][(cur, res.model)] += 1
        for res in self.results:
            served = res.headers.get("x-llm-router-deployment")
            if served is None and res.outcome == "error_openai":
                exp["rejected"][(openai_error(res) or {}).get("code")] += 1
            if served is not None and res.usage is not None and res.outcome in ("ok_json", "ok_stream"):
                exp["input_tokens"][(group_of[served], served)] += res.usage[0]
                exp["output_tokens"][(group_of[served], served)] += res.usage[1]
            if served is not None and res.stream and res.body:
                exp["ttft"][(group_of[served], served)] += 1
        return exp

    def compare(self, name: str, labels: dict, expected: float, actual: float, rel: str = "==") -> None:
        ok = {"==": actual == expected, "<=": actual <= expected, ">=": actual >= expected}[rel]
        self.rows.append({"metric": name, "labels": labels, "relation": rel, "expected": expected, "actual": actual,
                          "ok": ok})
        if not ok:
            self.violations.append({"what": f"counter {name}{labels}: {actual:g} is not {rel} {expected:g}"})

    def scrape(self) -> Scrape:
        with urllib.request.urlopen(self.envoy.admin_url + "/stats/prometheus", timeout=5) as r:
            return Scrape(r.read().decode())

    def poll(self, until_true, timeout: float) -> Scrape:
        deadline = time.monotonic() + timeout
        while True:
            s = self.scrape()
            if until_true(s) or time.monotonic() > deadline:
                return s
            time.sleep(0.25)

    def check_counters(self, attempts: dict, ran_for: float) -> None:
        exp = self.expected_counters(attempts)
        deps = [(d.group, d.id) for d in DEPLOYMENTS]

        def hist_done(s: Scrape) -> bool:
            return all(s.count("llm_router_request_duration_ms_count", model_group=g, deployment=d)
                       == s.count("llm_router_requests_total", model_group=g, deployment=d) for g, d in deps)

        def idle(s: Scrape) -> bool:
            return all(s.count("llm_router_in_flight", model_group=g, deployment=d) == 0 for g, d in deps)

        s = self.poll(lambda s: idle(s) and hist_done(s), timeout=8)
        for g, d in deps:
            lab = {"model_group": g, "deployment": d}
            self.compare("llm_router_requests_total", lab, exp["requests"][(g, d)],
                         s.count("llm_router_requests_total", **lab))
            self.compare("llm_router_in_flight", lab, 0, s.count("llm_router_in_flight", **lab))
            self.compare("llm_router_retries_total", lab, exp["retries"][(g, d)],
                         s.count("llm_router_retries_total", **lab))
            self.compare("llm_router_input_tokens_total", lab, exp["input_tokens"][(g, d)],
                         s.count("llm_router_input_tokens_total", **lab))
            self.compare("llm_router_output_tokens_total", lab, exp["output_tokens"][(g, d)],
                         s.count("llm_router_output_tokens_total", **lab))
            self.compare("llm_router_request_duration_ms_count", lab, s.count("llm_router_requests_total", **lab),
                         s.count("llm_router_request_duration_ms_count", **lab))
            self.compare("llm_router_time_to_first_token_ms_count", lab, exp["ttft"][(g, d)],
                         s.count("llm_router_time_to_first_token_ms_count", **lab))
            fails = 0
            for cls in FAILURE_CLASSES:
                want = exp["failures"][(g, d, cls)]
                got = s.count("llm_router_failures_total", **lab, **{"class": cls})
                fails += got
                if want or got:
                    self.compare("llm_router_failures_total", {**lab, "class": cls}, want, got)
            cooldowns = s.count("llm_router_cooldowns_total", **lab)
            self.compare("llm_router_cooldowns_total", lab, fails, cooldowns, "<=")
            rate_limited = exp["failures"][(g, d, "rate_limit")]
            # Lower bound: a 429 cools at once when the group has other deployments; and within one 60 s failure
            # window (a run shorter than that) the failure after allowed_fails starts a cooldown unless one runs.
            if (rate_limited and len(GROUPS[g]) > 1) or (fails > self.args.allowed_fails and ran_for < 55):
                self.compare("llm_router_cooldowns_total", lab, 1, cooldowns, ">=")
        # Every series the router exported is one we expected (no unexpected class, group or deployment).
        for labels, v in s.series("llm_router_failures_total"):
            if (labels.get("model_group"), labels.get("deployment")) not in deps or \
                    labels.get("class") not in FAILURE_CLASSES:
                self.compare("llm_router_failures_total", labels, 0, v)
        fb_seen = {(lab.get("model_group"), lab.get("fallback_from")): v
                   for lab, v in s.series("llm_router_fallbacks_total")}
        for key in sorted(set(fb_seen) | set(exp["fallbacks"]), key=str):
            self.compare("llm_router_fallbacks_total", {"model_group": key[0], "fallback_from": key[1]},
                         exp["fallbacks"][key], fb_seen.get(key, 0))
        rj_seen = {lab.get("error_code"): v for lab, v in s.series("llm_router_rejected_total")}
        for code in sorted(set(rj_seen) | set(exp["rejected"]), key=str):
            self.compare("llm_router_rejected_total", {"error_code": code}, exp["rejected"][code],
                         rj_seen.get(code, 0))
        # Cooling gauges: back to 0 once the longest cooldown (cooldown_time, or a Retry-After) is over.
        wait = max([self.args.cooldown] + list(self.args.retry_after)) + 3

        def cooled(s: Scrape) -> bool:
            return all(s.count("llm_router_deployment_cooling", model_group=g, deployment=d) == 0 for g, d in deps)

        s = self.poll(cooled, timeout=wait)
        for g, d in deps:
            lab = {"model_group": g, "deployment": d}
            self.compare("llm_router_deployment_cooling", lab, 0, s.count("llm_router_deployment_cooling", **lab))

    # -- Envoy health and log --
    def check_envoy(self) -> dict:
        info: dict = {"log": str(self.envoy.log_path)}
        if self.envoy.proc.poll() is not None:
            self.violations.append({"what": f"Envoy exited with code {self.envoy.proc.returncode}",
                                    "log_tail": self.envoy.log_tail(30)})
            info["up"] = False
        else:
            try:
                with urllib.request.urlopen(self.envoy.admin_url + "/ready", timeout=5) as r:
                    info["up"] = r.status == 200
            except OSError as e:
                info["up"] = False
                info["ready_error"] = str(e)
            if not info["up"]:
                self.violations.append({"what": "Envoy admin /ready is not 200"})
        text = self.envoy.log_text()
        panic = re.compile("|".join(WASM_PANIC_PATTERNS))
        bad = [ln for ln in text.splitlines() if panic.search(ln)]
        if bad:
            self.violations.append({"what": f"{len(bad)} wasm panic/failure line(s) in Envoy's log",
                                    "lines": bad[:20]})
        levels = Counter()
        for ln in text.splitlines():
            m = re.search(r"\]\[(warning|error|critical)\]", ln)
            if m and "llm-router" in ln:
                levels[m.group(1)] += 1
        info["router_log_lines"] = dict(levels)
        info["panic_lines"] = len(bad)
        return info


# ---- summary -------------------------------------------------------------------------------------------------------

def percentile(values: list, p: float) -> Optional[float]:
    if not values:
        return None
    v = sorted(values)
    k = max(0, min(len(v) - 1, math.ceil(p / 100 * len(v)) - 1))
    return v[k]


def summarize(soak: Soak, ran_for: float, envoy_info: dict) -> dict:
    a = soak.args
    results = soak.results
    outcomes = Counter(r.outcome for r in results)
    lat = [r.elapsed for r in results]
    faults = Counter()
    faults_by_dep: dict = {}
    received = 0
    for d in DEPLOYMENTS:
        recs = soak.mocks[d.id].requests
        received += len(recs)
        c = Counter(str(r.fault) if r.fault else "none" for r in recs)
        faults_by_dep[d.id] = dict(sorted(c.items()))
        faults.update(r.fault.kind for r in recs if r.fault)
    errors = Counter()
    for r in results:
        if r.outcome in ("error_openai", "error_provider"):
            err = openai_error(r) or {}
            src = "router" if "x-llm-router-deployment" not in r.headers else "upstream"
            errors[f"{r.status} {err.get('code') or '-'} ({src}, {r.outcome.split('_')[1]})"] += 1
    return {
        "ok": not soak.violations,
        "settings": {"duration_s": a.duration, "clients": a.clients, "fault_rate": a.fault_rate, "seed": a.seed,
                     "concurrency": a.concurrency, "deployment_timeout_s": a.timeout,
                     "stall_s": a.timeout + a.stall_extra, "hard_timeout_s": a.hard_timeout,
                     "allowed_fails": a.allowed_fails, "cooldown_time_s": a.cooldown, "num_retries": a.num_retries,
                     "retry_after_s": list(a.retry_after), "latency_s": list(a.latency),
                     "stream_delay_s": a.stream_delay, "client_backoff_s": a.client_backoff,
                     "strict_openai_errors": a.strict_openai_errors},
        "ran_for_s": round(ran_for, 2),
        "requests": len(results),
        "requests_per_s": round(len(results) / ran_for, 1) if ran_for else None,
        "outcomes": dict(sorted(outcomes.items())),
        "outcomes_by_model": {m: dict(sorted(Counter(r.outcome for r in results if r.model == m).items()))
                              for m, _ in MODEL_MIX},
        "errors": dict(sorted(errors.items())),
        "latency_s": {"p50": percentile(lat, 50), "p99": percentile(lat, 99), "max": max(lat) if lat else None},
        "attempts_received_by_mocks": received,
        "late_fault_free_attempts": len(getattr(soak, "late", ())),
        "faults_injected": {k: faults[k] for k in FAULT_KINDS},
        "faults_by_deployment": faults_by_dep,
        "counters": soak.rows,
        "envoy": envoy_info,
        "violations": soak.violations,
    }


def human(summary: dict) -> str:
    out = []
    s = summary["settings"]
    out.append(f"fault soak: {summary['requests']} requests in {summary['ran_for_s']} s "
               f"({summary['requests_per_s']}/s), {s['clients']} clients, fault rate {s['fault_rate']}, "
               f"seed {s['seed']}, Envoy --concurrency {s['concurrency']}")
    lat = summary["latency_s"]
    fmt = lambda v: "-" if v is None else f"{v * 1000:.0f} ms"  # noqa: E731
    out.append(f"latency: p50 {fmt(lat['p50'])}, p99 {fmt(lat['p99'])}, max {fmt(lat['max'])}")
    out.append("outcomes:")
    for k, v in summary["outcomes"].items():
        out.append(f"  {k:<20} {v:>7}{'' if k in ACCEPTED else '   <-- violation'}")
    for m, c in summary["outcomes_by_model"].items():
        out.append(f"  model {m:<14} " + ", ".join(f"{k} {v}" for k, v in c.items()))
    if summary["errors"]:
        out.append("errors the clients got:")
        for k, v in summary["errors"].items():
            out.append(f"  {k:<45} {v:>7}")
    late = summary["late_fault_free_attempts"]
    out.append(f"attempts the mocks received: {summary['attempts_received_by_mocks']}"
               f"{f' ({late} fault-free ones answered after ~the deployment timeout)' if late else ''}; "
               f"faults injected:")
    for k, v in summary["faults_injected"].items():
        out.append(f"  {k:<22} {v:>7}")
    out.append("counters (llm_router_*, Envoy admin) vs what mocks and clients saw:")
    out.append(f"  {'metric':<40} {'labels':<40} {'rel':<3} {'expected':>9} {'actual':>9}")
    for r in summary["counters"]:
        if not r["ok"] or r["expected"] or r["actual"]:
            labels = ",".join(f"{v}" for v in r["labels"].values())
            out.append(f"  {r['metric'].replace('llm_router_', ''):<40} {labels:<40} {r['relation']:<3} "
                       f"{r['expected']:>9g} {r['actual']:>9g}{'' if r['ok'] else '   <-- MISMATCH'}")
    zero = Counter(r["metric"].replace("llm_router_", "") for r in summary["counters"]
                   if r["ok"] and not r["expected"] and not r["actual"])
    if zero:
        out.append("  and 0 == 0 for: " + ", ".join(f"{m} ({n})" for m, n in sorted(zero.items())))
    e = summary["envoy"]
    out.append(f"envoy: up={e.get('up')} wasm panic lines={e.get('panic_lines')} "
               f"router warn/error lines={e.get('router_log_lines')} log={e.get('log')}")
    v = summary["violations"]
    if v:
        out.append(f"VIOLATIONS: {len(v)}")
        kinds = Counter(x["what"].split(":")[0] for x in v)
        for k, n in kinds.most_common():
            out.append(f"  {n:>5} x {k}")
        out.append("first violations:")
        for x in v[:8]:
            out.append("  " + json.dumps(x)[:1500])
    else:
        out.append("OK: no violations")
    return "\n".join(out)


def main(argv: Optional[list] = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/soak", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=COUNTERS)
    ap.add_argument("--duration", type=float, default=60, help="seconds clients keep sending (default 60)")
    ap.add_argument("--clients", type=int, default=32, help="concurrent clients (default 32)")
    ap.add_argument("--fault-rate", type=float, default=0.3, help="share of attempts a mock faults (default 0.3)")
    ap.add_argument("--seed", type=int, default=1, help="PRNG seed of the mocks' faults and the clients' mix")
    ap.add_argument("--json", nargs="?", const="-", metavar="PATH",
                    help="write the machine-readable summary to PATH (no PATH: to stdout, instead of the text)")
    ap.add_argument("--concurrency", type=int, default=2, help="Envoy worker threads (default 2)")
    ap.add_argument("--timeout", type=float, default=2.0, help="deployments' timeout, seconds (default 2)")
    ap.add_argument("--stall-extra", type=float, default=1.5,
                    help="a stall lasts timeout + this many seconds (default 1.5)")
    ap.add_argument("--hard-timeout", type=float, default=30.0,
                    help="client-side limit per request; over it counts as hung (default 30)")
    ap.add_argument("--allowed-fails", type=int, default=3)
    ap.add_argument("--cooldown", type=float, default=0.5, help="router_settings.cooldown_time (default 0.5)")
    ap.add_argument("--num-retries", type=int, default=2)
    ap.add_argument("--retry-after", type=int, nargs="+", default=[1], help="Retry-After values (s) of 429s (default 1)")
    ap.add_argument("--latency", type=float, nargs=2, default=[0.05, 0.5], metavar=("LO", "HI"),
                    help="mock answers wait LO..HI s before their headers, like a model's first token "
                         "(default 0.05 0.5)")
    ap.add_argument("--stream-delay", type=float, default=0.1, help="seconds between a mock's SSE events (0.1)")
    ap.add_argument("--strict-openai-errors", action="store_true",
                    help="count an Azure/Anthropic deployment's own error passed through (error_provider) as a "
                         "violation: only OpenAI-shaped errors are then accepted")
    ap.add_argument("--client-backoff", type=float, default=1.0,
                    help="after the router's own 429 a client waits min(retry-after, this) x U(0.5, 1) s before "
                         "its next request, as an SDK would (0: no wait; default 1)")
    args = ap.parse_args(argv)
    if not 0 <= args.fault_rate <= 1 or args.duration <= 0 or args.clients < 1:
        ap.error("need 0 <= --fault-rate <= 1, --duration > 0, --clients >= 1")

    soak = Soak(args)
    try:
        try:
            soak.start()
        except (EnvoyError, OSError) as e:
            print(f"scripts/soak: could not start: {e}", file=sys.stderr)
            return 2
        if args.json != "-":
            print(f"soak: Envoy up (logs in {soak.envoy.dir}); {args.clients} clients for {args.duration:g} s, "
                  f"fault rate {args.fault_rate}, seed {args.seed}", flush=True)
        ran_for = soak.run_clients()
        attempts = soak.attempts_by_request()
        soak.reconcile(attempts)
        soak.check_counters(attempts, ran_for)
        envoy_info = soak.check_envoy()
        summary = summarize(soak, ran_for, envoy_info)
        (soak.envoy.dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        if args.json == "-":
            print(json.dumps(summary, indent=2, default=str))
        else:
            if args.json:
                with open(args.json, "w") as f:
                    json.dump(summary, f, indent=2, default=str)
            print(human(summary))
            print(f"summary: {soak.envoy.dir / 'summary.json'}")
        return 0 if summary["ok"] else 1
    finally:
        soak.stop()


if __name__ == "__main__":
    sys.exit(main())
