"""A recording rate limit service for the measurements in ../global-limits-measured.md (not run by CI).

Answers envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit and appends one JSON line per call to
--log: time, domain, request-level hits_addend, and each descriptor's entries, hits_addend (null = unset) and
is_negative_hits. --answer ok|over|unavailable: OK (one OK status per descriptor), OVER_LIMIT (with a
raw_body and a response header; over-nobody: without them, to see what Envoy passes on), or gRPC UNAVAILABLE.

Needs grpcio + grpcio-tools (a temporary venv, e.g. /tmp/rlsvenv):
    /tmp/rlsvenv/bin/python recording_rls.py --port 18181 --log /tmp/rls.jsonl --answer ok
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent import futures

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))


def load_pb():
    out = tempfile.mkdtemp(prefix="rlspb-")
    from grpc_tools import protoc
    import grpc_tools
    inc = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    rc = protoc.main(["protoc", f"-I{HERE}", f"-I{inc}", f"--python_out={out}", f"--grpc_python_out={out}",
                      os.path.join(HERE, "rls_subset.proto")])
    if rc != 0:
        sys.exit(f"protoc failed: {rc}")
    sys.path.insert(0, out)
    import rls_subset_pb2, rls_subset_pb2_grpc  # noqa: E401
    return rls_subset_pb2, rls_subset_pb2_grpc


pb, pb_grpc = load_pb()


class Service(pb_grpc.RateLimitServiceServicer):
    def __init__(self, log_path, answer):
        self.log_path, self.answer = log_path, answer

    def ShouldRateLimit(self, req, ctx):
        rec = {"t": time.time(), "domain": req.domain, "hits_addend": req.hits_addend, "descriptors": [
            {"entries": {e.key: e.value for e in d.entries},
             "hits_addend": d.hits_addend.value if d.HasField("hits_addend") else None,
             "is_negative_hits": d.is_negative_hits} for d in req.descriptors]}
        with open(self.log_path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        if self.answer == "unavailable":
            ctx.abort(grpc.StatusCode.UNAVAILABLE, "recording rls: told to be unavailable")
        code = 2 if self.answer.startswith("over") else 1
        resp = pb.RateLimitResponse(overall_code=code, statuses=[
            pb.DescriptorStatus(code=code, current_limit=pb.CurrentLimit(requests_per_unit=10, unit=2, name="rec"),
                                limit_remaining=0 if code == 2 else 9) for _ in req.descriptors])
        if self.answer == "over":
            resp.raw_body = b'{"from":"recording rls raw_body"}'
            resp.response_headers_to_add.append(pb.HeaderValue(key="x-rls-said", value="over"))
        return resp


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--answer", choices=("ok", "over", "over-nobody", "unavailable"), default="ok")
    a = ap.parse_args()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    pb_grpc.add_RateLimitServiceServicer_to_server(Service(a.log, a.answer), server)
    server.add_insecure_port(f"127.0.0.1:{a.port}")
    server.start()
    print(f"recording rls on {a.port}, answer {a.answer}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
