"""The demo runner behind scripts/demo (which has already run scripts/setup and scripts/build).

Starts the three mock providers, Envoy with envoy/demo.yaml, and a second Envoy with envoy/demo-keys.yaml (the
same mocks behind two departments' virtual keys, examples/demo-keys.yaml), waits until they are ready, sends one
real request through the first and, through the second, a department's allowed call and a model its team may not
call (401); with --check also a rate-limited call (429). Then it prints curl commands and waits for Ctrl-C (or,
with --check, stops and exits 0). Every child runs in its own process group and is stopped on the way out. Logs
go to .run/demo/.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUN = REPO / ".run" / "demo"
PY = REPO / ".venv" / "bin" / "python"
ENVOY = REPO / ".venv" / "bin" / "envoy"
LISTENER = ("127.0.0.1", 10000)
ADMIN = ("127.0.0.1", 9901)
MOCKS = [("openai", 18001, "openai-demo"), ("azure", 18002, "azure-demo"), ("anthropic", 18003, "anthropic-demo")]
BASE = f"http://{LISTENER[0]}:{LISTENER[1]}"
# The virtual-keys gateway (envoy/demo-keys.yaml): its keys come from Envoy's environment, set here.
KEYS_LISTENER = ("127.0.0.1", 10010)
KEYS_ADMIN = ("127.0.0.1", 9911)
KEYS_REDIRECTOR = ("127.0.0.1", 10011)  # its in-request failover listener
KEYS_BASE = f"http://{KEYS_LISTENER[0]}:{KEYS_LISTENER[1]}"
RESEARCH_KEY = "sk-demo-research-app"
SUPPORT_KEY = "sk-demo-support-bot"
KEYS_ENV = {"OPENAI_API_KEY": "sk-demo-openai", "ANTHROPIC_API_KEY": "sk-ant-demo", "DEMO_MASTER_KEY": "sk-demo-master",
            "DEMO_RESEARCH_KEY": RESEARCH_KEY, "DEMO_SUPPORT_KEY": SUPPORT_KEY}

children: list = []


def say(msg: str) -> None:
    print(msg, flush=True)


def port_open(addr) -> bool:
    try:
        socket.create_connection(addr, timeout=0.5).close()
        return True
    except OSError:
        return False


def start(name: str, cmd: list, env: dict | None = None) -> subprocess.Popen:
    log = open(RUN / f"{name}.log", "wb")
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, env={**os.environ, **(env or {})})
    children.append((name, proc))
    return proc


def stop_all() -> None:
    for _, proc in reversed(children):
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    for _, proc in reversed(children):
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    children.clear()


def tail(name: str, n: int = 40) -> str:
    try:
        return "\n".join((RUN / f"{name}.log").read_text(errors="replace").splitlines()[-n:])
    except FileNotFoundError:
        return ""


def fail(msg: str, log: str = "") -> int:
    say(f"demo: {msg}")
    if log:
        say(f"--- last lines of .run/demo/{log}.log ---\n{tail(log)}")
    stop_all()
    return 1


def http(method: str, path: str, body=None, base: str = BASE, timeout: float = 10, key: str | None = None) -> tuple:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"content-type": "application/json"} if data else {}
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict((k.lower(), v) for k, v in r.headers.items()), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict((k.lower(), v) for k, v in e.headers.items()), e.read()


def wait_ready(timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, proc in children:
            if proc.poll() is not None:
                return False
        if all(port_open(("127.0.0.1", p)) for _, p, _ in MOCKS) and port_open(ADMIN) and port_open(KEYS_ADMIN):
            try:
                status, _, _ = http("GET", "/ready", base=f"http://{ADMIN[0]}:{ADMIN[1]}", timeout=1)
                keys_status, _, _ = http("GET", "/ready", base=f"http://{KEYS_ADMIN[0]}:{KEYS_ADMIN[1]}", timeout=1)
            except OSError:
                status = keys_status = 0
            if status == 200 and keys_status == 200 and port_open(LISTENER) and port_open(KEYS_LISTENER):
                return True
        time.sleep(0.1)
    return False


CURLS = f"""\
Try it (Ctrl-C stops the demo):

  # gpt-4o: two deployments (OpenAI-compatible mock, Azure mock), shuffled 1:1
  curl -s {BASE}/v1/chat/completions -H 'content-type: application/json' \\
    -d '{{"model": "gpt-4o", "messages": [{{"role": "user", "content": "Hello!"}}]}}' -D -

  # claude-3-5-sonnet through the Anthropic Messages API
  curl -s {BASE}/v1/messages -H 'content-type: application/json' \\
    -d '{{"model": "claude-3-5-sonnet", "max_tokens": 100, "messages": [{{"role": "user", "content": "Hello!"}}]}}' -D -

  # the same model through the OpenAI chat API (Anthropic's OpenAI-compatible endpoint)
  curl -s {BASE}/v1/chat/completions -H 'content-type: application/json' \\
    -d '{{"model": "claude-3-5-sonnet", "messages": [{{"role": "user", "content": "Hello!"}}]}}'

  # streaming (server-sent events, delivered as they come)
  curl -sN {BASE}/v1/chat/completions -H 'content-type: application/json' \\
    -d '{{"model": "gpt-4o-mini", "stream": true, "messages": [{{"role": "user", "content": "Hello!"}}]}}'

  # embeddings, and the alias gpt4 -> gpt-4o
  curl -s {BASE}/v1/embeddings -H 'content-type: application/json' \\
    -d '{{"model": "text-embedding-3-small", "input": "Hello!"}}'
  curl -s {BASE}/v1/chat/completions -H 'content-type: application/json' \\
    -d '{{"model": "gpt4", "messages": [{{"role": "user", "content": "Hello!"}}]}}'

  # an unknown model: an OpenAI-shaped 404
  curl -s {BASE}/v1/chat/completions -H 'content-type: application/json' \\
    -d '{{"model": "no-such-model", "messages": []}}'

  # the filter's own endpoints: the model list, and each deployment's health (cooling, last error)
  curl -s {BASE}/v1/models
  curl -s {BASE}/llm-router/health

  # the router's Prometheus metrics (requests, failures, cooldowns, latency, tokens per deployment)
  curl -s http://{ADMIN[0]}:{ADMIN[1]}/stats/prometheus | grep '^llm_router_'

  # virtual keys (the second gateway, {KEYS_BASE}; examples/demo-keys.yaml): research-app calls gpt-4o ...
  curl -s {KEYS_BASE}/v1/chat/completions -H 'authorization: Bearer {RESEARCH_KEY}' \
    -H 'content-type: application/json' -d '{{"model": "gpt-4o", "messages": [{{"role": "user", "content": "Hello!"}}]}}'
  # ... support-bot may not (its team has gpt-4o-mini only): 401 team_model_access_denied
  curl -s {KEYS_BASE}/v1/chat/completions -H 'authorization: Bearer {SUPPORT_KEY}' \
    -H 'content-type: application/json' -d '{{"model": "gpt-4o", "messages": [{{"role": "user", "content": "Hello!"}}]}}'
  # ... and has two gpt-4o-mini requests a minute: run this three times, the third is a 429 (retry-after)
  curl -s {KEYS_BASE}/v1/chat/completions -H 'authorization: Bearer {SUPPORT_KEY}' \
    -H 'content-type: application/json' -d '{{"model": "gpt-4o-mini", "messages": [{{"role": "user", "content": "Hello!"}}]}}' -D -
  # ... without a key: 401 invalid_api_key. New keys: cargo run -q -p llm-router-cli -- key new --alias app --team research

Envoy admin: http://{ADMIN[0]}:{ADMIN[1]}/ (keys gateway: http://{KEYS_ADMIN[0]}:{KEYS_ADMIN[1]}/)   logs: .run/demo/*.log
(Envoy's access log, one line per request with the chosen deployment and tokens: .run/demo/envoy.log)
"""


def keys_self_test(rate_limit: bool) -> str | None:
    """Through the keys gateway: an allowed call, a model the key's team may not call (401) and, with
    `rate_limit`, support-bot's third gpt-4o-mini request within the minute (429). None when all hold."""
    def chat(key: str, model: str) -> tuple:
        body = {"model": model, "messages": [{"role": "user", "content": "Hello from the llm-router demo!"}]}
        status, headers, raw = http("POST", "/v1/chat/completions", body, base=KEYS_BASE, key=key)
        try:
            code = json.loads(raw).get("error", {}).get("code")
        except (ValueError, AttributeError):
            code = None
        return status, headers, code

    say(f"Virtual keys self-test ({KEYS_BASE}, examples/demo-keys.yaml):")
    checks = [("research-app", RESEARCH_KEY, "gpt-4o", 200, None),
              ("support-bot", SUPPORT_KEY, "gpt-4o", 401, "team_model_access_denied")]
    if rate_limit:
        checks += [("support-bot", SUPPORT_KEY, "gpt-4o-mini", 200, None),
                   ("support-bot", SUPPORT_KEY, "gpt-4o-mini", 200, None),
                   ("support-bot", SUPPORT_KEY, "gpt-4o-mini", 429, "429")]
    for alias, key, model, want, want_code in checks:
        try:
            status, headers, code = chat(key, model)
        except OSError as e:
            return f"{alias} {model}: {e}"
        extra = f", deployment {headers.get('x-llm-router-deployment')!r}" if status == 200 else f", code {code!r}"
        if status == 429:
            extra += f", retry-after {headers.get('retry-after')!r}"
        say(f"  {alias} -> {model}: HTTP {status}{extra}")
        if status != want or (want_code is not None and code != want_code):
            return f"{alias} {model}: expected HTTP {want} {want_code or ''}, got {status} {code!r}"
    say("")
    return None


def main() -> int:
    ap = argparse.ArgumentParser(prog="scripts/demo")
    ap.add_argument("--check", action="store_true",
                    help="exit 0 right after the self-test request succeeds (for CI)")
    args = ap.parse_args()
    RUN.mkdir(parents=True, exist_ok=True)

    busy = [f"{h}:{p}" for h, p in [LISTENER, ADMIN, KEYS_LISTENER, KEYS_ADMIN, KEYS_REDIRECTOR] + [("127.0.0.1", p) for _, p, _ in MOCKS]
            if port_open((h, p))]
    if busy:
        say(f"demo: already in use: {', '.join(busy)} (is another demo running?)")
        return 1

    for kind, port, name in MOCKS:
        start(f"mock-{kind}", [str(PY), "-u", "-m", "tests.e2e.support.mock_provider", "--kind", kind,
                               "--port", str(port), "--name", name, "--stream-delay", "0.2", "--verbose"])
    start("envoy", [str(ENVOY), "-c", "envoy/demo.yaml", "--concurrency", "1", "--log-level", "info",
                    "--component-log-level", "wasm:debug", "--use-dynamic-base-id"])
    start("envoy-keys", [str(ENVOY), "-c", "envoy/demo-keys.yaml", "--concurrency", "1", "--log-level", "info",
                         "--component-log-level", "wasm:debug", "--use-dynamic-base-id"], env=KEYS_ENV)
    if not wait_ready():
        dead = [n for n, p in children if p.poll() is not None]
        return fail("did not become ready within 20 s" + (f" ({', '.join(dead)} exited)" if dead else ""),
                    dead[0] if dead else "envoy")
    say(f"Envoy with llm_router listening on {BASE} (admin http://{ADMIN[0]}:{ADMIN[1]}), mocks on "
        + ", ".join(f"{k} :{p}" for k, p, _ in MOCKS))

    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello from the llm-router demo!"}]}
    say(f"\nSelf-test: POST {BASE}/v1/chat/completions {json.dumps(body)}")
    try:
        status, headers, raw = http("POST", "/v1/chat/completions", body)
    except OSError as e:
        return fail(f"self-test request failed: {e}", "envoy")
    try:
        answer = json.loads(raw)
        text = answer["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        answer, text = None, None
    say(f"  -> HTTP {status}, deployment {headers.get('x-llm-router-deployment')!r} "
        f"(group {headers.get('x-llm-router-model-group')!r}), served by the {headers.get('x-mock-provider')} mock, "
        f"model {answer.get('model') if isinstance(answer, dict) else None!r}")
    if status != 200 or text is None:
        return fail(f"self-test failed: HTTP {status} {raw[:500]!r}", "envoy")
    if not headers.get("x-llm-router-deployment"):
        return fail("self-test failed: the answer has no x-llm-router-deployment header, so llm_router did not "
                    "route it", "envoy")
    say(f"  -> {text!r}\n")

    problem = keys_self_test(rate_limit=args.check)
    if problem:
        return fail(f"virtual keys self-test failed: {problem}", "envoy-keys")

    if args.check:
        _, _, dump = http("GET", "/config_dump", base=f"http://{ADMIN[0]}:{ADMIN[1]}")
        (RUN / "config_dump.json").write_bytes(dump)
        stop_all()
        say("demo: check passed")
        return 0

    say(CURLS)
    stopping = {"flag": False}

    def on_signal(*_):
        stopping["flag"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    while not stopping["flag"]:
        dead = [n for n, p in children if p.poll() is not None]
        if dead:
            return fail(f"{', '.join(dead)} exited unexpectedly", dead[0])
        time.sleep(0.2)
    say("\nstopping the demo")
    stop_all()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        stop_all()
