"""Impression repository: every answered search and what it showed, for the learner."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from storage.db import insert_for
from storage.models import Impression, ImpressionItem, QueryEmbedding


@dataclass(frozen=True, slots=True)
class ShownItem:
    product_id: str
    score: float
    model_position: int
    propensity: float


@dataclass(frozen=True, slots=True)
class QueryVector:
    key: str  # sha256 of the query text or image bytes
    encoder: str
    vector: bytes  # float32


@dataclass(frozen=True, slots=True)
class ImpressionIn:
    search_id: str
    created_at: datetime
    query_text: str | None
    has_image: bool
    image_sha256: str | None
    query_type: str
    filters: dict[str, Any] | None
    user_id: str | None
    model_version: str
    k: int
    latency_ms: float
    items: list[ShownItem]  # in shown order: position = index + 1
    explore: bool = False
    vectors: tuple[QueryVector, ...] = ()


def add_impressions(*, session: Session, impressions: list[ImpressionIn]) -> None:
    """Bulk insert: one executemany per table, whatever the batch size. Core inserts on the
    tables, not the ORM's bulk path: the impression writer holds the GIL that searches need,
    and the ORM's per-row bookkeeping cost 4.1 against 2.5 ms of CPU for 10 impressions."""
    if not impressions:
        return
    session.connection().execute(
        insert(Impression.__table__),
        [
            {
                "search_id": i.search_id,
                "created_at": i.created_at,
                "query_text": i.query_text,
                "has_image": i.has_image,
                "image_sha256": i.image_sha256,
                "query_type": i.query_type,
                "filters": i.filters,
                "user_id": i.user_id,
                "model_version": i.model_version,
                "k": i.k,
                "latency_ms": i.latency_ms,
                "explore": i.explore,
            }
            for i in impressions
        ],
    )
    rows = [
        {
            "search_id": i.search_id,
            "position": pos,
            "product_id": it.product_id,
            "score": it.score,
            "model_position": it.model_position,
            "propensity": it.propensity,
        }
        for i in impressions
        for pos, it in enumerate(i.items, start=1)
    ]
    if rows:
        session.connection().execute(insert(ImpressionItem.__table__), rows)
    vectors = {(v.key, v.encoder): v for i in impressions for v in i.vectors}
    if vectors:
        session.connection().execute(
            insert_for(session)(QueryEmbedding.__table__).on_conflict_do_nothing(),
            [{"key": k, "encoder": e, "vector": v.vector} for (k, e), v in vectors.items()],
        )
