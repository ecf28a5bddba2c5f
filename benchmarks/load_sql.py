"""The SQL accounting of benchmarks.load: after the run, every feedback event answered 202 is
looked up in the run's database."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path


def check_sql(db: Path, accepted: list[str], refused: list[str]) -> dict[str, int]:
    """Every event id answered 202 should be in feedback_events exactly once; also how many
    stored events the client was not told were stored."""
    if not db.exists():
        raise SystemExit(f"the run's database {db} is gone")
    with contextlib.closing(sqlite3.connect(db)) as conn:
        counts = dict(
            conn.execute("SELECT event_id, COUNT(*) FROM feedback_events GROUP BY event_id")
        )
    ok = set(accepted)
    return {
        "events_202": len(ok),
        "in_sql_once": sum(counts.get(e) == 1 for e in ok),
        "missing": sum(e not in counts for e in ok),
        "more_than_once": sum(counts.get(e, 0) > 1 for e in ok),
        "in_sql_without_202": sum(e not in ok for e in counts),
        "not_202_but_stored": sum(e in counts for e in refused),
        "rows": sum(counts.values()),
    }
