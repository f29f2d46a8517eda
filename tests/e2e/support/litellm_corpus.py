"""The LiteLLM config corpus (tests/fixtures/litellm/): each fixture with the outcome it must have.

Why a corpus: a LiteLLM user's first step is pasting their `config.yaml`, so the shapes found in real configs
(public repositories, BerriAI's and DeltaLLM's examples) are reproduced here as small fixtures written for this
project, each next to what LiteLLM would do with it: `NAME.yaml` is the config, `NAME.expect.json` the expected
outcome (the format is described in tests/fixtures/litellm/README.md). Files a fixture includes live in
`includes/` so that they are not fixtures themselves.

This module only reads fixtures and expectations and says what they mean (which Envoy cluster an upstream URL
is, what LiteLLM's `include:` makes of the files); the assertions are tests/e2e/test_litellm_corpus.py's.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "litellm"

# The phases of a fixture's test that may be marked as known failures ("xfail": {"check": "why", ...}).
PHASES = ("check", "pyyaml", "generate", "envoy")


@dataclass(frozen=True)
class Upstream:
    """Where a request must arrive: the Envoy cluster the router names for the URL (Istio's
    `outbound|<port>||<host>`, README "Upstream cluster") and the `:authority` it sends."""

    cluster: str
    authority: str

    @classmethod
    def of(cls, url: str) -> "Upstream":
        parts = urlsplit(url)
        default = 443 if parts.scheme == "https" else 80
        port = parts.port or default
        host = (parts.hostname or "").lower()
        return cls(f"outbound|{port}||{host}", host if port == default else f"{host}:{port}")


@dataclass(frozen=True)
class Request:
    """One request the client sends and what the provider must receive."""

    model: str
    upstream: Upstream
    path: str  # upstream path with query
    headers: dict  # upstream headers that must be there, values with ${VAR} filled from the fixture's env
    upstream_model: Optional[str]
    endpoint: str = "/v1/chat/completions"
    request: dict = field(default_factory=dict)  # extra fields of the client's body
    body: dict = field(default_factory=dict)  # fields the upstream body must carry (besides `model`)
    absent: tuple = ()  # upstream headers that must not be there
    mock: str = "openai"  # the mock provider's kind (support/mock_provider.py KINDS)


@dataclass(frozen=True)
class Fixture:
    name: str
    path: Path
    shape: str
    outcome: str  # "loads" or "refused"
    env: dict
    errors: list  # [(field path, substring)]
    warnings: list  # [(field path, substring)]
    skipped: list  # field paths (`model_list[3]`) of the deployments skipped with a warning, exactly these
    serves: Optional[tuple]  # (deployments, model groups) in check's summary, when it loads
    requests: list
    not_servable: list  # groups answered with model_not_servable
    xfail: dict  # phase -> reason
    client_key: Optional[str]  # what clients send as `Authorization: Bearer` (the config's master_key)
    host_env_keys: Optional[list]  # the variables `llm-router envoy` has Envoy pass to the VM, exactly

    @property
    def included(self) -> list:
        """The files `include:` names, as LiteLLM resolves them (relative to the config's directory)."""
        import yaml  # the e2e venv carries PyYAML (LiteLLM's reader)

        doc = yaml.safe_load(self.path.read_text())
        inc = doc.get("include") if isinstance(doc, dict) else None
        return [self.path.parent / p for p in inc] if isinstance(inc, list) else []


def _pairs(items: list, what: str, name: str) -> list:
    out = []
    for it in items:
        if not (isinstance(it, dict) and set(it) == {"field", "says"}):
            raise ValueError(f"{name}: each of {what} is {{\"field\": ..., \"says\": ...}}, not {it!r}")
        out.append((it["field"], it["says"]))
    return out


def fill(text: str, env: dict) -> str:
    """`${NAME}` replaced by the fixture's env value (expected auth headers name the key they carry)."""
    return re.sub(r"\$\{([A-Z0-9_]+)\}", lambda m: env[m.group(1)], text)


def _request(r: dict, env: dict) -> Request:
    return Request(
        model=r["model"],
        upstream=Upstream.of(r["upstream"]),
        path=r["path"],
        headers={k.lower(): fill(v, env) for k, v in r.get("headers", {}).items()},
        upstream_model=r.get("upstream_model"),
        endpoint=r.get("endpoint", "/v1/chat/completions"),
        request=r.get("request", {}),
        body=r.get("body", {}),
        absent=tuple(r.get("absent", ())),
        mock=r.get("mock", "openai"),
    )


def load(path: Path) -> Fixture:
    name = path.name[: -len(".yaml")]
    exp_path = path.with_name(name + ".expect.json")
    exp = json.loads(exp_path.read_text())
    env = exp.get("env", {})
    if exp["outcome"] not in ("loads", "refused"):
        raise ValueError(f"{exp_path}: outcome must be loads or refused")
    if set(exp.get("xfail", {})) - set(PHASES):
        raise ValueError(f"{exp_path}: xfail phases are {PHASES}")
    serves = exp.get("serves")
    return Fixture(
        name=name, path=path, shape=exp["shape"], outcome=exp["outcome"], env=env,
        errors=_pairs(exp.get("errors", []), "errors", name),
        warnings=_pairs(exp.get("warnings", []), "warnings", name),
        skipped=list(exp.get("skipped", [])),
        serves=(serves["deployments"], serves["groups"]) if serves else None,
        requests=[_request(r, env) for r in exp.get("requests", [])],
        not_servable=list(exp.get("not_servable", [])),
        xfail=dict(exp.get("xfail", {})),
        client_key=fill(exp["client_key"], env) if "client_key" in exp else None,
        host_env_keys=exp.get("host_env_keys"),
    )


def all_fixtures() -> list:
    return [load(p) for p in sorted(FIXTURES.glob("*.yaml"))]


def litellm_include(main: dict, included: list) -> dict:
    """LiteLLM's `ProxyConfig._process_includes` on already-loaded documents: key by key, a list value is
    appended to the main config's list of that key, any other value replaces it; then `include` goes."""
    out = dict(main)
    for doc in included:
        for k, v in doc.items():
            if isinstance(v, list) and k in out:
                out[k] = list(out[k]) + v
            else:
                out[k] = v
    out.pop("include", None)
    return out
