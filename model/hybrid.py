"""The features the hybrid mix (model.head.MIX, after "dense") reads for each candidate.

The rank features come from channels that do not depend on the head: the lexical channel's BM25
list and the frozen text channel's nearest-neighbour list, so serving and the learner compute
them the same way and a new head cannot change its own inputs. Then the product's engagement
(model.engagement), which the head carries, and the query memory's lift (model.query_memory),
which serving reads live and logs with each shown product for the learner.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

RRF_K = 60  # the usual constant of reciprocal rank fusion
N_FEATURES = 5  # lexical_score, lexical_rrf, text_rrf, engagement, memory


@dataclass(frozen=True, slots=True)
class RankLists:
    """The ranked lists the mix reads for one query with a text vector (model.retrieval finds
    them)."""

    lexical: tuple[np.ndarray, np.ndarray] | None  # BM25 rows and scores; None without words
    text_rows: np.ndarray  # the frozen text channel's rows, best first


def mix_features(
    rows: np.ndarray,
    lists: RankLists | None,
    engagement: Sequence[float] | None,
    memory: np.ndarray | None = None,
) -> np.ndarray:
    """(len(rows), 5) float32 for candidate `rows`: BM25 over the query's best BM25,
    K/(K + lexical rank), K/(K + text rank), from the lexical list (rows, scores) and the text
    channel's list (rows), both best first, the rows' engagement and their memory lift. A
    candidate missing from a list, or a list that does not exist, gives 0 (an infinite rank); no
    engagement or memory gives 0."""
    out = np.zeros((len(rows), N_FEATURES), np.float32)
    lexical = None if lists is None else lists.lexical
    text_rows = None if lists is None else lists.text_rows
    if lexical is not None and len(lexical[0]):
        rank, found = _ranks(rows, lexical[0])
        best = float(lexical[1].max())
        if best > 0:
            out[found, 0] = lexical[1][rank[found] - 1] / best
        out[found, 1] = RRF_K / (RRF_K + rank[found])
    if text_rows is not None and len(text_rows):
        rank, found = _ranks(rows, text_rows)
        out[found, 2] = RRF_K / (RRF_K + rank[found])
    if engagement is not None:
        out[:, 3] = engagement
    if memory is not None:
        out[:, 4] = memory
    return out


def _ranks(rows: np.ndarray, ranked: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each of `rows`' 1-based rank in the list `ranked`, and whether it is there at all."""
    order = np.argsort(ranked, kind="stable")
    at = np.minimum(np.searchsorted(ranked[order], rows), len(ranked) - 1)
    found = ranked[order][at] == rows
    return order[at] + 1, found
