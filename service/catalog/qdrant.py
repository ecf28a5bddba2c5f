"""The vector store on Qdrant: a server or cluster (sharding and replication are Qdrant's); its
local mode in tests only (exact search, filters checked point by point in Python).

One collection per build, holding each space as a named vector, shared by every process that
serves the build: an ingest writes it, and catalog changes upsert and delete its points. Points
are keyed by product id, not by row, because each process numbers the rows it appends itself
(a process that sees two changes of a product at once appends one row, the one that made them
two). A point's payload holds the product's id and its attributes, so filters run in Qdrant.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_client import QdrantClient
from qdrant_client import models as qm
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from service.catalog.vectors import (
    QDRANT_FILE,
    SPACES,
    FaissStore,
    FilterMask,
    VectorConfig,
    walk_breadth,
)
from service.errors import VectorsUnavailable
from storage.errors import ArtifactError
from storage.products import ProductRecord

_IDS = uuid.UUID("5a1c3f0e-8b7d-4c21-9f3e-2d6a7b8c9e10")  # namespace of the points' ids
_SEP = "\x1f"  # between an attribute's name and value in a point's `facets`
_UPLOAD_BATCH = 512


def point_id(product_id: str) -> str:
    return str(uuid.uuid5(_IDS, product_id))


def _facets(product: ProductRecord) -> list[str]:
    return [f"{k}{_SEP}{v}" for k, v in product.attributes.items() if v is not None]


@contextmanager
def _reaching(where: str) -> Iterator[None]:
    """Qdrant's errors as the service's: the request fails with a 503, and nothing is lost."""
    try:
        yield
    except (UnexpectedResponse, ResponseHandlingException, OSError) as e:
        raise VectorsUnavailable(f"the vector store ({where}) failed: {e}") from e


class QdrantBackend:
    def __init__(self, config: VectorConfig, client: QdrantClient | None = None) -> None:
        """`client`: one already open (tests pass Qdrant's local mode, `QdrantClient(":memory:")`,
        which searches exactly and keeps nothing); None: the server at `config.qdrant_url`."""
        self.config = config
        self.where = config.qdrant_url or "local mode"
        self.server = client is None
        if client is None:
            client = QdrantClient(
                url=config.qdrant_url,
                api_key=config.qdrant_api_key,
                timeout=30,
                check_compatibility=False,  # compose.yaml pins the server this client is for
            )
        self.client = client

    def build(
        self, vectors: Mapping[str, np.ndarray], products: Sequence[ProductRecord | None]
    ) -> QdrantStore:
        """A new collection holding the products' rows."""
        collection = f"fusionrank-{uuid.uuid4().hex[:16]}"
        with _reaching(self.where):
            self.client.create_collection(
                collection,
                vectors_config={
                    s: qm.VectorParams(size=int(vectors[s].shape[1]), distance=qm.Distance.DOT)
                    for s in SPACES
                },
                hnsw_config=qm.HnswConfigDiff(m=self.config.hnsw_m, ef_construct=80),
            )
            if self.server:  # local mode filters without indexes (and says so)
                self.client.create_payload_index(
                    collection, "facets", qm.PayloadSchemaType.KEYWORD, wait=True
                )
        store = QdrantStore(self, collection, [None] * len(products))
        rows = [r for r, p in enumerate(products) if p is not None]
        for start in range(0, len(rows), _UPLOAD_BATCH):
            chunk = rows[start : start + _UPLOAD_BATCH]
            store.upsert_rows({s: vectors[s][chunk] for s in SPACES}, chunk, products)
        return store

    def load(
        self, directory: Path, products: Sequence[ProductRecord | None]
    ) -> QdrantStore | FaissStore:
        """The build's collection; a build indexed by FAISS loads as such."""
        if not (directory / QDRANT_FILE).exists():
            return FaissStore.load(directory, self.config)
        collection = json.loads((directory / QDRANT_FILE).read_text())["collection"]
        with _reaching(self.where):
            found = self.client.collection_exists(collection)
        if not found:
            raise ArtifactError(
                f"index {directory.name}: Qdrant at {self.where} has no collection "
                f"{collection}; re-run `fusionrank ingest --rebuild`"
            )
        return QdrantStore(self, collection, products)

    def close(self) -> None:
        self.client.close()


class QdrantStore:
    def __init__(
        self, backend: QdrantBackend, collection: str, products: Sequence[ProductRecord | None]
    ) -> None:
        """`products`: this process's rows, None for a dead one."""
        self.backend, self.config, self.collection = backend, backend.config, collection
        self.client = backend.client
        self._row = {p.id: r for r, p in enumerate(products) if p is not None}
        self._n = len(products)

    @property
    def rows(self) -> int:
        return self._n

    def add(self, vectors: Mapping[str, np.ndarray], products: Sequence[ProductRecord]) -> None:
        rows = list(range(self._n, self._n + len(products)))
        self.upsert_rows(vectors, rows, dict(zip(rows, products, strict=True)))
        self._n += len(products)  # only once they are in: a failed write is retried whole

    def upsert_rows(
        self,
        vectors: Mapping[str, np.ndarray],
        rows: Sequence[int],
        products: Sequence[ProductRecord | None] | Mapping[int, ProductRecord],
    ) -> None:
        """Points for `rows` (vectors row for row, products indexed by row), searchable once
        this returns."""
        named = [(row, products[row]) for row in rows]
        points = [
            qm.PointStruct(
                id=point_id(p.id),
                vector={s: vectors[s][i].tolist() for s in SPACES},
                payload={"id": p.id, "facets": _facets(p)},
            )
            for i, (_, p) in enumerate(named)
            if p is not None
        ]
        with _reaching(self.backend.where):
            self.client.upsert(self.collection, points=points, wait=True)
        self._row.update((p.id, row) for row, p in named if p is not None)

    def delete(self, product_ids: Sequence[str]) -> None:
        if product_ids:
            ids: list[Any] = [point_id(p) for p in product_ids]
            with _reaching(self.backend.where):
                self.client.delete(
                    self.collection, points_selector=qm.PointIdsList(points=ids), wait=True
                )
        for p in product_ids:
            self._row.pop(p, None)

    def search(
        self, space: str, queries: np.ndarray, n: int, mask: np.ndarray | None, threads: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        """A mask made from filters is sent as a payload filter; any other (dead rows, a row
        set) is applied to a deeper list of points. A point this process has no row for yet (a
        change it has still to catch up with) is skipped."""
        limit, flt = n, None
        share = 1.0 if mask is None else max(np.count_nonzero(mask) / max(len(mask), 1), 0.01)
        if isinstance(mask, FilterMask) and mask.filters:
            flt = qm.Filter(
                must=[
                    qm.FieldCondition(
                        key="facets", match=qm.MatchAny(any=[f"{k}{_SEP}{v}" for v in values])
                    )
                    for k, values in mask.filters.items()
                ]
            )
        elif mask is not None:
            limit = min(int(n / share) + 1, max(n, 4096))
        params = None
        if self.backend.server:  # local mode searches exactly (and warns of parameters)
            # a filtered walk skips most of what it meets, as FAISS's does: a broader one
            params = qm.SearchParams(hnsw_ef=walk_breadth(self.config, self._n, n, share))
        requests = [
            qm.QueryRequest(
                query=q.tolist(),
                using=space,
                limit=limit,
                filter=flt,
                params=params,
                with_payload=["id"],
            )
            for q in queries
        ]
        with _reaching(self.backend.where):
            answers = self.client.query_batch_points(self.collection, requests=requests)
        rows = np.full((len(queries), n), -1, np.int64)
        sims = np.zeros((len(queries), n), np.float32)
        for i, answer in enumerate(answers):
            found = [
                (row, p.score)
                for p in answer.points
                if (row := self._row.get(str((p.payload or {}).get("id")), -1)) >= 0
                and (mask is None or (row < len(mask) and mask[row]))
            ][:n]
            if found:
                rows[i, : len(found)] = [r for r, _ in found]
                sims[i, : len(found)] = [s for _, s in found]
        return rows, sims

    def compacted(
        self, vectors: Mapping[str, np.ndarray], products: Sequence[ProductRecord]
    ) -> QdrantStore:
        """The same collection (it holds no dead points), numbered as the compacted rows are."""
        return QdrantStore(self.backend, self.collection, products)

    def save(self, directory: Path) -> None:
        (directory / QDRANT_FILE).write_text(json.dumps({"collection": self.collection}))
