"""One retrieval: every channel's candidates for a batch of queries, as serving and the learner
both need them.

A search's pool is the union of what each channel finds among the products its filters allow:
the FAISS spaces `search_channels` names for the query, and for a query with words the lexical
channel. The hybrid mix then reads two of those lists (BM25's and the frozen text channel's), so
the pool carries them. Serving asks for one query, the learner for thousands; both call
`retrieve`, so the gate judges the pools serving produces and a new channel is added here once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from model.catalog_view import CatalogView
from model.head import Query, search_channels
from model.hybrid import RankLists

Lexical = tuple[np.ndarray, np.ndarray]  # BM25 rows and scores, best first


@dataclass(frozen=True, slots=True)
class Pool:
    """What one search's channels found: the candidate rows and the lists the mix reads."""

    rows: np.ndarray  # sorted, unique
    lists: RankLists | None  # None for a query without a text vector
    photo_rows: np.ndarray | None  # the photo's projected-image channel, best first


def depth(per_channel: int, k: int) -> int:
    """How many products each channel returns for a search that shows `k`."""
    return max(per_channel, k)


def filter_key(filters: Mapping[str, Sequence[str]] | None) -> tuple[Any, ...]:
    """A hashable form of a search's filters: searches with equal keys share one row mask, so
    the learner retrieves them in one batch."""
    return tuple(sorted((a, tuple(v)) for a, v in (filters or {}).items()))


def text_lists(
    index: CatalogView,
    text: np.ndarray,
    words: Sequence[str | None],
    *,
    n: int,
    allowed: np.ndarray | None = None,
    threads: int = 1,
) -> list[RankLists]:
    """Each query's frozen text list and, when it has words, its BM25 list: top `n` among the
    allowed rows. `text`: (B, text_dim) frozen text vectors; `words`: each query as typed."""
    found = index.search_many("text", text, n, allowed=allowed, threads=threads)
    bm25: dict[str, Lexical] = {}  # logged queries repeat: BM25 once per wording
    out = []
    for said, rows in zip(words, found, strict=True):
        if said and said not in bm25:
            bm25[said] = index.search_lexical(said, n, allowed)
        out.append(RankLists(bm25[said] if said else None, rows))
    return out


def retrieve(
    index: CatalogView,
    q: Query,
    words: Sequence[str | None],
    *,
    n: int,
    allowed: np.ndarray | None = None,
    threads: int = 1,
    extra: Sequence[np.ndarray] | None = None,
) -> list[Pool]:
    """The pools of a batch of queries of one type, all under the same filter (`allowed`: a row
    mask, None for every alive row). `q` holds (B, d) vectors and their projections (or (d,) for
    one query); `words`: each query's text as typed, None when it has none; `extra`: each
    query's rows from channels outside the index (the query memory's), already filtered."""
    b = len(words)
    searched: list[list[np.ndarray]] = [[] for _ in range(b)]
    lists: list[RankLists] | None = None
    photo: list[np.ndarray] | None = None
    for space, vec in search_channels(q):
        vecs = np.ascontiguousarray(vec.numpy().reshape(b, -1), dtype=np.float32)
        if vec is q.text:  # the frozen text channel is also a list the mix reads
            lists = text_lists(index, vecs, words, n=n, allowed=allowed, threads=threads)
            found = [x.text_rows for x in lists]
        else:
            found = index.search_many(space, vecs, n, allowed=allowed, threads=threads)
        if vec is q.pimage and space == "pimage":
            photo = found
        for i, rows in enumerate(found):
            searched[i].append(rows)
    pools = []
    for i in range(b):
        found_lists = None if lists is None else lists[i]
        if found_lists is not None and found_lists.lexical is not None:
            searched[i].append(found_lists.lexical[0])
        if extra is not None and len(extra[i]):
            searched[i].append(extra[i])
        rows = np.unique(np.concatenate(searched[i])) if searched[i] else np.zeros(0, np.int64)
        pools.append(Pool(rows, found_lists, None if photo is None else photo[i]))
    return pools
