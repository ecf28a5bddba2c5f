"""The learning loop in a running process: refreshes on a schedule, and hot swaps of the head.

`Learner` runs refreshes one at a time: in this process a single worker thread, across processes
a lease row in SQL (so an API replica with the learner switched on and a `fusionrank learner`
never train at once). APScheduler triggers them on an interval, when enough new events have
arrived, and picks up runs queued through the API by any replica.

`ModelWatcher` polls the registry's active pointer. When it moves, it loads the new head (the
artifact is verified against its checksums), checks that its projections match the index, warms
it on a real query, and swaps the searcher's one `active` reference: requests in flight finish
on the head they started with, new ones get the new head, none fails. A head that fails any
check is refused and the current one keeps serving.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from learner.dataset import count_events
from learner.finetune import TrainConfig
from learner.refresh import Encoders, RefreshConfig, run_refresh
from model.candidates import candidates
from model.catalog_view import ProductVectors
from model.checkpoint import load_head
from model.head import Query
from model.position_bias import bias_of
from service.config import Settings
from service.encode_threads import EncodeThreads, off_the_leader
from service.search import ActiveHead, Searcher
from storage.errors import FusionrankError
from storage.models import TrainingRun
from storage.registry import (
    acquire_lease,
    active_version,
    claim_run,
    create_run,
    fail_abandoned_runs,
    release_lease,
    update_run,
    utcnow,
)
from storage.retention import purge_before

log = logging.getLogger(__name__)
LEASE = "learner"


class IncompatibleHead(FusionrankError):
    status_code = 409
    code = "incompatible_head"


def load_active_head(heads_dir: Path, version: str, like: ActiveHead) -> ActiveHead:
    """Load and verify `version`; refuse it unless its projections are those of `like` (the
    FAISS spaces in service were built with them). Runs on the watcher or a worker thread."""
    off_the_leader()
    head, card = load_head(heads_dir / version)
    if head.projection_digest() != like.head.projection_digest():
        raise IncompatibleHead(
            f"head {version} was trained for another index build (its projections differ); "
            "activate a version trained since the last ingest"
        )
    return ActiveHead(head, version, bias_of(card))


def warm(active: ActiveHead, searcher: Searcher) -> None:
    """Score one real query so the first shopper request does not pay for lazy set-up."""
    idx = searcher.index
    rows = torch.arange(min(8, idx.n_rows)).numpy()
    if not len(rows):
        return
    with torch.inference_mode():
        text = torch.from_numpy(idx.vectors("text", rows[:1])[0])
        q: Query = active.head.query(text, None)
        cands = candidates(idx, rows, active.head, with_image=False)
        active.head.score(q, cands)


class ModelWatcher:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        searcher: Searcher,
        heads_dir: Path,
        poll_seconds: float,
    ) -> None:
        self.sessions, self.searcher, self.heads_dir = sessions, searcher, heads_dir
        self.poll_seconds = poll_seconds
        self.refused: dict[str, str] = {}  # version -> why (not retried until the pointer moves)
        self._last_seen: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():  # `fusionrank learner` never starts it
            self._thread.join(10)

    def check_once(self) -> str | None:
        """Swap to the registry's active version if it changed; returns the version swapped to."""
        with self.sessions() as s:
            version = active_version(s)
        if version != self._last_seen:  # the pointer moved: earlier refusals may be stale
            self.refused.clear()
            self._last_seen = version
        current = self.searcher.active
        if version is None or version == current.version or version in self.refused:
            return None
        try:
            new = load_active_head(self.heads_dir, version, current)
            warm(new, self.searcher)
        except FusionrankError as e:
            self.refused[version] = e.message
            log.error("refusing head %s, still serving %s: %s", version, current.version, e.message)
            return None
        self.searcher.active = new  # one reference: in-flight searches keep the head they read
        log.info("now serving head %s (was %s)", version, current.version)
        return version

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.check_once()
            except Exception:  # a database blip must not kill the watcher
                log.exception("checking the model registry failed")


def refresh_config(settings: Settings) -> RefreshConfig:
    return RefreshConfig(
        event_grades=settings.event_grades,
        settle=timedelta(seconds=settings.learner_settle_seconds),
        holdout_fraction=settings.learner_holdout_fraction,
        min_new_engaged=settings.learner_min_engaged,
        min_holdout_engaged=settings.learner_min_holdout_engaged,
        replay=settings.learner_replay,
        max_window=settings.learner_max_window,
        margin=settings.promotion_margin,
        min_shown_share=settings.learner_min_shown_share,
        per_channel=settings.candidates_per_channel,
        keep_heads=settings.learner_keep_heads,
        train=TrainConfig(
            class_weights=settings.learner_class_weights,
            ips=settings.learner_ips,
            ips_clip=settings.learner_ips_clip,
            pbm_weight=settings.learner_pbm_weight,
        ),
    )


class Learner:
    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        index: ProductVectors,
        encoders: Encoders,
        fallback_version: str,
        serving: EncodeThreads | None = None,
    ) -> None:
        """`serving`: the cores of searches served by this same process, which a refresh
        shares with them (None: a learner process of its own, which uses every core)."""
        self.settings, self.sessions, self.index = settings, sessions, index
        self.encoders, self.fallback_version = encoders, fallback_version
        self.serving = serving
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="learner")
        self._scheduler: BackgroundScheduler | None = None
        self.runs_here = False  # set by start_scheduler (or by whoever drives runs by hand)
        self._last_trigger = utcnow()
        self._pending = 0  # runs submitted and not finished in this process
        self._submitted: set[int] = set()
        self._pending_lock = threading.Lock()

    # ---- triggers ----------------------------------------------------------------------------
    def request(self, trigger: str) -> int:
        """Queue a refresh and return its run id. It runs in this process's background thread
        if this process runs refreshes (`runs_here`); otherwise the learner process's next poll
        takes it, so an API replica never trains on its own CPU."""
        run_id = create_run(self.sessions, trigger)
        if self.runs_here:
            self._submit(run_id)
        return run_id

    def _submit(self, run_id: int) -> None:
        with self._pending_lock:
            if run_id in self._submitted:
                return
            self._submitted.add(run_id)
            self._pending += 1
        future = self._pool.submit(self.execute, run_id)

        def done(_: object) -> None:
            with self._pending_lock:
                self._pending -= 1
                self._submitted.discard(run_id)

        future.add_done_callback(done)

    def on_drift(self, version: str) -> None:
        """ADWIN saw the click-through rate of `version` shift: refresh, unless one is pending.
        Called on a request's path, so the database work goes to the learner's thread."""
        if self._pending == 0:
            log.info("drift detected on %s: starting a refresh", version)
            self._pool.submit(self.request, "drift")

    def start_scheduler(self) -> None:
        self.runs_here = True
        sched = BackgroundScheduler(timezone="UTC")
        sched.add_job(
            self.request,
            "interval",
            minutes=self.settings.learner_interval_minutes,
            args=["schedule"],
            max_instances=1,
            coalesce=True,
        )
        sched.add_job(self.poll, "interval", seconds=30, max_instances=1, coalesce=True)
        sched.add_job(self.purge, "interval", hours=6, max_instances=1, coalesce=True)
        sched.start()
        self._scheduler = sched

    def poll(self) -> None:
        """Refresh when enough events arrived since the last trigger; run runs queued elsewhere."""
        with self.sessions() as s:
            n = count_events(s, since=self._last_trigger)
            queued = list(s.scalars(select(TrainingRun.id).where(TrainingRun.status == "queued")))
        for run_id in queued:
            self._submit(run_id)
        if n >= self.settings.learner_min_new_events and self._pending == 0:
            self._last_trigger = utcnow()
            self.request("events")

    def purge(self) -> int:
        """Apply the retention bound (also under the lease: one process purges)."""
        ttl = timedelta(seconds=self.settings.lease_seconds)
        if not acquire_lease(self.sessions, "retention", self.holder, ttl):
            return 0
        try:
            cutoff = utcnow() - timedelta(days=self.settings.retention_days)
            with self.sessions() as s:
                n = purge_before(s, cutoff)
            if n:
                log.info("retention: deleted %d searches older than %s", n, cutoff)
            return n
        finally:
            release_lease(self.sessions, "retention", self.holder)

    def close(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        self._pool.shutdown(wait=True, cancel_futures=True)

    # ---- one run -----------------------------------------------------------------------------
    def execute(self, run_id: int) -> dict[str, Any] | None:
        """Run a queued refresh under the lease. While another learner holds the lease the run
        stays queued (any learner's next poll picks it up); a run another process has already
        claimed is left alone."""
        ttl = timedelta(seconds=self.settings.lease_seconds)
        if not acquire_lease(self.sessions, LEASE, self.holder, ttl):
            log.info("run %d stays queued: another learner holds the lease", run_id)
            return None
        stop = threading.Event()

        def heartbeat() -> None:  # keep the lease while training, however long that takes
            while not stop.wait(ttl.total_seconds() / 3):
                if not acquire_lease(self.sessions, LEASE, self.holder, ttl):
                    log.error("lost the learner lease during run %d", run_id)

        beat = threading.Thread(target=heartbeat, name="learner-lease", daemon=True)
        beat.start()
        try:
            fail_abandoned_runs(self.sessions)
            if not claim_run(self.sessions, run_id):
                return None
            self._last_trigger = utcnow()
            with self.serving.reserve() if self.serving else nullcontext(None) as shared:
                # Serving sets torch (and so MKL's process-wide) threads per search; a learner
                # of its own wants every core (its catalog ridge fits ran 2.5x slower on one),
                # one beside searches the cores it reserved from them; a configured count wins.
                threads = self.settings.torch_threads or shared or os.cpu_count() or 1
                torch.set_num_threads(threads)
                return run_refresh(
                    sessions=self.sessions,
                    index=self.index,
                    heads_dir=self.settings.data_dir / "heads",
                    encoders=self.encoders,
                    config=refresh_config(self.settings),
                    run_id=run_id,
                    fallback_version=self.fallback_version,
                )
        except Exception as e:
            log.exception("refresh run %d failed", run_id)
            update_run(
                self.sessions,
                run_id,
                status="failed",
                finished_at=utcnow(),
                error=f"{type(e).__name__}: {e}",
            )
            return None
        finally:
            stop.set()
            beat.join()
            release_lease(self.sessions, LEASE, self.holder)
