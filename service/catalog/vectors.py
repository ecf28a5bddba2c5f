"""The catalog's nearest-neighbour indexes, one per searched space, behind one interface
(VectorStore), so that the searcher, the learner and the query memory do not change with the
backend. The backend and its index kind are a setting:

- `hnsw` (default): FAISS in process, an HNSW graph over half-precision copies (the graph walk
  reads half the bytes at the same recall; the head scores candidates on the float32 vectors
  anyway);
- `flat`: FAISS in process, exact search over every row;
- `qdrant`: a Qdrant server or cluster (service.catalog.qdrant), shared by every process.

Rows are append-only (a compacted build gets a new store). FAISS skips deleted and filtered-out
rows during the search through a bitmap of the rows a search may return; Qdrant deletes points
and filters on their payload.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, Protocol

import faiss
import numpy as np

from service.config import Settings
from storage.errors import ArtifactError
from storage.products import ProductRecord

SPACES = ("text", "ptext", "pimage")  # raw MiniLM text, projected text, projected image
Kind = Literal["hnsw", "flat", "qdrant"]
QDRANT_FILE = "qdrant.json"  # in a build whose vectors are in Qdrant: its collection
MAX_FILTERED_BREADTH = 8192  # 26 ms p50 for a text walk at a million rows, 2 cores


@dataclass(frozen=True)
class VectorConfig:
    """How a build's vector indexes are made and searched (Settings holds the defaults)."""

    kind: Kind = "hnsw"
    hnsw_m: int = 32  # graph degree
    # HNSW candidates kept during the walk (at least the n asked for); 0: by the index's size
    ef_search: int = 0
    qdrant_url: str = ""  # the Qdrant server of kind "qdrant"
    qdrant_api_key: str | None = field(default=None, repr=False)

    @classmethod
    def of(cls, settings: Settings) -> VectorConfig:
        key = settings.qdrant_api_key
        return cls(
            settings.vector_index,
            settings.hnsw_m,
            settings.hnsw_ef_search,
            qdrant_url=settings.qdrant_url,
            qdrant_api_key=key.get_secret_value() if key else None,
        )


class FilterMask(np.ndarray):
    """A row mask that remembers the attribute filters it was made from (attribute -> values,
    OR-ed within, AND-ed across), so that a store filtering on its own copy of the attributes
    (Qdrant) is given the filters rather than a million rows. Slices keep them. Its allowed rows
    and their count are found once, for all the channels a search walks."""

    filters: dict[str, list[str]] | None

    def __new__(cls, mask: np.ndarray, filters: Mapping[str, list[str]]) -> FilterMask:
        out = np.asarray(mask, dtype=bool).view(cls)
        out.filters = {k: list(v) for k, v in filters.items()}
        return out

    def __array_finalize__(self, obj: Any) -> None:
        self.filters = getattr(obj, "filters", None)

    @cached_property
    def rows(self) -> np.ndarray:
        return np.flatnonzero(self)

    @cached_property
    def count(self) -> int:
        return int(np.count_nonzero(self))


class VectorStore(Protocol):
    """Approximate top-n by inner product in each space, over rows 0..rows-1."""

    config: VectorConfig

    @property
    def rows(self) -> int: ...

    def add(self, vectors: Mapping[str, np.ndarray], products: Sequence[ProductRecord]) -> None:
        """Append a row per product: per space, (n, dim) float32 vectors for the next n rows. A
        product already in the store is replaced."""

    def delete(self, product_ids: Sequence[str]) -> None:
        """The products leave the store (a store searched through a row mask may keep them)."""

    def search(
        self, space: str, queries: np.ndarray, n: int, mask: np.ndarray | None, threads: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(len(queries), n) rows and similarities, best first, among the rows `mask` allows
        (None: every row); a row of -1 where fewer were found. `threads`: cores for a batch."""

    def compacted(
        self, vectors: Mapping[str, np.ndarray], products: Sequence[ProductRecord]
    ) -> VectorStore:
        """The store of a compacted build: these products, row for row."""

    def save(self, directory: Path) -> None: ...


class VectorBackend(Protocol):
    """A process's way to its vector stores (a Qdrant backend holds the connection)."""

    config: VectorConfig

    def build(
        self, vectors: Mapping[str, np.ndarray], products: Sequence[ProductRecord | None]
    ) -> VectorStore:
        """A store over every row of `vectors` (per space); `products`: row for row, None for
        a dead row."""

    def load(self, directory: Path, products: Sequence[ProductRecord | None]) -> VectorStore:
        """The store a build saved in `directory`, whichever backend wrote it that this one can
        open; `products` as for build."""

    def close(self) -> None: ...


def open_backend(config: VectorConfig) -> VectorBackend:
    """The backend `config` names (closed by whoever opened it)."""
    if config.kind == "qdrant":
        from service.catalog.qdrant import QdrantBackend  # its client loads only when used

        return QdrantBackend(config)
    return FaissBackend(config)


class FaissBackend:
    """FAISS in process: nothing to connect to."""

    def __init__(self, config: VectorConfig = VectorConfig()) -> None:
        self.config = config

    def build(
        self, vectors: Mapping[str, np.ndarray], products: Sequence[ProductRecord | None]
    ) -> FaissStore:
        return FaissStore.build(vectors, self.config)

    def load(self, directory: Path, products: Sequence[ProductRecord | None]) -> FaissStore:
        if (directory / QDRANT_FILE).exists():
            raise ArtifactError(
                f"index {directory.name} keeps its vectors in Qdrant: set "
                "FUSIONRANK_VECTOR_INDEX=qdrant (and FUSIONRANK_QDRANT_URL) to serve it"
            )
        return FaissStore.load(directory, self.config)

    def close(self) -> None:
        pass


class FaissStore:
    """FAISS in process: one index per space; deleted rows stay in it, skipped by the mask."""

    def __init__(self, indexes: Mapping[str, faiss.Index], config: VectorConfig) -> None:
        counts = {index.ntotal for index in indexes.values()}
        assert set(indexes) == set(SPACES) and len(counts) == 1, "index rows differ by space"
        self._indexes = dict(indexes)
        self.config = config

    @classmethod
    def build(cls, vectors: Mapping[str, np.ndarray], config: VectorConfig) -> FaissStore:
        """Indexes of the configured kind over every row of `vectors` (per space)."""
        return cls({space: build_index(vectors[space], config) for space in SPACES}, config)

    @classmethod
    def load(cls, directory: Path, config: VectorConfig) -> FaissStore:
        """The indexes `save` wrote; searched as `config` says (the kind is the saved one)."""
        return cls({s: faiss.read_index(str(directory / f"{s}.faiss")) for s in SPACES}, config)

    @property
    def rows(self) -> int:
        return int(self._indexes[SPACES[0]].ntotal)

    def add(self, vectors: Mapping[str, np.ndarray], products: Sequence[ProductRecord]) -> None:
        for space in SPACES:
            self._indexes[space].add(vectors[space])

    def delete(self, product_ids: Sequence[str]) -> None:
        pass  # their rows are masked out: an HNSW graph cannot drop nodes

    def compacted(
        self, vectors: Mapping[str, np.ndarray], products: Sequence[ProductRecord]
    ) -> FaissStore:
        return FaissStore.build(vectors, self.config)

    def search(
        self, space: str, queries: np.ndarray, n: int, mask: np.ndarray | None, threads: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        return search_index(self._indexes[space], queries, n, mask, threads, self.config)

    def save(self, directory: Path) -> None:
        for space, index in self._indexes.items():
            faiss.write_index(index, str(directory / f"{space}.faiss"))


def build_index(vectors: np.ndarray, config: VectorConfig) -> faiss.Index:
    """One space's index of the configured kind over every row of `vectors`."""
    index = _new_index(vectors, config)
    if len(vectors):
        index.add(vectors)
    return index


def search_index(
    index: faiss.Index,
    queries: np.ndarray,
    n: int,
    mask: np.ndarray | None,
    threads: int,
    config: VectorConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """FaissStore.search on one space's index."""
    bitmap = selector = None
    share = 1.0
    if mask is not None:
        bitmap = np.packbits(mask, bitorder="little")  # kept alive until the search returns
        selector = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bitmap))
        share = max(float(np.count_nonzero(mask)) / max(len(mask), 1), 0.01)
    params = _params(index, n, config, selector, share)
    if threads == 1:
        _single_threaded_faiss()
        sims, rows = index.search(queries, n, params=params)
        return rows, sims
    faiss.omp_set_num_threads(threads)
    try:
        sims, rows = index.search(queries, n, params=params)
    finally:
        faiss.omp_set_num_threads(1)
        _thread_state.faiss_single = True
    return rows, sims


def _new_index(vectors: np.ndarray, config: VectorConfig) -> faiss.Index:
    dim, ip = vectors.shape[1], faiss.METRIC_INNER_PRODUCT
    if config.kind == "flat":
        return faiss.IndexFlatIP(dim)
    qtype = faiss.ScalarQuantizer.QT_fp16
    index = faiss.IndexHNSWSQ(dim, qtype, config.hnsw_m, ip)  # type: ignore[arg-type]
    index.hnsw.efConstruction = 80
    return index


def _params(
    index: faiss.Index,
    n: int,
    config: VectorConfig,
    selector: faiss.IDSelector | None,
    share: float,
) -> faiss.SearchParameters:
    """The search's parameters for the index's kind, skipping the rows `selector` excludes
    (`share`: the part of the rows it allows)."""
    if isinstance(index, faiss.IndexHNSW):
        ef = walk_breadth(config, index.ntotal, n, share)
        params = faiss.SearchParametersHNSW(efSearch=ef)  # type: ignore[attr-defined]
    else:
        params = faiss.SearchParameters()
    params.sel = selector
    return params


def exact_top(
    vectors: np.ndarray, query: np.ndarray, rows: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """The top-n of `rows` by inner product with one query, best first: (rows, sims). The rows
    are read where they lie: gathering 11k scattered rows of a million into one array first
    takes five times as long as the products themselves."""
    assert vectors.dtype == np.float32 and vectors.flags.c_contiguous and query.dtype == np.float32
    ids = np.ascontiguousarray(rows, dtype=np.int64)
    k = min(n, len(ids))
    sims, found = np.empty(k, np.float32), np.empty(k, np.int64)
    _single_threaded_faiss()
    faiss.knn_inner_products_by_idx(  # type: ignore[attr-defined]
        faiss.swig_ptr(np.ascontiguousarray(query)),
        faiss.swig_ptr(vectors),
        faiss.swig_ptr(ids),
        vectors.shape[1],
        1,
        len(vectors),
        len(ids),
        k,
        faiss.swig_ptr(sims),
        faiss.swig_ptr(found),
        0,
    )
    return found, sims


def walk_breadth(config: VectorConfig, rows: int, n: int, share: float) -> int:
    """The HNSW breadth of a walk for n results among the `share` of `rows` rows a filter
    allows. A filtered walk skips the rows it may not return, so it keeps more candidates: twice
    as many per allowed row as an unfiltered walk, because the allowed rows it meets are sparser
    than the rows an unfiltered walk meets (with 38% of a million allowed, text recall@10 was
    0.876 at 1/share and 0.943 at 2/share; docs/benchmarks.md, "A million products through
    HTTP"), up to a bound that keeps a walk within tens of milliseconds."""
    ef = max(config.ef_search or ef_for(rows), n)
    return ef if share >= 1.0 else min(int(2 * ef / share), MAX_FILTERED_BREADTH)


def ef_for(rows: int) -> int:
    """The HNSW breadth for an index of `rows` rows: recall@10 falls with size at a fixed
    breadth (on a million perturbed catalog vectors, text 0.87 at 128 and 0.97 at 1024, at 2 ms
    p99; benchmarks/million.py), and small indexes need no more than 128."""
    return 128 if rows <= 100_000 else 1024


_thread_state = threading.local()


def _single_threaded_faiss() -> None:
    """One query gains nothing from FAISS's OpenMP pool, and its waking threads slow torch's ops
    next to it (~100x with active waits). The OpenMP thread count is per calling thread, so each
    request thread sets it once."""
    if not getattr(_thread_state, "faiss_single", False):
        faiss.omp_set_num_threads(1)
        _thread_state.faiss_single = True
