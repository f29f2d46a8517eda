"""Mock LLM providers that speak the real wire shapes (OpenAI, Azure OpenAI, Anthropic).

A `MockProvider(kind)` is a small threaded HTTP/1.1 server on 127.0.0.1 (ephemeral port unless told)
that records every request and answers like the real provider would:

* openai:    POST .../chat/completions, .../completions, .../embeddings, .../responses
             (under any path prefix: /v1/chat/completions, /openai/v1/chat/completions, ...)
* azure:     POST /openai/deployments/{deployment}/{chat/completions|completions|embeddings}?api-version=...
             (404 "Resource not found" without api-version, like Azure)
* anthropic: POST /v1/messages (Messages API) and .../chat/completions (OpenAI-compatible endpoint)

Any other path gets a 200 JSON echo (`{"object": "mock.echo", ...}`), which is what pass-through tests use.

Responses echo the request's `model` (Azure: the deployment from the path) and carry
`x-mock-provider: <kind>` and `x-mock-name: <name>`. A body with `"stream": true` gets an SSE stream
written with hand-made chunked transfer encoding, one flush per event, `stream_delay` seconds apart.

Scripting: `respond(status, headers, body, delay, stream_delay, times, close)` queues a behaviour for
the next `times` requests (None: until changed); `respond_when(predicate, status, ...)` answers every request
`predicate(Recorded)` accepts that way, before the queue (e.g. 401 when a header is present); `reset()`
forgets behaviours, rules, random faults and recorded requests.
`respond(truncate="reset"|"end")` sends the headers and about half of the body, then resets the connection
("reset", a TCP RST) or ends the body cleanly ("end": a stream without its last events and `[DONE]`).

Random faults (the fault soak, tests/soak/): `inject_faults(rate, seed)` makes each request that no scripted
behaviour claims fail with probability `rate`, with one of FAULT_KINDS picked by a PRNG seeded from `seed` and the
mock's name: 429 with Retry-After, 500/502/503, connection reset before the headers, reset after the headers in the
middle of the body, a stall longer than the deployment's timeout, a truncated SSE stream (streams only). Each
`Recorded` says which fault it got (`.fault`, None for a normal answer); `faults_off()` stops injecting.

Standalone: python3 -m tests.e2e.support.mock_provider --kind openai --port 18001 [--name x] [--stream-delay 0.2]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import signal
import socket
import struct
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional
from urllib.parse import parse_qs, urlsplit

KINDS = ("openai", "azure", "anthropic")

# Random faults (inject_faults). The first four fail before any response byte reaches Envoy, the last two after the
# response headers went out (the client has already seen a 200).
FAULT_KINDS = ("rate_limit", "server_error", "reset_before_headers", "stall", "reset_mid_body", "truncated_sse")
BEFORE_HEADERS = ("rate_limit", "server_error", "reset_before_headers", "stall")
AFTER_HEADERS = ("reset_mid_body", "truncated_sse")
STREAM_ONLY = ("truncated_sse",)


@dataclass(frozen=True)
class Fault:
    """One injected fault: its kind (FAULT_KINDS), the status sent (rate_limit/server_error) and Retry-After."""

    kind: str
    status: Optional[int] = None
    retry_after: Optional[int] = None
    close: Optional[str] = None  # resets: "rst" (TCP RST) or "fin" (the connection just closes)

    def __str__(self) -> str:
        return self.kind + (f":{self.status}" if self.status else "") + (f"/{self.close}" if self.close else "")


@dataclass
class FaultPlan:
    rate: float
    rng: Any  # random.Random
    kinds: tuple = FAULT_KINDS
    stall: float = 3.0  # seconds before the headers (make it longer than the deployment's timeout)
    retry_after: tuple = (1, 2)  # Retry-After seconds, one picked per 429
    server_statuses: tuple = (500, 502, 503)
    latency: tuple = (0.0, 0.0)  # seconds before the headers of an answer that is not stalled (uniform range)
    stream_delay: float = 0.0  # seconds between SSE events (normal and cut streams)

    def pick(self, stream: bool) -> Optional[Fault]:
        if self.rng.random() >= self.rate:
            return None
        kinds = [k for k in self.kinds if stream or k not in STREAM_ONLY]
        if not kinds:
            return None
        kind = self.rng.choice(kinds)
        if kind == "rate_limit":
            return Fault(kind, 429, self.rng.choice(self.retry_after))
        if kind == "server_error":
            return Fault(kind, self.rng.choice(self.server_statuses))
        if kind in ("reset_before_headers", "reset_mid_body"):
            return Fault(kind, close=self.rng.choice(("rst", "fin")))
        return Fault(kind)

    def behaviour(self, f: Optional[Fault]) -> "Behaviour":
        delay = self.rng.uniform(*self.latency) if self.latency[1] > 0 else 0.0
        if f is None:
            return Behaviour(delay=delay, stream_delay=self.stream_delay)
        if f.kind == "rate_limit":
            return Behaviour(status=429, headers={"retry-after": str(f.retry_after)})
        if f.kind == "server_error":
            return Behaviour(status=f.status or 500)
        if f.kind == "reset_before_headers":
            return Behaviour(close=True, rst=f.close == "rst")
        if f.kind == "stall":
            return Behaviour(delay=self.stall)
        if f.kind == "reset_mid_body":
            return Behaviour(delay=delay, stream_delay=self.stream_delay, truncate="reset", rst=f.close == "rst")
        if f.kind == "truncated_sse":
            return Behaviour(delay=delay, stream_delay=self.stream_delay, truncate="end")
        raise ValueError(f.kind)


@dataclass(frozen=True)
class Recorded:
    """One request as the mock received it."""

    method: str
    path: str  # including the query string
    headers: dict  # lowercased names; repeated headers joined by ", "
    body: bytes
    json: Any  # parsed body, or None when it is not JSON
    received_at: float  # time.monotonic()
    fault: Optional[Fault] = None  # the injected fault (inject_faults), None for a normal answer
    # "headers_at": time.monotonic() when the response headers went out (absent: none were sent).
    timing: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def path_only(self) -> str:
        return urlsplit(self.path).path

    @property
    def query(self) -> dict:
        return {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}

    @property
    def model(self) -> Optional[str]:
        return self.json.get("model") if isinstance(self.json, dict) else None

    def header(self, name: str) -> Optional[str]:
        return self.headers.get(name.lower())


@dataclass
class Behaviour:
    status: int = 200
    headers: Optional[dict] = None
    body: Any = None  # dict/list -> JSON, bytes/str -> as is, None -> realistic default
    delay: float = 0.0  # seconds before the response headers
    stream_delay: float = 0.0  # seconds between SSE events
    close: bool = False  # close the connection without answering
    times: Optional[int] = None  # None: until changed
    truncate: Optional[str] = None  # "reset": headers + half the body, then reset; "end": half the body, clean end
    rst: bool = False  # close / truncate="reset": a TCP RST (SO_LINGER 0) instead of a FIN


@dataclass
class _State:
    lock: threading.Condition = field(default_factory=threading.Condition)
    requests: list = field(default_factory=list)
    script: list = field(default_factory=list)
    rules: list = field(default_factory=list)  # (predicate, Behaviour), checked before the script
    connections: set = field(default_factory=set)
    faults: Optional[FaultPlan] = None


def _hex(n: int = 24) -> str:
    return uuid.uuid4().hex[:n]


def _approx_tokens(value: Any) -> int:
    """A stable, rough token count: one per 4 characters of the JSON text, at least 1."""
    return max(1, len(json.dumps(value, ensure_ascii=False)) // 4)


class MockProvider:
    def __init__(self, kind: str, name: Optional[str] = None, host: str = "127.0.0.1", port: int = 0,
                 start: bool = True, verbose: bool = False):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        self.kind = kind
        self.name = name or kind
        self.host = host
        self.verbose = verbose
        self._state = _State()
        self._server = _Server((host, port), _Handler, self)
        self.port = self._server.server_address[1]
        self._thread: Optional[threading.Thread] = None
        if start:
            self.start()

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> "MockProvider":
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                            name=f"mock-{self.name}", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread = None
        self._server.server_close()
        with self._state.lock:
            conns = list(self._state.connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> "MockProvider":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- addresses -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def authority(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def cluster_name(self) -> str:
        """The Istio-style cluster name the router derives from an api_base on this mock."""
        return f"outbound|{self.port}||{self.host}"

    # ---- recorded requests -----------------------------------------------------------------
    @property
    def requests(self) -> list:
        with self._state.lock:
            return list(self._state.requests)

    @property
    def count(self) -> int:
        with self._state.lock:
            return len(self._state.requests)

    def last(self) -> Recorded:
        with self._state.lock:
            if not self._state.requests:
                raise AssertionError(f"mock {self.name!r} received no request")
            return self._state.requests[-1]

    def clear(self) -> None:
        with self._state.lock:
            self._state.requests.clear()

    def wait_for(self, n: int, timeout: float = 5.0) -> list:
        """Wait until at least `n` requests were received; return them all."""
        deadline = time.monotonic() + timeout
        with self._state.lock:
            while len(self._state.requests) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"mock {self.name!r} received {len(self._state.requests)} "
                                         f"request(s) within {timeout}s, expected {n}")
                self._state.lock.wait(left)
            return list(self._state.requests)

    # ---- scripting -------------------------------------------------------------------------
    def respond(self, status: int = 200, headers: Optional[dict] = None, body: Any = None, delay: float = 0.0,
                stream_delay: float = 0.0, times: Optional[int] = None, close: bool = False,
                truncate: Optional[str] = None) -> "MockProvider":
        """Queue a behaviour for the next `times` requests (None: every request until changed)."""
        if truncate not in (None, "reset", "end"):
            raise ValueError(f"truncate must be None, 'reset' or 'end', not {truncate!r}")
        b = Behaviour(status, dict(headers or {}), body, delay, stream_delay, close, times, truncate,
                      rst=truncate == "reset")
        with self._state.lock:
            # An open-ended behaviour at the tail would never end: the new one replaces it.
            while self._state.script and self._state.script[-1].times is None:
                self._state.script.pop()
            self._state.script.append(b)
        return self

    def respond_when(self, predicate, status: int = 200, headers: Optional[dict] = None, body: Any = None,
                     delay: float = 0.0) -> "MockProvider":
        """Answer every request for which `predicate(Recorded)` is true this way (until reset), before the
        queued behaviours; other requests consume the queue as usual."""
        with self._state.lock:
            self._state.rules.append((predicate, Behaviour(status, dict(headers or {}), body, delay)))
        return self

    def reset(self) -> None:
        """Forget scripted behaviours, rules, random faults and recorded requests."""
        with self._state.lock:
            self._state.script.clear()
            self._state.rules.clear()
            self._state.requests.clear()
            self._state.faults = None

    def inject_faults(self, rate: float, seed: Any = 0, *, kinds: tuple = FAULT_KINDS, stall: float = 3.0,
                      retry_after: tuple = (1, 2), server_statuses: tuple = (500, 502, 503),
                      latency: tuple = (0.0, 0.0), stream_delay: float = 0.0) -> "MockProvider":
        """From now on, each request no scripted behaviour claims gets a random fault with probability `rate`
        (see FAULT_KINDS); the PRNG is seeded with (`seed`, the mock's name), so a run is reproducible up to the
        order in which concurrent requests arrive. `stall`: seconds a stalled request waits before its headers.
        `latency` (lo, hi): seconds before the headers of the other answers that carry a body (success and cut
        ones; errors and resets are immediate); `stream_delay`: seconds between their SSE events."""
        unknown = set(kinds) - set(FAULT_KINDS)
        if unknown or not 0.0 <= rate <= 1.0:
            raise ValueError(f"bad fault plan: rate {rate}, unknown kinds {sorted(unknown)}")
        plan = FaultPlan(rate, random.Random(f"{seed}/{self.name}"), tuple(kinds), stall, tuple(retry_after),
                         tuple(server_statuses), tuple(latency), stream_delay)
        with self._state.lock:
            self._state.faults = plan
        return self

    def faults_off(self) -> "MockProvider":
        with self._state.lock:
            self._state.faults = None
        return self

    def _next_behaviour(self, rec: Optional[Recorded] = None, stream: bool = False) -> tuple:
        """(behaviour, injected fault or None): a matching rule first, then a scripted behaviour, else a random
        fault, else normal."""
        with self._state.lock:
            if rec is not None:
                for predicate, b in self._state.rules:
                    if predicate(rec):
                        return b, None
            if not self._state.script:
                plan = self._state.faults
                if plan is None:
                    return Behaviour(), None
                fault = plan.pick(stream)
                return plan.behaviour(fault), fault
            b = self._state.script[0]
            if b.times is not None:
                b.times -= 1
                if b.times <= 0:
                    self._state.script.pop(0)
            return b, None

    def _record(self, rec: Recorded) -> None:
        with self._state.lock:
            self._state.requests.append(rec)
            self._state.lock.notify_all()

    def __repr__(self) -> str:
        return f"MockProvider({self.kind!r}, name={self.name!r}, url={self.url!r})"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, addr, handler, mock: MockProvider):
        self.mock = mock
        super().__init__(addr, handler)

    def handle_error(self, request, client_address) -> None:
        # A peer that reset its connection (e.g. Envoy after a per-try timeout) is not the mock's error.
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)


_OPENAI_ENDPOINT = re.compile(r"^(?P<prefix>.*?)/(?P<endpoint>chat/completions|completions|embeddings|responses)$")
_AZURE_ENDPOINT = re.compile(
    r"^.*/openai/deployments/(?P<deployment>[^/]+)/(?P<endpoint>chat/completions|completions|embeddings)$")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mock-llm/1.0"
    sys_version = ""
    server: _Server

    # ---- plumbing --------------------------------------------------------------------------
    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without this, Nagle + delayed ACK add ~40 ms a response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.mock._state.lock:
            self.server.mock._state.connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.mock._state.lock:
                self.server.mock._state.connections.discard(self.connection)

    def log_message(self, fmt, *args) -> None:
        if self.server.mock.verbose:
            sys.stderr.write(f"[{self.server.mock.name}] {fmt % args}\n")

    def do_POST(self):
        self._handle()

    do_GET = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_POST

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            out = bytearray()
            while True:
                line = self.rfile.readline()
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _headers_dict(self) -> dict:
        out: dict = {}
        for k, v in self.headers.items():
            k = k.lower()
            out[k] = f"{out[k]}, {v}" if k in out else v
        return out

    # ---- one request -----------------------------------------------------------------------
    def _handle(self) -> None:
        mock = self.server.mock
        body = self._read_body()
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        req = parsed if isinstance(parsed, dict) else {}
        self._rec = Recorded(self.command, self.path, self._headers_dict(), body, parsed, time.monotonic())
        b, fault = mock._next_behaviour(self._rec, stream=req.get("stream") is True)
        self._rec = replace(self._rec, fault=fault)
        mock._record(self._rec)
        if b.close:
            self._drop(b.rst)
            return
        if b.delay:
            time.sleep(b.delay)
        try:
            self._answer(b, req)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def end_headers(self) -> None:
        super().end_headers()
        rec = getattr(self, "_rec", None)
        if rec is not None:
            rec.timing.setdefault("headers_at", time.monotonic())

    def _drop(self, rst: bool) -> None:
        """Close the connection now: a FIN (shutdown), or with `rst` a TCP RST (SO_LINGER 0, then close)."""
        self.close_connection = True
        try:
            if rst:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
            else:
                self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _answer(self, b: Behaviour, req: dict) -> None:
        mock = self.server.mock
        route = self._route(req)
        if b.body is not None:
            payload = b.body
        elif b.status >= 400:
            payload = _error_body(mock.kind, b.status, req.get("model"))
        elif route is None:
            payload = {"object": "mock.echo", "method": self.command, "path": self.path, "provider": mock.kind,
                       "name": mock.name}
        elif route == "azure_missing_api_version":
            self._send(404, {"error": {"code": "404", "message": "Resource not found"}}, b.headers)
            return
        else:
            endpoint, model = route
            if req.get("stream") is True and endpoint != "embeddings":
                self._stream(endpoint, model, req, b)
                return
            payload = _completion(mock.kind, endpoint, model, req, mock.name)
        self._send(b.status, payload, b.headers, b.truncate, b.rst)

    def _route(self, req: dict):
        """(endpoint, model) for an LLM endpoint of this kind, None for anything else."""
        mock = self.server.mock
        if self.command != "POST":
            return None
        parts = urlsplit(self.path)
        model = req.get("model")
        if mock.kind == "azure":
            m = _AZURE_ENDPOINT.match(parts.path)
            if not m:
                return None
            if "api-version" not in parse_qs(parts.query):
                return "azure_missing_api_version"
            return m.group("endpoint").replace("chat/completions", "chat"), m.group("deployment")
        if mock.kind == "anthropic" and parts.path.endswith("/v1/messages"):
            return "messages", model
        m = _OPENAI_ENDPOINT.match(parts.path)
        if not m:
            return None
        endpoint = m.group("endpoint")
        if mock.kind == "anthropic" and endpoint != "chat/completions":
            return None
        return endpoint.replace("chat/completions", "chat"), model

    def _common_headers(self, extra: Optional[dict]) -> list:
        mock = self.server.mock
        hdrs = {"x-mock-provider": mock.kind, "x-mock-name": mock.name}
        if mock.kind == "openai":
            hdrs["x-request-id"] = "req_" + _hex()
        elif mock.kind == "anthropic":
            hdrs["request-id"] = "req_" + _hex()
        elif mock.kind == "azure":
            hdrs["apim-request-id"] = str(uuid.uuid4())
        for k, v in (extra or {}).items():
            hdrs[k.lower()] = str(v)
        return list(hdrs.items())

    def _send(self, status: int, payload: Any, extra_headers: Optional[dict], truncate: Optional[str] = None,
              rst: bool = False) -> None:
        if isinstance(payload, (dict, list)):
            data = json.dumps(payload).encode()
            ctype = "application/json"
        else:
            data = payload.encode() if isinstance(payload, str) else bytes(payload)
            ctype = "application/octet-stream"
        headers = self._common_headers(extra_headers)
        self.send_response(status)
        if not any(k == "content-type" for k, _ in headers):
            self.send_header("Content-Type", ctype)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if truncate is not None:  # headers, then half the body, then the connection ends (short of its length)
            self.wfile.flush()
            self.wfile.write(data[:len(data) // 2])
            self.wfile.flush()
            self._drop(rst)
            return
        if self.command != "HEAD":
            self.wfile.write(data)
        self.wfile.flush()

    def _stream(self, endpoint: str, model: str, req: dict, b: Behaviour) -> None:
        mock = self.server.mock
        events = _stream_events(mock.kind, endpoint, model, req, mock.name)
        self.send_response(b.status)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        for k, v in self._common_headers(b.headers):
            self.send_header(k, v)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        if b.truncate is not None:  # the first half of the events: no finish_reason, no usage, no [DONE]
            events = events[:max(1, (len(events) - 1) // 2)]
        for i, event in enumerate(events):
            if i and b.stream_delay:
                time.sleep(b.stream_delay)
            data = event.encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        if b.truncate == "reset":
            self._drop(b.rst)
            return
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


# ---- response shapes -------------------------------------------------------------------------

def _reply_text(kind: str, name: str) -> str:
    return f"Hello from the {kind} mock ({name})." if name != kind else f"Hello from the {kind} mock."


def _pieces(text: str) -> list:
    words = text.split(" ")
    third = max(1, len(words) // 3)
    chunks = [" ".join(words[:third]), " ".join(words[third:2 * third]), " ".join(words[2 * third:])]
    return [chunks[0]] + [" " + c for c in chunks[1:] if c]


def _embedding(text: str, dims: int = 8) -> list:
    digest = hashlib.sha256(text.encode()).digest()
    return [round((digest[i] - 128) / 128.0, 6) for i in range(dims)]


def _completion(kind: str, endpoint: str, model: Any, req: dict, name: str) -> dict:
    text = _reply_text(kind, name)
    now = int(time.time())
    prompt_tokens = _approx_tokens(req.get("messages") or req.get("prompt") or req.get("input") or "")
    completion_tokens = _approx_tokens(text)
    if endpoint == "messages":
        return {"id": "msg_" + _hex(), "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
                "usage": {"input_tokens": prompt_tokens, "output_tokens": completion_tokens}}
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
             "total_tokens": prompt_tokens + completion_tokens}
    if endpoint == "chat":
        return {"id": "chatcmpl-" + _hex(), "object": "chat.completion", "created": now, "model": model,
                "system_fingerprint": "fp_mock",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                             "logprobs": None, "finish_reason": "stop"}],
                "usage": usage}
    if endpoint == "completions":
        return {"id": "cmpl-" + _hex(), "object": "text_completion", "created": now, "model": model,
                "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": "stop"}],
                "usage": usage}
    if endpoint == "embeddings":
        inputs = req.get("input", "")
        inputs = inputs if isinstance(inputs, list) else [inputs]
        return {"object": "list", "model": model,
                "data": [{"object": "embedding", "index": i, "embedding": _embedding(str(x))}
                         for i, x in enumerate(inputs)],
                "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}
    if endpoint == "responses":
        return _response_object(model, text, prompt_tokens, completion_tokens, "completed")
    raise ValueError(endpoint)


def _response_object(model, text, input_tokens, output_tokens, status) -> dict:
    return {"id": "resp_" + _hex(), "object": "response", "created_at": int(time.time()), "status": status,
            "model": model,
            "output": [{"type": "message", "id": "msg_" + _hex(), "status": status, "role": "assistant",
                        "content": [{"type": "output_text", "text": text, "annotations": []}]}]
            if status == "completed" else [],
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens,
                      "total_tokens": input_tokens + output_tokens}
            if status == "completed" else None}


def _sse(data: Any, event: Optional[str] = None) -> str:
    payload = data if isinstance(data, str) else json.dumps(data)
    return (f"event: {event}\n" if event else "") + f"data: {payload}\n\n"


def _stream_events(kind: str, endpoint: str, model: Any, req: dict, name: str) -> list:
    """The SSE events (each one complete string) for a streamed answer."""
    text = _reply_text(kind, name)
    pieces = _pieces(text)
    now = int(time.time())
    prompt_tokens = _approx_tokens(req.get("messages") or req.get("prompt") or req.get("input") or "")
    completion_tokens = _approx_tokens(text)
    if endpoint == "messages":
        msg_id = "msg_" + _hex()
        events = [_sse({"type": "message_start", "message": {
            "id": msg_id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": prompt_tokens, "output_tokens": 1}}}, "message_start"),
            _sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                 "content_block_start")]
        events += [_sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}},
                        "content_block_delta") for p in pieces]
        events += [_sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
                   _sse({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                         "usage": {"output_tokens": completion_tokens}}, "message_delta"),
                   _sse({"type": "message_stop"}, "message_stop")]
        return events
    if endpoint == "responses":
        created = _response_object(model, "", 0, 0, "in_progress")
        done = _response_object(model, text, prompt_tokens, completion_tokens, "completed")
        done["id"] = created["id"]
        events = [_sse({"type": "response.created", "response": created}, "response.created")]
        events += [_sse({"type": "response.output_text.delta", "item_id": done["output"][0]["id"],
                         "output_index": 0, "content_index": 0, "delta": p}, "response.output_text.delta")
                   for p in pieces]
        events += [_sse({"type": "response.completed", "response": done}, "response.completed")]
        return events
    cid = ("chatcmpl-" if endpoint == "chat" else "cmpl-") + _hex()
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
             "total_tokens": prompt_tokens + completion_tokens}

    def chunk(delta_text: Optional[str], finish: Optional[str], first: bool = False) -> dict:
        if endpoint == "chat":
            delta: dict = {}
            if first:
                delta["role"] = "assistant"
            if delta_text is not None:
                delta["content"] = delta_text
            return {"id": cid, "object": "chat.completion.chunk", "created": now, "model": model,
                    "system_fingerprint": "fp_mock",
                    "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        return {"id": cid, "object": "text_completion", "created": now, "model": model,
                "choices": [{"text": delta_text or "", "index": 0, "logprobs": None, "finish_reason": finish}]}

    events = [_sse(chunk(p, None, first=(i == 0))) for i, p in enumerate(pieces)]
    events.append(_sse(chunk(None, "stop")))
    if (req.get("stream_options") or {}).get("include_usage"):
        last = chunk(None, None)
        last["choices"] = []
        last["usage"] = usage
        events.append(_sse(last))
    events.append(_sse("[DONE]"))
    return events


def _error_body(kind: str, status: int, model: Any) -> dict:
    if kind == "anthropic":
        etype = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                 404: "not_found_error", 408: "timeout_error", 413: "request_too_large", 429: "rate_limit_error",
                 529: "overloaded_error"}.get(status, "api_error")
        return {"type": "error", "error": {"type": etype, "message": f"mock {etype} (HTTP {status})"}}
    if kind == "azure":
        return {"error": {"code": str(status) if status != 429 else "429",
                          "message": "Requests to the ChatCompletions_Create Operation have exceeded the rate limit "
                                     "of your current tier (mock)." if status == 429
                          else f"mock Azure OpenAI error (HTTP {status})"}}
    messages = {
        400: ("Invalid request (mock).", "invalid_request_error", None),
        401: ("Incorrect API key provided (mock).", "invalid_request_error", "invalid_api_key"),
        403: ("You are not allowed to access this resource (mock).", "invalid_request_error", None),
        404: (f"The model `{model}` does not exist or you do not have access to it.", "invalid_request_error",
              "model_not_found"),
        408: ("Request timed out (mock).", "timeout", None),
        422: ("Unprocessable entity (mock).", "invalid_request_error", None),
        429: ("Rate limit reached for requests (mock).", "requests", "rate_limit_exceeded"),
    }
    message, etype, code = messages.get(
        status, ("The server had an error while processing your request. Sorry about that! (mock)", "server_error",
                 None))
    return {"error": {"message": message, "type": etype, "param": None, "code": code}}


def main(argv: Optional[list] = None) -> int:
    ap = argparse.ArgumentParser(description="Run one mock LLM provider in the foreground.")
    ap.add_argument("--kind", choices=KINDS, required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--name", default=None)
    ap.add_argument("--stream-delay", type=float, default=0.0, help="seconds between streamed events")
    ap.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = ap.parse_args(argv)
    mock = MockProvider(args.kind, name=args.name, host=args.host, port=args.port, start=False,
                        verbose=args.verbose)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if args.stream_delay:
        mock.respond(stream_delay=args.stream_delay)
    mock.start()
    print(f"mock {mock.kind} provider {mock.name!r} listening on {mock.url}", flush=True)
    while not stop.wait(0.2):
        pass
    mock.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
