"""The query memory: keys folded like the lexical channel, each shopper counted once, folded from
real logs on SQLite and PostgreSQL, followed live by every process, and read by search."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import numpy as np
import pytest
from helpers import BACKENDS, app_client, cloned_store, live_server, start_test_runtime

from model.query_memory import MemoryConfig, QueryMemory
from service.search.memory import MemoryFollower, memory_key
from service.search.memory_fold import FoldConfig, MemoryFold
from storage.db import transaction
from storage.feedback import EventIn, record_events
from storage.impressions import ImpressionIn, ShownItem, add_impressions
from storage.memory import shoppers

GRADES = {"click": 1, "add_to_cart": 2, "purchase": 3}
CONFIG = MemoryConfig(half_life_days=14, prior=5, similar_floor=0.8, photo_floor=0.95)


# ---- keys and reading ---------------------------------------------------------------------
def test_a_query_shares_its_memory_with_its_other_spellings():
    same = {memory_key(t, None).key for t in ("Trail Running Shoes", "trail running shoe")}
    assert len(same) == 1
    assert memory_key("shoes trail running", None).key in same  # word order
    assert memory_key("Café table", None).key == memory_key("cafe tables", None).key
    assert memory_key('65" tv', None).key == memory_key("65 inch tv", None).key
    assert memory_key("trail running shoes", None).key != memory_key("road running shoes", None).key
    photo = memory_key(None, "ab" * 32)
    assert photo.kind == "image" and memory_key("red", "ab" * 32).kind == "composed"
    assert memory_key("red", "ab" * 32).key != photo.key


def _memory(clock: float = 1e9) -> QueryMemory:
    return QueryMemory(CONFIG, clock=lambda: clock)


def test_no_memory_changes_nothing_and_evidence_lifts_what_shoppers_chose():
    m = _memory()
    assert m.recall("q", "text", None) is None  # empty: searches skip the memory
    for pid in ("a", "b", "c"):
        m.put_pair("q", pid, gain=0.0, exam=3.0, at=1e9)
    m.put_pair("q", "b", gain=2.0, exam=3.0, at=1e9)  # bought by two of three who saw it
    assert m.recall("other", "text", None) is None
    m.put_pair("looked", "a", gain=0.0, exam=30.0, at=1e9)
    looked = m.recall("looked", "text", None)  # shown, never chosen: it lifts nothing...
    assert looked is not None and not m.lifts(looked, ["a"]) and not m.favoured(looked)
    assert looked.own_exam_of("a") == pytest.approx(30.0)  # ...but deep exploration knows it
    ev = m.recall("q", "text", None)
    assert ev is not None
    lifted = m.lifts(ev, ["a", "b", "zzz"])
    a, b = lifted["a"].lift, lifted["b"].lift
    assert b > 0.5 > 0 > a  # skipped where it was seen: below what the memory never saw
    assert "zzz" not in lifted  # never seen: 0
    assert m.favoured(ev) == ["b"]


def test_old_evidence_counts_half_after_a_half_life():
    day = 86400.0
    m = _memory(clock=1e9 + 14 * day)
    m.put_pair("q", "old", gain=2.0, exam=3.0, at=1e9)
    m.put_pair("q", "new", gain=2.0, exam=3.0, at=1e9 + 14 * day)
    m.put_pair("x", "other", gain=0.0, exam=50.0, at=1e9 + 14 * day)
    ev = m.recall("q", "text", None)
    assert ev is not None
    old, new = m.lift(ev, "old"), m.lift(ev, "new")
    assert old.exam == pytest.approx(1.5) and new.exam == pytest.approx(3.0)
    assert 0 < old.lift < new.lift


def test_a_new_query_borrows_from_similar_logged_ones_only_above_the_floor():
    m = _memory()
    rng = np.random.default_rng(0)
    base = rng.normal(size=384).astype(np.float32)
    near = base + 0.2 * rng.normal(size=384).astype(np.float32)
    far = rng.normal(size=384).astype(np.float32)
    m.put_query("logged", "text", "running shoe trail", base)
    m.put_pair("logged", "p", gain=3.0, exam=4.0, at=1e9)
    m.put_pair("logged", "q", gain=0.0, exam=4.0, at=1e9)
    ev = m.recall("new", "text", near)
    assert ev is not None and ev.neighbours[0][0] == "running shoe trail"
    lift = m.lift(ev, "p")
    assert lift.lift > 0 and lift.borrowed_share == pytest.approx(1.0)
    own = m.recall("logged", "text", None)
    assert own is not None  # what it borrows is not also counted as the product's usual rate
    assert lift.lift > 0.5 * m.lift(own, "p").lift
    assert m.recall("new", "text", far) is None  # unrelated: nothing to borrow


def test_a_photo_borrows_only_from_near_duplicate_photos_and_words_never_from_photos():
    m = _memory()
    rng = np.random.default_rng(1)
    photo = rng.normal(size=1280).astype(np.float32)
    m.put_query("photo-a", "image", "photo:a", photo)
    m.put_pair("photo-a", "p", gain=3.0, exam=4.0, at=1e9)
    duplicate = photo + 0.05 * rng.normal(size=1280).astype(np.float32)  # cosine ~0.999
    similar = photo + 0.6 * rng.normal(size=1280).astype(np.float32)  # cosine ~0.86
    assert m.recall("photo-b", "image", duplicate) is not None
    assert m.recall("photo-c", "image", similar) is None
    assert m.recall("words", "text", photo[:384]) is None  # kinds never mix
    assert m.recall("photo-b red", "composed", duplicate) is None  # composed: its own only


# ---- folding real logs ----------------------------------------------------------------------
def _search(
    s, query: str, products: list[str], *, user: str | None = None, caller=None, at=None
) -> str:
    sid = uuid.uuid4().hex
    add_impressions(
        session=s,
        impressions=[
            ImpressionIn(
                search_id=sid,
                created_at=at or datetime.now(UTC),
                query_text=query,
                has_image=False,
                image_sha256=None,
                query_type="text",
                filters=None,
                user_id=user,
                model_version="h-test",
                k=len(products),
                latency_ms=1.0,
                items=[ShownItem(p, 1.0, i, 1.0 / i) for i, p in enumerate(products, 1)],
                caller=caller,
            )
        ],
    )
    return sid


def _events(s, sid: str, product: str, etype: str = "click", n: int = 1) -> None:
    now = datetime.now(UTC)
    events = [EventIn(sid, product, etype, now, event_id=uuid.uuid4().hex) for _ in range(n)]
    record_events(session=s, events=events, received_at=now)


def _fold(sessions) -> MemoryFold:
    config = FoldConfig(
        grades=GRADES,
        half_life_days=14,
        text_encoder="t",
        image_encoder="i",
        retention_days=90,
        max_pairs=10_000,
        analytics_days=400,
        batch=50,  # several batches: the cursor must carry over between them
    )
    return MemoryFold(sessions, config, lease_seconds=60)


def _lift(memory: QueryMemory, query: str, product: str) -> float:
    ev = memory.recall(memory_key(query, None).key, "text", None)
    return 0.0 if ev is None else memory.lift(ev, product).lift


def test_one_shopper_moves_a_product_no_further_than_three_distinct_ones(sessions):
    shown = {s: [f"{s}{i}" for i in range(10)] for s in "abcdn"}
    with transaction(sessions) as s:
        for _ in range(100):  # 1,000 clicks on one product, from one user
            _events(s, _search(s, "abuse", shown["a"], user="mallory"), "a7", n=10)
        for _ in range(100):  # ...and from one key that sends no user ids
            _events(s, _search(s, "keyed", shown["n"], caller="key-1234abcd"), "n7", n=10)
        for user in ("u1", "u2", "u3"):  # three distinct shoppers, one click each
            _events(s, _search(s, "three", shown["b"], user=user), "b7")
        _events(s, _search(s, "one", shown["c"], user="alice"), "c7")  # one shopper, once
        for _ in range(200):  # searched over and over, never clicked: no demotion either
            _search(s, "skipped", shown["d"], user="mallory")
        _search(s, "skipped once", shown["d"], user="bob")
        for query in ("skipped", "skipped once"):  # someone chose: the memory has a say
            _events(s, _search(s, query, shown["d"], user="carol"), "d5")
    fold = _fold(sessions)
    assert fold.run() == 100 + 100 + 3 + 1 + 201 + 2 + 1000 + 1000 + 3 + 1 + 2
    memory = QueryMemory(CONFIG)
    MemoryFollower(sessions, memory, ["t", "i"]).poll()
    abuse, keyed = _lift(memory, "abuse", "a7"), _lift(memory, "keyed", "n7")
    one, three = _lift(memory, "one", "c7"), _lift(memory, "three", "b7")
    assert 0 < one < three
    assert abuse == pytest.approx(one, rel=1e-5) and keyed == pytest.approx(one, rel=1e-5)
    skipped = _lift(memory, "skipped", "d0")
    assert skipped < 0 and skipped == pytest.approx(_lift(memory, "skipped once", "d0"), rel=1e-5)
    assert fold.run() == 0  # nothing new: nothing counted twice


def test_followers_read_only_newer_folds_and_retention_bounds_the_memory(sessions):
    fold = _fold(sessions)
    memory = QueryMemory(CONFIG)
    follower = MemoryFollower(sessions, memory, ["t", "i"])
    with transaction(sessions) as s:
        _events(s, _search(s, "lamp", ["l1", "l2"]), "l2", "purchase")
    fold.run()
    assert follower.poll() == 2 and follower.poll() == 0
    with transaction(sessions) as s:
        _events(s, _search(s, "desk lamp", ["l1", "l3"]), "l3")
    fold.run()
    assert follower.poll() == 2
    assert _lift(memory, "lamps", "l2") > 0 and _lift(memory, "desk lamps", "l3") > 0
    later = MemoryFold(sessions, fold.config, lease_seconds=60, clock=lambda: time.time() + 1e8)
    assert later.purge() == 4  # nothing added for three years: all of it goes
    assert MemoryFollower(sessions, QueryMemory(CONFIG), ["t", "i"]).poll() == 0


def test_a_shopper_counts_again_for_a_product_once_retention_forgot_them(sessions):
    """Ann keeps searching "vase" (so her row stays), but saw v1 only at first: 90 days on
    (the retention), v1 is counted again for her; 10 days on, it is not."""
    key = memory_key("vase", None).key
    start = time.time()

    def fold_at(days: float, shown: list[str]) -> dict:
        with transaction(sessions) as s:
            _events(s, _search(s, "vase", shown, user="ann"), shown[-1])
        fold = MemoryFold(
            sessions, _fold(sessions).config, lease_seconds=60, clock=lambda: start + days * 86400
        )
        assert fold.run() == 2
        fold.stop()
        with sessions() as s:
            return shoppers(session=s, keys=[(key, "user:ann")])[(key, "user:ann")]

    first = fold_at(0, ["v1", "v2"])["v1"]
    assert fold_at(10, ["v1", "v3"])["v1"] == first  # seen before: nothing new from her
    assert fold_at(50, ["v4"])["v1"] == first
    again = fold_at(100, ["v1", "v5"])["v1"]
    assert again[3] == pytest.approx(start + 100 * 86400)  # forgotten, then counted afresh


def test_a_search_logged_late_or_long_ago_is_counted_once_at_its_age(sessions):
    fold = _fold(sessions)
    memory = QueryMemory(CONFIG)
    follower = MemoryFollower(sessions, memory, ["t", "i"])
    with transaction(sessions) as s:
        _events(s, _search(s, "rug", ["r1", "r2"]), "r2")
    fold.run()
    follower.poll()
    fortnight = datetime.now(UTC) - timedelta(days=14)
    with transaction(sessions) as s:  # committed after that fold, stamped two weeks before
        _search(s, "rug", ["r1"], at=fortnight)
    assert fold.run() == 1 and fold.run() == 0
    follower.poll()
    ev = memory.recall(memory_key("rug", None).key, "text", None)
    assert ev is not None and ev.own_exam_of("r1") == pytest.approx(1.5, rel=1e-3)


# ---- live, through HTTP ---------------------------------------------------------------------
@pytest.fixture(scope="module", params=BACKENDS)
def store(request, tmp_path_factory, ingested):
    directory = tmp_path_factory.mktemp(f"memory-{request.param}")
    with cloned_store(
        ingested, request.param, directory, memory_poll_seconds=0.2, explore_rate=0.0
    ) as copy:
        yield copy


def _search_http(client: httpx.Client, query: str, user: str | None = None, **extra) -> dict:
    r = client.post("/v1/search", json={"query": query, "k": 10, "user_id": user, **extra})
    assert r.status_code == 200, r.text
    return r.json()


def _ranked(body: dict) -> list[str]:
    return [h["product_id"] for h in body["results"]]


def _buy(client: httpx.Client, query: str, product: str, user: str) -> None:
    body = _search_http(client, query, user)
    assert product in _ranked(body), "the product left the first page before it was bought"
    r = client.post(
        "/v1/feedback",
        json={"search_id": body["search_id"], "product_id": product, "type": "purchase"},
    )
    assert r.status_code == 202, r.text


def _rises(client: httpx.Client, query: str, product: str, top: int, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if product in _ranked(_search_http(client, query))[:top]:
            return time.monotonic() - started
        time.sleep(0.2)
    pytest.fail(f"{product} not in the top {top} of {query!r} after {timeout:.0f} s")


def test_what_distinct_shoppers_buy_rises_within_seconds_on_every_replica(store, embedder):
    """Bought through one process, risen on another that only follows the database."""
    learning = store.settings.model_copy(update={"learner_in_process": True})  # it folds
    replica = store.settings  # follows only
    rt1 = start_test_runtime(learning, embedder)
    rt2 = start_test_runtime(replica, embedder)
    try:
        with (
            live_server(learning, runtime=rt1) as one,
            live_server(replica, runtime=rt2) as two,
            httpx.Client(base_url=one.url, timeout=60) as c1,
            httpx.Client(base_url=two.url, timeout=60) as c2,
        ):
            product = _ranked(_search_http(c1, "Watches"))[7]
            for user in ("ann", "ben", "cat", "dan"):
                _buy(c1, "Watches", product, user)  # another spelling of the same query
            waited = _rises(c2, "watch", product, top=3, timeout=30)
            assert waited < 30
            deadline = time.monotonic() + 15  # it may have risen before the last purchase came
            while time.monotonic() < deadline:
                held = c2.get("/v1/memory", params={"query": "WATCH"}).json()
                if held["products"] and held["products"][0]["events"].get("purchase", 0) > 3.9:
                    break
                time.sleep(0.2)
            first = held["products"][0]
            assert first["product_id"] == product
            assert first["events"]["purchase"] == pytest.approx(4.0, rel=0.01)
            assert held["normal"] == "watch" and held["searches"] >= 4
            while True:  # this process follows the fold /v1/memory read within a poll
                body = _search_http(c2, "watch", explain=True)
                hit = next(h for h in body["results"] if h["product_id"] == product)
                term = hit["explanation"]["memory"]
                if term["events"] > 3.9 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert term["lift"] > 0 and term["events"] == pytest.approx(4.0, rel=0.01)
            assert hit["explanation"]["mix"]["memory"]["value"] == pytest.approx(term["lift"])
            assert c2.get("/v1/memory", params={"query": ""}).status_code == 422
    finally:
        rt1.close()
        rt2.close()


def test_deep_exploration_shows_one_unseen_product_from_below_the_page(store, embedder):
    from sqlalchemy import select

    from storage.models import ImpressionItem

    settings = store.settings.model_copy(update={"explore_deep_rate": 1.0})
    with app_client(settings, embedder) as client:
        plain = client.post("/v1/search", json={"query": "blue shirt", "k": 30}).json()
        # this search was explored too: one product from ranks 31-40 may push ranks 11-20 down
        below = [h["product_id"] for h in plain["results"]][10:21]
        sid = _search_http(client, "blue shirt")["search_id"]
        client.runtime.impressions.flush()
        with client.runtime.sessions() as s:
            items = s.execute(
                select(
                    ImpressionItem.position,
                    ImpressionItem.product_id,
                    ImpressionItem.model_position,
                    ImpressionItem.propensity,
                )
                .where(ImpressionItem.search_id == sid)
                .order_by(ImpressionItem.position)
            ).all()
    deep = [(pos, pid, mp, prop) for pos, pid, mp, prop in items if mp > 10]
    assert len(items) == 10 and len(deep) == 1
    pos, pid, mp, prop = deep[0]
    assert pos >= 3 and pid in below and 11 <= mp <= 20
    assert prop == pytest.approx(1.0 / pos)  # logged at the place it was shown
