"""Logs at scale: shown items and events carry their search's time; on PostgreSQL searches, items
and events become day-partitioned tables (storage.partitions), rows kept

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from datetime import UTC, datetime, timedelta

from alembic import op
import sqlalchemy as sa
from sqlalchemy import Connection, text

from storage.partitions import AHEAD_DAYS, LOGS, create_days, create_default


revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# the secondary indexes of each log table, as the models name them
INDEXES = {
    "impressions": ["created_at", "query_text", "user_id", "model_version", "holdout", "memory_folded"],
    "impression_items": ["product_id"],
    "feedback_events": ["search_id", "received_at", "memory_folded"],
}
# the column each table gains: its search's created_at
ADDED = {"impression_items": "created_at", "feedback_events": "search_created_at"}
OLD = "{}_unpartitioned"


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        _partition(bind)
    else:
        _add_search_times()


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        _unpartition(bind)
    else:
        for table, column in ADDED.items():
            with op.batch_alter_table(table) as b:
                b.drop_column(column)


def _add_search_times() -> None:
    for table, column in ADDED.items():
        op.add_column(table, sa.Column(column, sa.DateTime(timezone=True), nullable=True))
        op.execute(
            f"UPDATE {table} SET {column} = (SELECT i.created_at FROM impressions i "
            f"WHERE i.search_id = {table}.search_id)"
        )
        with op.batch_alter_table(table) as b:
            b.alter_column(column, existing_type=sa.DateTime(timezone=True), nullable=False)


def _partition(bind: Connection) -> None:
    """New partitioned tables beside the old (renamed) ones, the rows copied, the old dropped;
    keys and indexes are built last, once, over the copied rows."""
    seq = bind.execute(text("SELECT pg_get_serial_sequence('feedback_events', 'id')")).scalar()
    for table in LOGS:
        op.execute(f"ALTER TABLE {table} RENAME TO {OLD.format(table)}")
    for table, key in LOGS.items():
        added = f", {ADDED[table]} timestamptz NOT NULL" if table in ADDED else ""
        op.execute(
            f"CREATE TABLE {table} (LIKE {OLD.format(table)} INCLUDING DEFAULTS{added}) "
            f"PARTITION BY RANGE ({key})"
        )
        create_default(bind, table)
    today = datetime.now(UTC).date()
    logged = bind.execute(
        text(
            "SELECT DISTINCT CAST(timezone('UTC', created_at) AS date) "
            f"FROM {OLD.format('impressions')}"
        )
    ).scalars()
    create_days(bind, {*logged, *(today + timedelta(d) for d in range(AHEAD_DAYS + 1))})
    op.execute(f"INSERT INTO impressions SELECT * FROM {OLD.format('impressions')}")
    for table in ADDED:
        op.execute(
            f"INSERT INTO {table} SELECT t.*, i.created_at FROM {OLD.format(table)} t "
            f"JOIN {OLD.format('impressions')} i ON i.search_id = t.search_id"
        )
    op.execute(f"ALTER SEQUENCE {seq} OWNED BY feedback_events.id")
    for table in reversed(LOGS):
        op.execute(f"DROP TABLE {OLD.format(table)}")
    op.create_primary_key("pk_impressions", "impressions", ["search_id", "created_at"])
    op.create_primary_key(
        "pk_impression_items", "impression_items", ["search_id", "position", "created_at"]
    )
    op.create_primary_key("pk_feedback_events", "feedback_events", ["id", "search_created_at"])
    op.create_unique_constraint(
        "uq_feedback_events_event_id", "feedback_events", ["event_id", "search_created_at"]
    )
    _create_indexes()


def _unpartition(bind: Connection) -> None:
    """Plain tables again, with their one-column keys and cascading foreign keys."""
    seq = bind.execute(text("SELECT pg_get_serial_sequence('feedback_events', 'id')")).scalar()
    for table in LOGS:
        op.execute(f"CREATE TABLE {OLD.format(table)} (LIKE {table} INCLUDING DEFAULTS)")
        op.execute(f"INSERT INTO {OLD.format(table)} SELECT * FROM {table}")
    op.execute(f"ALTER SEQUENCE {seq} OWNED BY {OLD.format('feedback_events')}.id")
    for table in reversed(LOGS):
        op.execute(f"DROP TABLE {table}")  # its partitions too
    for table in LOGS:
        op.execute(f"ALTER TABLE {OLD.format(table)} RENAME TO {table}")
    for table, column in ADDED.items():
        op.drop_column(table, column)
    op.create_primary_key("pk_impressions", "impressions", ["search_id"])
    op.create_primary_key("pk_impression_items", "impression_items", ["search_id", "position"])
    op.create_primary_key("pk_feedback_events", "feedback_events", ["id"])
    op.create_unique_constraint("uq_feedback_events_event_id", "feedback_events", ["event_id"])
    for table in ADDED:
        op.create_foreign_key(
            f"fk_{table}_search_id_impressions",
            table,
            "impressions",
            ["search_id"],
            ["search_id"],
            ondelete="CASCADE",
        )
    _create_indexes()


def _create_indexes() -> None:
    for table, columns in INDEXES.items():
        for column in columns:
            op.create_index(f"ix_{table}_{column}", table, [column])
