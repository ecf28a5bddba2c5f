"""Engine creation and schema migration (Alembic is the only way the schema changes)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, NullPool, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

from storage.partitions import maintain

ALEMBIC_DIR = Path(__file__).resolve().parent.parent / "alembic"


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine with SQLite set up for concurrent readers and one writer (WAL)."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    # A database that stops answering must fail requests fast (503), not hang them.
    kwargs.setdefault("connect_args", {"connect_timeout": 5})
    if "poolclass" not in kwargs:
        kwargs.setdefault("pool_size", 10)
        kwargs.setdefault("max_overflow", 10)
        kwargs.setdefault("pool_timeout", 10)
    return create_engine(url, **kwargs)


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(ALEMBIC_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(url: str) -> None:
    """Bring the database to the newest schema and make the coming days' log partitions
    (storage.partitions); safe to call at every start."""
    from alembic import command

    command.upgrade(alembic_config(url), "head")
    if not url.startswith("postgresql"):
        return
    engine = make_engine(url, poolclass=NullPool)
    try:
        with Session(engine) as session:  # this week's log partitions, whenever a process starts
            maintain(session=session, today=datetime.now(UTC).date())
    finally:
        engine.dispose()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def ping(engine: Engine) -> None:
    """Raise unless the database answers a trivial query (readiness checks)."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    with factory() as session, session.begin():
        yield session


T = TypeVar("T")


def chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    """Slices of at most `size`: keeps IN (...) lists and statements within database limits."""
    return [items[i : i + size] for i in range(0, len(items), size)]


def time_chunks(
    rows: Iterable[tuple[T, datetime]], size: int
) -> list[tuple[Sequence[T], datetime, datetime]]:
    """Keys (search ids, event ids) in the order of their search's time, `size` at a time, each
    slice with its first and last time: a lookup bounded by that span reads only the day
    partitions it covers (storage.partitions), where one by key alone probes every day's index."""
    ordered = sorted(rows, key=lambda x: x[1])
    return [([sid for sid, _ in c], c[0][1], c[-1][1]) for c in chunks(ordered, size)]


def insert_for(session: Session) -> Any:
    """The dialect's INSERT construct, which has on_conflict_do_nothing (SQLite, PostgreSQL)."""
    from sqlalchemy.dialects import postgresql, sqlite

    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
