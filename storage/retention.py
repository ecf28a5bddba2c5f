"""Retention: raw logs older than the configured number of days are deleted.

Deleting an impression deletes its shown items and feedback events with it (ON DELETE CASCADE),
so the learner's window, its replay sample and the holdout all stay within the bound.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from storage.models import Impression


def purge_before(*, session: Session, cutoff: datetime, batch: int = 5000) -> int:
    """Delete impressions (and their items and events) created before `cutoff`, in batches so
    a large purge does not hold one long lock. Returns how many impressions were deleted."""
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
