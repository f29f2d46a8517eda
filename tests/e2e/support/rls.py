"""A real rate limit service for the global-limits tests: `redis-server` (Debian's) and `llm-router-rls`
(tools/rls: Limitador's engine over that Redis), each a process of its own, on free loopback ports.

Redis runs with append-only persistence in its own directory, so a test can stop and restart it (and the
RLS, and the Envoys) and find the counters where they were."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Optional

from .envoy import REPO, free_port, stop_process_group

RLS_BIN = REPO / "tools" / "rls" / "target" / "release" / "llm-router-rls"
REDIS_BIN = shutil.which("redis-server") or "/usr/bin/redis-server"


def _wait_port(port: int, proc: subprocess.Popen, log: Path, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode}; log {log}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not listen on {port} within {timeout}s; log {log}")
        time.sleep(0.05)


class Redis:
    """redis-server on a free port with appendonly persistence in `dir`."""

    def __init__(self, dir: Path, port: Optional[int] = None, prefix: tuple = ()):
        self.prefix = list(prefix)  # e.g. taskset (bench/run pins it to the load CPU)
        if not Path(REDIS_BIN).exists():
            raise AssertionError(f"redis-server is missing ({REDIS_BIN}): run scripts/setup")
        self.dir = dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc: Optional[subprocess.Popen] = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> "Redis":
        log = self.dir / "redis.log"
        self.proc = subprocess.Popen(
            [*self.prefix, REDIS_BIN, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir), "--appendonly", "yes",
             "--appendfsync", "always", "--save", "", "--logfile", str(log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        _wait_port(self.port, self.proc, log, "redis-server")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process_group(self.proc)
            self.proc = None


class Rls:
    """llm-router-rls serving `limits_path` (Limitador's limits file) over `redis`."""

    def __init__(self, dir: Path, redis: Redis, limits_path: Path, port: Optional[int] = None, prefix: tuple = ()):
        self.prefix = list(prefix)
        if not RLS_BIN.exists():
            raise AssertionError(f"{RLS_BIN} is missing: run tools/rls/build (scripts/test does)")
        self.dir, self.redis, self.limits_path = dir, redis, limits_path
        self.port = port or free_port()
        self.log_path = dir / "rls.log"
        self.proc: Optional[subprocess.Popen] = None
        self.start()

    def start(self) -> "Rls":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [*self.prefix, str(RLS_BIN), "--listen", f"127.0.0.1:{self.port}", "--redis", self.redis.url, "--limits", str(self.limits_path)],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        _wait_port(self.port, self.proc, self.log_path, "llm-router-rls")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process_group(self.proc)
            self.proc = None
            self._log.close()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


class Silent:
    """A TCP listener that accepts connections and never answers: an RLS that hangs."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]

    def stop(self) -> None:
        self.sock.close()
