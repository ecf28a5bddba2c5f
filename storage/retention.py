"""Retention: raw logs older than the configured number of days are deleted.

On PostgreSQL the logs are partitioned by day (storage.partitions): whole days' partitions of
searches, shown items and events are dropped together, so a search outlives the bound by less
than a day and a purge costs the same whatever the day held. On SQLite impressions are deleted
in batches and their items and events go with them (ON DELETE CASCADE). Either way the learner's
window, its replay sample and the holdout all stay within the bound.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from storage.models import Impression
from storage.partitions import drop_days_before, partitioned


def purge_before(*, session: Session, cutoff: datetime, batch: int = 5000) -> int:
    """Delete the searches (with their items and events) created before `cutoff`: on PostgreSQL
    those of the days that ended by then, on SQLite every one. Returns how many were deleted."""
    if partitioned(session.connection()):
        return drop_days_before(session=session, cutoff=cutoff)[1]
    return delete_before(session=session, cutoff=cutoff, batch=batch)


def delete_before(*, session: Session, cutoff: datetime, batch: int = 5000) -> int:
    """Delete searches created before `cutoff` row by row, their items and events by cascade,
    in batches so a large purge does not hold one long lock. Returns how many were deleted."""
    total = 0
    while True:
        ids = list(
            session.scalars(
                select(Impression.search_id).where(Impression.created_at < cutoff).limit(batch)
            )
        )
        if not ids:
            return total
        session.execute(delete(Impression).where(Impression.search_id.in_(ids)))
        session.commit()
        total += len(ids)
