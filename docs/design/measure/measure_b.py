"""Design B on Envoy 1.40: Envoy's HTTP ratelimit filter after the llm_router wasm filter, fed by what the
router sets (the cluster header in the body phase, the token filter state in on_log). Not run by CI; the
results are in ../global-limits-measured.md.

    /tmp/rlsvenv/bin/python docs/design/measure/measure_b.py     # from the repo root, after scripts/build

Each scenario starts the recording RLS (recording_rls.py) with an answer mode, a mock OpenAI provider and one
Envoy (--concurrency 2) whose bootstrap is the e2e harness's plus the ratelimit filter, and prints what the
RLS recorded and what the client got. Bootstraps and logs stay under .run/e2e/.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
sys.path.insert(0, str(REPO / "tests" / "e2e"))

from support import client  # noqa: E402
from support.envoy import RUN_DIR, BootstrapEnvoy, bootstrap, free_port  # noqa: E402
from support.mock_provider import MockProvider  # noqa: E402
from support.plugin import chat, deployment, plugin_config  # noqa: E402

RLS_CLUSTER = "rec_rls"
CHAT = "/v1/chat/completions"
KEY = "sk-master-b"
LOG_FORMAT = ("%RESPONSE_CODE% %RESPONSE_FLAGS% details=%RESPONSE_CODE_DETAILS% "
              "completion_tokens=%FILTER_STATE(wasm.llm_router.completion_tokens:PLAIN)% "
              "prompt_tokens=%FILTER_STATE(wasm.llm_router.prompt_tokens:PLAIN)% cost_usd=%FILTER_STATE(wasm.llm_router.cost_usd:PLAIN)% "
              "cluster=%UPSTREAM_CLUSTER%\n")


def stream_done(key: str, fmt: str) -> dict:
    return {"actions": [{"generic_key": {"descriptor_key": "kind", "descriptor_value": key}}],
            "apply_on_stream_done": True, "hits_addend": {"format": fmt}}


# The per-route rate limits (RateLimitPerRoute.rate_limits on the routed route).
REQUEST_PHASE = [{"actions": [{"request_headers": {"header_name": "x-llm-router-cluster", "descriptor_key": "cluster"}}]}]
STREAM_DONE = [
    stream_done("completion_tokens", "%FILTER_STATE(wasm.llm_router.completion_tokens:PLAIN)%"),
    stream_done("prompt_tokens", "%FILTER_STATE(wasm.llm_router.prompt_tokens:PLAIN)%"),
    # The router writes no `total_tokens` property: this one is always absent.
    stream_done("total_tokens_absent", "%FILTER_STATE(wasm.llm_router.total_tokens:PLAIN)%"),
    # A decimal string ("0.00006"): not an integer.
    stream_done("cost_usd_decimal", "%FILTER_STATE(wasm.llm_router.cost_usd:PLAIN)%"),
]


def ratelimit_filter(**kw) -> dict:
    return {"name": "envoy.filters.http.ratelimit", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit",
        "domain": "llm_router", "stat_prefix": "b", "timeout": "1s",
        "rate_limit_service": {"grpc_service": {"envoy_grpc": {"cluster_name": RLS_CLUSTER}},
                               "transport_api_version": "V3"}, **kw}}


def build(cfg: dict, oa: MockProvider, rls_port: int, rate_limits: list, filter_kw: dict, dir: Path) -> Path:
    clusters = {oa.cluster_name: (oa.host, oa.port), RLS_CLUSTER: ("127.0.0.1", rls_port, "h2")}
    bs = bootstrap(cfg, clusters)
    hcm = bs["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_filters"].insert(1, ratelimit_filter(**filter_kw))  # [wasm, ratelimit, router]
    routed = hcm["route_config"]["virtual_hosts"][0]["routes"][0]
    assert "cluster_header" in routed["route"]
    if rate_limits:  # [] : none on the route (the filter-level rate_limits apply)
        routed["typed_per_filter_config"] = {"envoy.filters.http.ratelimit": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimitPerRoute",
            "rate_limits": rate_limits}}
    hcm["access_log"] = [{"name": "envoy.access_loggers.file", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
        "path": str(dir / "access.log"), "log_format": {"text_format_source": {"inline_string": LOG_FORMAT}}}}]
    path = dir / "bootstrap.json"
    path.write_text(json.dumps(bs, indent=1))
    return path


class Rec:
    def __init__(self, answer: str, dir: Path, port: int | None = None):
        self.port = port or free_port()
        self.log = dir / f"rls-{answer}.jsonl"
        self.log.write_text("")
        self.proc = subprocess.Popen([sys.executable, str(HERE / "recording_rls.py"), "--port", str(self.port),
                                      "--log", str(self.log), "--answer", answer],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert b"recording rls" in self.proc.stdout.readline()

    def calls(self) -> list:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


def scenario(name: str, answer: str | None, filter_kw: dict, requests: list, rate_limits=None,
             cfg_extra: dict | None = None, keys: list | None = None, bearer: str = KEY,
             prices: dict | None = None) -> None:
    """answer None: no RLS listening (the port is closed)."""
    print(f"\n===== {name}: RLS {answer or 'port closed'}, filter {json.dumps(filter_kw)}")
    dir = RUN_DIR / f"measure-b-{name}"
    dir.mkdir(parents=True, exist_ok=True)
    (dir / "access.log").unlink(missing_ok=True)
    oa = MockProvider("openai", "oa").start()
    rec = Rec(answer, dir) if answer else None
    port = rec.port if rec else free_port()
    cfg = plugin_config([deployment("gpt-4o", "openai/gpt-4o", oa.url + "/v1", api_key="sk-prov", id="gpt4o",
                                    model_info=prices or {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6})],
                        master_key=KEY)
    if keys:
        cfg["keys"] = keys
    cfg["envoy_settings"] = {"access_log_properties": True, "access_log_tokens": True, **(cfg_extra or {})}
    bs = build(cfg, oa, port, rate_limits if rate_limits is not None else REQUEST_PHASE + STREAM_DONE, filter_kw, dir)
    envoy = BootstrapEnvoy(bs, label=f"measure-b-{name}", concurrency=2).wait_ready(("ingress",))
    try:
        for label, body in requests:
            seen = len(rec.calls()) if rec else 0
            t0 = time.monotonic()
            if body.get("stream"):
                s = client.stream_post(envoy.url("ingress"), CHAT, body, {"authorization": f"Bearer {bearer}"})
                chunks = b"".join(c for _, c in s)
                status, headers, resp = s.status, s.headers, chunks
            else:
                r = client.post_json(envoy.url("ingress"), CHAT, body, {"authorization": f"Bearer {bearer}"})
                status, headers, resp = r.status, r.headers, r.body
            ms = (time.monotonic() - t0) * 1000
            time.sleep(0.5)  # the stream-done call is sent after the response
            print(f"--- {label}: client got {status} in {ms:.0f} ms")
            interesting = {k: v for k, v in headers.items() if k.startswith(("x-envoy", "x-rls", "x-ratelimit", "content-type",
                                                                             "x-llm-router", "retry-after"))}
            print(f"    headers: {json.dumps(interesting)}")
            print(f"    body: {resp[:300]!r}" if not body.get("stream") else f"    body: {len(resp)} bytes of SSE, ends {resp[-60:]!r}")
            if rec:
                for c in rec.calls()[seen:]:
                    print(f"    rls got: hits_addend={c['hits_addend']} descriptors={json.dumps(c['descriptors'])}")
        time.sleep(0.3)
        print("    access log:", *[l for l in (dir / "access.log").read_text().splitlines()], sep="\n      ")
        stats = {k: v for k, v in envoy.stats("ratelimit").items() if v}
        print(f"    ratelimit stats: {json.dumps(stats)}")
    finally:
        envoy.stop()
        if rec:
            rec.stop()
        oa.stop()


NON_STREAMED = ("non-streamed", chat("gpt-4o", max_tokens=20))
STREAMED = ("streamed (include_usage)", chat("gpt-4o", max_tokens=20, stream=True, stream_options={"include_usage": True}))
STREAMED_NO_USAGE = ("streamed without usage", chat("gpt-4o", max_tokens=20, stream=True))


def main() -> None:
    only = set(sys.argv[1:])

    def want(n):
        return not only or n in only

    if want("ok"):
        scenario("ok", "ok", {}, [NON_STREAMED, STREAMED, STREAMED_NO_USAGE])
    if want("only-absent"):
        # The only stream-done entry has an absent addend: is a call sent at all?
        scenario("only-absent", "ok", {}, [NON_STREAMED], rate_limits=REQUEST_PHASE + [STREAM_DONE[2]])
    if want("over"):
        scenario("over", "over", {}, [NON_STREAMED, STREAMED])
    if want("over-nobody"):
        scenario("over-nobody", "over-nobody", {}, [NON_STREAMED])
    if want("decimal"):
        # cost_usd 1.600009 (9 prompt tokens at 1e-6, 8 completion tokens at 0.2): truncated, rounded or dropped?
        scenario("decimal", "ok", {}, [NON_STREAMED], prices={"input_cost_per_token": 1e-6, "output_cost_per_token": 0.2})
    if want("over-resource-exhausted"):
        scenario("over-429-headers", "over", {"enable_x_ratelimit_headers": "DRAFT_VERSION_03", "enable_retry_after_header": True},
                 [NON_STREAMED])
    if want("unavailable"):
        for deny in (False, True):
            scenario(f"unavailable-deny-{deny}", "unavailable", {"failure_mode_deny": deny}, [NON_STREAMED])
        scenario("unavailable-deny-status503", "unavailable", {"failure_mode_deny": True, "status_on_error": {"code": 503}},
                 [NON_STREAMED])
    if want("closed"):
        for deny in (False, True):
            scenario(f"closed-deny-{deny}", None, {"failure_mode_deny": deny}, [NON_STREAMED])
    if want("filter-level"):
        # The same entries in the filter's own rate_limits (field 17) instead of RateLimitPerRoute: does the
        # stream-done path work there (global-limits-facts.md §2, "a code path to check")?
        scenario("filter-level", "ok", {"rate_limits": REQUEST_PHASE + STREAM_DONE[:2]}, [NON_STREAMED], rate_limits=[])
    if want("router429"):
        # The router's own refusal for comparison: a key with rpm_limit 1, two requests (no ratelimit filter call
        # refuses; the recording RLS answers OK).
        scenario("router429", "ok", {}, [NON_STREAMED, NON_STREAMED], rate_limits=REQUEST_PHASE,
                 keys=[{"token": hashlib.sha256(b"sk-b-rpm1").hexdigest(), "key_alias": "b-rpm1", "rpm_limit": 1}],
                 bearer="sk-b-rpm1")


if __name__ == "__main__":
    main()
