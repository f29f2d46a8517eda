"""A tiny HTTP client for the end-to-end tests (stdlib only).

* `post_json(url, path, body)` / `get(url, path)` / `request(method, url, path, ...)`: one request on a fresh
  connection, answer as a `Response`.
* `Session(url)`: many requests over one keep-alive connection (fast loops).
* `stream_post(url, path, body)`: an iterable of (seconds_since_request, chunk_bytes) as they arrive, with
  `.status` and `.headers` known once iteration starts.
* `post_chunked(url, path, chunks)`: a chunked request body sent from a separate thread while the answer is
  read, so an early answer (413) is seen even when the proxy stops reading.
* `send_raw(url, data)` / `parse_responses(raw)`: bytes written as they are (no framing of the client's own:
  conflicting lengths, pipelined requests) and the responses read back.
"""

from __future__ import annotations

import http.client
import io
import json as _json
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Optional, Union
from urllib.parse import urlsplit

Body = Union[dict, list, bytes, str, None]


@dataclass
class Response:
    status: int
    headers: dict  # lowercased names; repeated headers joined by ", "
    body: bytes

    def json(self) -> Any:
        try:
            return _json.loads(self.body)
        except ValueError as e:
            raise AssertionError(f"response body is not JSON ({e}): {self.body[:500]!r}") from None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def __repr__(self) -> str:
        return f"Response({self.status}, {self.headers}, {self.body[:300]!r})"


def _hostport(url: str) -> tuple:
    parts = urlsplit(url if "://" in url else "http://" + url)
    return parts.hostname, parts.port or 80


def _encode(body: Body, headers: dict) -> Optional[bytes]:
    if body is None:
        return None
    if isinstance(body, (dict, list)):
        headers.setdefault("content-type", "application/json")
        return _json.dumps(body).encode()
    return body.encode() if isinstance(body, str) else bytes(body)


def _headers(resp: http.client.HTTPResponse) -> dict:
    out: dict = {}
    for k, v in resp.getheaders():
        k = k.lower()
        out[k] = f"{out[k]}, {v}" if k in out else v
    return out


def request(method: str, url: str, path: str, body: Body = None, headers: Optional[dict] = None,
            timeout: float = 10) -> Response:
    host, port = _hostport(url)
    hdrs = {k.lower(): v for k, v in (headers or {}).items()}
    data = _encode(body, hdrs)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        return Response(resp.status, _headers(resp), resp.read())
    finally:
        conn.close()


def post_json(url: str, path: str, body: Body, headers: Optional[dict] = None, timeout: float = 10) -> Response:
    return request("POST", url, path, body, headers, timeout)


def get(url: str, path: str, headers: Optional[dict] = None, timeout: float = 10) -> Response:
    return request("GET", url, path, None, headers, timeout)


class Session:
    """Requests over one keep-alive connection (reconnects if the server closed it)."""

    def __init__(self, url: str, timeout: float = 10):
        self.host, self.port = _hostport(url)
        self.timeout = timeout
        self._conn: Optional[http.client.HTTPConnection] = None

    def request(self, method: str, path: str, body: Body = None, headers: Optional[dict] = None) -> Response:
        hdrs = {k.lower(): v for k, v in (headers or {}).items()}
        data = _encode(body, hdrs)
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self._conn.request(method, path, body=data, headers=hdrs)
                resp = self._conn.getresponse()
                out = Response(resp.status, _headers(resp), resp.read())
                if resp.will_close:
                    self.close()
                return out
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def post_json(self, path: str, body: Body, headers: Optional[dict] = None) -> Response:
        return self.request("POST", path, body, headers)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Stream:
    """Iterate to get (seconds_since_request_sent, chunk_bytes) as the response body arrives."""

    def __init__(self, url: str, path: str, body: Body, headers: Optional[dict], timeout: float):
        host, port = _hostport(url)
        hdrs = {k.lower(): v for k, v in (headers or {}).items()}
        data = _encode(body, hdrs)
        self._conn = http.client.HTTPConnection(host, port, timeout=timeout)
        self.started = time.monotonic()
        self._conn.request("POST", path, body=data, headers=hdrs)
        self._resp = self._conn.getresponse()
        self.headers_after = time.monotonic() - self.started
        self.status = self._resp.status
        self.headers = _headers(self._resp)
        self.chunks: list = []

    def __iter__(self) -> Iterator[tuple]:
        return self

    def __next__(self) -> tuple:
        if self._resp.closed:
            raise StopIteration
        try:
            chunk = self._resp.read1(65536)
        except BaseException:
            self._conn.close()
            raise
        if not chunk:
            self._conn.close()
            raise StopIteration
        item = (time.monotonic() - self.started, chunk)
        self.chunks.append(item)
        return item

    def read_all(self) -> "Stream":
        for _ in self:
            pass
        return self

    @property
    def body(self) -> bytes:
        return b"".join(c for _, c in self.chunks)


def stream_post(url: str, path: str, body: Body, headers: Optional[dict] = None, timeout: float = 10) -> Stream:
    return Stream(url, path, body, headers, timeout)


def post_chunked(url: str, path: str, chunks: Iterable[bytes], headers: Optional[dict] = None,
                 timeout: float = 10) -> Response:
    """POST with `transfer-encoding: chunked`; the body is written by a thread while the answer is read."""
    host, port = _hostport(url)
    sock = socket.create_connection((host, port), timeout=timeout)
    hdrs = {"host": f"{host}:{port}", "transfer-encoding": "chunked", "content-type": "application/json"}
    hdrs.update({k.lower(): v for k, v in (headers or {}).items()})
    head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"

    def send() -> None:
        try:
            sock.sendall(head.encode())
            for c in chunks:
                if c:
                    sock.sendall(b"%x\r\n%s\r\n" % (len(c), c))
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the proxy answered early and stopped reading

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        resp = http.client.HTTPResponse(sock, method="POST")
        resp.begin()
        return Response(resp.status, _headers(resp), resp.read())
    finally:
        sock.close()
        sender.join(timeout=timeout)


def send_raw(url: str, data: bytes, timeout: float = 2.0) -> bytes:
    """Writes `data` exactly as given on a fresh connection and returns every byte the server sent until it
    closed the connection or stayed silent for `timeout` seconds."""
    host, port = _hostport(url)
    out = bytearray()
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(data)
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                out += chunk
        except (socket.timeout, ConnectionResetError):
            pass
    return bytes(out)


class _Replay(io.BytesIO):
    def close(self) -> None:  # http.client closes its file after each response; keep the rest readable
        pass


class _ReplaySocket:
    def __init__(self, f: io.BytesIO):
        self._f = f

    def makefile(self, *args, **kwargs) -> io.BytesIO:
        return self._f


def parse_responses(raw: bytes) -> list:
    """The complete HTTP/1.1 responses in `raw` (as `send_raw` returns them), in order."""
    f = _Replay(raw)
    out = []
    while f.tell() < len(raw):
        resp = http.client.HTTPResponse(_ReplaySocket(f), method="POST")  # type: ignore[arg-type]
        try:
            resp.begin()
            body = resp.read()
        except (http.client.HTTPException, ValueError):
            break
        out.append(Response(resp.status, _headers(resp), body))
    return out
