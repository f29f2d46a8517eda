"""Design A on Envoy 1.40: what the router's own RLS calls (dispatch_grpc_call) get when the rate limit service
is refused, hung, missing or without endpoints, and whether settlements from the root context arrive. Not run
by CI; the results are in ../global-limits-measured.md.

    /tmp/rlsvenv/bin/python docs/design/measure/measure_a.py     # from the repo root, after scripts/build

Needs redis-server and llm-router-rls (RLS_BIN, default tools/rls/target/release/llm-router-rls) for the
settlement scenario; the recording RLS's proto (rls_subset.proto) to peek at its counters.
"""
from __future__ import annotations

import hashlib
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
sys.path.insert(0, str(REPO / "tests" / "e2e"))
sys.path.insert(0, str(HERE))

from support import client, rls as rls_support  # noqa: E402
from support.envoy import RUN_DIR, BootstrapEnvoy, bootstrap, free_port  # noqa: E402
from support.mock_provider import MockProvider  # noqa: E402
from support.plugin import chat, deployment, plugin_config  # noqa: E402
from support.prometheus import scrape  # noqa: E402

RLS_CLUSTER = "llm_router_rls"
CHAT = "/v1/chat/completions"
RAW_KEY = "sk-measure-a"
HASH = hashlib.sha256(RAW_KEY.encode()).hexdigest()
LIMITS = {"rpm": (100000, 60), "tpm": (10**9, 60), "parallel": (100000, 900)}


class Admin:
    def __init__(self, e: BootstrapEnvoy):
        self.admin_url = f"http://127.0.0.1:{e.admin_port}"


def world(oa, name: str, rls_port: int | None, timeout_ms: int, cluster: str = "static"):
    """cluster: static (-> rls_port), missing (not in the bootstrap), empty (no endpoints)."""
    cfg = plugin_config([deployment("gpt-4o", "openai/gpt-4o", oa.url + "/v1", api_key="sk-prov", id="gpt4o",
                                    model_info={"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6})],
                        master_key="sk-master-a")
    cfg["keys"] = [{"token": HASH, "key_alias": "measure-a", "rpm_limit": LIMITS["rpm"][0], "tpm_limit": LIMITS["tpm"][0],
                    "max_parallel_requests": LIMITS["parallel"][0]}]
    cfg["envoy_settings"] = {"rate_limit_service": {"cluster": RLS_CLUSTER, "timeout_ms": timeout_ms}}
    clusters = {oa.cluster_name: (oa.host, oa.port)}
    if cluster != "missing":
        clusters[RLS_CLUSTER] = ("127.0.0.1", rls_port or free_port(), "h2")
    bs = bootstrap(cfg, clusters)
    if cluster == "empty":
        for c in bs["static_resources"]["clusters"]:
            if c["name"] == RLS_CLUSTER:
                c["load_assignment"]["endpoints"] = []
    dir = RUN_DIR / f"measure-a-{name}"
    dir.mkdir(parents=True, exist_ok=True)
    path = dir / "bootstrap.json"
    path.write_text(json.dumps(bs, indent=1))
    return BootstrapEnvoy(path, label=f"measure-a-{name}", concurrency=2).wait_ready(("ingress",))


def post(e, body=None) -> tuple:
    t0 = time.monotonic()
    r = client.post_json(e.url("ingress"), CHAT, body or chat("gpt-4o", max_tokens=20),
                         headers={"authorization": f"Bearer {RAW_KEY}"}, timeout=30)
    return r, (time.monotonic() - t0) * 1000


def rls_metrics(e) -> dict:
    s = scrape(Admin(e))
    out = {}
    for name in ("llm_router_rls_calls_total", "llm_router_rls_failures_total"):
        for labels, value in s.series(name):
            if value:
                out[f"{name}{json.dumps(labels, sort_keys=True)}"] = value
    return out


def router_lines(e) -> list:
    return sorted({l.split("] ", 1)[-1][:220] for l in e.log_text().splitlines()
                   if "rate limit service" in l or "panicked" in l or "settlement" in l})


def failure_case(name: str, rls_port, timeout_ms: int, cluster: str = "static", n: int = 10) -> None:
    print(f"\n===== {name} (timeout_ms {timeout_ms}, cluster {cluster})")
    oa = MockProvider("openai", "oa").start()
    e = world(oa, name, rls_port, timeout_ms, cluster)
    try:
        lat, statuses = [], []
        for _ in range(n):
            r, ms = post(e)
            lat.append(ms)
            statuses.append(r.status)
        # The same through the master key (no limits: no RLS call) for the baseline latency.
        base = [client.post_json(e.url("ingress"), CHAT, chat("gpt-4o", max_tokens=20),
                                 headers={"authorization": "Bearer sk-master-a"}).status for _ in range(3)]
        print(f"    client statuses: {statuses}; master key (no RLS call): {base}")
        print(f"    latency ms: min {min(lat):.0f} median {statistics.median(lat):.0f} max {max(lat):.0f} (first {lat[0]:.0f})")
        print(f"    metrics: {json.dumps(rls_metrics(e), indent=None)}")
        for l in router_lines(e):
            print(f"    log: {l}")
    finally:
        e.stop()
        oa.stop()


def peek(port: int, kind: str) -> tuple:
    """(limit, remaining) of {limit: kind, api_key: HASH}, with a per-descriptor hits_addend of 0."""
    import grpc
    from recording_rls import pb, pb_grpc
    ch = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = pb_grpc.RateLimitServiceStub(ch)
    d = pb.RateLimitDescriptor(entries=[pb.Entry(key="limit", value=kind), pb.Entry(key="api_key", value=HASH)])
    d.hits_addend.value = 0
    r = stub.ShouldRateLimit(pb.RateLimitRequest(domain="llm_router", descriptors=[d]), timeout=5)
    ch.close()
    st = r.statuses[0]
    return st.current_limit.requests_per_unit, st.limit_remaining


def usage_total(body: bytes) -> int:
    if body.lstrip().startswith(b"{"):
        return json.loads(body)["usage"]["total_tokens"]
    for line in body.decode().splitlines():
        if line.startswith("data: {") and '"usage"' in line:
            return json.loads(line[6:])["usage"]["total_tokens"]
    raise AssertionError(f"no usage in {body[-200:]!r}")


def settlement_case(n: int = 40, conns: int = 8) -> None:
    print(f"\n===== settlement: real llm-router-rls + Redis, --concurrency 2, {n} requests on {conns} connections")
    dir = RUN_DIR / "measure-a-settlement"
    dir.mkdir(parents=True, exist_ok=True)
    limits = dir / "limits.yaml"
    limits.write_text("".join(
        f"- namespace: llm_router\n  name: {k}.api_key.{HASH}\n  max_value: {m}\n  seconds: {s}\n"
        f"  conditions: [\"descriptors[0]['limit'] == '{k}'\", \"descriptors[0]['api_key'] == '{HASH}'\"]\n  variables: []\n"
        for k, (m, s) in LIMITS.items()))
    if os.environ.get("RLS_BIN"):
        rls_support.RLS_BIN = Path(os.environ["RLS_BIN"])
    redis = rls_support.Redis(dir / "redis")
    rls = rls_support.Rls(dir, redis, limits)
    oa = MockProvider("openai", "oa").start()
    e = world(oa, "settlement", rls.port, 1000)
    try:
        before = {k: peek(rls.port, k) for k in LIMITS}
        with ThreadPoolExecutor(conns) as pool:
            # Every other request streamed (SSE with include_usage): on_log runs after the last chunk.
            results = list(pool.map(lambda i: post(e, chat("gpt-4o", max_tokens=20, stream=True,
                                                           stream_options={"include_usage": True}) if i % 2 else
                                                   chat("gpt-4o", max_tokens=20)), range(n)))
        tokens = sum(usage_total(r.body) for r, _ in results if r.status == 200)
        statuses = sorted({r.status for r, _ in results})
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            m = rls_metrics(e)
            if sum(v for k, v in m.items() if '"settlement"' in k) >= n:
                break
            time.sleep(0.1)
        time.sleep(0.3)
        after = {k: peek(rls.port, k) for k in LIMITS}
        print(f"    client statuses {statuses}; usage total_tokens summed over the answers: {tokens}")
        print(f"    latency ms: median {statistics.median(ms for _, ms in results):.1f} max {max(ms for _, ms in results):.1f}")
        for k in LIMITS:
            (lim, r0), (_, r1) = before[k], after[k]
            print(f"    RLS counter {k}: used before {lim - r0}, after {lim - r1} (limit {lim})")
        print(f"    metrics: {json.dumps(rls_metrics(e))}")
        workers = {k: v for k, v in e.stats("worker_").items() if k.endswith("downstream_rq_total") or k.endswith("downstream_cx_total")}
        print(f"    per-worker listener stats: {json.dumps(workers)}")
        per_worker = [l for l in e.log_text().splitlines() if "settlement" in l]
        print(f"    log lines about settlements: {len(per_worker)}", *per_worker[:5], sep="\n      ")
    finally:
        e.stop()
        oa.stop()
        rls.stop()
        redis.stop()


def main() -> None:
    only = set(sys.argv[1:])

    def want(n):
        return not only or n in only

    if want("refused"):
        failure_case("refused", free_port(), 200)
    if want("silent"):
        for t in (50, 200):
            silent = rls_support.Silent()
            try:
                failure_case(f"silent-{t}", silent.port, t)
            finally:
                silent.stop()
    if want("missing"):
        failure_case("missing", None, 200, cluster="missing")
    if want("empty"):
        failure_case("empty", None, 200, cluster="empty")
    if want("grpc-unavailable"):
        # An RLS that answers every call with gRPC UNAVAILABLE (the recording RLS), and one that answers OK
        # (what the router's admission and settlement carry).
        from measure_b import Rec
        for answer in ("unavailable", "ok"):
            d = RUN_DIR / f"measure-a-rec-{answer}"
            d.mkdir(parents=True, exist_ok=True)
            rec = Rec(answer, d)
            try:
                failure_case(f"rec-{answer}", rec.port, 200, n=2)
                time.sleep(0.5)
                for c in rec.calls():
                    print(f"    rls got: hits_addend={c['hits_addend']} descriptors={json.dumps(c['descriptors'])}")
            finally:
                rec.stop()
    if want("settlement"):
        settlement_case()


if __name__ == "__main__":
    main()
