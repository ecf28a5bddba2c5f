"""Retention deletes old searches with their shown items and feedback, and nothing newer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from storage.db import make_engine, migrate, session_factory, transaction
from storage.feedback import EventIn, record_events
from storage.impressions import ImpressionIn, ShownItem, add_impressions
from storage.models import FeedbackEvent, Impression, ImpressionItem
from storage.retention import purge_before


def impression(sid: str, created: datetime) -> ImpressionIn:
    return ImpressionIn(
        search_id=sid,
        created_at=created,
        query_text="red shirt",
        has_image=False,
        image_sha256=None,
        query_type="text",
        filters=None,
        user_id=None,
        model_version="h-x",
        k=3,
        latency_ms=1.0,
        items=[ShownItem(f"p{j}", 1.0 - j, j + 1, 1 / (j + 1)) for j in range(3)],
    )


def test_purge_deletes_old_searches_items_and_events_only(database_url):
    migrate(database_url)
    engine = make_engine(database_url)
    sessions = session_factory(engine)
    now = datetime.now(UTC)
    try:
        with transaction(sessions) as s:
            add_impressions(
                session=s,
                impressions=[impression(f"old{i}", now - timedelta(days=100)) for i in range(7)]
                + [impression("new", now - timedelta(days=1))],
            )
        with transaction(sessions) as s:
            events = [EventIn(sid, "p1", "click", now) for sid in ("old0", "old3", "new")]
            assert record_events(s, events, received_at=now).accepted == 3
        with sessions() as s:
            assert purge_before(s, now - timedelta(days=90), batch=3) == 7
        with sessions() as s:
            count = lambda model: s.scalar(select(func.count()).select_from(model))  # noqa: E731
            assert count(Impression) == 1 and count(ImpressionItem) == 3
            assert s.scalars(select(FeedbackEvent.search_id)).all() == ["new"]
    finally:
        engine.dispose()
