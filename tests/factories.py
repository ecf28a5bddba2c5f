"""Factories for the rows tests write: impressions (a logged search) and feedback events."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from storage.feedback import EventIn
from storage.impressions import ImpressionIn, ShownItem


def impression(
    i: int = 0,
    *,
    search_id: str | None = None,
    created_at: datetime | None = None,
    n_items: int = 5,
    products: Sequence[str] | None = None,
    **overrides: Any,
) -> ImpressionIn:
    """The i-th of a varied stream: every third a photo query, every second filtered. Shown
    products are `products` (default p{i}-0, p{i}-1, ...), scored 1.0, 0.9, ... with 1/position
    propensities."""
    shown = list(products) if products is not None else [f"p{i}-{j}" for j in range(n_items)]
    photo = i % 3 == 0
    fields: dict[str, Any] = {
        "search_id": search_id or uuid.uuid4().hex,
        "created_at": created_at or datetime.now(UTC),
        "query_text": None if photo else f"query {i}",
        "has_image": photo,
        "image_sha256": f"{i:064x}" if photo else None,
        "query_type": "image" if photo else "text",
        "filters": {"articleType": ["Watches"], "gender": "Men"} if i % 2 else None,
        "user_id": f"user-{i % 7}",
        "model_version": "h-test00000000",
        "k": len(shown),
        "latency_ms": 1.25 + i,
        "items": [ShownItem(p, 1.0 - j / 10, j + 1, 1 / (j + 1)) for j, p in enumerate(shown)],
    }
    return ImpressionIn(**{**fields, **overrides})


def event(
    search_id: str, product_id: str, type: str = "click", ts: datetime | None = None, **kw: Any
) -> EventIn:
    """A feedback event on a shown product, now unless `ts` says otherwise."""
    return EventIn(search_id, product_id, type, ts or datetime.now(UTC), **kw)
