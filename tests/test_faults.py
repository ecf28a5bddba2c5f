"""Faults cost nothing that was accepted, with real parts failing for real: PostgreSQL cut off
behind a TCP proxy, a learner process SIGKILLed mid-training, a corrupt head on disk, an ingest
process SIGKILLed while it writes, and a filesystem that runs out of space.

Longer runs of the same faults under load are in benchmarks/ (benchmarks.load)."""

from __future__ import annotations

import dataclasses
import gc
import os
import selectors
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import pytest
import torch
from helpers import (
    CLI,
    PG_URL,
    QUICK_LEARNING,
    cloned_store,
    fusionrank_process,
    ingest_into,
    live_server,
    settings_env,
    start_test_runtime,
)
from sqlalchemy import func, select

from model.checkpoint import load_head, save_head
from service.catalog.index import CatalogIndex
from shoppers.simulator import Simulator
from storage.artifacts import current
from storage.db import make_engine, session_factory, transaction
from storage.errors import DiskFull
from storage.models import FeedbackEvent, Impression, ModelVersion, TrainingRun
from storage.registry import VersionIn, register_version, set_active

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

# `fusionrank learner`, unchanged but for a file it touches as it starts to fit a candidate: the
# test then SIGKILLs it mid-training (a refresh of the test catalog takes well under a second).
WATCHED_LEARNER = """
import sys
from pathlib import Path

import learner.refresh as refresh
from service.cli import app

marker, real = Path(sys.argv.pop(1)), refresh.train


def train(*args, **kwargs):
    marker.touch()
    return real(*args, **kwargs)


refresh.train = train
app(prog_name="fusionrank")
"""


class TcpProxy:
    """127.0.0.1:<port> -> PostgreSQL. `cut()` drops every connection and refuses new ones, as a
    database host that went away does; `restore()` lets them through again."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.down = False
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.down:
                client.close()
                continue
            server = socket.create_connection(self.upstream)
            with self._lock:
                self._pairs.append((client, server))
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket) -> None:
        sel = selectors.DefaultSelector()
        sel.register(a, selectors.EVENT_READ, b)
        sel.register(b, selectors.EVENT_READ, a)
        try:
            while True:
                for key, _ in sel.select():
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        return
                    key.data.sendall(data)
        except OSError:
            return
        finally:
            a.close()
            b.close()

    def cut(self) -> None:
        self.down = True
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for a, b in pairs:
            for s in (a, b):
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def restore(self) -> None:
        self.down = False

    def close(self) -> None:
        self._stop = True
        self.cut()
        self._listener.close()


def _click(client: httpx.Client, search: dict, event_id: str) -> httpx.Response:
    return client.post(
        "/v1/feedback",
        json={
            "search_id": search["search_id"],
            "product_id": search["results"][0]["product_id"],
            "type": "click",
            "event_id": event_id,
        },
    )


def test_database_down_search_serves_feedback_503_and_nothing_accepted_is_lost(
    tmp_path, ingested, embedder
):
    proxy = TcpProxy(("127.0.0.1", 5432))
    try:
        with cloned_store(ingested, "postgres", tmp_path, model_poll_seconds=0.5) as store:
            direct = store.settings.database_url
            proxied = direct.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
            assert proxied != direct and PG_URL in direct
            settings = store.settings.model_copy(update={"database_url": proxied})
            rt = start_test_runtime(settings, embedder)
            try:
                with (
                    live_server(settings, runtime=rt) as srv,
                    httpx.Client(base_url=srv.url, timeout=60) as c,
                ):
                    _outage(c, proxy, rt, direct)
            finally:
                rt.close()
    finally:
        proxy.close()


def _outage(c: httpx.Client, proxy: TcpProxy, rt, direct_url: str) -> None:
    accepted: list[str] = []
    before = c.post("/v1/search", json={"query": "watch", "k": 5}).json()
    rt.impressions.flush()
    r = _click(c, before, "before-1")
    assert r.status_code == 202, r.text
    accepted.append("before-1")

    proxy.cut()
    during = []
    for q in ("watch", "black handbag", "blue shirt", "heels", "sunglasses") * 4:
        t0 = time.monotonic()
        r = c.post("/v1/search", json={"query": q, "k": 5})
        assert r.status_code == 200, r.text
        assert r.json()["results"] and time.monotonic() - t0 < 5
        during.append(r.json())
    ready = c.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "degraded", ready.text
    t0 = time.monotonic()
    r = _click(c, before, "during-1")
    assert r.status_code == 503, r.text
    assert r.json()["error"] == "database_unavailable" and r.headers["Retry-After"] == "5"
    assert time.monotonic() - t0 < 15
    assert c.post("/v1/search", json={"query": "watch"}).status_code == 200

    proxy.restore()
    deadline = time.monotonic() + 30
    while rt.impressions.pending({s["search_id"] for s in during}):  # the writer retried
        assert time.monotonic() < deadline, "impressions logged in the outage never got written"
        time.sleep(0.2)
    r = _click(c, before, "during-1")  # the client retries what got a 503
    assert r.status_code == 202 and r.json()["accepted"] == 1, r.text
    accepted.append("during-1")
    r = _click(c, during[-1], "after-1")  # a search served in the outage takes feedback
    assert r.status_code == 202, r.text
    accepted.append("after-1")
    assert c.get("/readyz").json()["status"] == "ready"

    engine = make_engine(direct_url)
    try:
        with session_factory(engine)() as s:
            counts = dict(
                s.execute(
                    select(FeedbackEvent.event_id, func.count()).group_by(FeedbackEvent.event_id)
                ).all()
            )
            logged = set(
                s.scalars(
                    select(Impression.search_id).where(
                        Impression.search_id.in_([d["search_id"] for d in during])
                    )
                )
            )
    finally:
        engine.dispose()
    assert counts == {e: 1 for e in accepted}
    assert logged == {d["search_id"] for d in during}


# ---- the learner, a corrupt head, a full disk ------------------------------------------------
@pytest.fixture(scope="module")
def traffic(tmp_path_factory, ingested, embedder):
    """A PostgreSQL store with logged searches and clicks, enough for a refresh to train."""
    directory = tmp_path_factory.mktemp("faults")
    with cloned_store(
        ingested,
        "postgres",
        directory,
        **QUICK_LEARNING,
        model_poll_seconds=0.2,
    ) as store:
        rt = start_test_runtime(store.settings, embedder)
        try:
            with live_server(store.settings, runtime=rt) as srv:
                report = Simulator(srv.url, ingested.csv, k=10).run(
                    250, seed=5, concurrency=2, progress=False
                )
                assert report.failed == 0 and report.events > 80
                rt.impressions.flush()
                srv.bootstrap = ingested.report.head_version
                yield srv
        finally:
            rt.close()


def _run(sessions, run_id: int) -> TrainingRun:
    with sessions() as s:
        run = s.get(TrainingRun, run_id)
        assert run is not None
        return run


def _versions(sessions) -> set[str]:
    with sessions() as s:
        return set(s.scalars(select(ModelVersion.version)))


def _wait_for(sessions, run_id: int, statuses: set[str], seconds: float) -> TrainingRun:
    deadline = time.monotonic() + seconds
    while (run := _run(sessions, run_id)).status not in statuses:
        assert time.monotonic() < deadline, f"run {run_id} still {run.status} after {seconds} s"
        time.sleep(0.1)
    return run


@contextmanager
def small_filesystem(path: Path, contents_of: Path, spare_kb: int) -> Iterator[Path]:
    """A tmpfs at `path` holding a copy of `contents_of` and `spare_kb` more: a disk about to
    fill up. Needs the right to mount (root, as on CI)."""
    if os.geteuid() != 0:
        pytest.skip("a small filesystem needs root to mount a tmpfs")
    used = sum(f.stat().st_size for f in contents_of.rglob("*") if f.is_file())
    path.mkdir(parents=True, exist_ok=True)
    size_kb = used // 1024 + spare_kb + 64
    mount = ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)]
    subprocess.run(mount, check=True)
    try:
        shutil.copytree(contents_of, path, dirs_exist_ok=True)
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_a_full_disk_fails_the_refresh_clearly_and_the_old_version_stays_active(traffic, tmp_path):
    rt, settings = traffic.runtime, traffic.settings
    heads = settings.data_dir / "heads"
    active, before = rt.searcher.active.version, _versions(rt.sessions)
    with small_filesystem(tmp_path / "heads", heads, spare_kb=8) as full:
        learner = rt.learner
        config = learner.config
        learner.config = dataclasses.replace(config, heads_dir=full)
        try:
            run_id = learner.request("test")
            learner.execute(run_id)
        finally:
            learner.config = config
        run = _run(rt.sessions, run_id)
        assert run.status == "failed", run.detail
        assert "no space left on the device holding" in run.error, run.error
        assert "previous version stays in use" in run.error
        assert not list(full.glob(".tmp-*")), "the half-written head was removed"
    assert _versions(rt.sessions) == before
    r = httpx.post(f"{traffic.url}/v1/search", json={"query": "watch"}, timeout=60)
    assert r.json()["model_version"] == active


def test_a_learner_killed_mid_training_leaves_no_version_and_the_next_run_succeeds(
    traffic, tmp_path
):
    sessions, heads = traffic.runtime.sessions, traffic.settings.data_dir / "heads"
    env = settings_env(traffic.settings, lease_seconds=4, learner_poll_seconds=0.3)
    before, heads_before = _versions(sessions), {p.name for p in heads.iterdir()}
    with httpx.Client(base_url=traffic.url, timeout=60) as c:
        fitting = tmp_path / "fitting"
        with fusionrank_process(
            [str(fitting), "learner"],
            env,
            tmp_path / "learner-1.log",
            program=[sys.executable, "-c", WATCHED_LEARNER],
        ) as first:
            dead = c.post("/v1/models/train").json()["run_id"]
            deadline = time.monotonic() + 120
            while not fitting.exists():
                assert first.proc.poll() is None, first.tail()
                assert time.monotonic() < deadline, first.tail()
                time.sleep(0.001)
            first.kill()
        assert _run(sessions, dead).status == "running", "the run ended before the kill"
        assert _versions(sessions) == before
        assert {p.name for p in heads.iterdir() if not p.name.startswith(".tmp-")} == heads_before
        assert c.post("/v1/search", json={"query": "watch"}).status_code == 200

        with fusionrank_process(["learner"], env, tmp_path / "learner-2.log") as second:
            fresh = c.post("/v1/models/train").json()["run_id"]
            run = _wait_for(sessions, fresh, {"succeeded", "failed", "skipped"}, 180)
            assert run.status == "succeeded", (run.error, second.tail())
    dead_run = _run(sessions, dead)
    assert dead_run.status == "failed" and "lease expired" in (dead_run.error or "")
    assert run.candidate is not None and _versions(sessions) - before == {run.candidate}
    assert not list(heads.glob(".tmp-*")), "the next learner clears a killed one's half-write"


def test_a_corrupt_head_made_active_elsewhere_is_refused_and_the_old_one_keeps_serving(traffic):
    """Another replica's learner (or an operator's SQL) points the registry at a head whose
    file was damaged on disk: this replica's watcher verifies it, refuses it and keeps serving."""
    rt, heads = traffic.runtime, traffic.settings.data_dir / "heads"
    serving = rt.searcher.active.version
    head, _ = load_head(heads / serving)
    with torch.no_grad():
        next(head.parameters()).add_(1.0)  # other weights: a version of its own
    victim = save_head(heads, head, {"parent": serving})
    with transaction(rt.sessions) as s:
        register_version(session=s, v=VersionIn(victim, serving, "rejected", "0" * 64))
    weights = heads / victim / "head.safetensors"
    original = weights.read_bytes()
    try:
        weights.write_bytes(original[:-8] + bytes(b ^ 0xFF for b in original[-8:]))
        with transaction(rt.sessions) as s:
            set_active(session=s, version=victim)
        deadline = time.monotonic() + 10
        while victim not in rt.watcher.refused:
            assert time.monotonic() < deadline, "the watcher never looked at the new pointer"
            time.sleep(0.1)
        assert "sha256" in rt.watcher.refused[victim]
        r = httpx.post(f"{traffic.url}/v1/search", json={"query": "watch"}, timeout=60)
        assert r.status_code == 200 and r.json()["model_version"] == serving
    finally:
        weights.write_bytes(original)
        with transaction(rt.sessions) as s:
            set_active(session=s, version=serving)


def test_ingest_on_a_full_disk_says_so_and_the_previous_build_keeps_serving(
    tmp_path, ingested, embedder
):
    with cloned_store(ingested, "sqlite", tmp_path) as store:
        index_dir = store.settings.index_dir
        build = current(index_dir)
        assert build is not None
        shutil.copytree(index_dir, tmp_path / "index-copy")
        with small_filesystem(index_dir, tmp_path / "index-copy", spare_kb=16):
            with pytest.raises(DiskFull, match="no space left on the device holding") as e:
                ingest_into(store.settings, ingested.csv, embedder)
            assert "previous version stays in use" in e.value.message
            assert current(index_dir) == build
            assert not list(index_dir.glob(".tmp-*"))
            assert len(CatalogIndex.load(build)) == len(ingested.rows)
            # the error's frames hold the ingest's index, whose mapped build files keep the
            # filesystem busy for its unmount
            del e
            gc.collect()


def test_an_ingest_killed_while_writing_leaves_the_previous_build_serving(
    tmp_path, ingested, embedder
):
    """SIGKILL at the moment the new build's files start to appear: CURRENT still names the
    old build, which verifies, loads and serves; a second ingest then completes."""
    with cloned_store(ingested, "sqlite", tmp_path) as store:
        index_dir, env = store.settings.index_dir, settings_env(store.settings)
        old = current(index_dir)
        with fusionrank_process(
            ["ingest", str(ingested.csv)], env, tmp_path / "ingest.log"
        ) as ingest:
            deadline = time.monotonic() + 300
            while not list(index_dir.glob(".tmp-*")):
                assert ingest.proc.poll() is None, f"ingest ended first:\n{ingest.tail()}"
                assert time.monotonic() < deadline
                time.sleep(0.002)
            ingest.kill()
        assert current(index_dir) == old
        with fusionrank_process(["serve"], env, tmp_path / "serve.log", serve=True) as srv:
            r = httpx.post(f"{srv.url}/v1/search", json={"query": "watch", "k": 3}, timeout=60)
            assert r.status_code == 200 and r.json()["results"], r.text
            assert httpx.get(f"{srv.url}/readyz").json()["checks"]["index"].startswith("ok")
        rerun = subprocess.run([*CLI, "ingest", str(ingested.csv)], env=env, capture_output=True)
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        assert current(index_dir) != old and not list(index_dir.glob(".tmp-*"))
