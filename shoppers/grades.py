"""True relevance grades from catalog attributes, and the ranking metrics computed on them.

Grades never come from the service: a shopper's need is a set of catalog attributes, and a
product's grade is how many of them it has.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

GRADED_ATTRS = ("articleType", "baseColour", "gender", "usage")
_DISCOUNT = 1 / np.log2(np.arange(2, 12))


class Relevance:
    """Grade 0..3 of every catalog product for a shopper's target attributes.

    3: the articleType and every other requested attribute match; 1: only the articleType
    matches; 2: in between; 0: another articleType. Unisex counts as matching Men and Women.
    """

    def __init__(self, rows: Sequence[dict[str, str]]) -> None:
        self.ids = np.array([r["id"] for r in rows])
        self.cols = {a: np.array([r.get(a, "") for r in rows], dtype=object) for a in GRADED_ATTRS}
        self.pos = {pid: i for i, pid in enumerate(self.ids.tolist())}

    def grades(self, target: dict[str, str]) -> np.ndarray:
        type_ok = self.cols["articleType"] == target["articleType"]
        others = [a for a in target if a != "articleType"]
        if not others:
            return type_ok.astype(np.int8) * 3
        hits = np.zeros(len(self.ids), np.float32)
        for a in others:
            ok = self.cols[a] == target[a]
            if a == "gender" and target[a] in ("Men", "Women"):
                ok |= self.cols[a] == "Unisex"
            hits += ok
        frac = hits / len(others)
        g = np.where(frac >= 1, 3, np.where(frac > 0, 2, 1))
        return (g * type_ok).astype(np.int8)


def ndcg_at_10(shown_grades: Sequence[int] | np.ndarray, all_grades: np.ndarray) -> float:
    """NDCG@10 with gain 2^grade - 1, against the best ten grades in the catalog."""
    g = np.asarray(shown_grades[:10], dtype=np.float64)
    ideal = np.sort(all_grades)[::-1][:10].astype(np.float64)
    idcg = float(((2.0**ideal - 1) * _DISCOUNT[: len(ideal)]).sum())
    return float(((2.0**g - 1) * _DISCOUNT[: len(g)]).sum()) / idcg if idcg > 0 else 0.0


def metrics(ranked_ids: list[str], grades: np.ndarray, relevance: Relevance) -> dict[str, float]:
    """NDCG@10, Recall@50 (capped), MRR (first grade-3 item), P/R/F1 of grade-3 items in top 10."""
    g = np.array([grades[relevance.pos[p]] for p in ranked_ids], dtype=np.float64)
    n_rel = int((grades == 3).sum())
    rel = g == 3
    first = np.flatnonzero(rel)
    p10 = float(rel[:10].sum() / 10)
    r10 = float(rel[:10].sum() / max(1, min(n_rel, 10)))
    return {
        "ndcg@10": ndcg_at_10(g, grades),
        "recall@50": float(rel[:50].sum() / max(1, min(n_rel, 50))),
        "mrr": float(1 / (first[0] + 1)) if len(first) else 0.0,
        "p@10": p10,
        "r@10": r10,
        "f1@10": 2 * p10 * r10 / (p10 + r10) if p10 + r10 else 0.0,
    }
