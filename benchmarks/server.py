"""The processes benchmarks start and measure against: a real `fusionrank serve`, and the floors
a search's latency is set against, the bare encoders (benchmarks.encoder_floor) and an HTTP app
that does nothing (benchmarks.http_floor)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx


def server_timing(header: str | None) -> dict[str, float]:
    """A Server-Timing header's durations (ms) by name."""
    parts = (p.strip() for p in (header or "").split(","))
    return {k: float(v) for k, v in (p.split(";dur=") for p in parts if p)}


@contextlib.contextmanager
def sqlite_server(data_dir: Path, db: Path, **settings: object) -> Iterator[str]:
    """`fusionrank serve` on `data_dir`'s index and the SQLite database `db`, with `settings`
    (FUSIONRANK_ names in lower case) on top of the defaults; yields its URL."""
    env = {f"FUSIONRANK_{k.upper()}": str(v) for k, v in settings.items()}
    proc, url = start_server(data_dir, env={**env, "FUSIONRANK_DATABASE_URL": f"sqlite:///{db}"})
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(60)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    data_dir: Path,
    ready_path: str = "/readyz",
    env: Mapping[str, str] | None = None,
    module: Sequence[str] = ("service.cli", "serve"),
    timeout: float = 180,
) -> tuple[subprocess.Popen[bytes], str]:
    """`fusionrank serve` (or another `python -m` server taking --port and --log-level) on
    `data_dir`, with `env` on top of this process's environment; returns once it is ready
    (within `timeout` seconds)."""
    port = free_port()
    env = {**os.environ, **(env or {}), "FUSIONRANK_DATA_DIR": str(data_dir)}
    args = ["--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen([sys.executable, "-m", *module, *args], env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}{ready_path}", timeout=2).status_code == 200:
                    return proc, url
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
    except BaseException:  # interrupted while waiting: the caller never gets `proc` to stop
        proc.kill()
        raise
    proc.kill()
    raise SystemExit(f"server did not become ready in {timeout:.0f} s")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Floor:
    """The bare encoders in a process of their own (benchmarks.encoder_floor), asked for the same
    queries between blocks of searches, so that both are measured under the same machine state.
    They run on PyTorch fp32 eager: the floor the ONNX Runtime backend is measured against."""

    def __init__(self, queries: dict[str, list[Any]]) -> None:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(queries, f)
        self._spec = f.name
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.encoder_floor", f.name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.threads: list[int] = json.loads(self._read())["threads"]

    def _read(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit("the encoder floor process died")
        return line

    def times(self, kind: str, items: list[int]) -> dict[int, list[float]]:
        """Each query's bare encode time (ms) at every thread count the floor measures."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps([kind, items]) + "\n")
        self.proc.stdin.flush()
        return {int(n): [float(x) for x in ms] for n, ms in json.loads(self._read()).items()}

    def close(self) -> None:
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.write("\n")
                self.proc.stdin.close()
            self.proc.wait(60)
        except (OSError, subprocess.TimeoutExpired):  # it died or hangs: do not hide why
            self.proc.kill()
        finally:
            os.unlink(self._spec)


def start_http_floor(body: bytes) -> tuple[subprocess.Popen[bytes], str, Path]:
    """benchmarks.http_floor answering with `body`; its process, URL and body file."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        f.write(body)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.http_floor", f.name, str(port)],
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return proc, url, Path(f.name)
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("the HTTP floor did not start in 20 s")
