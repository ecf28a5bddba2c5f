"""How much of what a head would serve its holdout can vouch for.

The holdout scores re-rankings of the products each logged search showed, but a served head ranks
its whole pool (`candidates_per_channel` per channel, about 200 products), and what it lifts from
outside the shown ones has no logged evidence either way (a candidate once passed the holdout while
serving mostly products it never showed; docs/ablation-coverage-guard.md). So the gate also
retrieves each sampled holdout search's pool again, with serving's retrieval (model.retrieval) on
its logged query vectors, and measures the share of a head's top 10 over that pool that the
search had shown.
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
from model.head import QUERY_TYPES, FusionHead
from model.retrieval import depth, filter_key, retrieve


def retrieval_pools(
    head: FusionHead,
    searches: Sequence[LoggedSearch],
    text_vecs: Mapping[str, np.ndarray],
    image_vecs: Mapping[str, np.ndarray],
    index: ProductVectors,
    per_channel: int,
) -> list[LoggedSearch]:
    """The searches again, each with the product ids serving would score for it (its pool from
    model.retrieval, among the products its filters allow) in place of what it showed, grades 0.
    Searches whose query vectors are not logged, or whose filters no longer allow any product,
    are left out; the rest keep their order."""
    usable = [s for s in searches if s.vectors_in(text_vecs, image_vecs)]
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, s in enumerate(usable):  # one retrieval per query type, filter and depth
        n = depth(per_channel, len(s.product_ids))
        groups.setdefault((s.query_type, filter_key(s.filters), n), []).append(i)
    pools: dict[int, np.ndarray] = {}
    for (_, _, n), members in groups.items():
        group = [usable[i] for i in members]
        with torch.no_grad():  # a query type has both vectors in every search, or none
            q = head.query(
                _stacked([text_vecs[s.text_key] for s in group if s.text_key]),
                _stacked([image_vecs[s.image_key] for s in group if s.image_key]),
            )
        filters = group[0].filters
        allowed = index.filter_mask(filters) if filters else None
        found = retrieve(index, q, [s.query_text for s in group], n=n, allowed=allowed)
        pools.update((i, pool.rows) for i, pool in zip(members, found, strict=True))
    out: list[LoggedSearch] = []
    for i, s in enumerate(usable):  # in the order given
        if not len(pools[i]):  # its filters allow no product any more
            continue
        ids = tuple(index.metas[r].id for r in pools[i])
        zeros = np.zeros(len(ids), np.int64)
        out.append(
            dataclasses.replace(
                s,
                product_ids=ids,
                model_positions=zeros,
                propensities=zeros.astype(np.float32),
                grades=zeros,
                memory=None,  # what the memory would lift there is not logged: 0
            )
        )
    return out


def _stacked(vectors: list[np.ndarray]) -> torch.Tensor | None:
    return torch.from_numpy(np.stack(vectors)) if vectors else None


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
