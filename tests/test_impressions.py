"""The impression writer on a real database: fast to call, batched, retried, drained on close."""

from __future__ import annotations

import statistics
import threading
import time

import pytest
from factories import impression
from sqlalchemy import func, select, text

from service.search.impressions import ImpressionLogger
from storage.db import make_engine
from storage.models import Impression, ImpressionItem


def counts(sessions) -> tuple[int, int]:
    with sessions() as s:
        return (
            s.scalar(select(func.count()).select_from(Impression)),
            s.scalar(select(func.count()).select_from(ImpressionItem)),
        )


def test_500_impressions_all_written_on_close(sessions):
    logger = ImpressionLogger(sessions, flush_ms=50)
    imps = [impression(i) for i in range(500)]
    took = []
    for imp in imps:
        t0 = time.perf_counter()
        logger.log(imp)
        took.append(time.perf_counter() - t0)
    logger.close()  # straight away: whatever is still queued must be drained, not dropped
    assert not logger._thread.is_alive()
    assert statistics.median(took) < 0.001, f"log() median {statistics.median(took) * 1e6:.0f} us"
    assert logger.written == 500
    assert counts(sessions) == (500, 2500)
    sample = imps[7]  # i=7: text query with filters
    with sessions() as s:
        row = s.get(Impression, sample.search_id)
        assert row.query_text == "query 7" and row.has_image is False
        assert row.filters == {"articleType": ["Watches"], "gender": "Men"}
        assert row.user_id == "user-0" and row.k == 5 and row.latency_ms == pytest.approx(8.25)
        assert [(i.position, i.product_id, i.score) for i in row.items] == [
            (j + 1, f"p7-{j}", pytest.approx(1.0 - j / 10)) for j in range(5)
        ]
        img = s.get(Impression, imps[3].search_id)
        assert img.has_image and img.image_sha256 == f"{3:064x}" and img.query_text is None


def test_flush_commits_without_closing(sessions):
    logger = ImpressionLogger(sessions, flush_ms=20)
    try:
        for i in range(30):
            logger.log(impression(i, n_items=0))
        logger.flush(timeout=10)
        assert counts(sessions) == (30, 0)
    finally:
        logger.close()


def test_concurrent_loggers_lose_nothing(sessions):
    logger = ImpressionLogger(sessions, flush_ms=10, max_batch=64)

    def work(offset: int) -> None:
        for i in range(100):
            logger.log(impression(offset + i, n_items=2))

    threads = [threading.Thread(target=work, args=(n * 1000,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    logger.close()
    assert counts(sessions) == (400, 800)


def test_a_failed_write_is_retried_not_dropped(sessions, database_url):
    """While the table is unusable every write fails; once it is back, everything lands."""
    engine = make_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE impressions RENAME TO impressions_away"))
        logger = ImpressionLogger(sessions, flush_ms=10)
        for i in range(20):
            logger.log(impression(i))
        time.sleep(0.5)  # the writer has failed at least once by now
        assert logger.written == 0
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE impressions_away RENAME TO impressions"))
        logger.close(timeout=30)
        assert not logger._thread.is_alive()
        assert logger.written == 20
        assert counts(sessions) == (20, 100)
    finally:
        engine.dispose()
