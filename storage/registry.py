"""Model registry, training runs and leases in SQL: shared by every API replica and learner.

Versions are immutable rows; which one serves is the single `active_model` row, so a rollback or
roll-forward is one UPDATE that every replica sees on its next poll. A lease is a row with an
expiry: a learner holds it while it trains and a second learner (or a crashed one's successor)
can take it only once it has expired.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from storage.db import transaction

__all__ = ["utcnow"]  # re-exported: the registry's callers stamp runs with it
from storage.models import (
    FINISHED_RUNS,
    ActiveModel,
    Lease,
    ModelVersion,
    RunStatus,
    TrainingRun,
    VersionStatus,
    as_utc,
    utcnow,
)


# ---- versions --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class VersionIn:
    version: str
    parent: str | None
    status: VersionStatus
    artifact_sha256: str
    reason: str | None = None
    run_id: int | None = None
    window_start: datetime | None = None
    window_end: datetime | None = None
    class_weights: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None


def register_version(*, session: Session, v: VersionIn) -> bool:
    """Insert a version row; False if that version is already registered (immutable)."""
    if session.get(ModelVersion, v.version) is not None:
        return False
    session.add(ModelVersion(**asdict(v), created_at=utcnow()))
    session.flush()
    return True


def list_versions(*, session: Session, limit: int = 100) -> list[ModelVersion]:
    q = select(ModelVersion).order_by(ModelVersion.created_at.desc()).limit(limit)
    return list(session.scalars(q))


def get_version(*, session: Session, version: str) -> ModelVersion | None:
    return session.get(ModelVersion, version)


def versions_past(*, session: Session, keep: int) -> list[str]:
    """Versions older than the newest `keep`, except bootstrap heads and the active one: those
    whose artifacts retention may delete."""
    newest = select(ModelVersion.version).order_by(ModelVersion.created_at.desc()).limit(keep)
    q = (
        select(ModelVersion.version)
        .where(
            ModelVersion.status != VersionStatus.BOOTSTRAP,
            ModelVersion.version.not_in(newest),
            ModelVersion.version.not_in(select(ActiveModel.version)),
        )
        .order_by(ModelVersion.created_at)
    )
    return list(session.scalars(q))


def active_version(*, session: Session) -> str | None:
    return session.scalar(select(ActiveModel.version).where(ActiveModel.id == 1))


def set_active(*, session: Session, version: str) -> None:
    """Point every replica at `version` (which must be registered)."""
    row = session.get(ActiveModel, 1)
    if row is None:
        session.add(ActiveModel(id=1, version=version, activated_at=utcnow()))
    else:
        row.version, row.activated_at = version, utcnow()
    session.flush()


# ---- runs ------------------------------------------------------------------------------------
def create_run(*, sessions: sessionmaker[Session], trigger: str) -> int:
    with transaction(sessions) as s:
        run = TrainingRun(trigger=trigger, status=RunStatus.QUEUED, created_at=utcnow())
        s.add(run)
        s.flush()
        return run.id


def claim_run(*, sessions: sessionmaker[Session], run_id: int) -> bool:
    """queued -> running, atomically: exactly one learner gets a run."""
    with transaction(sessions) as s:
        result = s.execute(
            update(TrainingRun)
            .where(TrainingRun.id == run_id, TrainingRun.status == RunStatus.QUEUED)
            .values(status=RunStatus.RUNNING, started_at=utcnow())
        )
        return bool(getattr(result, "rowcount", 0))


def fail_abandoned_runs(*, sessions: sessionmaker[Session]) -> int:
    """Mark runs still 'running' as failed. Call only while holding the learner lease: then no
    live learner is running them (theirs was killed, its lease expired)."""
    with transaction(sessions) as s:
        result = s.execute(
            update(TrainingRun)
            .where(TrainingRun.status == RunStatus.RUNNING)
            .values(
                status=RunStatus.FAILED,
                finished_at=utcnow(),
                error="the learner running it stopped before finishing (its lease expired); "
                "nothing of it was registered",
            )
        )
        return int(getattr(result, "rowcount", 0) or 0)


def update_run(*, sessions: sessionmaker[Session], run_id: int, **fields: Any) -> None:
    with transaction(sessions) as s:
        s.execute(update(TrainingRun).where(TrainingRun.id == run_id).values(**fields))


def list_runs(*, session: Session, limit: int = 100) -> list[TrainingRun]:
    q = select(TrainingRun).order_by(TrainingRun.id.desc()).limit(limit)
    return list(session.scalars(q))


def queued_runs(*, session: Session) -> list[int]:
    """Ids of the runs no learner has claimed yet."""
    return list(
        session.scalars(select(TrainingRun.id).where(TrainingRun.status == RunStatus.QUEUED))
    )


FinishedRun = tuple[int, str, RunStatus, datetime | None, dict[str, Any] | None]


def finished_runs(*, session: Session, since: datetime | None = None) -> list[FinishedRun]:
    """(id, trigger, status, finished_at, detail) of the finished runs, those that finished at or
    after `since` if given."""
    q = select(
        TrainingRun.id,
        TrainingRun.trigger,
        TrainingRun.status,
        TrainingRun.finished_at,
        TrainingRun.detail,
    ).where(TrainingRun.status.in_(FINISHED_RUNS))
    if since is not None:
        q = q.where(TrainingRun.finished_at >= since)
    return list(session.execute(q).tuples())


def get_run(*, session: Session, run_id: int) -> TrainingRun | None:
    return session.get(TrainingRun, run_id)


def last_window_end(*, session: Session) -> datetime | None:
    """Where the previous successful refresh's training window ended."""
    ts = session.scalar(
        select(ModelVersion.window_end)
        .where(ModelVersion.window_end.is_not(None))
        .order_by(ModelVersion.window_end.desc())
        .limit(1)
    )
    return as_utc(ts) if ts else None


# ---- leases ----------------------------------------------------------------------------------
def lease_holder() -> str:
    """A name for this process's leases: unique across hosts, processes and restarts."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def acquire_lease(
    *, sessions: sessionmaker[Session], name: str, holder: str, ttl: timedelta
) -> bool:
    """Take or renew the lease `name` for `holder`; False if someone else holds a live one."""
    now = utcnow()
    with transaction(sessions) as s:
        result = s.execute(
            update(Lease)
            .where(Lease.name == name, (Lease.holder == holder) | (Lease.expires_at < now))
            .values(holder=holder, expires_at=now + ttl)
        )
        if getattr(result, "rowcount", 0):
            return True
    try:
        with transaction(sessions) as s:
            s.add(Lease(name=name, holder=holder, expires_at=now + ttl))
        return True
    except IntegrityError:  # it exists and is held by someone else
        return False


def release_lease(*, sessions: sessionmaker[Session], name: str, holder: str) -> None:
    with transaction(sessions) as s:
        s.execute(
            update(Lease)
            .where(Lease.name == name, Lease.holder == holder)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
