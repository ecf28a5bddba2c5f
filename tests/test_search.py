"""Search on real embeddings: quality smoke checks, both filter paths, start-up states, and
concurrent reads and writes against a live server."""

from __future__ import annotations

import io
import random
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
from helpers import (
    BACKENDS,
    app_client,
    cloned_store,
    image_b64,
    live_server,
    make_settings,
    start_test_runtime,
)
from PIL import Image

from service.search.searcher import Searcher, SearchQuery
from storage.artifacts import current
from storage.errors import ArtifactError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runtime(ingested, embedder):
    rt = start_test_runtime(ingested.settings, embedder)
    yield rt
    rt.close()


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


def test_a_lone_composed_query_runs_its_two_encoders_side_by_side(runtime, ingested):
    import copy

    import torch

    real = runtime.searcher.embedder
    calls: list[tuple[str, int]] = []

    class NotingTextEncoder:  # the real encoder, noting which thread ran it on how many cores
        id, dim = real.text_encoder.id, real.text_encoder.dim

        def encode(self, texts: list[str]) -> np.ndarray:
            calls.append((threading.current_thread().name, torch.get_num_threads()))
            return real.text_encoder.encode(texts)

    embedder = copy.copy(real)
    embedder.text_encoder = NotingTextEncoder()
    target = ingested.rows[12]
    photo = Path(target["image_path"]).read_bytes()
    query = SearchQuery(text="red", image=real.decode(photo), k=10)
    found = {}
    for threads in (2, 1):  # fixed counts: side by side, then one after the other
        searcher = Searcher(
            embedder,
            runtime.searcher.index,
            runtime.searcher.active,
            per_channel=100,
            threads=threads,
        )
        found[threads] = searcher.search(query)
    assert calls[0][0].startswith("encode-beside") and calls[0][1] == 1
    assert calls[1][0] == threading.current_thread().name
    side_by_side, one_after_other = found[2], found[1]
    np.testing.assert_allclose(side_by_side.text_vector, one_after_other.text_vector, atol=1e-5)
    np.testing.assert_allclose(side_by_side.image_vector, one_after_other.image_vector, atol=1e-5)
    assert [h.product.id for h in side_by_side.hits] == [h.product.id for h in one_after_other.hits]


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


@pytest.mark.parametrize("exact_limit", [20000, 0], ids=["exact", "faiss-idselector"])
def test_filters_on_real_vectors_return_exactly_k(ingested, embedder, exact_limit):
    settings = ingested.settings.model_copy(update={"exact_filter_limit": exact_limit})
    rt = start_test_runtime(settings, embedder)
    try:
        assert rt.searcher.index.exact_limit == exact_limit
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
                    hits = rt.searcher.search(sq).hits
                    assert len(hits) == min(k, n_match), (article, k, len(hits))
                    assert {h.product.attributes["articleType"] for h in hits} == {article}
    finally:
        rt.close()


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

                def searcher(n: int) -> None:
                    with httpx.Client(base_url=srv.url, timeout=60) as c:
                        for i in range(12):
                            body = (
                                {"query": rows[(n * 12 + i) % len(rows)]["productDisplayName"]}
                                if i % 3
                                else {"image": photo, "query": "blue" if i % 2 else None}
                            )
                            r = c.post("/v1/search", json={**body, "k": 10})
                            if r.status_code != 200 or len(r.json()["results"]) != 10:
                                errors.append(f"search {r.status_code}: {r.text[:200]}")

                def writer() -> None:
                    with httpx.Client(base_url=srv.url, timeout=60) as c:
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
                        r = c.delete(f"/v1/products/{rows[5]['id']}")
                        if r.status_code != 204:
                            errors.append(f"delete {r.status_code}")

                threads = [threading.Thread(target=searcher, args=(n,)) for n in range(3)]
                threads.append(threading.Thread(target=writer))
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


def test_a_lone_query_encodes_on_every_core_and_concurrent_ones_on_one_each():
    import torch

    from service.encoding.threads import EncodeThreads

    before = torch.get_num_threads()
    seen: dict[str, int] = {}
    budget = EncodeThreads(2)
    inside = threading.Event()
    release = threading.Event()

    def first() -> None:
        with budget.claim():
            seen["first"] = torch.get_num_threads()
            inside.set()
            release.wait(5)

    t = threading.Thread(target=first)
    t.start()
    assert inside.wait(5)
    with budget.claim():  # while the first still encodes
        seen["second"] = torch.get_num_threads()
    release.set()
    t.join()
    with budget.claim():  # alone again
        seen["third"] = torch.get_num_threads()
    with budget.reserve() as background, budget.claim():  # an in-process refresh runs
        seen["background"], seen["beside"] = background, torch.get_num_threads()
    with budget.claim():  # the refresh is done
        seen["after"] = torch.get_num_threads()
    with EncodeThreads(4).reserve(0.5) as half, EncodeThreads(1).reserve() as alone:
        seen["half of 4"], seen["one core"] = half, alone
    with EncodeThreads(3, fixed=True).claim():
        seen["fixed"] = torch.get_num_threads()
    assert budget.counts() == [1, 2] and EncodeThreads(3, fixed=True).counts() == [3]
    torch.set_num_threads(before)
    assert seen == {
        "first": 2,
        "second": 1,
        "third": 2,
        "background": 1,
        "beside": 1,
        "after": 2,
        "half of 4": 2,
        "one core": 1,
        "fixed": 3,
    }


def test_only_the_leading_thread_encodes_a_lone_query_on_every_core():
    """GNU OpenMP keeps a team per thread that ever led one; past one worker per core, every
    team stops spinning for good. So a lone query on any thread but the leader uses one core."""
    import torch

    from service.encoding.threads import EncodeThreads

    before = torch.get_num_threads()
    budget = EncodeThreads(2)
    seen: dict[str, int] = {}

    def elsewhere(label: str) -> None:
        with budget.claim("text"):
            seen[label] = torch.get_num_threads()

    for label in ("before lead", "after lead"):
        t = threading.Thread(target=elsewhere, args=(label,))
        t.start()
        t.join()
        budget.lead()
    with budget.claim("text"):
        seen["leader"] = torch.get_num_threads()
    torch.set_num_threads(before)
    assert seen == {"before lead": 2, "after lead": 1, "leader": 2}


def test_a_lone_query_moves_to_one_thread_when_two_are_slower_and_back_when_they_recover():
    from service.encoding.threads import ThreadChoice

    choice = ThreadChoice(window=5, explore_every=4, max_every=16, min_samples=3)
    first = [choice.choose("text", 2) for _ in range(4)]
    assert first == [2, 2, 2, 1]  # all cores until one thread has been measured too
    for _ in range(3):
        choice.observe("text", 2, 14.0)  # a host that parks one of the two threads
        choice.observe("text", 1, 10.0)
    assert choice.best("text", 2) == 1
    assert choice.best("image", 2) == 2  # each query type learns its own
    picks = [choice.choose("text", 2) for _ in range(8)]
    assert picks == [1, 1, 1, 2, 1, 1, 1, 2]  # every 4th still tries two threads
    picks = [choice.choose("text", 2) for _ in range(24)]
    assert picks.count(2) == 2 and picks[7] == picks[23] == 2  # then every 8th, every 16th
    for _ in range(3):
        choice.observe("text", 2, 8.0)  # the host calmed down
    assert choice.best("text", 2) == 2
    assert choice.choose("text", 1) == 1


def lone_image_queries(count: int, encode_ms) -> list[int]:
    """The thread counts ThreadChoice (with the service's defaults) picks for `count` lone image
    queries on 2 cores, each taking `encode_ms(query number, threads)`."""
    from service.encoding.threads import ThreadChoice

    choice = ThreadChoice()
    picks = []
    for i in range(count):
        n = choice.choose("image", 2)
        picks.append(n)
        choice.observe("image", n, encode_ms(i, n), 2)
    return picks


def test_a_service_started_beside_a_busy_core_moves_to_one_thread_within_a_dozen_queries():
    # two threads wait on a parked one
    picks = lone_image_queries(40, lambda i, n: 60.0 if n == 2 else 15.0)
    assert picks[:12].count(1) == 3  # one thread measured every 4th query while it is new
    assert 1 not in picks[:3] and picks[12:] == [1] * 28


def test_a_burst_of_noise_does_not_keep_lone_queries_on_the_slower_thread_count():
    # the host stalls a core for the first 30 queries: two threads suffer
    picks = lone_image_queries(200, lambda i, n: (80.0 if i < 30 else 25.0) if n == 2 else 30.0)
    assert picks[15:30].count(1) >= 13  # one thread while two were slower
    # once a tried two-thread encode beats one thread, it is tried every 4th query until the
    # burst has left its window (doubling intervals alone took until query 154)
    back = next(i for i in range(30, 200) if picks[i : i + 10].count(2) >= 9)
    assert back <= 60
    assert picks[80:].count(2) >= 115


def test_only_encodes_that_had_the_cores_to_themselves_teach_the_choice():
    from service.encoding.threads import EncodeThreads

    budget = EncodeThreads(2)
    with budget.claim("text"):
        pass
    inside, release = threading.Event(), threading.Event()

    def overlapped() -> None:
        with budget.claim("text"):
            inside.set()
            release.wait(5)

    t = threading.Thread(target=overlapped)
    t.start()
    assert inside.wait(5)
    with budget.claim("text"):  # beside the other: one thread, and neither is timed
        pass
    release.set()
    t.join()
    with budget.reserve(), budget.claim("text"):  # one free core: nothing to choose
        pass
    assert budget.choice.samples() == {("text", 2): 1}


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
