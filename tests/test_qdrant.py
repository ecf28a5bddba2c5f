"""The Qdrant vector store: what it does that FAISS in process does not. The search, filter,
delete, upsert and persistence tests both backends pass are in test_index; the service-level
ones (search, learning loop, hot swap) run on it in test_search and test_learning_loop.

Qdrant runs here in its local mode (`QdrantClient(":memory:")`): a Qdrant server cannot be
installed on this machine, so these test the client code a server would receive."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from helpers import free_port, qdrant_in_memory
from qdrant_client.http.exceptions import ResponseHandlingException
from test_index import DIMS, N, make_index, queries, unit

from service.catalog.index import SPACES, CatalogIndex
from service.catalog.qdrant import QdrantBackend
from service.catalog.vectors import VectorConfig
from service.config import Settings
from service.errors import VectorsUnavailable
from storage.products import ProductRecord


def test_processes_share_a_collection_though_they_number_rows_apart(tmp_path):
    """Two processes serving one build: one applies two changes of a product one by one, the
    other only the last (as a catalog follower that polls after both does). Each finds the
    product at its own row, and a product one deletes leaves the other's results too."""
    with qdrant_in_memory() as qdrant:
        build = make_index(n=200, backend=qdrant).save(tmp_path, "b1")
        first = CatalogIndex.load(build, backend=qdrant, exact_limit=0)
        second = CatalogIndex.load(build, backend=qdrant, exact_limit=0)
        rng = np.random.default_rng(1)
        versions = [{s: unit(rng, 1, d)[0] for s, d in DIMS.items()} for _ in range(2)]
        for i, vecs in enumerate(versions):
            first.upsert(ProductRecord("p5", f"v{i}", {"colour": "Red"}, None), vecs, True)
        second.upsert(ProductRecord("p5", "v1", {"colour": "Red"}, None), versions[1], True)
        assert first.row_of["p5"] == 201 and second.row_of["p5"] == 200
        for index in (first, second):
            rows, _ = index.search("ptext", versions[1]["ptext"], 3)
            assert index.metas[rows[0]].title == "v1"
        victim = first.vectors("text", np.array([first.row_of["p9"]]))[0]
        first.delete("p9")
        rows, _ = second.search("text", victim, 10)  # `second` has yet to hear of it
        assert "p9" not in [second.metas[r].id for r in rows] and len(rows) == 10


def test_a_filter_reaches_qdrant_as_a_payload_filter(monkeypatch):
    """A filtered search asks Qdrant for the k best products the filter allows, not for a
    deeper list to filter afterwards; rows it has no filters for (deleted ones) are skipped
    after the search."""
    with qdrant_in_memory() as qdrant:
        index = make_index(n=N, exact_limit=0, backend=qdrant)
        asked = []
        real = qdrant.client.query_batch_points

        def spy(collection, requests, **kw):
            asked.extend(requests)
            return real(collection, requests, **kw)

        monkeypatch.setattr(qdrant.client, "query_batch_points", spy)
        mask = index.filter_mask({"colour": ["Red", "Blue"], "size": ["1"]})
        q = queries(3, "ptext", 1)[0]
        rows, _ = index.search("ptext", q, 10, mask)
        assert len(rows) == 10 and mask[rows].all()
        (request,) = asked
        assert request.limit == 10 and request.filter is not None
        assert [len(c.match.any) for c in request.filter.must] == [2, 1]
        index.delete("p0")
        asked.clear()
        rows, _ = index.search("ptext", q, 10)
        assert asked[0].filter is None and len(rows) == 10 and 0 not in rows


def test_an_unreachable_qdrant_is_a_503_and_leaves_the_index_as_it_was(monkeypatch):
    dead = QdrantBackend(VectorConfig(kind="qdrant", qdrant_url=f"http://127.0.0.1:{free_port()}"))
    try:
        with pytest.raises(VectorsUnavailable, match="127.0.0.1") as err:
            make_index(n=20, backend=dead)
        assert err.value.status_code == 503
    finally:
        dead.close()
    with qdrant_in_memory() as qdrant:
        index = make_index(n=20, backend=qdrant)

        def refused(*args, **kwargs):  # what the client raises once the server goes away
            raise ResponseHandlingException(httpx.ConnectError("[Errno 111] Connection refused"))

        for method in ("upsert", "delete", "query_batch_points"):
            monkeypatch.setattr(qdrant.client, method, refused)
        vecs = {s: unit(np.random.default_rng(2), 1, d)[0] for s, d in DIMS.items()}
        with pytest.raises(VectorsUnavailable):
            index.upsert(ProductRecord("new", "new", {}, None), vecs, False)
        assert "new" not in index.row_of and index.n_rows == 20  # a later catch-up retries it
        with pytest.raises(VectorsUnavailable):
            index.delete("p3")
        assert "p3" in index.row_of
        with pytest.raises(VectorsUnavailable):
            index.search(SPACES[0], vecs["text"], 5)
        monkeypatch.undo()
        index.upsert(ProductRecord("new", "new", {}, None), vecs, False)
        assert index.search("ptext", vecs["ptext"], 1)[0].tolist() == [index.row_of["new"]]
        p3 = index.row_of["p3"]  # the failed delete left it searchable, as it still is
        assert index.search("text", index.vectors("text", np.array([p3]))[0], 1)[0][0] == p3


def test_qdrant_settings_name_the_server():
    with pytest.raises(ValueError, match="FUSIONRANK_QDRANT_URL"):
        Settings(vector_index="qdrant")
    config = VectorConfig.of(Settings(vector_index="qdrant", qdrant_url="http://q:6333"))
    assert config.kind == "qdrant" and config.qdrant_url == "http://q:6333"
