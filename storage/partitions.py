"""PostgreSQL's day partitions of the logs: searches, their shown items and their events.

Each of the three tables is range-partitioned by its search's creation time (an event by its
search's, not its own), one partition per UTC day named <table>_pYYYYMMDD, beside a DEFAULT
partition that takes whatever no day covers, so no insert ever fails. A day's three partitions
hold exactly one day's searches with everything that refers to them, so retention drops them
together: that is the cascade the foreign keys gave, which PostgreSQL cannot keep across
partitioned tables without checking every referencing row on each drop. SQLite keeps its plain
tables, its keys and its cascades.

Days, because the retention bound is set in days (Settings.retention_days, 90 by default): a
search outlives it by under a day, and ~90 partitions a table keep planning and the per-partition
index probes of a lookup by search id cheap (docs/benchmarks.md, "Logs at scale").
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

# table -> its partition key
LOGS = {
    "impressions": "created_at",
    "impression_items": "created_at",
    "feedback_events": "search_created_at",
}
# Days of partitions made ahead of time: a week without maintenance still lands every insert in
# its own day's partition, not in the DEFAULT one.
AHEAD_DAYS = 7
# DDL on a log table waits at most this long for a lock: inserts queue behind a waiting DROP,
# so a drop that would wait on a long read gives up and the next maintenance tries again.
LOCK_TIMEOUT = "5s"
LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's SQLSTATE for a lock_timeout
log = logging.getLogger(__name__)

_PARTITION = re.compile(r"^(impressions|impression_items|feedback_events)_(p(\d{8})|default)$")


def partitioned(conn: Connection) -> bool:
    """Whether this database's logs are day-partitioned (PostgreSQL) or plain tables (SQLite)."""
    return conn.dialect.name == "postgresql"


def is_partition(name: str) -> bool:
    """Whether a table is one of the logs' partitions: schema comparisons see only parents."""
    return _PARTITION.match(name) is not None


def partition_name(table: str, day: date) -> str:
    return f"{table}_p{day:%Y%m%d}"


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


def partition_days(conn: Connection, table: str) -> set[date]:
    """The days `table` has a partition of."""
    names = conn.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass(:t)"
        ),
        {"t": table},
    ).scalars()
    days = set()
    for name in names:
        m = _PARTITION.match(name)
        if m and m.group(3):
            days.add(datetime.strptime(m.group(3), "%Y%m%d").date())
    return days


def create_default(conn: Connection, table: str) -> None:
    conn.execute(text(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT"))


def create_day(conn: Connection, table: str, day: date) -> None:
    """`table`'s partition of `day`, with the rows the DEFAULT partition held for that day moved
    into it (PostgreSQL refuses a new partition whose rows sit in the DEFAULT one)."""
    key, part = LOGS[table], partition_name(table, day)
    bounds = (
        f"FROM ('{day_start(day).isoformat()}') TO ('{day_start(day + timedelta(1)).isoformat()}')"
    )
    span = {"lo": day_start(day), "hi": day_start(day + timedelta(1))}
    in_day = f"{key} >= :lo AND {key} < :hi"
    stray = conn.execute(
        text(f"SELECT EXISTS (SELECT 1 FROM {table}_default WHERE {in_day})"), span
    ).scalar()
    if not stray:
        conn.execute(text(f"CREATE TABLE {part} PARTITION OF {table} FOR VALUES {bounds}"))
        return
    conn.execute(text(f"CREATE TABLE {part} (LIKE {table} INCLUDING DEFAULTS)"))
    conn.execute(
        text(
            f"WITH moved AS (DELETE FROM {table}_default WHERE {in_day} RETURNING *) "
            f"INSERT INTO {part} SELECT * FROM moved"
        ),
        span,
    )
    conn.execute(text(f"ALTER TABLE {table} ATTACH PARTITION {part} FOR VALUES {bounds}"))


def create_days(conn: Connection, days: Iterable[date]) -> list[date]:
    """Every log table's partition of each of `days` that is missing; returns the days that
    lacked one."""
    have = {table: partition_days(conn, table) for table in LOGS}
    made = []
    for day in sorted(set(days)):
        missing = [t for t in LOGS if day not in have[t]]
        for table in missing:
            create_day(conn, table, day)
        if missing:
            made.append(day)
    return made


def stray_days(conn: Connection) -> set[date]:
    """The days of the rows the DEFAULT partitions hold (none, while maintenance runs)."""
    days: set[date] = set()
    for table, key in LOGS.items():
        days.update(
            conn.execute(
                text(f"SELECT DISTINCT CAST(timezone('UTC', {key}) AS date) FROM {table}_default")
            ).scalars()
        )
    return days


def maintain(*, session: Session, today: date, ahead: int = AHEAD_DAYS) -> list[date]:
    """Make the partitions of `today` and the `ahead` days after it, and one for every day the
    DEFAULT partitions hold rows of (moving them there, where retention will find them).
    Returns the days made. A no-op on SQLite."""
    conn = session.connection()
    if not partitioned(conn):
        return []
    days = {today + timedelta(d) for d in range(ahead + 1)} | stray_days(conn)
    return _make_days(session, days)


def _make_days(session: Session, days: set[date]) -> list[date]:
    """create_days in a transaction of its own, given up if a lock is not granted in time."""
    conn = session.connection()
    conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
    try:
        made = create_days(conn, days)
    except OperationalError as e:
        if getattr(e.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE:
            raise
        # a long read held the tables: the week made ahead covers until the next maintenance
        session.rollback()
        log.warning("log partitions not made: a lock was not granted within %s", LOCK_TIMEOUT)
        return []
    session.commit()
    return made


def _drop_day(conn: Connection, day: date) -> int:
    """Drop a day's partitions of every log table; returns the searches it held."""
    conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
    searches = 0
    if day in partition_days(conn, "impressions"):
        part = partition_name("impressions", day)
        searches = int(conn.execute(text(f"SELECT count(*) FROM {part}")).scalar_one())
    for table in LOGS:
        conn.execute(text(f"DROP TABLE IF EXISTS {partition_name(table, day)}"))
    return searches


def drop_days_before(*, session: Session, cutoff: datetime) -> tuple[int, int]:
    """Drop the partitions of every day that ended by `cutoff`, a day's three tables in one
    transaction. Returns (days dropped, searches they held). Rows of the day `cutoff` falls in
    stay until that whole day is past it."""
    _make_days(session, stray_days(session.connection()))  # rows that missed their day expire too
    conn = session.connection()
    days = sorted(set().union(*(partition_days(conn, t) for t in LOGS)))
    dropped = searches = 0
    for day in days:
        if day_start(day + timedelta(1)) > cutoff:
            break
        try:
            searches += _drop_day(session.connection(), day)
        except OperationalError as e:
            if getattr(e.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE:
                raise
            session.rollback()  # a long read: the next maintenance drops the rest
            log.warning(
                "retention stopped at %s: a lock was not granted within %s", day, LOCK_TIMEOUT
            )
            break
        session.commit()
        dropped += 1
    return dropped, searches


def schema_filters(dialect: str) -> dict[str, Any]:
    """Alembic's comparison options for this dialect: on PostgreSQL the logs' partitions are no
    tables of the models, and the logs' foreign and unique keys are the partitioned ones (no
    foreign keys; the event id unique per day), where the models declare SQLite's."""
    if dialect != "postgresql":
        return {}

    def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
        return not (type_ == "table" and name is not None and is_partition(name))

    def include_object(obj: Any, name: str | None, type_: str, reflected: bool, other: Any) -> bool:
        keys = type_ in ("foreign_key_constraint", "unique_constraint")
        return not (keys and getattr(obj, "table", None) is not None and obj.table.name in LOGS)

    return {"include_name": include_name, "include_object": include_object}
