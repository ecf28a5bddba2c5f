"""The refresh worker: refreshes on a schedule, on new events and on request, one at a time.

In this process a single worker thread runs them; across processes a lease row in SQL does (so
an API replica with the learner switched on and a `fusionrank learner` never train at once).
APScheduler triggers them on an interval, when enough new events have arrived, and picks up runs
queued through the API by any replica. It also applies the retention bound.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import torch
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.orm import Session, sessionmaker

from learner.dataset import Encoders
from learner.refresh import RefreshConfig, run_refresh
from model.catalog_view import ProductVectors
from storage.artifacts import remove_stale_temps
from storage.feedback import count_events
from storage.models import RunStatus
from storage.partitions import maintain
from storage.registry import (
    acquire_lease,
    claim_run,
    create_run,
    fail_abandoned_runs,
    lease_holder,
    queued_runs,
    release_lease,
    update_run,
    utcnow,
)
from storage.retention import purge_before

log = logging.getLogger(__name__)
LEASE = "learner"


@dataclass(frozen=True, kw_only=True)
class WorkerConfig:
    """When and how the worker refreshes. Every field is a user setting: service.config.Settings
    holds the defaults and service.learning.learner_config copies them here."""

    interval_minutes: float  # refresh at least this often
    min_new_events: int  # ...or as soon as this many new events have arrived
    poll_seconds: float  # how often to count new events and take runs queued elsewhere
    lease_seconds: float  # a crashed learner's lease expires after this
    retention_days: float  # searches and their feedback older than this are deleted
    torch_threads: int  # of a refresh (service.threads.ThreadPolicy)
    heads_dir: Path
    refresh: RefreshConfig


class Learner:
    def __init__(
        self,
        config: WorkerConfig,
        sessions: sessionmaker[Session],
        index: ProductVectors,
        encoders: Encoders,
        fallback_version: str,
    ) -> None:
        self.config, self.sessions, self.index = config, sessions, index
        self.encoders, self.fallback_version = encoders, fallback_version
        self.holder = lease_holder()
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
        run_id = create_run(sessions=self.sessions, trigger=trigger)
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
            minutes=self.config.interval_minutes,
            args=["schedule"],
            max_instances=1,
            coalesce=True,
        )
        sched.add_job(  # at once too: a restarted learner takes what was queued meanwhile
            self.poll,
            "interval",
            seconds=self.config.poll_seconds,
            next_run_time=datetime.now(UTC),
            max_instances=1,
            coalesce=True,
        )
        sched.add_job(self.purge, "interval", hours=6, max_instances=1, coalesce=True)
        sched.start()
        self._scheduler = sched

    def poll(self) -> None:
        """Refresh when enough events arrived since the last trigger; run runs queued elsewhere."""
        with self.sessions() as s:
            n = count_events(session=s, since=self._last_trigger)
            queued = queued_runs(session=s)
        for run_id in queued:
            self._submit(run_id)
        if n >= self.config.min_new_events and self._pending == 0:
            self._last_trigger = utcnow()
            self.request("events")

    def purge(self) -> int:
        """Make the coming days' log partitions and apply the retention bound (also under the
        lease: one process purges)."""
        ttl = timedelta(seconds=self.config.lease_seconds)
        if not acquire_lease(sessions=self.sessions, name="retention", holder=self.holder, ttl=ttl):
            return 0
        try:
            now = utcnow()
            cutoff = now - timedelta(days=self.config.retention_days)
            with self.sessions() as s:
                made = maintain(session=s, today=now.date())  # PostgreSQL's coming days
                n = purge_before(session=s, cutoff=cutoff)
            if made:
                log.info("logs: made the partitions of %s", ", ".join(map(str, made)))
            if n:
                log.info("retention: deleted %d searches older than %s", n, cutoff)
            return n
        finally:
            release_lease(sessions=self.sessions, name="retention", holder=self.holder)

    def close(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        self._pool.shutdown(wait=True, cancel_futures=True)

    # ---- one run -----------------------------------------------------------------------------
    def execute(self, run_id: int) -> dict[str, Any] | None:
        """Run a queued refresh under the lease. While another learner holds the lease the run
        stays queued (any learner's next poll picks it up); a run another process has already
        claimed is left alone."""
        ttl = timedelta(seconds=self.config.lease_seconds)
        if not acquire_lease(sessions=self.sessions, name=LEASE, holder=self.holder, ttl=ttl):
            log.info("run %d stays queued: another learner holds the lease", run_id)
            return None
        stop = threading.Event()

        def heartbeat() -> None:  # keep the lease while training, however long that takes
            while not stop.wait(ttl.total_seconds() / 3):
                if not acquire_lease(
                    sessions=self.sessions, name=LEASE, holder=self.holder, ttl=ttl
                ):
                    log.error("lost the learner lease during run %d", run_id)

        beat = threading.Thread(target=heartbeat, name="learner-lease", daemon=True)
        beat.start()
        try:
            fail_abandoned_runs(sessions=self.sessions)
            remove_stale_temps(self.config.heads_dir)  # a killed learner's half-written head
            if not claim_run(sessions=self.sessions, run_id=run_id):
                return None
            self._last_trigger = utcnow()
            # a learner of its own uses every core (its catalog ridge fits ran 2.5x slower on
            # one); one beside searches, the share its process's thread policy gave it
            torch.set_num_threads(self.config.torch_threads)
            return run_refresh(
                sessions=self.sessions,
                index=self.index,
                heads_dir=self.config.heads_dir,
                encoders=self.encoders,
                config=self.config.refresh,
                run_id=run_id,
                fallback_version=self.fallback_version,
            )
        except Exception as e:
            log.exception("refresh run %d failed", run_id)
            update_run(
                sessions=self.sessions,
                run_id=run_id,
                status=RunStatus.FAILED,
                finished_at=utcnow(),
                error=f"{type(e).__name__}: {e}",
            )
            return None
        finally:
            stop.set()
            beat.join()
            release_lease(sessions=self.sessions, name=LEASE, holder=self.holder)
