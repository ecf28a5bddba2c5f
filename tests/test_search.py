"""Search on real embeddings: quality smoke checks, both filter paths, start-up states, and
concurrent reads and writes against a live server."""

from __future__ import annotations

import io
import random
import threading
from contextlib import ExitStack
from pathlib import Path

import httpx
import numpy as np
import pytest
from helpers import (
    BACKENDS,
    app_client,
    cloned_store,
    image_b64,
    ingested_copy,
    live_server,
    make_settings,
    qdrant_in_memory,
    start_test_runtime,
)
from PIL import Image

from service.search.searcher import Searcher, SearchQuery
from storage.artifacts import current
from storage.errors import ArtifactError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["faiss", "qdrant"])
def runtime(request, ingested, embedder, tmp_path_factory):
    """The ingested catalog served with its vectors in FAISS, or in Qdrant (the same catalog
    ingested into Qdrant's local mode)."""
    with ExitStack() as stack:
        served, vectors = ingested, None
        if request.param == "qdrant":
            vectors = stack.enter_context(qdrant_in_memory())
            directory = tmp_path_factory.mktemp("qdrant")
            served = stack.enter_context(
                ingested_copy("sqlite", directory, ingested.csv, ingested.rows, embedder, vectors)
            )
        rt = start_test_runtime(served.settings, embedder, vectors)
        stack.callback(rt.close)
        yield rt


def test_exact_titles_rank_their_product_first(runtime, ingested):
    rows = ingested.rows
    firsts = [
        runtime.searcher.search(SearchQuery(text=r["productDisplayName"], k=1)).hits[0].product.id
        == r["id"]
        for r in rows[::3]
    ]
    assert np.mean(firsts) >= 0.8, f"{np.mean(firsts):.2f} of exact-title queries rank it first"


def test_explored_searches_swap_neighbours_and_log_what_the_model_ranked(runtime):
    base = runtime.searcher
    explorer = Searcher(
        base.embedder,
        base.index,
        base.active,
        per_channel=base.per_channel,
        explore_rate=1.0,
        rng=random.Random(5),
    )
    plain = base.search(SearchQuery(text="leather watch", k=12))
    assert not plain.explore
    swapped = 0
    for _ in range(20):
        res = explorer.search(SearchQuery(text="leather watch", k=12))
        assert res.explore
        ranked = sorted(res.hits, key=lambda h: h.model_position)
        assert [h.product.id for h in ranked] == [h.product.id for h in plain.hits]
        for pos, h in enumerate(res.hits, start=1):
            assert abs(pos - h.model_position) <= 1
            assert h.propensity == pytest.approx(base.active.bias.propensity(pos))
        swapped += sum(h.model_position != pos for pos, h in enumerate(res.hits, start=1))
    assert swapped > 0


def test_a_category_word_retrieves_that_category(runtime):
    for query, article in [("wrist watch", "Watches"), ("high heels", "Heels")]:
        hits = runtime.searcher.search(SearchQuery(text=query, k=10)).hits
        share = np.mean([h.product.attributes["articleType"] == article for h in hits])
        assert share >= 0.7, (query, [h.product.attributes["articleType"] for h in hits])


@pytest.mark.parametrize("mode", ["grayscale", "rgba-png", "larger"])
def test_image_queries_in_other_formats_find_the_product(runtime, ingested, mode):
    target = ingested.rows[33]
    im = Image.open(target["image_path"]).convert("RGB")
    buf = io.BytesIO()
    if mode == "grayscale":
        im.convert("L").save(buf, "JPEG", quality=95)
    elif mode == "rgba-png":
        im.convert("RGBA").save(buf, "PNG")
    else:
        im.resize((im.width * 4, im.height * 4), Image.BICUBIC).save(buf, "JPEG", quality=95)
    image = runtime.searcher.embedder.decode(buf.getvalue())
    hits = runtime.searcher.search(SearchQuery(image=image, k=3)).hits
    assert target["id"] in [h.product.id for h in hits], mode


def test_a_composed_query_encodes_its_text_beside_its_photo(runtime, ingested):
    import copy

    real = runtime.searcher.embedder
    calls: list[str] = []

    class NotingTextEncoder:  # the real encoder, noting which thread ran it
        id, dim = real.text_encoder.id, real.text_encoder.dim

        def encode(self, texts: list[str]) -> np.ndarray:
            calls.append(threading.current_thread().name)
            return real.text_encoder.encode(texts)

    embedder = copy.copy(real)
    embedder.text_encoder = NotingTextEncoder()
    target = ingested.rows[12]
    photo = real.decode(Path(target["image_path"]).read_bytes())
    searcher = Searcher(
        embedder,
        runtime.searcher.index,
        runtime.searcher.active,
        per_channel=100,
        encode_beside=True,
    )
    composed = searcher.search(SearchQuery(text="red", image=photo, k=10))
    alone = searcher.search(SearchQuery(text="red", k=10))
    assert calls[0].startswith("encode-beside")  # beside the photo's encode
    assert calls[1] == threading.current_thread().name  # a text query: no hop
    np.testing.assert_allclose(composed.text_vector, alone.text_vector, atol=1e-6)
    np.testing.assert_allclose(
        composed.image_vector, real.image_encoder.encode([photo])[0], atol=1e-6
    )
    searcher.close()


def test_repeated_texts_and_photos_reuse_their_vectors_and_the_least_recent_go(runtime, ingested):
    import copy

    real = runtime.searcher.embedder
    calls = {"text": 0, "image": 0}

    class Counting:  # the real encoder, counting its calls
        def __init__(self, encoder, kind: str) -> None:
            self.encoder, self.kind = encoder, kind
            self.id, self.dim = encoder.id, encoder.dim

        def encode(self, items):
            calls[self.kind] += 1
            return self.encoder.encode(items)

    embedder = copy.copy(real)
    embedder.text_encoder = Counting(real.text_encoder, "text")
    embedder.image_encoder = Counting(real.image_encoder, "image")
    searcher = Searcher(
        embedder, runtime.searcher.index, runtime.searcher.active, per_channel=100, query_cache=2
    )
    photo = Path(ingested.rows[12]["image_path"]).read_bytes()

    def composed():
        image = real.decode(photo)
        return searcher.search(SearchQuery(text="red", image=image, image_sha256="p1", k=10))

    first, again = composed(), composed()
    assert calls == {"text": 1, "image": 1}
    assert first.encode_ms > 0 and again.encode_ms == 0
    for vec in ("text_vector", "image_vector", "colour_vector"):
        np.testing.assert_array_equal(getattr(first, vec), getattr(again, vec))
    assert [(h.product.id, h.score) for h in first.hits] == [
        (h.product.id, h.score) for h in again.hits
    ]
    searcher.search(SearchQuery(text="red", k=5))  # the text alone was kept too
    assert calls["text"] == 1
    searcher.search(SearchQuery(image=real.decode(photo), k=5))  # no sha256: no key to keep
    assert calls["image"] == 2
    decoded: list[int] = []
    embedder.decode = lambda data: decoded.append(len(data)) or real.decode(data)
    for _ in range(2):  # the bytes as uploaded: decoded (and encoded) only the first time
        searcher.search(SearchQuery(image=photo, k=5))
    assert (len(decoded), calls["image"]) == (1, 3)
    for text in ("blue", "green", "red"):  # two newer texts pushed "red" out
        searcher.search(SearchQuery(text=text, k=5))
    assert calls["text"] == 4
    assert (searcher.text_cache.hits, len(searcher.text_cache)) == (2, 2)
    uncached = Searcher(embedder, searcher.index, searcher.active, per_channel=100)
    for _ in range(2):
        uncached.search(SearchQuery(text="red", k=5))
    assert calls["text"] == 6


@pytest.mark.parametrize("exact_limit", [20000, 0], ids=["exact", "store"])
def test_filters_on_real_vectors_return_exactly_k(runtime, ingested, exact_limit, monkeypatch):
    monkeypatch.setattr(runtime.searcher.index, "exact_limit", exact_limit)
    rows = ingested.rows
    for article in ("Watches", "Heels", "Sunglasses"):
        n_match = sum(r["articleType"] == article for r in rows)
        for k in (5, n_match, n_match + 10):
            for sq in (
                SearchQuery(text="red cotton kurta", k=k, filters={"articleType": article}),
                SearchQuery(
                    image=Image.open(rows[0]["image_path"]),
                    k=k,
                    filters={"articleType": [article]},
                ),
            ):
                hits = runtime.searcher.search(sq).hits
                assert len(hits) == min(k, n_match), (article, k, len(hits))
                assert {h.product.attributes["articleType"] for h in hits} == {article}


def test_an_empty_data_dir_is_not_ready(tmp_path, embedder):
    settings = make_settings(tmp_path / "empty")
    with app_client(settings, embedder) as client:
        assert client.get("/healthz").status_code == 200
        r = client.get("/readyz")
        assert r.status_code == 503
        body = r.json()
        assert body["status"] == "not_ready"
        assert body["checks"]["database"] == "ok"
        assert "fusionrank ingest" in body["checks"]["index"]
        r = client.post("/v1/search", json={"query": "shirt"})
        assert r.status_code == 503 and r.json()["error"] == "not_ready"
        r = client.put("/v1/products/x", json={"title": "x"})
        assert r.status_code == 503


def test_a_corrupted_index_is_refused_at_start_up(tmp_path, ingested, embedder):
    with cloned_store(ingested, "sqlite", tmp_path) as store:
        path = current(store.settings.index_dir) / "ptext.npy"
        data = bytearray(path.read_bytes())
        data[-7] ^= 0xFF
        path.write_bytes(bytes(data))
        with pytest.raises(ArtifactError, match="ptext.npy"):
            start_test_runtime(store.settings, embedder)


@pytest.mark.parametrize("backend", BACKENDS)
def test_concurrent_searches_and_writes(tmp_path, ingested, embedder, backend):
    """Searches from several threads while products are written: no errors, and every write
    is searchable at the end."""
    with cloned_store(ingested, backend, tmp_path) as store:
        rt = start_test_runtime(store.settings, embedder)
        try:
            with live_server(store.settings, runtime=rt) as srv:
                errors: list[str] = []
                rows = store.rows
                photo = image_b64(rows[3]["image_path"])
                threads = [
                    threading.Thread(target=_search_often, args=(srv.url, rows, photo, n, errors))
                    for n in range(3)
                ]
                threads.append(
                    threading.Thread(target=_write_products, args=(srv.url, rows[5]["id"], errors))
                )
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(300)
                assert not any(t.is_alive() for t in threads)
                assert errors == []
                with httpx.Client(base_url=srv.url, timeout=60) as c:
                    r = c.post(
                        "/v1/search",
                        json={"query": "gizmo", "k": 50, "filters": {"articleType": "Gizmos"}},
                    )
                    got = {h["product_id"] for h in r.json()["results"]}
                    assert got == {f"conc-{i}" for i in range(10)}
                    r = c.post("/v1/search", json={"query": rows[5]["productDisplayName"], "k": 50})
                    assert rows[5]["id"] not in {h["product_id"] for h in r.json()["results"]}
                rt.impressions.flush()
                assert rt.impressions.written >= 36
                assert rt.searches.inline >= 2  # the last two searches were alone
        finally:
            rt.close()


def _search_often(url: str, rows: list[dict], photo: str, n: int, errors: list[str]) -> None:
    """Twelve searches by words, by photo and by both; each must answer ten results."""
    with httpx.Client(base_url=url, timeout=60) as c:
        for i in range(12):
            body = (
                {"query": rows[(n * 12 + i) % len(rows)]["productDisplayName"]}
                if i % 3
                else {"image": photo, "query": "blue" if i % 2 else None}
            )
            r = c.post("/v1/search", json={**body, "k": 10})
            if r.status_code != 200 or len(r.json()["results"]) != 10:
                errors.append(f"search {r.status_code}: {r.text[:200]}")


def _write_products(url: str, doomed: str, errors: list[str]) -> None:
    """Ten new gizmos put, then the catalog product `doomed` deleted."""
    with httpx.Client(base_url=url, timeout=60) as c:
        for i in range(10):
            r = c.put(
                f"/v1/products/conc-{i}",
                json={
                    "title": f"Concurrent Gizmo Number {i} Quasar",
                    "attributes": {"articleType": "Gizmos"},
                },
            )
            if r.status_code != 200:
                errors.append(f"put {r.status_code}: {r.text[:200]}")
        r = c.delete(f"/v1/products/{doomed}")
        if r.status_code != 204:
            errors.append(f"delete {r.status_code}")


def test_an_index_built_with_other_encoders_is_not_served(ingested, embedder, tmp_path):
    """Vectors of another checkpoint (here the same network at another input size, so even the
    width matches) would rank nonsense: the service refuses, and says what to do."""
    from service.encoding.embedder import Embedder
    from service.encoding.encoders import EfficientNetLite0ImageEncoder
    from service.serving import start_runtime

    other = Embedder(
        embedder.text_encoder,
        EfficientNetLite0ImageEncoder(128),
        tmp_path / "cache",
        colour_encoder=embedder.colour_encoder,
    )
    rt = start_runtime(ingested.settings, other, background=False)
    try:
        assert rt.searcher is None
        reason = rt.not_ready_reason
        assert "efficientnet-lite0@112" in reason and "efficientnet-lite0@128" in reason
        assert "fusionrank ingest" in reason
    finally:
        rt.close()


def test_a_lone_search_runs_on_the_event_loop_and_concurrent_ones_on_the_pool():
    import asyncio
    import time

    from service.search.dispatch import SearchDispatcher

    def where() -> str:
        time.sleep(0.05)  # long enough for the others to be in flight
        return threading.current_thread().name

    async def scenario() -> tuple[str, list[str], float, str]:
        searches = SearchDispatcher(3)
        try:
            lone = await searches.run(where)
            started = time.perf_counter()
            together = await asyncio.gather(*(searches.run(where) for _ in range(3)))
            elapsed = time.perf_counter() - started
            after = await searches.run(where)  # alone again
            assert searches.inline == 2
            return lone, together, elapsed, after
        finally:
            searches.shutdown()

    loop_thread = threading.current_thread().name
    lone, together, elapsed, after = asyncio.run(scenario())
    assert lone == after == loop_thread
    assert all(name.startswith("search") for name in together)
    assert elapsed < 0.12  # side by side, not one after another (0.15 s)


def test_the_search_route_takes_overridden_dependencies(ingested, embedder):
    """/v1/search is the one documented route: a searcher swapped in through
    app.dependency_overrides is the one that serves it."""
    from service.api.deps import get_searcher
    from service.errors import NotReady

    async def down() -> Searcher:
        raise NotReady("down for maintenance")

    with app_client(ingested.settings, embedder) as client:
        assert client.post("/v1/search", json={"query": "watch", "k": 3}).status_code == 200
        client.app.dependency_overrides[get_searcher] = down
        r = client.post("/v1/search", json={"query": "watch", "k": 3})
        assert r.status_code == 503, r.text
        assert r.json() == {"error": "not_ready", "detail": "down for maintenance"}
