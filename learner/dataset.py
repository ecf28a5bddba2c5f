"""Training data from the logs: what each search showed, where, and what the shopper did.

Labels, per (search, shown product): the highest grade among its events (by default purchase 3 >
add_to_cart 2 > click 1). A shown product without events is a skip (grade 0). Skips shown below
the deepest product the shopper acted on were probably never looked at; the position-bias model
accounts for that (the propensity of a deep position is small), so every shown product is kept.
Searches without any event carry no ranking signal but do count in click-rate and log-loss.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from learner.head import QUERY_TYPES
from storage.db import chunks
from storage.keys import content_key
from storage.models import FeedbackEvent, Impression, ImpressionItem, QueryEmbedding


@dataclass(frozen=True, slots=True)
class LoggedSearch:
    search_id: str
    created_at: datetime
    query_type: int  # index into QUERY_TYPES
    text_key: str | None
    image_key: str | None
    explore: bool
    product_ids: tuple[str, ...]  # in shown order
    model_positions: np.ndarray  # (k,) int
    propensities: np.ndarray  # (k,) float, as logged (training re-fits the curve instead)
    grades: np.ndarray  # (k,) int, 0 = skip


def load_searches(
    session: Session,
    *,
    grades: dict[str, int],
    start: datetime | None = None,
    end: datetime | None = None,
    with_events_only: bool = False,
    limit: int | None = None,
    sample: bool = False,
) -> list[LoggedSearch]:
    """Searches logged in [start, end), oldest first: the newest `limit` if given, or a uniform
    random `limit` of them with `sample` (the replay buffer)."""
    q = select(Impression)
    if start is not None:
        q = q.where(Impression.created_at >= start)
    if end is not None:
        q = q.where(Impression.created_at < end)
    if with_events_only:
        q = q.where(
            select(FeedbackEvent.id).where(FeedbackEvent.search_id == Impression.search_id).exists()
        )
    if sample:
        q = q.order_by(func.random())
    else:
        q = q.order_by(Impression.created_at.desc(), Impression.search_id)
    if limit is not None:
        q = q.limit(limit)
    impressions = sorted(session.scalars(q), key=lambda i: (i.created_at, i.search_id))
    if not impressions:
        return []
    ids = [i.search_id for i in impressions]
    items: dict[str, list[ImpressionItem]] = defaultdict(list)
    labels: dict[tuple[str, str], int] = {}
    for chunk in chunks(ids, 500):
        for it in session.scalars(
            select(ImpressionItem)
            .where(ImpressionItem.search_id.in_(chunk))
            .order_by(ImpressionItem.search_id, ImpressionItem.position)
        ):
            items[it.search_id].append(it)
        for sid, pid, etype in session.execute(
            select(FeedbackEvent.search_id, FeedbackEvent.product_id, FeedbackEvent.type).where(
                FeedbackEvent.search_id.in_(chunk)
            )
        ):
            g = grades.get(etype, 0)  # a type removed from the settings no longer counts
            if g > labels.get((sid, pid), 0):
                labels[(sid, pid)] = g
    out = []
    for imp in impressions:
        shown = items.get(imp.search_id, [])
        if not shown:
            continue
        out.append(
            LoggedSearch(
                search_id=imp.search_id,
                created_at=imp.created_at,
                query_type=QUERY_TYPES.index(imp.query_type),
                text_key=content_key(imp.query_text) if imp.query_text else None,
                image_key=imp.image_sha256,
                explore=imp.explore,
                product_ids=tuple(it.product_id for it in shown),
                model_positions=np.array(
                    [it.model_position or it.position for it in shown], dtype=np.int64
                ),
                propensities=np.array(
                    [it.propensity if it.propensity else 1.0 / it.position for it in shown],
                    dtype=np.float32,
                ),
                grades=np.array(
                    [labels.get((imp.search_id, it.product_id), 0) for it in shown], dtype=np.int64
                ),
            )
        )
    return out


def load_query_vectors(
    session: Session, keys: Sequence[str], encoder: str, dim: int
) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for chunk in chunks(sorted(set(keys)), 500):
        rows = session.execute(
            select(QueryEmbedding.key, QueryEmbedding.vector).where(
                QueryEmbedding.encoder == encoder, QueryEmbedding.key.in_(chunk)
            )
        )
        for key, blob in rows:
            vec = np.frombuffer(blob, dtype=np.float32)
            if vec.shape == (dim,):
                out[key] = vec
    return out


def count_events(session: Session, *, since: datetime | None = None) -> int:
    q = select(func.count()).select_from(FeedbackEvent)
    if since is not None:
        q = q.where(FeedbackEvent.received_at >= since)
    return int(session.scalar(q) or 0)
