"""Which query types a candidate may take over from the active head, and why not the others."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from learner.coverage import retrieval_pools, shown_share
from learner.dataset import LoggedSearch
from learner.holdout import Metrics
from model.catalog_view import ProductVectors
from model.head import QUERY_TYPES, FusionHead

Vectors = Mapping[str, np.ndarray]


def holdout_gate(
    parent_m: Metrics,
    cand_m: Metrics,
    *,
    min_engaged: int,
    margin: float,
    logloss_tolerance: float,
) -> tuple[dict[str, bool], dict[str, str]]:
    """Per query type: accepted if the candidate beats the active head's IPS-weighted NDCG@10 by
    `margin` without a click log-loss worse by more than `logloss_tolerance`, on at least
    `min_engaged` engaged holdout searches; and the reason either way."""
    accept, reasons = {}, {}
    for t in QUERY_TYPES:
        p, c = parent_m[t], cand_m[t]
        if c["engaged"] < min_engaged:
            accept[t], reasons[t] = False, f"{c['engaged']} engaged holdout searches"
        elif not c["ips_ndcg@10"] >= p["ips_ndcg@10"] + margin:
            accept[t], reasons[t] = (
                False,
                (
                    f"ips_ndcg@10 {c['ips_ndcg@10']:.4f} vs active {p['ips_ndcg@10']:.4f} "
                    f"(needs +{margin})"
                ),
            )
        elif c["click_logloss"] > p["click_logloss"] + logloss_tolerance:
            accept[t], reasons[t] = (
                False,
                (f"click log-loss {c['click_logloss']:.4f} vs active {p['click_logloss']:.4f}"),
            )
        else:
            accept[t], reasons[t] = True, "better on the holdout"
    return accept, reasons


def coverage_gate(
    candidate: FusionHead,
    holdout: list[LoggedSearch],
    vectors: tuple[Vectors, Vectors, Vectors],
    index: ProductVectors,
    accept: dict[str, bool],
    reasons: dict[str, str],
    *,
    sample: int,
    per_channel: int,
    min_shown_share: float,
) -> dict[str, dict[str, float]]:
    """Refuse (in `accept` and `reasons`) each accepted type of which less than
    `min_shown_share` of the candidate's served top 10 had been shown by its newest `sample`
    holdout searches: the holdout cannot vouch for the rest. Returns the shares measured."""
    tv, iv, cv = vectors
    searches = [
        x
        for t in range(len(QUERY_TYPES))
        for x in [x for x in holdout if x.query_type == t][-sample:]
    ]
    pools = retrieval_pools(candidate, searches, tv, iv, index, per_channel)
    coverage = shown_share(candidate, searches, pools, tv, iv, index, cv, per_channel=per_channel)
    for t in QUERY_TYPES:
        share = coverage.get(t, {}).get("shown_share")
        if accept[t] and share is not None and share < min_shown_share:
            accept[t], reasons[t] = (
                False,
                f"only {share:.0%} of its top 10 were shown by the holdout searches (at "
                f"least {min_shown_share:.0%} needed): the holdout cannot vouch for the rest",
            )
    return coverage
