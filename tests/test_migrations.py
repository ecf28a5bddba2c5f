"""Alembic is the only way the schema changes: migrations must build exactly the models' schema."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text

from alembic import command
from storage.db import alembic_config, make_engine, migrate
from storage.models import Base
from storage.partitions import schema_filters

TABLES = set(Base.metadata.tables)


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _diff(url: str) -> list:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            opts = schema_filters(conn.dialect.name)
            return compare_metadata(MigrationContext.configure(conn, opts=opts), Base.metadata)
    finally:
        engine.dispose()


def test_upgrade_head_creates_the_models_schema(database_url, schema_name):
    assert _diff(database_url), "an empty database must differ from the models"
    migrate(database_url)
    assert _tables(database_url) >= TABLES
    assert _diff(database_url) == []
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            head = ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == head
            if schema_name is not None:
                # Everything, alembic_version included, lives in the test's own schema.
                rows = conn.execute(
                    text(
                        "SELECT table_name FROM information_schema.tables WHERE table_schema = :s"
                    ),
                    {"s": schema_name},
                ).scalars()
                assert TABLES | {"alembic_version"} <= set(rows)
                public = conn.execute(
                    text(
                        "SELECT count(*) FROM information_schema.tables "
                        "WHERE table_schema = 'public' AND table_name = 'alembic_version'"
                    )
                ).scalar()
                assert public == 0
    finally:
        engine.dispose()


def test_migrate_is_idempotent(database_url):
    migrate(database_url)
    migrate(database_url)  # every start calls it
    assert _diff(database_url) == []


def test_downgrade_to_base_and_upgrade_again(database_url):
    cfg = alembic_config(database_url)
    command.upgrade(cfg, "head")
    command.downgrade(cfg, "base")
    assert not (TABLES & _tables(database_url))
    command.upgrade(cfg, "head")
    assert _tables(database_url) >= TABLES
    assert _diff(database_url) == []


def test_0002_keeps_logged_impressions_both_ways(database_url):
    """Searches logged before the learning loop existed stay usable training data."""
    cfg = alembic_config(database_url)
    command.upgrade(cfg, "0001")
    engine = make_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO impressions (search_id, created_at, query_text, has_image, "
                    "query_type, model_version, k, latency_ms) "
                    "VALUES ('s1', CURRENT_TIMESTAMP, 'red shirt', false, 'text', 'h-1', 5, 1.0)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO impression_items (search_id, position, product_id, score) "
                    "VALUES ('s1', 1, 'p1', 0.5)"
                )
            )
        command.upgrade(cfg, "head")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT explore FROM impressions")).scalar() in (False, 0)
            row = conn.execute(
                text("SELECT product_id, model_position, propensity FROM impression_items")
            ).one()
            assert tuple(row) == ("p1", None, None)
        command.downgrade(cfg, "0001")  # and back: the rows survive that too
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM impression_items")).scalar() == 1
    finally:
        engine.dispose()


def test_0008_moves_logs_into_day_partitions_and_back(database_url, schema_name):
    """Searches, items and events logged before the logs were partitioned keep their rows, gain
    their search's time, and on PostgreSQL sit in their day's partition; and back again."""
    cfg = alembic_config(database_url)
    command.upgrade(cfg, "0007")
    engine = make_engine(database_url)
    try:
        with engine.begin() as conn:
            for sid, days in (("old", 40), ("new", 1)):
                _log_unpartitioned_search(conn, sid, days_ago=days)
        command.upgrade(cfg, "head")
        with engine.connect() as conn:
            assert _joined_by_search_time(conn) == (4, 2)
            if schema_name is not None:
                old = (datetime.now(UTC) - timedelta(days=40)).date()
                where = (
                    conn.execute(
                        text(
                            "SELECT DISTINCT tableoid::regclass::text FROM impression_items "
                            "WHERE search_id = 'old'"
                        )
                    )
                    .scalars()
                    .all()
                )
                assert where == [f"impression_items_p{old:%Y%m%d}"]
        command.downgrade(cfg, "0007")
        with engine.connect() as conn:
            counts = [
                conn.execute(text(f"SELECT count(*) FROM {t}")).scalar()
                for t in ("impressions", "impression_items", "feedback_events")
            ]
            assert counts == [2, 4, 2]
        with engine.begin() as conn:  # the cascade is back
            conn.execute(text("DELETE FROM impressions WHERE search_id = 'old'"))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM impression_items")).scalar() == 2
            assert conn.execute(text("SELECT count(*) FROM feedback_events")).scalar() == 1
    finally:
        engine.dispose()


def _log_unpartitioned_search(conn: Connection, sid: str, *, days_ago: int) -> None:
    """A search made `days_ago`, its two items and a click, as schema 0007 logged them."""
    conn.execute(
        text(
            "INSERT INTO impressions (search_id, created_at, query_text, has_image, "
            "query_type, model_version, k, latency_ms) VALUES (:sid, :at, 'red', "
            "false, 'text', 'h-1', 2, 1.0)"
        ),
        {"sid": sid, "at": datetime.now(UTC) - timedelta(days=days_ago)},
    )
    for pos in (1, 2):
        conn.execute(
            text(
                "INSERT INTO impression_items (search_id, position, product_id, score)"
                " VALUES (:sid, :pos, 'p1', 0.5)"
            ),
            {"sid": sid, "pos": pos},
        )
    conn.execute(
        text(
            "INSERT INTO feedback_events (event_id, search_id, product_id, position, "
            "type, ts, received_at) VALUES (:e, :sid, 'p1', 1, 'click', "
            "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
        ),
        {"e": f"e-{sid}", "sid": sid},
    )


def _joined_by_search_time(conn: Connection) -> tuple[int, int]:
    """Items and events that join their search on its id and its time."""
    items = conn.execute(
        text(
            "SELECT count(*) FROM impression_items it JOIN impressions i "
            "ON i.search_id = it.search_id AND i.created_at = it.created_at"
        )
    ).scalar()
    events = conn.execute(
        text(
            "SELECT count(*) FROM feedback_events e JOIN impressions i "
            "ON i.search_id = e.search_id AND i.created_at = e.search_created_at"
        )
    ).scalar()
    return int(items or 0), int(events or 0)
