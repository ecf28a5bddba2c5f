"""The logs at scale: on PostgreSQL searches, items and events live in day partitions that
retention drops whole; on both backends retention keeps what is newer, the learner's window
loads after it, and an event id is stored once whichever day its search was made."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from factories import event, impression
from sqlalchemy import func, inspect, select, text

from learner.window import load_window
from storage.db import transaction
from storage.feedback import record_events
from storage.impressions import add_impressions, mark_holdout
from storage.models import FeedbackEvent, Impression, ImpressionItem, VersionStatus
from storage.partitions import LOGS, maintain, partition_days, partition_name
from storage.registry import VersionIn, register_version
from storage.retention import purge_before

GRADES = {"click": 1, "add_to_cart": 2, "purchase": 3}


def _noon(days_ago: int) -> datetime:
    day = datetime.now(UTC).date() - timedelta(days_ago)
    return datetime(day.year, day.month, day.day, 12, tzinfo=UTC)


def _log(sessions, days_ago: list[int], per_day: int = 3) -> dict[int, list[str]]:
    """`per_day` searches at noon of each of those days, each showing three products, with a
    click on the first two of each day; returns their ids per day."""
    ids: dict[int, list[str]] = {}
    with transaction(sessions) as s:
        for d in days_ago:
            batch = [
                impression(i, search_id=f"d{d}-{i}", created_at=_noon(d), products=["a", "b", "c"])
                for i in range(per_day)
            ]
            add_impressions(session=s, impressions=batch)
            ids[d] = [x.search_id for x in batch]
    with transaction(sessions) as s:
        clicks = [event(sid, "b") for d in days_ago for sid in ids[d][:2]]
        record_events(session=s, events=clicks, received_at=datetime.now(UTC))
    return ids


def _count(s, model, **where) -> int:
    q = select(func.count()).select_from(model)
    for column, value in where.items():
        q = q.where(getattr(model, column).like(value))
    return int(s.scalar(q) or 0)


def test_retention_drops_old_days_keeps_newer_and_the_window_loads(sessions):
    ids = _log(sessions, [100, 95, 89, 1])
    with sessions() as s:
        assert purge_before(session=s, cutoff=datetime.now(UTC) - timedelta(days=90)) == 6
    with sessions() as s:
        for d, expected in ((100, 0), (95, 0), (89, 3), (1, 3)):
            assert _count(s, Impression, search_id=f"d{d}-%") == expected
            assert _count(s, ImpressionItem, search_id=f"d{d}-%") == 3 * expected
            assert _count(s, FeedbackEvent, search_id=f"d{d}-%") == (2 if expected else 0)
        w = load_window(
            s,
            grades=GRADES,
            settle=timedelta(0),
            max_window=1000,
            replay=10,
            fallback_version="h-test",
        )
    assert sorted(x.search_id for x in w.searches) == sorted(ids[89] + ids[1])
    assert w.engaged == 4  # the clicks kept with their searches
    assert all(x.product_ids == ("a", "b", "c") for x in w.searches)


def test_days_land_in_their_partitions_and_drop_whole(sessions, schema_name):
    if schema_name is None:
        pytest.skip("SQLite keeps plain tables")
    with sessions() as s:
        maintain(session=s, today=datetime.now(UTC).date())
    _log(sessions, [100, 95, 1])
    with sessions() as s:
        # searches of days before the partitions made ahead wait in the DEFAULT partition, with
        # their items and events, until maintenance gives their day one
        old = datetime.now(UTC).date() - timedelta(100)
        assert old not in partition_days(s.connection(), "impressions")
        stray = s.execute(text("SELECT count(*) FROM impression_items_default")).scalar()
        assert stray == 3 * 9
        maintain(session=s, today=datetime.now(UTC).date())
        for table in LOGS:
            assert s.execute(text(f"SELECT count(*) FROM {table}_default")).scalar() == 0
            assert old in partition_days(s.connection(), table)
        part = partition_name("impression_items", old)
        assert s.execute(text(f"SELECT count(*) FROM {part}")).scalar() == 9
        recent = partition_name("feedback_events", datetime.now(UTC).date() - timedelta(1))
        assert s.execute(text(f"SELECT count(*) FROM {recent}")).scalar() == 2
    with sessions() as s:
        # a cutoff an hour into day 95 leaves that day whole: retention is up to a day late
        cutoff = _noon(95) - timedelta(hours=11)
        assert purge_before(session=s, cutoff=cutoff) == 3
        assert _count(s, Impression, search_id="d95-%") == 3
        names = set(inspect(s.connection()).get_table_names())
        assert not {partition_name(t, old) for t in LOGS} & names
        assert {partition_name(t, old + timedelta(5)) for t in LOGS} <= names


def test_partitioned_keys_include_the_day(sessions, schema_name):
    if schema_name is None:
        pytest.skip("SQLite keeps plain tables")
    with sessions() as s:
        insp = inspect(s.connection())
        assert insp.get_pk_constraint("impressions")["constrained_columns"] == [
            "search_id",
            "created_at",
        ]
        assert insp.get_pk_constraint("feedback_events")["constrained_columns"] == [
            "id",
            "search_created_at",
        ]
        assert [u["column_names"] for u in insp.get_unique_constraints("feedback_events")] == [
            ["event_id", "search_created_at"]
        ]
        assert insp.get_foreign_keys("impression_items") == []


def test_an_event_id_is_stored_once_across_days(sessions):
    """The unique key covers one day's partition on PostgreSQL: the same id sent for a search
    of another day is a duplicate all the same, and so is a retry a day later."""
    ids = _log(sessions, [5, 1], per_day=1)
    now = datetime.now(UTC)
    with transaction(sessions) as s:
        first = record_events(
            session=s, events=[event(ids[5][0], "a", event_id="e-1")], received_at=now
        )
    with transaction(sessions) as s:
        again = record_events(
            session=s,
            events=[
                event(ids[1][0], "a", event_id="e-1"),  # another search, another day
                event(ids[5][0], "a", event_id="e-1"),  # the retry
                event(ids[1][0], "c", event_id="e-2"),
            ],
            received_at=now + timedelta(days=1),
        )
    assert (first.accepted, first.duplicates) == (1, 0)
    assert (again.accepted, again.duplicates) == (1, 2)
    with sessions() as s:
        assert _count(s, FeedbackEvent, event_id="e-1") == 1
        assert (
            s.scalar(select(FeedbackEvent.search_id).where(FeedbackEvent.event_id == "e-1"))
            == (ids[5][0])
        )


def test_the_carried_holdout_is_bounded_by_the_window(sessions):
    """A refresh reads at most `max_window` searches held out by earlier refreshes: the newest."""
    ids = _log(sessions, [6, 5, 4, 3], per_day=2)
    held = [sid for d in (6, 5, 4, 3) for sid in ids[d]]
    with transaction(sessions) as s:
        mark_holdout(session=s, hold=held, release=[])
        v = VersionIn("h-prev", None, VersionStatus.PROMOTED, "0" * 64, window_end=_noon(2))
        register_version(session=s, v=v)
    with sessions() as s:
        w = load_window(
            s,
            grades=GRADES,
            settle=timedelta(0),
            max_window=3,
            replay=0,
            fallback_version="h-test",
        )
    # the three newest (searches of one time order by id), oldest first
    assert [x.search_id for x in w.carried] == [ids[4][0], *ids[3]]


def test_maintenance_gives_way_to_a_long_read(sessions, schema_name):
    """Making a partition needs the DEFAULT partition to itself: while a read holds it,
    maintenance gives up after its lock timeout (inserts would queue behind it) and says so."""
    if schema_name is None:
        pytest.skip("SQLite keeps plain tables")
    later = datetime.now(UTC).date() + timedelta(30)
    with sessions() as reader, sessions() as s:
        reader.execute(text("SELECT count(*) FROM impressions"))  # holds its lock until rollback
        assert maintain(session=s, today=later, ahead=0) == []
        reader.rollback()
        assert maintain(session=s, today=later, ahead=0) == [later]
