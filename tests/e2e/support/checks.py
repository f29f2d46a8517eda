"""Assertions shared by the scenarios."""

from __future__ import annotations

from typing import Iterable, Optional

from .client import Response
from .mock_provider import Recorded

CLUSTER_HEADER = "x-llm-router-cluster"
CLIENT_CREDENTIAL_HEADERS = ("authorization", "api-key", "x-api-key")

_UNSET = object()


def expect_upstream(rec: Recorded, *, path: str, host: str, model: Optional[str] = None,
                    headers: Optional[dict] = None, absent: Iterable[str] = ()) -> Recorded:
    """What a provider received: exact path (with query), host, model, headers; the body length is right and
    the router's cluster header never leaks."""
    assert rec.method == "POST", rec
    assert rec.path == path, f"upstream path {rec.path!r}, expected {path!r}"
    assert rec.headers.get("host") == host, f"upstream host {rec.headers.get('host')!r}, expected {host!r}"
    if model is not None:
        assert isinstance(rec.json, dict), f"upstream body is not a JSON object: {rec.body[:300]!r}"
        assert rec.json.get("model") == model, f"upstream model {rec.json.get('model')!r}, expected {model!r}"
    for k, v in (headers or {}).items():
        assert rec.headers.get(k.lower()) == v, f"upstream header {k}: {rec.headers.get(k.lower())!r}, expected {v!r}"
    for k in absent:
        assert k.lower() not in rec.headers, f"upstream header {k} must be absent, got {rec.headers[k.lower()]!r}"
    assert CLUSTER_HEADER not in rec.headers, "the router's cluster header reached the provider"
    assert rec.headers.get("content-length") == str(len(rec.body)), \
        f"content-length {rec.headers.get('content-length')!r} for a body of {len(rec.body)} bytes"
    return rec


def expect_error(resp: Response, status: int, code: Optional[str], type: Optional[str] = None,
                 param=_UNSET) -> dict:
    """An OpenAI-shaped error: {"error": {"message", "type", "param", "code"}} as application/json."""
    assert resp.status == status, f"expected HTTP {status}, got {resp!r}"
    assert resp.headers.get("content-type", "").startswith("application/json"), resp
    body = resp.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    err = body["error"]
    assert {"message", "type", "param", "code"} <= set(err), err
    assert isinstance(err["message"], str) and err["message"], err
    if code is not None:
        assert err["code"] == code, err
    if type is not None:
        assert err["type"] == type, err
    if param is not _UNSET:
        assert err["param"] == param, err
    return err


def expect_routed(resp: Response, deployment: str, group: Optional[str] = None, status: int = 200) -> Response:
    assert resp.status == status, f"expected HTTP {status}, got {resp!r}"
    assert resp.headers.get("x-llm-router-deployment") == deployment, resp.headers
    if group is not None:
        assert resp.headers.get("x-llm-router-model-group") == group, resp.headers
    return resp


def expect_no_secrets(text: str, secrets: Iterable[str], where: str) -> None:
    for s in secrets:
        assert s not in text, f"secret {s[:6]}... leaked in {where}"


def response_text(resp: Response) -> str:
    return "\n".join(f"{k}: {v}" for k, v in resp.headers.items()) + "\n" + resp.body.decode("utf-8", "replace")
