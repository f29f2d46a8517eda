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
* `h2_post(url, path, headers, body, trailers)`: one POST over cleartext HTTP/2 (prior knowledge) whose body
  ends in request trailers; the answer's status and body (its other headers are not decoded).
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


# ---- a minimal HTTP/2 client (prior knowledge, one stream, request trailers) ------------------------------------

_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_H2_DATA, _H2_HEADERS, _H2_RST, _H2_SETTINGS, _H2_GOAWAY = 0x0, 0x1, 0x3, 0x4, 0x7
_H2_END_STREAM, _H2_END_HEADERS, _H2_ACK = 0x1, 0x4, 0x1
# HPACK static table entries for :status (RFC 7541 appendix A).
_STATIC_STATUS = {8: 200, 9: 204, 10: 206, 11: 304, 12: 400, 13: 404, 14: 500}


def _hpack_int(value: int, prefix: int, first: int) -> bytes:
    limit = (1 << prefix) - 1
    if value < limit:
        return bytes([first | value])
    out, value = bytearray([first | limit]), value - limit
    while value >= 128:
        out.append((value % 128) | 128)
        value //= 128
    out.append(value)
    return bytes(out)


def _hpack_literal(name: str, value: str) -> bytes:
    """A literal header field without indexing, new name, no Huffman coding."""
    n, v = name.encode(), value.encode()
    return b"\x00" + _hpack_int(len(n), 7, 0) + n + _hpack_int(len(v), 7, 0) + v


def _h2_frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def _huffman_digits(data: bytes) -> Optional[str]:
    """Decodes a Huffman-coded string of digits (all a status needs; RFC 7541 appendix B), else None."""
    bits = "".join(f"{b:08b}" for b in data)
    out, i = "", 0
    while i < len(bits):
        rest = bits[i:]
        if len(rest) < 8 and set(rest) <= {"1"}:
            return out  # EOS padding
        if rest[:5] in ("00000", "00001", "00010"):
            out, i = out + str(int(rest[:5], 2)), i + 5
        elif len(rest) >= 6 and "011001" <= rest[:6] <= "011111":
            out, i = out + str(int(rest[:6], 2) - 0b011001 + 3), i + 6
        else:
            return None
    return out


def _h2_status(block: bytes) -> Optional[int]:
    """`:status` from a response header block: Envoy sends it first (static entry, or a literal with its name
    indexed); other fields are not decoded."""
    i = 0
    while i < len(block) and block[i] & 0xE0 == 0x20:  # dynamic table size update(s)
        i += 1
        while block[i - 1] & 0x1F == 0x1F and i < len(block) and block[i] & 0x80:
            i += 1
    if i >= len(block):
        return None
    b = block[i]
    if b & 0x80:
        return _STATIC_STATUS.get(b & 0x7F)
    name_index = b & 0x3F if b & 0xC0 == 0x40 else b & 0x0F
    if name_index != 8 or i + 1 >= len(block):
        return None
    huffman, length = block[i + 1] & 0x80, block[i + 1] & 0x7F
    raw = block[i + 2:i + 2 + length]
    text = _huffman_digits(raw) if huffman else raw.decode("ascii", "replace")
    return int(text) if text and text.isdigit() else None


def h2_post(url: str, path: str, headers: dict, body: bytes, trailers: dict, timeout: float = 5.0) -> Response:
    """POST `body` on stream 1 of a cleartext HTTP/2 connection, then `trailers` (ending the stream): the last
    DATA frame does not end the stream, so a filter sees the end of the request only at the trailers."""
    host, port = _hostport(url)
    fields = [(":method", "POST"), (":scheme", "http"), (":authority", f"{host}:{port}"), (":path", path)]
    block = b"".join(_hpack_literal(k, v) for k, v in fields + [(k.lower(), v) for k, v in headers.items()])
    tail = b"".join(_hpack_literal(k.lower(), v) for k, v in trailers.items())
    status, data, buf = None, bytearray(), b""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(_H2_PREFACE + _h2_frame(_H2_SETTINGS, 0, 0) + _h2_frame(_H2_HEADERS, _H2_END_HEADERS, 1, block)
                     + _h2_frame(_H2_DATA, 0, 1, body) + _h2_frame(_H2_HEADERS, _H2_END_HEADERS | _H2_END_STREAM, 1, tail))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3], "big"):
                size = int.from_bytes(buf[:3], "big")
                kind, flags, stream = buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
                payload, buf = buf[9:9 + size], buf[9 + size:]
                if kind == _H2_SETTINGS and not flags & _H2_ACK:
                    sock.sendall(_h2_frame(_H2_SETTINGS, _H2_ACK, 0))
                elif kind == _H2_HEADERS and stream == 1 and status is None:
                    status = _h2_status(payload)
                elif kind == _H2_DATA and stream == 1:
                    data += payload
                if stream == 1 and (flags & _H2_END_STREAM and kind in (_H2_DATA, _H2_HEADERS) or kind == _H2_RST):
                    return Response(status or 0, {}, bytes(data))
                if kind == _H2_GOAWAY:
                    return Response(status or 0, {}, bytes(data))
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            buf += chunk
    return Response(status or 0, {}, bytes(data))
