"""How much of what a head would serve its holdout can vouch for.

The holdout scores re-rankings of the products each logged search showed, but a served head ranks
its whole FAISS pool (`candidates_per_channel` per channel, about 200 products), and what it lifts
from outside the shown ones has no logged evidence either way (a candidate once passed the holdout
while serving mostly products it never showed; README, Promotion). So the gate also retrieves each
sampled holdout search's pool again, from its logged query vectors, and measures the share of a
head's top 10 over that pool that the search had shown.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from learner.dataset import LoggedSearch
from learner.features import all_scores, build_features
from model.catalog_view import ProductVectors
from model.head import QUERY_TYPES, FusionHead, search_channels


def retrieval_pools(
    head: FusionHead,
    searches: Sequence[LoggedSearch],
    text_vecs: Mapping[str, np.ndarray],
    image_vecs: Mapping[str, np.ndarray],
    index: ProductVectors,
    per_channel: int,
) -> list[LoggedSearch]:
    """The searches again, each with the product ids serving would score for it (the union of
    its channels' top `per_channel` among the products its filters allow, the lexical channel's
    too for a hybrid head) in place of what it showed, grades 0. Searches whose query vectors
    are not logged, or whose filters no longer allow any product, are left out."""
    usable = [s for s in searches if s.vectors_in(text_vecs, image_vecs)]
    out: list[LoggedSearch] = []
    for t in range(len(QUERY_TYPES)):
        group = [s for s in usable if s.query_type == t]
        if not group:
            continue
        texts = [text_vecs[s.text_key] for s in group if s.text_key]
        images = [image_vecs[s.image_key] for s in group if s.image_key]
        with torch.no_grad():  # a query type has both vectors in every search, or none
            q = head.query(
                torch.from_numpy(np.stack(texts)) if texts else None,
                torch.from_numpy(np.stack(images)) if images else None,
            )
        channels = [(space, vec.numpy().astype(np.float32)) for space, vec in search_channels(q)]
        # served from the products their filters allow: so are their pools (a mask per filter)
        by_filter: dict[tuple[Any, ...], tuple[Mapping[str, list[str]] | None, list[int]]] = {}
        for i, s in enumerate(group):
            key = tuple(sorted((a, tuple(v)) for a, v in (s.filters or {}).items()))
            by_filter.setdefault(key, (s.filters, []))[1].append(i)
        found: dict[int, list[np.ndarray]] = {}
        for filters, members in by_filter.values():
            allowed = index.filter_mask(filters) if filters else None
            per_space = [
                index.search_many(space, vecs[members], per_channel, allowed=allowed)
                for space, vecs in channels
            ]
            for j, i in enumerate(members):
                found[i] = [rows[j] for rows in per_space]
                text = group[i].query_text
                if text and head.mix is not None:  # served with its lexical list too
                    found[i].append(index.search_lexical(text, per_channel, allowed)[0])
        metas = index.metas
        for i, s in enumerate(group):
            rows = np.unique(np.concatenate(found[i]))
            if not len(rows):  # its filters allow no product any more
                continue
            ids = tuple(metas[r].id for r in rows)
            zeros = np.zeros(len(ids), np.int64)
            out.append(
                dataclasses.replace(
                    s,
                    product_ids=ids,
                    model_positions=zeros,
                    propensities=zeros.astype(np.float32),
                    grades=zeros,
                )
            )
    return out


@torch.no_grad()
def shown_share(
    head: FusionHead,
    logged: Sequence[LoggedSearch],
    pools: Sequence[LoggedSearch],
    text_vecs: Mapping[str, np.ndarray],
    image_vecs: Mapping[str, np.ndarray],
    index: ProductVectors,
    colour_vecs: Mapping[str, np.ndarray] | None = None,
    *,
    per_channel: int,
    depth: int = 10,
) -> dict[str, dict[str, float]]:
    """Per query type: the mean share of `head`'s top `depth` over each search's pool that the
    logged search had shown, and how many searches that mean is over."""
    shown = {s.search_id: set(s.product_ids) for s in logged}
    f, kept = build_features(
        head, pools, text_vecs, image_vecs, index, colour_vecs, per_channel=per_channel
    )
    out: dict[str, dict[str, float]] = {}
    if not kept:
        return out
    top = all_scores(head, f).topk(min(depth, f.batch.rows.shape[1]), dim=1)
    shares: dict[str, list[float]] = {}
    for i, s in enumerate(kept):
        picked = [
            s.product_ids[j]
            for j, v in zip(top.indices[i].tolist(), top.values[i].tolist(), strict=True)
            if v > float("-inf")
        ]
        if picked:
            hits = sum(p in shown[s.search_id] for p in picked)
            shares.setdefault(QUERY_TYPES[s.query_type], []).append(hits / len(picked))
    for t, v in shares.items():
        out[t] = {"shown_share": round(float(np.mean(v)), 4), "searches": len(v)}
    return out
