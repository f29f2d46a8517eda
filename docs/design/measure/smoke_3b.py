"""Smoke check of bench variant 3b without bench/run (no CLI build, no load): tools/rls + Redis with only
bench.B3_LIMITS, nginx, then Envoy("3b").check_routes(). Not run by CI. From the repo root, after scripts/build:

    RLS_BIN=/path/to/llm-router-rls python3 docs/design/measure/smoke_3b.py
"""
import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))
import bench  # noqa: E402
import support.rls as rls_support  # noqa: E402  (bench put tests/e2e on the path)

if os.environ.get("RLS_BIN"):
    rls_support.RLS_BIN = Path(os.environ["RLS_BIN"])


class SmokeLimits(bench.GlobalLimits):
    def __init__(self, run_dir: Path):
        self.dir = run_dir / "rls-smoke3b"
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        (self.dir / "limits.yaml").write_text("".join(
            f"- namespace: llm_router\n  name: {kind}.api_key.{key}\n  max_value: {10**15}\n  seconds: {secs}\n"
            f"  conditions: [\"descriptors[0]['limit'] == '{kind}'\", \"descriptors[0]['api_key'] == '{key}'\"]\n"
            f"  variables: []\n" for kind, key, secs in bench.B3_LIMITS))
        self.redis = rls_support.Redis(self.dir / "redis")
        self.rls = rls_support.Rls(self.dir, self.redis, self.dir / "limits.yaml")


bench.RUN.mkdir(exist_ok=True)
shutil.copyfile(bench.WASM_PATH, bench.WASM_COPY["router"])
bench.GLOBAL = SmokeLimits(bench.RUN)
nginx = bench.Nginx(bench.RUN)
try:
    bodies = {label: bench.workload.chat_body(n) for label, n in bench.BODIES.items()}
    e = bench.Envoy("3b", nginx.port, bench.RUN)
    try:
        print("check_routes:", e.check_routes(bodies))
        print(f"counter {bench.B3_DONE_KEY}: {bench.GLOBAL.counter(bench.B3_DONE_KEY)}; "
              f"counters {bench.B3_KEY}: {bench.GLOBAL.counter(bench.B3_KEY)}")
        raw = json.loads(e._admin("/stats?format=json&filter=ratelimit"))
        print("ratelimit stats:", {s["name"]: s.get("value") for s in raw["stats"] if s.get("value")})
    finally:
        e.stop()
finally:
    nginx.stop()
    bench.GLOBAL.stop()
