"""bench/run: what llm-router costs inside Envoy, against plain Envoy and a no-op wasm filter.

See bench/README.md. Stdlib only; reuses the e2e harness's bootstrap builders (tests/e2e/support/envoy.py)
so every variant has the router's listener/route shape.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO / "tests" / "e2e"))
sys.path.insert(0, str(BENCH))

from support.envoy import (CLUSTER_HEADER, ENVOY_BIN, WASM_PATH, PASSTHROUGH_CLUSTER, bootstrap,  # noqa: E402
                           buffer_filter, free_port)
import workload  # noqa: E402

NOOP_MANIFEST = BENCH / "noop-filter" / "Cargo.toml"
NOOP_WASM = BENCH / "noop-filter" / "target" / "wasm32-wasip1" / "release" / "noop_filter.wasm"
WRK_SCRIPT = BENCH / "wrk" / "post.lua"
RUN = BENCH / ".run"
# Envoy loads the wasm files from these copies, taken once after the build, so a rebuild of target/
# while the benchmark runs cannot change what later variants measure.
WASM_COPY = {"router": RUN / "llm_router.wasm", "noop": RUN / "noop_filter.wasm"}
ENVOY_CPU, LOAD_CPU = "0", "1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PATH = "/v1/chat/completions"
BODIES = {"300B": 300, "30KB": 30 * 1024}

# variant -> (description, shown in the main table?)
VARIANTS = {
    "1": "plain Envoy (router's listener/routes, no wasm) -> nginx",
    "2": "Envoy + no-op wasm filter (Continue everywhere)",
    "3": "Envoy + llm-router, 40 deployments / 10 groups / 3 provider shapes, hot group of 4",
    "3f": "variant 3 wired for failover (upstream-filter role on clusters, retry + internal-redirect policy, redirector)",
    "4": "variant 3 with 500 deployments in the table (hot group unchanged)",
    "3k": "variant 3 called with a virtual key (1000 keys in 10 teams) that has rpm, tpm, parallel and budget "
          "limits: identity, model access, 4 admissions and 3 settlements in shared data per request",
    "3g": "variant 3k in global mode: each request also admitted by the rate limit service (tools/rls over Redis, "
          "on the load CPU) in one gRPC call, and settled by one more from the root context",
    "3b": "design B's transport next to 3g: variant 3k plus Envoy's ratelimit filter after the wasm filter "
          "(RateLimitPerRoute on the routed route, the same RLS), 4 descriptors at admission (rpm, tpm, parallel, "
          "budget as fixed generic_keys, the rpm one with the router's cluster header) and one apply_on_stream_done "
          "call charging the router's token filter state (access_log_properties + access_log_tokens on)",
}
BREAKDOWN = {
    "1b": "plain Envoy + Envoy's buffer filter (the body is buffered, as the router makes Envoy do)",
    "2b": "no-op wasm in buffer_read mode: pause in headers, read the whole body into the VM once, continue",
    "2h": "no-op wasm in host_calls mode: 2b plus llm-router's host calls on a routed request (header reads and "
          "writes that re-route to a deployment cluster, a shared-data read, response headers), no computation",
    "3nr": "variant 3, but no hot deployment changes the model id: the body is forwarded untouched",
    "3ns": "variant 3 without num_retries/fallbacks (since envoy_settings.failover, variant 3 without the "
           "wiring sends no attempt state either)",
    "3nm": "variant 3 with envoy_settings.metrics false: no metric host calls, no response usage scan",
}
ROUTER_VARIANTS = {"3", "3f", "4", "3nr", "3ns", "3nm", "3k", "3g", "3b"}
KEY_VARIANTS = {"3k", "3g", "3b"}
GLOBAL_VARIANTS = {"3g", "3b"}  # they need GlobalLimits (Redis + tools/rls)
RLS_CLUSTER = "llm_router_rls"
# Variant 3b: the descriptors Envoy's ratelimit filter sends (docs/design/global-limits-measured.md). Their own
# limits (B3_LIMITS, appended to the RLS's limits file) are far above any run, so nothing is refused; B has no
# refund (parallel is never released, reservations are never settled), which huge limits hide.
B3_KEY, B3_DONE_KEY = "bench-3b", "bench-3b-done"
B3_LIMITS = (("rpm", B3_KEY, 60), ("tpm", B3_KEY, 60), ("parallel", B3_KEY, 900), ("budget", B3_KEY, 86400),
             ("tpm", B3_DONE_KEY, 60))
B3_STAT_PREFIX = "bench_b"


def bearer(variant: str) -> str:
    """The key a variant's requests carry: the virtual key for 3k and 3g, else the master key."""
    return workload.BENCH_KEY if variant in KEY_VARIANTS else workload.MASTER_KEY


class GlobalLimits:
    """Variants 3g's and 3b's rate limit service: Redis and tools/rls (its limits written by `llm-router rls` for the
    variant's plugin config), both pinned to the load CPU with wrk and nginx: only Envoy's CPU is measured."""

    def __init__(self, run_dir: Path):
        from support.rls import Redis, Rls
        cfg = global_config()
        self.dir = run_dir / "rls"
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        (self.dir / "plugin.json").write_text(json.dumps(cfg))
        out = subprocess.run(["cargo", "run", "-q", "-p", "llm-router-cli", "--", "rls", str(self.dir / "plugin.json"),
                              "--format", "limitador"], cwd=REPO, capture_output=True, text=True,
                             env={**os.environ, **workload.ENV})
        if out.returncode != 0:
            raise BenchError(f"llm-router rls failed: {out.stderr}")
        # The CLI writes a block-style YAML list; variant 3b's own limits are appended to it.
        (self.dir / "limits.yaml").write_text(out.stdout.rstrip("\n") + "\n" + "".join(
            f"- namespace: llm_router\n  name: {kind}.api_key.{key}\n  max_value: {10**15}\n  seconds: {secs}\n"
            f"  conditions: [\"descriptors[0]['limit'] == '{kind}'\", \"descriptors[0]['api_key'] == '{key}'\"]\n"
            f"  variables: []\n" for kind, key, secs in B3_LIMITS))
        pin = ["taskset", "-c", LOAD_CPU]
        self.redis = Redis(self.dir / "redis", prefix=pin)
        self.rls = Rls(self.dir, self.redis, self.dir / "limits.yaml", prefix=pin)

    def counter(self, key: str) -> int:
        """The Redis counter(s) of the limits on `api_key == key` (Limitador's key holds the condition text)."""
        cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"
        keys = subprocess.run([cli, "-p", str(self.redis.port), "--scan", "--pattern", f"*counter:*'{key}'*"],
                              capture_output=True, text=True, timeout=10).stdout.splitlines()
        total = 0
        for k in keys:
            v = subprocess.run([cli, "-p", str(self.redis.port), "get", k], capture_output=True, text=True, timeout=10).stdout.strip()
            total += int(v) if v.isdigit() else 0
        return total

    def stop(self) -> None:
        self.rls.stop()
        self.redis.stop()


GLOBAL: "GlobalLimits | None" = None


def global_config(deployments: int = 40) -> dict:
    cfg = workload.router_config(deployments)
    workload.with_virtual_keys(cfg)
    cfg["envoy_settings"]["rate_limit_service"] = {"cluster": RLS_CLUSTER, "timeout_ms": 1000}
    return cfg


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class BenchError(RuntimeError):
    pass


# ---- tools and builds -----------------------------------------------------------------------------------
def run_checked(cmd, **kw) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        raise BenchError(f"{' '.join(map(str, cmd))} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p.stdout + p.stderr


def build(skip: bool, router_wasm: Path) -> None:
    if not skip:
        if router_wasm == WASM_PATH:
            log("building llm_router.wasm (scripts/build)")
            run_checked([str(REPO / "scripts" / "build")], cwd=REPO)
        log("building the no-op filter")
        run_checked(["cargo", "build", "--quiet", "--release", "--target", "wasm32-wasip1", "--manifest-path",
                     str(NOOP_MANIFEST)], cwd=REPO)
    for p in (router_wasm, NOOP_WASM, ENVOY_BIN):
        if not p.exists():
            raise BenchError(f"{p} is missing (run without --no-build; scripts/setup installs Envoy)")
    for tool in ("nginx", "wrk", "taskset"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            raise BenchError(f"{tool} not found (bench/run installs nginx and wrk with apt-get)")
    RUN.mkdir(exist_ok=True)
    shutil.copyfile(router_wasm, WASM_COPY["router"])
    shutil.copyfile(NOOP_WASM, WASM_COPY["noop"])


def tool_versions() -> dict:
    def first_line(cmd):
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (p.stdout + p.stderr).strip().splitlines()[0]
        except Exception as e:  # informational only
            return f"? ({e})"
    return {"envoy": first_line([str(ENVOY_BIN), "--version"]).split("version: ")[-1],
            "nginx": first_line([nginx_bin(), "-v"]), "wrk": first_line(["wrk", "-v"]).split(" [")[0],
            "python": platform.python_version()}


def nginx_bin() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def machine() -> dict:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cpus": os.cpu_count(), "kernel": platform.release(),
            "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3]}


def git_info() -> dict:
    def g(*a):
        return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True).stdout
    dirty = g("status", "--porcelain", "--untracked-files=no", "--", "src", "Cargo.toml", "Cargo.lock")
    paths = [line.split(maxsplit=1)[-1] for line in dirty.splitlines() if line.strip()]
    return {"commit": g("rev-parse", "HEAD").strip(), "short": g("rev-parse", "--short", "HEAD").strip() or "nogit",
            "src_dirty": bool(paths), "dirty_paths": paths}


def wasm_info(path: Path, built: Path) -> dict:
    data = path.read_bytes()
    path = built.relative_to(REPO) if built.is_relative_to(REPO) else built
    return {"path": str(path), "bytes": len(data), "kib": round(len(data) / 1024, 1),
            "sha256": hashlib.sha256(data).hexdigest()[:16]}


# ---- processes ------------------------------------------------------------------------------------------
def proc_cpu_ticks(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14 and 15 of proc(5))


def proc_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BenchError(f"no VmRSS for pid {pid}")


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


class Nginx:
    """nginx as the static upstream: one process (no master), pinned to the load CPU; every request on any
    path, POST included, gets 200 and a fixed chat completion."""

    def __init__(self, run_dir: Path):
        self.dir = run_dir / "nginx"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        body = workload.NGINX_BODY
        if "'" in body or "$" in body:
            raise BenchError("the nginx body must not contain ' or $")
        temp = "\n".join(f"  {k}_temp_path {self.dir}/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        conf = f"""# generated by bench/run
worker_processes 1;
master_process off;
daemon off;
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log warn;
events {{ worker_connections 4096; multi_accept on; }}
http {{
  access_log off;
{temp}
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  client_max_body_size 2m;
  client_body_buffer_size 64k;
  server {{
    listen 127.0.0.1:{self.port};
    default_type application/json;
    location / {{ return 200 '{body}'; }}
  }}
}}
"""
        self.conf = self.dir / "nginx.conf"
        self.conf.write_text(conf)
        self.log = open(self.dir / "stderr.log", "wb")
        self.proc = subprocess.Popen(["taskset", "-c", LOAD_CPU, nginx_bin(), "-p", str(self.dir), "-e", "stderr",
                                      "-c", str(self.conf)], stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"nginx exited ({self.proc.returncode}): {(self.dir / 'stderr.log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise BenchError("nginx did not start listening")
                time.sleep(0.05)
        status, _, body = http_post(f"http://127.0.0.1:{self.port}/any/path", b'{"x":1}')
        if status != 200 or body != workload.NGINX_BODY.encode():
            raise BenchError(f"nginx answered {status} {body[:200]!r}")

    def stop(self) -> None:
        stop_process(self.proc)
        self.log.close()


def http_post(url: str, body: bytes, headers: dict | None = None, timeout: float = 10) -> tuple:
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


# ---- Envoy variants -------------------------------------------------------------------------------------
def variant_bootstrap(variant: str, nginx_port: int) -> dict:
    """The bootstrap of one variant. All share the router's listener, HCM (early header mutation, routes,
    local reply mapping) and the clusters of the 40-deployment config; only the http_filters (and, for 3f
    and 4, the failover wiring / table) differ. Requests that no filter routes take the passthrough route
    to nginx."""
    deployments = 500 if variant == "4" else 40
    cfg = workload.router_config(deployments, rewrite=variant != "3nr", failover_settings=variant != "3ns")
    if variant == "3nm":
        cfg["envoy_settings"]["metrics"] = False
    if variant in ("3k", "3b"):
        workload.with_virtual_keys(cfg)
    if variant == "3b":
        # The stream-done call's addends: the token counts the router writes in on_log.
        cfg["envoy_settings"].update(access_log_properties=True, access_log_tokens=True)
    if variant == "3g":
        cfg = global_config(deployments)
    clusters = {PASSTHROUGH_CLUSTER: ("127.0.0.1", nginx_port)}
    for name in workload.cluster_names(cfg):
        clusters[name] = ("127.0.0.1", nginx_port)
    if variant in GLOBAL_VARIANTS:
        if GLOBAL is None:
            raise BenchError(f"variant {variant} needs the rate limit service (started by main)")
        clusters[RLS_CLUSTER] = ("127.0.0.1", GLOBAL.rls.port, "h2")
    failover_port = free_port() if variant == "3f" else None
    wasm_path = WASM_COPY["router"] if variant in ROUTER_VARIANTS else WASM_COPY["noop"]
    bs = bootstrap(cfg, clusters, env=workload.ENV, wasm=True, wasm_path=wasm_path, failover_port=failover_port)
    hcm = bs["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    filters = hcm["http_filters"]  # [wasm, router]
    if variant == "1":
        del filters[0]
    elif variant == "1b":
        filters[0] = buffer_filter()
    elif variant in ("2", "2b", "2h"):
        wasm_cfg = filters[0]["typed_config"]["config"]
        wasm_cfg["name"] = wasm_cfg["root_id"] = wasm_cfg["vm_config"]["vm_id"] = "noop"
        wasm_cfg["configuration"]["value"] = {"2": "noop", "2b": "buffer_read", "2h": "host_calls"}[variant]
        wasm_cfg["vm_config"]["environment_variables"] = {}
    elif variant == "3b":
        filters.insert(1, b3_ratelimit_filter())  # [wasm, ratelimit, router]
        routed = hcm["route_config"]["virtual_hosts"][0]["routes"][0]
        assert "cluster_header" in routed["route"], routed
        routed["typed_per_filter_config"] = {"envoy.filters.http.ratelimit": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimitPerRoute",
            "rate_limits": b3_rate_limits()}}
    return bs


def b3_ratelimit_filter() -> dict:
    """Envoy's HTTP ratelimit filter on the same RLS as 3g, with 3g's timeout. Failing closed (500): an RLS
    that does not answer fails check_routes instead of being measured as a fast no-op."""
    return {"name": "envoy.filters.http.ratelimit", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit",
        "domain": "llm_router", "stat_prefix": B3_STAT_PREFIX, "timeout": "1s", "failure_mode_deny": True,
        "rate_limit_service": {"grpc_service": {"envoy_grpc": {"cluster_name": RLS_CLUSTER}},
                               "transport_api_version": "V3"}}}


def b3_rate_limits() -> list:
    """Admission: one descriptor per limit of 3g's plan, `{limit, api_key}` with fixed values (Envoy cannot
    compute the key's hash or the amounts: request-level hits_addend, i.e. 1 each), the rpm one also carrying
    the cluster header the router sets in its body phase. Stream done: the router's prompt and completion token
    filter state, two descriptors of one call to one counter (the router writes no total; hits_addend.format takes
    a single command)."""
    def generic(k: str, v: str) -> dict:
        return {"generic_key": {"descriptor_key": k, "descriptor_value": v}}

    out = []
    for kind in ("rpm", "tpm", "parallel", "budget"):
        actions = [generic("limit", kind), generic("api_key", B3_KEY)]
        if kind == "rpm":
            actions.append({"request_headers": {"header_name": CLUSTER_HEADER, "descriptor_key": "cluster"}})
        out.append({"actions": actions})
    for prop in ("prompt_tokens", "completion_tokens"):
        out.append({"actions": [generic("limit", "tpm"), generic("api_key", B3_DONE_KEY)], "apply_on_stream_done": True,
                    "hits_addend": {"format": f"%FILTER_STATE(wasm.llm_router.{prop}:PLAIN)%"}})
    return out


class Envoy:
    """One Envoy (--concurrency 1, pinned to ENVOY_CPU, warn logging) for one variant."""

    def __init__(self, variant: str, nginx_port: int, run_dir: Path):
        self.variant = variant
        self.dir = run_dir / f"envoy-{variant}-{time.strftime('%H%M%S')}-{os.getpid()}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.bootstrap_path = self.dir / "bootstrap.json"
        self.bootstrap_path.write_text(json.dumps(variant_bootstrap(variant, nginx_port), indent=1))
        self.admin_path = self.dir / "admin-address"
        self.log_path = self.dir / "envoy.log"
        self._log = open(self.log_path, "wb")
        cmd = ["taskset", "-c", ENVOY_CPU, str(ENVOY_BIN), "-c", str(self.bootstrap_path), "--concurrency", "1",
               "--log-level", "warn", "--use-dynamic-base-id", "--admin-address-path", str(self.admin_path)]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=REPO, start_new_session=True)
        self.pid = self.proc.pid  # taskset execs Envoy: same pid
        self.admin_port = self.listener_port = None
        self._wait_ready()
        self.url = f"http://127.0.0.1:{self.listener_port}{PATH}"

    def _admin(self, path: str) -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=5) as r:
            return r.read()

    def _wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"Envoy ({self.variant}) exited with {self.proc.returncode}; log {self.log_path}:\n"
                                 + self.log_path.read_text(errors="replace")[-3000:])
            try:
                if self.admin_port is None and self.admin_path.exists() and self.admin_path.read_text().strip():
                    self.admin_port = int(self.admin_path.read_text().strip().rsplit(":", 1)[1])
                if self.admin_port is not None and self._admin("/ready").strip() == b"LIVE":
                    for ls in json.loads(self._admin("/listeners?format=json"))["listener_statuses"]:
                        if ls["name"] == "ingress":
                            self.listener_port = ls["local_address"]["socket_address"]["port_value"]
                    if self.listener_port:
                        return
            except (OSError, urllib.error.URLError, ValueError, KeyError):
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"Envoy ({self.variant}) not ready in {timeout}s; log {self.log_path}")
            time.sleep(0.05)

    def completed(self) -> int:
        raw = json.loads(self._admin("/stats?format=json&filter=downstream_rq_completed"))
        for s in raw.get("stats", []):
            if s.get("name") == "http.ingress.downstream_rq_completed":
                return int(s["value"])
        return 0

    def rss_kib(self) -> int:
        return proc_rss_kib(self.pid)

    def check_routes(self, bodies: dict) -> dict:
        """One request per body (and 20 more of the small one for the router): 200, nginx's body, and for
        router variants the x-llm-router-deployment header of a hot-group deployment. Raises otherwise."""
        seen = set()
        auth = {"authorization": f"Bearer {bearer(self.variant)}"}
        hot_ids = {d["model_info"]["id"] for d in workload.hot_group()}
        for label, body in bodies.items():
            n = 20 if (label == "300B" and self.variant in ROUTER_VARIANTS) else 1
            for _ in range(n):
                status, headers, resp = http_post(self.url, body, auth)
                if status != 200 or resp != workload.NGINX_BODY.encode():
                    raise BenchError(f"variant {self.variant} ({label}): expected 200 with nginx's body, got {status} "
                                     f"{headers} {resp[:300]!r}; Envoy log {self.log_path}")
                dep = headers.get("x-llm-router-deployment")
                if self.variant in ROUTER_VARIANTS:
                    if not dep or dep not in hot_ids or headers.get("x-llm-router-model-group") != workload.HOT_GROUP:
                        raise BenchError(f"variant {self.variant} ({label}): no/unknown x-llm-router-deployment "
                                         f"({dep!r}, group {headers.get('x-llm-router-model-group')!r}); "
                                         f"headers {headers}")
                    seen.add(dep)
                    if self.variant in KEY_VARIANTS and not (headers.get("x-ratelimit-limit-requests") and headers.get("x-litellm-key-spend")):
                        raise BenchError(f"variant {self.variant}: the key's limits and budget are not in effect; headers {headers}")
                elif self.variant == "2h":
                    if dep != "gpt-4o-openai":
                        raise BenchError(f"variant 2h: expected the mimicked router header, got {headers}")
                elif dep:
                    raise BenchError(f"variant {self.variant}: unexpected router header {dep!r}")
        if self.variant in ROUTER_VARIANTS and len(seen) < 2:
            raise BenchError(f"variant {self.variant}: 20 requests all went to {seen}: not balancing")
        if self.variant == "3g":
            stats = self._admin("/stats?filter=rls_calls").decode()
            ok = sum(int(v) for v in re.findall(r"rls_call=\.=admission;\.;rls_result=\.=ok;\.;llm_router_rls_calls_total: (\d+)", stats))
            if ok < 20:
                raise BenchError(f"variant 3g: the rate limit service admitted {ok} of the check's requests; stats:\n{stats}")
        if self.variant == "3b":
            self.check_b3()
        return {"deployments_seen": sorted(seen)}

    def check_b3(self) -> None:
        """Envoy's ratelimit filter asked the RLS for each request (its `ratelimit.ok` stat, kept per upstream
        cluster: measured on Envoy 1.40, the stream-done calls do not count there), and the stream-done calls
        reached it: the RLS's Redis counter of B3_DONE_KEY holds the tokens they charged."""
        raw = json.loads(self._admin("/stats?format=json&filter=ratelimit"))
        stats = {s["name"]: s.get("value", 0) for s in raw.get("stats", []) if "name" in s}
        ok = sum(v for k, v in stats.items() if k.endswith(f".ratelimit.{B3_STAT_PREFIX}.ok"))
        if ok < 20:
            raise BenchError(f"variant 3b: Envoy's ratelimit filter had {ok} OK answers for the check's requests; stats {stats}")
        deadline = time.monotonic() + 5
        while True:
            charged = GLOBAL.counter(B3_DONE_KEY) if GLOBAL else 0
            if charged > 0:
                return
            if time.monotonic() > deadline:
                raise BenchError(f"variant 3b: no stream-done call reached the RLS (counter {B3_DONE_KEY} is {charged}); "
                                 f"ratelimit stats {stats}; Envoy log {self.log_path}")
            time.sleep(0.1)

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()


# ---- load -----------------------------------------------------------------------------------------------
def wrk(url: str, body_file: Path, conns: int, duration: float, stop_after: int = 0, key: str = workload.MASTER_KEY) -> dict:
    env = {**os.environ, "BENCH_BODY_FILE": str(body_file), "BENCH_MASTER_KEY": key,
           "BENCH_STOP_AFTER": str(stop_after)}
    cmd = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{conns}", f"-d{max(1, round(duration))}s", "--latency",
           "--timeout", "10s", "-s", str(WRK_SCRIPT), url]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    m = re.search(r"^BENCH (\{.*\})$", p.stdout, re.M)
    if p.returncode != 0 or not m:
        raise BenchError(f"wrk failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return json.loads(m.group(1))


def measure(envoy: Envoy, body_file: Path, conns: int, duration: float, stop_after: int = 0) -> dict:
    done0 = envoy.completed()
    cpu0, t0 = proc_cpu_ticks(envoy.pid), time.monotonic()
    w = wrk(envoy.url, body_file, conns, duration, stop_after, key=bearer(envoy.variant))
    cpu1, t1 = proc_cpu_ticks(envoy.pid), time.monotonic()
    done = envoy.completed() - done0
    errors = {k: v for k, v in w.items() if k.startswith("err_") and v}
    if w["err_status"] or w["requests"] == 0:
        raise BenchError(f"variant {envoy.variant}: wrk saw {w['err_status']} non-2xx responses of {w['requests']} "
                         f"(errors {errors}); Envoy log {envoy.log_path}")
    cpu_s = (cpu1 - cpu0) / CLK_TCK
    return {
        "rps": round(w["requests"] / (w["duration_us"] / 1e6), 1),
        "p50_ms": round(w["lat_p50_us"] / 1000, 3), "p90_ms": round(w["lat_p90_us"] / 1000, 3),
        "p99_ms": round(w["lat_p99_us"] / 1000, 3), "mean_ms": round(w["lat_mean_us"] / 1000, 3),
        "requests_wrk": w["requests"], "requests_envoy": done,
        "cpu_us_per_req": round(cpu_s * 1e6 / max(done, 1), 2),
        "envoy_cpu_util": round(cpu_s / (t1 - t0), 3),
        "socket_errors": errors,
    }


# ---- the run --------------------------------------------------------------------------------------------
def run_variant(variant: str, nginx: Nginx, body_files: dict, body_bytes: dict, args, with_c1: bool) -> dict:
    envoy = Envoy(variant, nginx.port, RUN)
    try:
        out = {"rss_kib_start": envoy.rss_kib()}
        out["check"] = envoy.check_routes(body_bytes)
        for label, f in body_files.items():
            wrk(envoy.url, f, 32, args.warmup, key=bearer(envoy.variant))
        out["rss_kib_after_warmup"] = envoy.rss_kib()
        for label, f in body_files.items():
            c32 = args.breakdown_duration if variant in BREAKDOWN else args.duration
            m = measure(envoy, f, 32, c32)
            tries = []
            while m["envoy_cpu_util"] < 0.9 and len(tries) < 3:
                # Envoy should saturate CPU 0 at 32 connections; less means something else ran there.
                log(f"  {label}/c32 disturbed (Envoy CPU {m['envoy_cpu_util'] * 100:.0f}% < 90%): measuring again")
                tries.append(m)
                time.sleep(5)
                m = measure(envoy, f, 32, c32)
            if tries:
                m["disturbed_tries"] = tries
            if m["envoy_cpu_util"] < 0.9:
                m["disturbed"] = True
                log(f"  {label}/c32 still disturbed: kept, marked as disturbed")
            out[f"{label}/c32"] = m
            if with_c1:
                out[f"{label}/c1"] = measure(envoy, f, 1, args.duration_c1)
        out["rss_kib_end"] = envoy.rss_kib()
        return out
    finally:
        envoy.stop()


def memory_check(nginx: Nginx, body_files: dict, total: int, step: int) -> dict:
    """Variant 3: RSS at start, then after every `step` requests (c32, 300-byte body) up to `total`.
    wrk stops its thread after exactly the requests asked for (BENCH_STOP_AFTER) but then idles until -d
    ends, so -d is sized from the measured rate."""
    envoy = Envoy("3", nginx.port, RUN)
    try:
        envoy.check_routes({"300B": workload.chat_body(300)})
        base = envoy.completed()
        points = [{"requests": 0, "rss_kib": envoy.rss_kib()}]
        rate = measure(envoy, body_files["300B"], 32, 1)["rps"]  # probe (counts towards the total)
        done = envoy.completed() - base
        if done >= total:
            points.append({"requests": done, "rss_kib": envoy.rss_kib()})
        while done < total:
            target = min(total, (done // step + 1) * step)
            while done < target:
                n = target - done
                wrk(envoy.url, body_files["300B"], 32, n / rate * 1.1 + 1, stop_after=n, key=bearer(envoy.variant))
                done = envoy.completed() - base
            points.append({"requests": done, "rss_kib": envoy.rss_kib()})
            log(f"  memory: {done} requests, RSS {points[-1]['rss_kib'] / 1024:.1f} MiB")
        return {"variant": "3", "body": "300B", "connections": 32, "points": points}
    finally:
        envoy.stop()


def median_results(raw: list) -> dict:
    """{variant: {key: {metric: median}}} over rounds."""
    by: dict = {}
    for r in raw:
        for key, m in r["results"].items():
            if isinstance(m, dict) and "rps" in m:
                by.setdefault(r["variant"], {}).setdefault(key, []).append(m)
            elif key.startswith("rss_"):
                by.setdefault(r["variant"], {}).setdefault(key, []).append(m)
    med: dict = {}
    for v, keys in by.items():
        med[v] = {}
        for key, vals in keys.items():
            if key.startswith("rss_"):
                med[v][key] = statistics.median(vals)
            else:
                clean = [x for x in vals if not x.get("disturbed")] or vals
                med[v][key] = {metric: round(statistics.median(x[metric] for x in clean), 3)
                               for metric in ("rps", "p50_ms", "p99_ms", "cpu_us_per_req", "envoy_cpu_util")}
                med[v][key]["rounds_used"] = len(clean)
    return med


def ratios(med: dict) -> dict:
    out = {}
    pairs = [("3", "1"), ("3", "2"), ("4", "3"), ("3f", "3"), ("2", "1"), ("1b", "1"), ("2b", "2"), ("2h", "2b"), ("3", "2h"), ("3", "3nr"), ("3", "3nm"),
             ("3", "3ns")]
    for a, b in pairs:
        if a not in med or b not in med:
            continue
        for body in BODIES:
            ka = med[a].get(f"{body}/c32")
            kb = med[b].get(f"{body}/c32")
            if not ka or not kb:
                continue
            out[f"{a}/{b} {body}"] = {
                "throughput": round(ka["rps"] / kb["rps"], 3),
                "cpu_per_req": round(ka["cpu_us_per_req"] / kb["cpu_us_per_req"], 3),
                "cpu_delta_us": round(ka["cpu_us_per_req"] - kb["cpu_us_per_req"], 1),
            }
    return out


def targets(med: dict, rat: dict, wasm: dict, memory: dict | None) -> list:
    t = []
    for body in BODIES:
        r = rat.get(f"3/2 {body}")
        if r:
            t.append({"target": f"router throughput >= 0.90 x no-op ({body})", "value": r["throughput"],
                      "ok": r["throughput"] >= 0.90,
                      "miss": None if r["throughput"] >= 0.90 else f"{(0.90 - r['throughput']) * 100:.1f} points short"})
            t.append({"target": f"extra Envoy CPU/request over no-op <= 25 us ({body})", "value": r["cpu_delta_us"],
                      "ok": r["cpu_delta_us"] <= 25,
                      "miss": None if r["cpu_delta_us"] <= 25 else f"{r['cpu_delta_us'] - 25:.1f} us over"})
        r4 = rat.get(f"4/3 {body}")
        if r4:
            ok = r4["cpu_per_req"] <= 1.05
            t.append({"target": f"500 deployments <= 1.05 x 40 deployments ({body}; Envoy CPU/request)",
                      "value": f"CPU/request x{r4['cpu_per_req']} (throughput x{r4['throughput']})", "ok": ok,
                      "miss": None if ok else f"{(r4['cpu_per_req'] - 1.05) * 100:.1f} points over"})
    ok = wasm["bytes"] <= 400 * 1024
    t.append({"target": "llm_router.wasm <= 400 KB", "value": f"{wasm['bytes']} B = {wasm['kib']} KiB = "
              f"{wasm['bytes'] / 1000:.1f} kB", "ok": ok,
              "miss": None if wasm["bytes"] <= 400_000 else
              (f"within 400 KiB, but {(wasm['bytes'] - 400_000) / 1000:.1f} kB over 400 kB (decimal)" if ok else
               f"{(wasm['bytes'] - 400 * 1024) / 1024:.1f} KiB over")})
    if memory:
        pts = memory["points"]
        half = [p for p in pts if p["requests"] >= pts[-1]["requests"] / 2]
        growth_second_half = pts[-1]["rss_kib"] - half[0]["rss_kib"]
        t.append({"target": "bounded memory (RSS growth over the second half of the memory check)",
                  "value": f"{pts[0]['rss_kib'] / 1024:.1f} MiB -> {pts[-1]['rss_kib'] / 1024:.1f} MiB after "
                           f"{pts[-1]['requests']} requests; second half {growth_second_half:+d} KiB",
                  "ok": growth_second_half <= 2048, "miss": None})
    return t


# ---- report ---------------------------------------------------------------------------------------------
def fmt(x, nd=1):
    return "-" if x is None else f"{x:,.{nd}f}"


def report_md(data: dict) -> str:
    med, rat = data["medians"], data["ratios"]
    s = data["settings"]
    lines = [f"# llm-router benchmark {data['date']} ({data['git']['short']}"
             + (f"; uncommitted changes in {', '.join(data['git'].get('dirty_paths') or ['src'])}"
              if data['git']['src_dirty'] else "") + ")", ""]
    if data["git"].get("note"):
        lines += [data["git"]["note"], ""]
    lines += [f"Machine: {data['machine']['cpu']}, {data['machine']['cpus']} CPUs, Linux {data['machine']['kernel']}; "
              f"load average at start {' '.join(data['machine']['loadavg_at_start'])}.",
              f"Tools: Envoy {data['tools']['envoy']}; {data['tools']['nginx']}; {data['tools']['wrk']}.",
              f"Pinning: Envoy `--concurrency 1` on CPU {ENVOY_CPU} (taskset; main + worker thread); wrk -t1 and "
              f"nginx (1 process, `return 200` static JSON) on CPU {LOAD_CPU}.",
              f"Load: wrk POST {PATH}, bodies {', '.join(f'{k} ({v} B)' for k, v in BODIES.items())} for the hot "
              f"group `gpt-4o`; {s['rounds']} rounds, variants alternating (order rotated each round); "
              f"{s['duration']} s at 32 connections, {s['duration_c1']} s at 1 connection, breakdown variants "
              f"{s['breakdown_duration']} s at 32 only; {s['warmup']} s warm-up per body per Envoy. Medians of the rounds.",
              f"CPU/request: utime+stime delta of the Envoy process (/proc/<pid>/stat) over the wrk run / "
              f"requests Envoy completed (admin `downstream_rq_completed`). CPU% = Envoy CPU time / wall time.",
              f"llm_router.wasm: {data['wasm']['router']['bytes']:,} B ({data['wasm']['router']['kib']} KiB); "
              f"noop_filter.wasm: {data['wasm']['noop']['bytes']:,} B.", ""]
    lines += ["## Variants", ""] + [f"- **{k}**: {v}" for k, v in VARIANTS.items()]
    if any(k in med for k in BREAKDOWN):
        lines += [f"- **{k}** (breakdown): {v}" for k, v in BREAKDOWN.items() if k in med]
    c40, c500 = workload.router_config(40), workload.router_config(500)
    lines += ["", f"Router config (bench/workload.py): {len(c40['model_list'])} deployments in "
              f"{len({d['model_name'] for d in c40['model_list']})} groups over OpenAI-compatible (OpenAI, Groq, "
              f"Together, Fireworks, DeepSeek, vLLM), Azure and Anthropic api_bases "
              f"({len(workload.cluster_names(c40))} clusters, all pointing at nginx); variant 4: "
              f"{len(c500['model_list'])} deployments in {len({d['model_name'] for d in c500['model_list']})} groups. "
              "simple-shuffle, master key, timeout 120 s, num_retries 2 + fallbacks (3ns: without). Hot group "
              "`gpt-4o`: 4 deployments (OpenAI weight 2, an OpenAI dated snapshot, 2 Azure regions); all but the "
              "first rewrite the body's `model` (60% of requests by weight; 3nr: none)."]
    lines += ["", "## Results (medians)", "",
              "| variant | body | req/s @32 | p50 / p99 ms @32 | p50 / p99 ms @1 | Envoy CPU µs/req @32 | Envoy CPU% @32 | RSS MiB start → end |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for v in list(VARIANTS) + list(BREAKDOWN):
        if v not in med:
            continue
        for body in BODIES:
            a = med[v].get(f"{body}/c32")
            b = med[v].get(f"{body}/c1")
            if not a:
                continue
            rss = f"{med[v]['rss_kib_start'] / 1024:.1f} → {med[v]['rss_kib_end'] / 1024:.1f}"
            used = a.get("rounds_used", s["rounds"])
            note = f" ({used} of {s['rounds']} rounds†)" if used < s["rounds"] else ""
            lines.append(f"| {v} | {body} | {fmt(a['rps'], 0)}{note} | {fmt(a['p50_ms'], 2)} / {fmt(a['p99_ms'], 2)} | "
                         + (f"{fmt(b['p50_ms'], 3)} / {fmt(b['p99_ms'], 3)}" if b else "-")
                         + f" | {fmt(a['cpu_us_per_req'])} | {a['envoy_cpu_util'] * 100:.0f}% | {rss} |")
    repeated = sum(1 for r in data["rounds"] for m in r["results"].values()
                   if isinstance(m, dict) and m.get("disturbed_tries"))
    still = sum(1 for r in data["rounds"] for m in r["results"].values() if isinstance(m, dict) and m.get("disturbed"))
    lines += ["", f"Disturbance: {repeated} measurement(s) at 32 connections were repeated because Envoy got less "
              f"than 90% of its CPU (something else ran there); {still} stayed disturbed"
              + (" and are left out of the medians (†)." if still else ".")]
    lines += ["", "## Ratios (of the medians, 32 connections)", "",
              "| ratio | body | throughput | CPU/request | CPU delta µs/req |", "|---|---|---:|---:|---:|"]
    for k, r in rat.items():
        name, body = k.split(" ")
        lines.append(f"| {name} | {body} | {r['throughput']:.3f} | {r['cpu_per_req']:.3f} | {r['cpu_delta_us']:+.1f} |")
    if data.get("memory"):
        lines += ["", "## Memory check (variant 3, 300-byte body, 32 connections)", "",
                  "| requests | Envoy VmRSS MiB |", "|---:|---:|"]
        for p in data["memory"]["points"]:
            lines.append(f"| {p['requests']:,} | {p['rss_kib'] / 1024:.1f} |")
    lines += ["", "## Targets (issue 4)", "", "| target | measured | met |", "|---|---|---|"]
    for t in data["targets"]:
        lines.append(f"| {t['target']} | {t['value']} | {'yes' if t['ok'] else 'NO'}"
                     f"{' — ' + t['miss'] if t['miss'] else ''} |")
    lines += ["", f"Raw numbers (every round): `{data['json_name']}`.", ""]
    return "\n".join(lines)


def main() -> int:
    # A SIGTERM (e.g. `timeout`) unwinds like Ctrl-C, so Envoy and nginx are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 round, 2 s/1 s, small memory check")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=10, help="seconds per measurement at 32 connections")
    ap.add_argument("--duration-c1", type=float, default=5, help="seconds per measurement at 1 connection")
    ap.add_argument("--breakdown-duration", type=float, default=5, help="seconds per breakdown measurement")
    ap.add_argument("--warmup", type=float, default=1, help="warm-up seconds per body per Envoy")
    ap.add_argument("--memory-requests", type=int, default=200_000,
                    help="requests in the memory check (RSS sampled every 50k; 0 = skip)")
    ap.add_argument("--no-breakdown", action="store_true", help="skip the breakdown variants (1b 2b 2h 3nr 3ns 3nm)")
    ap.add_argument("--variants", help="comma-separated subset, e.g. 2,3")
    ap.add_argument("--no-build", action="store_true", help="use the existing wasm artifacts")
    ap.add_argument("--out", help="results directory (default bench/results; bench/.run/results with --quick)")
    ap.add_argument("--wasm", help="benchmark this llm_router.wasm instead of building the repo's (A/B runs)")
    ap.add_argument("--report", metavar="JSON", help="only re-render the .md of an earlier run's .json")
    args = ap.parse_args()
    if args.report:
        src = Path(args.report)
        data = json.loads(src.read_text())
        data["medians"] = median_results(data["rounds"])
        data["ratios"] = ratios(data["medians"])
        data["targets"] = targets(data["medians"], data["ratios"], data["wasm"]["router"], data.get("memory"))
        src.write_text(json.dumps(data, indent=1) + "\n")
        src.with_suffix(".md").write_text(report_md(data))
        print(report_md(data))
        return 0
    if args.quick:
        args.rounds, args.duration, args.duration_c1, args.breakdown_duration = 1, 2, 1, 1
        args.memory_requests = min(args.memory_requests, 20_000)
    out_dir = Path(args.out) if args.out else (RUN / "results" if args.quick else BENCH / "results")

    RUN.mkdir(exist_ok=True)
    lock = open("/tmp/llm-router-bench.lock", "w")  # machine-wide: any checkout
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise BenchError("another bench/run is running on this machine (/tmp/llm-router-bench.lock); two at once "
                         "share the pinned CPUs and both measure nonsense")
    router_wasm = Path(args.wasm).resolve() if args.wasm else WASM_PATH
    build(args.no_build, router_wasm)
    variants = list(VARIANTS) + ([] if args.no_breakdown else list(BREAKDOWN))
    if args.variants:
        wanted = args.variants.split(",")
        unknown = set(wanted) - set(variants)
        if unknown:
            raise BenchError(f"unknown variants {sorted(unknown)}; known: {variants}")
        variants = [v for v in variants if v in wanted]

    body_bytes = {label: workload.chat_body(n) for label, n in BODIES.items()}
    body_files = {}
    for label, b in body_bytes.items():
        body_files[label] = RUN / f"body-{label}.json"
        body_files[label].write_bytes(b)

    load = float(Path("/proc/loadavg").read_text().split()[0])
    if load > 0.5:
        log(f"warning: load average {load} before the run: something else is using the CPUs; numbers will be noisy")

    git = git_info()
    data = {"date": dt.date.today().isoformat(), "git": git, "machine": machine(), "tools": tool_versions(),
            "settings": {k: getattr(args, k) for k in ("rounds", "duration", "duration_c1", "breakdown_duration",
                                                       "warmup", "memory_requests", "quick")},
            "wasm": {"router": wasm_info(WASM_COPY["router"], router_wasm),
                     "noop": wasm_info(WASM_COPY["noop"], NOOP_WASM)},
            "variants": {k: v for k, v in {**VARIANTS, **BREAKDOWN}.items() if k in variants},
            "bodies": {k: len(v) for k, v in body_bytes.items()}, "rounds": []}
    global GLOBAL
    nginx = Nginx(RUN)
    if GLOBAL_VARIANTS & set(variants):
        GLOBAL = GlobalLimits(RUN)
    started = time.monotonic()
    try:
        for rnd in range(args.rounds):
            order = variants[rnd % len(variants):] + variants[:rnd % len(variants)]
            for v in order:
                log(f"round {rnd + 1}/{args.rounds} variant {v}")
                res = run_variant(v, nginx, body_files, body_bytes, args, with_c1=v in VARIANTS)
                for key, m in res.items():
                    if isinstance(m, dict) and "rps" in m:
                        log(f"  {key:9s} {m['rps']:9.0f} req/s  p50 {m['p50_ms']:.2f} ms  p99 {m['p99_ms']:.2f} ms  "
                            f"{m['cpu_us_per_req']:6.1f} µs/req  CPU {m['envoy_cpu_util'] * 100:.0f}%")
                data["rounds"].append({"round": rnd + 1, "variant": v, "results": res})
        if args.memory_requests:
            log(f"memory check: {args.memory_requests} requests through variant 3")
            data["memory"] = memory_check(nginx, body_files, args.memory_requests,
                                          step=min(50_000, args.memory_requests))
    finally:
        nginx.stop()
        if GLOBAL is not None:
            GLOBAL.stop()
    data["elapsed_s"] = round(time.monotonic() - started)
    data["medians"] = median_results(data["rounds"])
    data["ratios"] = ratios(data["medians"])
    data["targets"] = targets(data["medians"], data["ratios"], data["wasm"]["router"], data.get("memory"))

    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{data['date']}-{git['short']}"
    data["json_name"] = f"{stem}.json"
    (out_dir / f"{stem}.json").write_text(json.dumps(data, indent=1) + "\n")
    md = report_md(data)
    (out_dir / f"{stem}.md").write_text(md)
    print()
    print(md)
    log(f"wrote {out_dir / stem}.md and .json ({data['elapsed_s']} s)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        print(f"\nbench/run: FAILED: {e}", file=sys.stderr)
        sys.exit(1)
