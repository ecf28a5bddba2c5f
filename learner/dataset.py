"""Training data from the logs: what each search showed, where, and what the shopper did.

Labels, per (search, shown product): the highest grade among its events (by default purchase 3 >
add_to_cart 2 > click 1). A shown product without events is a skip (grade 0). Skips shown below
the deepest product the shopper acted on were probably never looked at; the position-bias model
accounts for that (the propensity of a deep position is small), so every shown product is kept.
Searches without any event carry no ranking signal but do count in click-rate and log-loss.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from model.filters import filter_values
from model.head import QUERY_TYPES
from storage.feedback import event_types
from storage.impressions import engaged_per_type, logged_searches, query_vectors, shown_items
from storage.keys import content_key


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
    filters: Mapping[str, list[str]] | None = None  # attribute -> allowed values, as searched
    query_text: str | None = None  # as typed: the lexical channel reads it
    memory: np.ndarray | None = None  # (k,) float, the query memory's lift as served

    def vectors_in(self, text_vecs: Mapping[str, Any], image_vecs: Mapping[str, Any]) -> bool:
        """Whether every query vector this search needs is among those given (a query logged
        before vectors were kept has none)."""
        return (not self.text_key or self.text_key in text_vecs) and (
            not self.image_key or self.image_key in image_vecs
        )


def load_searches(
    session: Session,
    *,
    grades: dict[str, int],
    start: datetime | None = None,
    end: datetime | None = None,
    with_events_only: bool = False,
    holdout: bool | None = None,
    query_type: str | None = None,
    limit: int | None = None,
    sample: bool = False,
) -> list[LoggedSearch]:
    """Searches logged in [start, end), oldest first: the newest `limit` if given, or a uniform
    random `limit` of them with `sample` (the replay buffer). `holdout`: only those held out
    (True) or only those not (False) by a refresh (learner.split)."""
    impressions = logged_searches(
        session=session,
        start=start,
        end=end,
        with_events_only=with_events_only,
        holdout=holdout,
        query_type=query_type,
        limit=limit,
        sample=sample,
    )
    if not impressions:
        return []
    shown, labels = _shown_and_labels(session, [(i[0], i[1]) for i in impressions], grades)
    out = []
    for sid, created_at, query_type, query_text, image_sha256, explore, filters in impressions:
        if sid not in shown:
            continue
        products, model_positions, propensities, memory = shown[sid]
        out.append(
            LoggedSearch(
                search_id=sid,
                created_at=created_at,
                query_type=QUERY_TYPES.index(query_type),
                text_key=content_key(query_text) if query_text else None,
                image_key=image_sha256,
                explore=explore,
                product_ids=tuple(products),
                model_positions=np.array(model_positions, dtype=np.int64),
                propensities=np.array(propensities, dtype=np.float32),
                grades=np.array([labels.get((sid, p), 0) for p in products], dtype=np.int64),
                filters=filter_values(filters) if filters else None,
                query_text=query_text,
                memory=np.array(memory, dtype=np.float32),
            )
        )
    return out


def replay_sample(
    session: Session, *, grades: dict[str, int], end: datetime, limit: int
) -> list[LoggedSearch]:
    """A random sample of at most `limit` engaged searches logged before `end` and not held
    out, shared evenly between query types (a type with fewer leaves its share to the others): a
    type that is a small share of the traffic keeps its history in training."""
    counts = engaged_per_type(session=session, end=end)
    out: list[LoggedSearch] = []
    for qtype, n in even_shares(counts, limit).items():
        out += load_searches(
            session,
            grades=grades,
            end=end,
            with_events_only=True,
            holdout=False,
            query_type=qtype,
            limit=n,
            sample=True,
        )
    return sorted(out, key=lambda x: (x.created_at, x.search_id))


def even_shares(available: Mapping[str, int], total: int) -> dict[str, int]:
    """`total` shared as evenly as `available` allows; what one key cannot use goes to the
    others (water-filling, the scarcest first)."""
    keys = sorted((k for k, n in available.items() if n > 0), key=available.__getitem__)
    shares: dict[str, int] = {}
    left = total
    for i, key in enumerate(keys):
        shares[key] = min(available[key], left // (len(keys) - i))
        left -= shares[key]
    return shares


def _shown_and_labels(
    session: Session, searches: list[tuple[str, datetime]], grades: dict[str, int]
) -> tuple[
    dict[str, tuple[list[str], list[int], list[float], list[float]]], dict[tuple[str, str], int]
]:
    """Per search, in shown order: product ids, model positions, logged propensities and memory
    lifts; and per (search, product) the highest grade among its events."""
    shown: dict[str, tuple[list[str], list[int], list[float], list[float]]] = {}
    labels: dict[tuple[str, str], int] = {}
    for sid, pid, pos, model_pos, prop, memory in shown_items(session=session, searches=searches):
        cols = shown.setdefault(sid, ([], [], [], []))
        cols[0].append(pid)
        cols[1].append(model_pos or pos)
        cols[2].append(prop if prop else 1.0 / pos)
        cols[3].append(memory or 0.0)
    for sid, pid, etype in event_types(session=session, searches=searches):
        g = grades.get(etype, 0)  # a type removed from the settings no longer counts
        if g > labels.get((sid, pid), 0):
            labels[(sid, pid)] = g
    return shown, labels


@dataclass(frozen=True)
class Encoders:
    """Which logged query vectors a refresh reads: those of the serving encoders."""

    text_id: str
    text_dim: int
    image_id: str
    image_dim: int
    colour_id: str | None = None  # the photos' colour descriptor, if one is logged
    colour_dim: int = 0


def logged_query_vectors(
    session: Session, searches: list[LoggedSearch], encoders: Encoders
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The searches' frozen query vectors as logged: text, image and colour (by content key)."""
    texts = [x.text_key for x in searches if x.text_key]
    images = [x.image_key for x in searches if x.image_key]
    return (
        load_query_vectors(session, texts, encoders.text_id, encoders.text_dim),
        load_query_vectors(session, images, encoders.image_id, encoders.image_dim),
        load_query_vectors(session, images, encoders.colour_id, encoders.colour_dim)
        if encoders.colour_id
        else {},
    )


def load_query_vectors(
    session: Session, keys: Sequence[str], encoder: str, dim: int
) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for key, blob in query_vectors(session=session, keys=keys, encoder=encoder).items():
        vec = np.frombuffer(blob, dtype=np.float32)
        if vec.shape == (dim,):
            out[key] = vec
    return out
