"""SQLAlchemy 2.0 models. The schema changes only through Alembic migrations in alembic/."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Generic, TypeVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(ts: datetime) -> datetime:
    """SQLite hands back naive datetimes; they were stored as UTC."""
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


class RunStatus(StrEnum):
    """A training run's state: queued, then running, then succeeded, skipped or failed."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    SKIPPED = "skipped"
    FAILED = "failed"


FINISHED_RUNS = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.SKIPPED)


class VersionStatus(StrEnum):
    """How a head version came to be: built at ingest, or a refresh's candidate, kept either way."""

    BOOTSTRAP = "bootstrap"
    PROMOTED = "promoted"
    REJECTED = "rejected"


E = TypeVar("E", bound=StrEnum)


class StrEnumColumn(TypeDecorator[E], Generic[E]):
    """A StrEnum stored as its plain value in a VARCHAR, so the schema (and every stored value)
    is what it was before the enum existed and no migration is needed."""

    impl = String
    cache_ok = True

    def __init__(self, enum: type[E], length: int) -> None:
        super().__init__(length)
        self.enum = enum  # an attribute named after the argument: it is part of the cache key

    def process_bind_param(self, value: E | str | None, dialect: Dialect) -> str | None:
        return None if value is None else self.enum(value).value

    def process_result_value(self, value: str | None, dialect: Dialect) -> E | None:
        return None if value is None else self.enum(value)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON}


class Product(Base):
    """One catalog product. `revision` grows with every change so replicas can catch up."""

    __tablename__ = "products"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    title: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    image_path: Mapped[str | None] = mapped_column(Text)
    image_sha256: Mapped[str | None] = mapped_column(String(64))
    revision: Mapped[int] = mapped_column(BigInteger, index=True)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Impression(Base):
    """One answered search: what was asked, by whom, and which model answered."""

    __tablename__ = "impressions"

    search_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    # indexed: the dashboard finds a query's searches by its wordings (storage.analytics)
    query_text: Mapped[str | None] = mapped_column(Text, index=True)
    has_image: Mapped[bool] = mapped_column(Boolean)
    image_sha256: Mapped[str | None] = mapped_column(String(64))
    query_type: Mapped[str] = mapped_column(String(16))
    filters: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    user_id: Mapped[str | None] = mapped_column(String(128), index=True)
    # The API key that searched (its fingerprint; None without keys): with no user id, the one
    # shopper the query memory counts a key's searches as.
    caller: Mapped[str | None] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(64), index=True)
    k: Mapped[int] = mapped_column(Integer)
    latency_ms: Mapped[float] = mapped_column(Float)
    # Randomised for position-bias estimation: adjacent pairs may have been swapped.
    explore: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Held out by a refresh to judge candidates (learner.split): no refresh trains on it while set.
    holdout: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false(), index=True
    )
    # Counted by the query memory (service.search.memory): however late it was committed, a
    # search is folded exactly once.
    memory_folded: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false(), index=True
    )

    items: Mapped[list[ImpressionItem]] = relationship(
        back_populates="impression", order_by="ImpressionItem.position"
    )


class ImpressionItem(Base):
    """One shown product of a search, at its 1-based position, with the score it was ranked by."""

    __tablename__ = "impression_items"

    search_id: Mapped[str] = mapped_column(
        ForeignKey("impressions.search_id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    # The impression's, copied: on PostgreSQL the items are partitioned by it with their search
    # (storage.partitions), so retention drops a day's searches and items together.
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    product_id: Mapped[str] = mapped_column(String(128), index=True)
    score: Mapped[float] = mapped_column(Float)
    # Where the model ranked it before exploration swaps (= position when not exploring).
    model_position: Mapped[int | None] = mapped_column(Integer)
    # Probability that a shopper examines this position, as estimated when it was shown.
    propensity: Mapped[float | None] = mapped_column(Float)
    # The query memory's lift for this product as served (model.query_memory): the learner
    # trains the memory's weight on what serving read, not on memory that came after.
    memory: Mapped[float | None] = mapped_column(Float)

    impression: Mapped[Impression] = relationship(back_populates="items")


class QueryEmbedding(Base):
    """A query's frozen-encoder vector, keyed by the sha256 of its text or image bytes, so the
    learner (possibly another process, on another machine) never re-encodes and never needs the
    shopper's image itself. Repeated queries share one row."""

    __tablename__ = "query_embeddings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    encoder: Mapped[str] = mapped_column(String(64), primary_key=True)
    vector: Mapped[bytes] = mapped_column(LargeBinary)  # float32, little-endian


class FeedbackEvent(Base):
    """A click, add-to-cart, purchase (or any configured type) on a product a search showed.

    `event_id` is the idempotency key: a retried delivery hits the unique constraint and is
    counted as a duplicate, not stored twice. On PostgreSQL the constraint holds within one
    day's partition (storage.partitions), and storage.feedback refuses an id stored in another.
    """

    __tablename__ = "feedback_events"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    event_id: Mapped[str] = mapped_column(String(128), unique=True)
    search_id: Mapped[str] = mapped_column(
        ForeignKey("impressions.search_id", ondelete="CASCADE"), index=True
    )
    # Its search's created_at: on PostgreSQL an event lives in its search's day partition, so
    # retention drops it with the search and a retried delivery meets the first in one partition.
    search_created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    product_id: Mapped[str] = mapped_column(String(128))
    position: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(32))
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    memory_folded: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false(), index=True
    )


class ModelVersion(Base):
    """An immutable scoring-head version: where it came from, what it was trained on, how it did."""

    __tablename__ = "model_versions"

    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    parent: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    status: Mapped[VersionStatus] = mapped_column(StrEnumColumn(VersionStatus, 16))
    reason: Mapped[str | None] = mapped_column(Text)
    run_id: Mapped[int | None] = mapped_column(Integer)
    window_start: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    window_end: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    class_weights: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    artifact_sha256: Mapped[str] = mapped_column(String(64))


class ActiveModel(Base):
    """One row: the version every API process should serve. Replicas poll it."""

    __tablename__ = "active_model"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, default=1)
    version: Mapped[str] = mapped_column(ForeignKey("model_versions.version"))
    activated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class TrainingRun(Base):
    """One refresh attempt, started by the schedule, an event count, drift or an operator."""

    __tablename__ = "training_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    trigger: Mapped[str] = mapped_column(String(16))
    status: Mapped[RunStatus] = mapped_column(StrEnumColumn(RunStatus, 16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    candidate: Mapped[str | None] = mapped_column(String(64))
    promoted: Mapped[bool | None] = mapped_column(Boolean)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)


class Lease(Base):
    """A named lock with an expiry, so only one learner process trains at a time."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class MemoryQuery(Base):
    """A query the query memory knows (model.query_memory): its normalised key, a wording as
    shoppers typed it, and its frozen vector, so that a similar new query can borrow from it.
    `fold` is the memory fold that last wrote the row: followers read what is newer."""

    __tablename__ = "memory_queries"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the normal form
    kind: Mapped[str] = mapped_column(String(16))  # text | image | composed
    text: Mapped[str] = mapped_column(Text)  # the normal form (terms, or photo:<sha256>)
    wording: Mapped[str | None] = mapped_column(Text)  # as first typed
    encoder: Mapped[str | None] = mapped_column(String(64))  # whose vector it is
    vector: Mapped[bytes | None] = mapped_column(LargeBinary)  # float32
    searches: Mapped[float] = mapped_column(Float)  # decayed to `at`
    at: Mapped[float] = mapped_column(Float, index=True)  # epoch seconds of the last update
    fold: Mapped[int] = mapped_column(BigInteger, index=True)


class MemoryPair(Base):
    """What shoppers of one query did with one product: examinations (the shown positions'
    examination probabilities) and graded events (grade over the highest grade), each shopper
    counted once and decayed to `at`; and the shoppers per event type, for reading."""

    __tablename__ = "memory_pairs"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    product_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    exam: Mapped[float] = mapped_column(Float)
    gain: Mapped[float] = mapped_column(Float)
    events: Mapped[dict[str, Any]] = mapped_column(JSON)  # event type -> decayed shoppers
    at: Mapped[float] = mapped_column(Float, index=True)
    fold: Mapped[int] = mapped_column(BigInteger, index=True)


class MemoryShopper(Base):
    """The most one shopper (a user id, a key without user ids, or else the search itself) gave
    each product of a query, so that repeating a search or an event adds nothing: the abuse
    bound. One row per query and shopper, not per product: a search shows 20 products."""

    __tablename__ = "memory_shoppers"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    shopper: Mapped[str] = mapped_column(String(200), primary_key=True)
    # product id -> [examination, grade, [event types], when it last changed (epoch seconds)]
    products: Mapped[dict[str, list[Any]]] = mapped_column(JSON)
    at: Mapped[float] = mapped_column(Float, index=True)


class MemoryFold(Base):
    """One row: the number of the last fold of the logs into the query memory."""

    __tablename__ = "memory_fold"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, default=1)
    fold: Mapped[int] = mapped_column(BigInteger)


class SearchStat(Base):
    """Searches per UTC day, query and type, folded once from the logs beside the query memory
    (service.search.analytics). Analytics read these: their size grows with the distinct
    queries of each day, not with the impressions."""

    __tablename__ = "search_stats"

    day: Mapped[int] = mapped_column(Integer, primary_key=True)  # days since 1970-01-01, UTC
    key: Mapped[str] = mapped_column(String(64), primary_key=True)  # the query memory's key
    query_type: Mapped[str] = mapped_column(String(16), primary_key=True)
    model_version: Mapped[str] = mapped_column(String(64), primary_key=True)  # which answered
    query: Mapped[str] = mapped_column(Text)  # the day's first wording; "" for a photo alone
    searches: Mapped[int] = mapped_column(Integer)
    empty: Mapped[int] = mapped_column(Integer)  # searches that returned nothing


class SearchEventStat(Base):
    """Per day, query, type, model version and event type: how many searches had at least one
    such event, how many events there were, and the sum over those searches of one over the
    position of the first such event (for its mean reciprocal rank)."""

    __tablename__ = "search_event_stats"

    day: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    query_type: Mapped[str] = mapped_column(String(16), primary_key=True)
    model_version: Mapped[str] = mapped_column(String(64), primary_key=True)
    event: Mapped[str] = mapped_column(String(32), primary_key=True)
    searches: Mapped[int] = mapped_column(Integer)
    events: Mapped[int] = mapped_column(Integer)
    reciprocal_ranks: Mapped[float] = mapped_column(Float)


class EventPosition(Base):
    """Per day and event type, how many events came from each shown position."""

    __tablename__ = "event_positions"

    day: Mapped[int] = mapped_column(Integer, primary_key=True)
    event: Mapped[str] = mapped_column(String(32), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    events: Mapped[int] = mapped_column(Integer)
