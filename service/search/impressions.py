"""Impression logging off the request path: a queue and one writer thread that batches inserts.

A search only enqueues (microseconds). The writer commits whatever has queued every flush
interval, or at once when feedback is waiting on a search (`hurry`); a failed write is retried
with backoff, never dropped. `close()` drains the queue, so nothing acknowledged is lost on a
clean shutdown. `impression_of` is the record a search leaves for the learner.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker

from storage.db import transaction
from storage.impressions import ImpressionIn, QueryVector, ShownItem, add_impressions
from storage.keys import content_key

if TYPE_CHECKING:  # the writer thread itself needs none of the query path
    from service.search.searcher import Searcher, SearchResult

log = logging.getLogger(__name__)
_STOP = object()


def impression_of(
    *,
    result: SearchResult,
    searcher: Searcher,
    query_text: str | None,
    image_sha256: str | None,
    filters: dict[str, Any] | None,
    user_id: str | None,
    caller: str | None,
    k: int,
) -> ImpressionIn:
    """The search as the learner will replay it, with its frozen query vectors so that the
    learner never re-encodes a query."""
    embedder = searcher.embedder
    text_key = content_key(query_text) if query_text else None
    vectors = [
        QueryVector(key, encoder.id, vec.tobytes())
        for key, encoder, vec in (
            (text_key, embedder.text_encoder, result.text_vector),
            (image_sha256, embedder.image_encoder, result.image_vector),
            (image_sha256, embedder.colour_encoder, result.colour_vector),
        )
        if key and encoder is not None and vec is not None
    ]
    return ImpressionIn(
        search_id=result.search_id,
        created_at=datetime.now(UTC),
        query_text=query_text,
        has_image=image_sha256 is not None,
        image_sha256=image_sha256,
        query_type=result.query_type,
        filters=filters or None,
        user_id=user_id,
        model_version=result.model_version,
        k=k,
        latency_ms=result.latency_ms,
        items=[
            ShownItem(h.product.id, h.score, h.model_position, h.propensity, h.memory)
            for h in result.hits
        ],
        explore=result.explore,
        vectors=tuple(vectors),
        caller=caller,
    )


class ImpressionLogger:
    def __init__(
        self, sessions: sessionmaker[Session], *, flush_ms: int = 200, max_batch: int = 1000
    ) -> None:
        self._sessions = sessions
        self._queue: queue.Queue[object] = queue.Queue()
        self._flush_s = flush_ms / 1000
        self._max_batch = max_batch
        self.written = 0
        self._pending: set[str] = set()  # logged, not yet committed: feedback may wait on them
        self._pending_lock = threading.Lock()
        self._hurry = threading.Event()
        self._thread = threading.Thread(target=self._run, name="impression-writer", daemon=True)
        self._thread.start()

    def log(self, impression: ImpressionIn) -> None:
        with self._pending_lock:
            self._pending.add(impression.search_id)
        self._queue.put(impression)

    def pending(self, search_ids: set[str]) -> bool:
        """Whether any of these searches is logged but not yet committed."""
        with self._pending_lock:
            return not self._pending.isdisjoint(search_ids)

    def hurry(self) -> None:
        """Write what is queued now rather than at the end of the flush interval."""
        self._hurry.set()

    def close(self, timeout: float = 30.0) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def flush(self, timeout: float = 10.0) -> None:
        """Block until everything logged so far is committed (tests, shutdown hooks)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch: list[ImpressionIn] = []
            try:
                item = self._queue.get(timeout=self._flush_s)
            except queue.Empty:
                continue
            items = [item]
            while len(items) < self._max_batch:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            for it in items:
                if it is _STOP:
                    stopping = True
                else:
                    batch.append(it)  # type: ignore[arg-type]
            self._write(batch)
            for _ in items:
                self._queue.task_done()
            if not stopping and self._queue.qsize() < self._max_batch:
                self._hurry.wait(self._flush_s)
            self._hurry.clear()

    def _write(self, batch: list[ImpressionIn]) -> None:
        delay = 0.1
        while batch:
            try:
                with transaction(self._sessions) as s:
                    add_impressions(session=s, impressions=batch)
                self.written += len(batch)
                with self._pending_lock:
                    self._pending.difference_update(i.search_id for i in batch)
                return
            except Exception:  # never let the writer die: what was acknowledged must be written
                log.exception("writing %d impressions failed; retrying in %.1fs", len(batch), delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
