"""The learning loop end to end on a live server: simulated shoppers search and click through
HTTP, a refresh trains and gates a candidate, the registry records it, and heads are hot-swapped
(and rolled back) while searches keep succeeding. SQLite and PostgreSQL."""

from __future__ import annotations

import copy
import dataclasses
import threading
import time
from contextlib import ExitStack
from datetime import timedelta

import httpx
import pytest
import torch
from helpers import (
    BACKENDS,
    QUICK_LEARNING,
    cloned_store,
    ingested_copy,
    live_server,
    qdrant_in_memory,
    start_test_runtime,
)
from sqlalchemy import delete

from learner.coverage import retrieval_pools, shown_share
from learner.dataset import load_searches, logged_query_vectors
from learner.refresh import run_refresh
from model.checkpoint import load_head, save_head
from model.head import QUERY_TYPES
from service.learning import encoders_of, learner_config
from shoppers.simulator import Simulator
from storage.artifacts import delete_artifact, read_manifest
from storage.db import transaction
from storage.models import ModelVersion
from storage.registry import (
    VersionIn,
    acquire_lease,
    claim_run,
    create_run,
    register_version,
    release_lease,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=[*BACKENDS, "qdrant"])
def loop(request, tmp_path_factory, ingested, embedder):
    """The ingested catalog served on SQLite or PostgreSQL, or on SQLite with its vectors in
    Qdrant (ingested again into Qdrant's local mode), after 300 simulated sessions."""
    directory = tmp_path_factory.mktemp(f"loop-{request.param}")
    learning = {**QUICK_LEARNING, "model_poll_seconds": 0.2, "metrics_settle_seconds": 1.0}
    with ExitStack() as stack:
        vectors = None
        if request.param == "qdrant":
            vectors = stack.enter_context(qdrant_in_memory())
            store = stack.enter_context(
                ingested_copy(
                    "sqlite", directory, ingested.csv, ingested.rows, embedder, vectors, **learning
                )
            )
        else:
            cloned = cloned_store(ingested, request.param, directory, **learning)
            store = stack.enter_context(cloned)
        rt = start_test_runtime(store.settings, embedder, vectors)
        stack.callback(rt.close)
        rt.learner.runs_here = True  # refreshes started through the API run in this process
        srv = stack.enter_context(live_server(store.settings, runtime=rt))
        sim = Simulator(srv.url, ingested.csv, k=10)
        report = sim.run(300, seed=3, concurrency=2, progress=False)
        assert report.failed == 0 and report.events > 100
        srv.bootstrap = store.report.head_version
        yield srv


@pytest.fixture(scope="module")
def client(loop):
    with httpx.Client(base_url=loop.url, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def refreshed(loop, client):
    r = client.post("/v1/models/train")
    assert r.status_code == 202, r.text
    run_id = r.json()["run_id"]
    deadline = time.monotonic() + 120
    while True:
        run = client.get(f"/v1/models/runs/{run_id}").json()
        if run["status"] not in ("queued", "running"):
            return run
        assert time.monotonic() < deadline, run
        time.sleep(0.5)


def test_online_metrics_per_version(loop, client):
    """First in the module: later tests' searches (unclicked) would fill the rolling window."""
    time.sleep(1.1)  # every simulated search is past its settle time
    m = client.get("/v1/metrics/online").json()
    assert m["window"] == 1000 and m["settle_seconds"] == 1.0
    boot = m["versions"][loop.bootstrap]
    assert boot["searches"] >= 300
    # the simulated shoppers clicked in most sessions; ctr, mrr and purchases are rates
    assert 0.3 < boot["ctr"] <= 1.0 and 0 < boot["click_mrr"] <= boot["ctr"]
    assert 0 <= boot["purchase_rate"] < boot["ctr"]
    spec = client.get("/openapi.json").json()
    assert (
        "/v1/metrics/online" in spec["paths"] and "/v1/models/{version}/activate" in spec["paths"]
    )


def test_coverage_tells_the_logging_head_from_one_that_serves_what_was_never_shown(loop):
    """learner.coverage, before any refresh: over the pools serving would score, the head that
    logged the searches tops them with what it showed; the same head ranking upside down tops
    them with products the logs never showed, which the holdout cannot judge."""
    rt = loop.runtime
    head, _ = load_head(loop.settings.data_dir / "heads" / loop.bootstrap)
    with rt.sessions() as s:
        logged = load_searches(s, grades=loop.settings.event_grades)
        tv, iv, cv = logged_query_vectors(s, logged, encoders_of(rt.searcher.index))
    index = rt.searcher.index
    pools = retrieval_pools(head, logged, tv, iv, index, loop.settings.candidates_per_channel)
    assert len(pools) == len(logged) >= 300
    shown = {x.search_id: set(x.product_ids) for x in logged}
    assert all(shown[p.search_id] <= set(p.product_ids) for p in pools)  # what serving scored
    n = loop.settings.candidates_per_channel
    logging_head = shown_share(head, logged, pools, tv, iv, index, cv, per_channel=n)
    upside_down = copy.deepcopy(head)
    with torch.no_grad():
        assert upside_down.mix is not None
        upside_down.mix.neg_()  # every score flips sign
    flipped = shown_share(upside_down, logged, pools, tv, iv, index, cv, per_channel=n)
    assert set(logging_head) == set(flipped) == {"text", "image", "composed"}
    for t in logging_head:
        assert logging_head[t]["searches"] >= 50
        assert logging_head[t]["shown_share"] >= 0.95, (t, logging_head)
        assert flipped[t]["shown_share"] <= 0.3, (t, flipped)


def test_coverage_pools_of_filtered_searches_hold_what_their_filters_allow(loop, client):
    """A filtered search was served from the products its filters allow, so its pool is retrieved
    among those too; over an unfiltered pool the head that served it would seem to top it with
    products it never showed."""
    rt = loop.runtime
    wanted = {"gender": "Women", "masterCategory": ["Apparel", "Footwear"]}  # as shoppers send
    ids = set()
    for q in ("shirt", "watch", "shoes", "bag", "t-shirt for men", "jeans", "sandals", "kurta"):
        for attr, value in wanted.items():
            r = client.post("/v1/search", json={"query": q, "k": 10, "filters": {attr: value}})
            assert r.status_code == 200, r.text
            ids.add(r.json()["search_id"])
    deadline = time.monotonic() + 10
    while True:  # the impression writer flushes in the background
        with rt.sessions() as s:
            logged = [x for x in load_searches(s, grades={}) if x.search_id in ids]
            tv, iv, cv = logged_query_vectors(s, logged, encoders_of(rt.searcher.index))
        if len(logged) == len(ids) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(logged) == len(ids)
    assert {tuple(x.filters) for x in logged} == {("gender",), ("masterCategory",)}
    head, _ = load_head(loop.settings.data_dir / "heads" / loop.bootstrap)
    index, per_channel = rt.searcher.index, loop.settings.candidates_per_channel
    pools = retrieval_pools(head, logged, tv, iv, index, per_channel)
    for pool, x in zip(pools, logged, strict=True):
        assert x.filters is not None
        for pid in pool.product_ids:
            attributes = index.metas[index.row_of[pid]].attributes
            assert all(attributes.get(a) in v for a, v in x.filters.items()), (pid, x.filters)
    unfiltered = [dataclasses.replace(x, filters=None) for x in logged]
    wide = retrieval_pools(head, unfiltered, tv, iv, index, per_channel)
    n = per_channel
    share = shown_share(head, logged, pools, tv, iv, index, cv, per_channel=n)["text"]
    wide_share = shown_share(head, logged, wide, tv, iv, index, cv, per_channel=n)["text"]
    share, wide_share = share["shown_share"], wide_share["shown_share"]
    assert share >= 0.95 and wide_share < share - 0.2, (share, wide_share)
    nothing = dataclasses.replace(logged[0], filters={"gender": ["no such gender"]})
    assert retrieval_pools(head, [nothing], tv, iv, index, per_channel) == []


def test_a_refresh_registers_a_gated_candidate(loop, client, refreshed):
    assert refreshed["status"] == "succeeded", refreshed
    detail = refreshed["detail"]
    assert detail["window_engaged"] >= 20 and detail["seconds"] > 0
    phases = detail["phase_seconds"]  # where the time went, for operators
    assert {"load_searches", "features", "train", "judge"} <= set(phases)
    assert sum(phases.values()) <= detail["seconds"] + 0.05
    cand = refreshed["candidate"]
    models = client.get("/v1/models").json()
    row = next(v for v in models["versions"] if v["version"] == cand)
    assert row["parent"] == loop.bootstrap and row["status"] in ("promoted", "rejected")
    assert row["status"] == ("promoted" if refreshed["promoted"] else "rejected")
    assert row["reason"]
    # the class weights of the window are on record, rarer grades weigh more than clicks
    weights = row["class_weights"]
    assert float(weights["0"]) < float(weights["1"]) == 1.0
    # the stored artifact is the one registered
    heads = loop.settings.data_dir / "heads"
    assert read_manifest(heads / cand)["files"]["head.safetensors"] == row["artifact_sha256"]
    # no promotion may lower any query type's holdout metric (a rejected candidate may be lower:
    # that is why it was rejected)
    hold = detail["holdout"]
    for t in ("text", "image", "composed"):
        if refreshed["promoted"] and hold["final"][t]["engaged"]:
            assert hold["final"][t]["ips_ndcg@10"] >= hold["active"][t]["ips_ndcg@10"] - 1e-9
    expected_active = cand if refreshed["promoted"] else loop.bootstrap
    assert models["active"] == expected_active


def test_activate_rolls_back_and_forward_and_searches_follow(loop, client, refreshed):
    cand = refreshed["candidate"]
    for version in (loop.bootstrap, cand, loop.bootstrap):
        r = client.post(f"/v1/models/{version}/activate")
        assert r.status_code == 200, r.text
        assert r.json()["active"] == version
        body = client.post("/v1/search", json={"query": "watch", "k": 3}).json()
        assert body["model_version"] == version


def test_unknown_versions_and_runs_are_404(client):
    assert client.post("/v1/models/h-nope/activate").status_code == 404
    r = client.get("/v1/models/runs/999999")
    assert r.status_code == 404 and r.json()["error"] == "not_found"


def test_a_corrupt_head_is_refused_and_the_old_one_keeps_serving(loop, client, refreshed):
    cand = refreshed["candidate"]
    client.post(f"/v1/models/{loop.bootstrap}/activate")
    weights = loop.settings.data_dir / "heads" / cand / "head.safetensors"
    original = weights.read_bytes()
    try:
        weights.write_bytes(original[:-8] + b"\0" * 8)
        r = client.post(f"/v1/models/{cand}/activate")
        assert r.status_code == 409 and "sha256" in r.json()["detail"]
        body = client.post("/v1/search", json={"query": "watch", "k": 3}).json()
        assert body["model_version"] == loop.bootstrap
    finally:
        weights.write_bytes(original)


def test_a_version_whose_files_retention_deleted_is_listed_but_not_activated(loop, client):
    heads = loop.settings.data_dir / "heads"
    head, _ = load_head(heads / loop.bootstrap)
    with torch.no_grad():
        next(head.parameters()).add_(1.0)  # other weights: a version of its own
    version = save_head(heads, head, {"parent": loop.bootstrap})
    with transaction(loop.runtime.sessions) as s:
        register_version(session=s, v=VersionIn(version, loop.bootstrap, "rejected", "0" * 64))
    try:
        assert delete_artifact(heads, version) and not (heads / version).exists()
        listed = {m["version"] for m in client.get("/v1/models").json()["versions"]}
        assert version in listed
        r = client.post(f"/v1/models/{version}/activate")
        assert r.status_code == 409 and "retention" in r.json()["detail"], r.text
        assert client.get("/v1/models").json()["active"] != version
    finally:
        with transaction(loop.runtime.sessions) as s:
            s.execute(delete(ModelVersion).where(ModelVersion.version == version))


def test_hot_swaps_under_load_fail_no_request(loop, client, refreshed):
    """Three shoppers search while the active version flips back and forth. The load runs for
    6 s and until 50 searches have been served (a busy CI machine serves fewer per second), at
    most 60 s."""
    cand = refreshed["candidate"]
    started = time.monotonic()
    stop = threading.Event()
    seen: set[str] = set()
    failures: list[str] = []
    latencies: list[float] = []

    def shopper(i: int) -> None:
        with httpx.Client(base_url=loop.url, timeout=60) as c:
            n = 0
            while not stop.is_set():
                n += 1  # a new query each time: every search runs its encoder
                t0 = time.perf_counter()
                r = c.post("/v1/search", json={"query": f"shirt {i} size {n}", "k": 5})
                latencies.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    failures.append(r.text)
                else:
                    seen.add(r.json()["model_version"])

    threads = [threading.Thread(target=shopper, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    swaps = 0
    while time.monotonic() - started < 6 or (
        len(latencies) <= 50 and time.monotonic() - started < 60
    ):
        for version in (cand, loop.bootstrap):
            assert client.post(f"/v1/models/{version}/activate").status_code == 200
            swaps += 1
            time.sleep(0.3)
    stop.set()
    for t in threads:
        t.join()
    assert failures == []
    assert swaps >= 6 and seen == {cand, loop.bootstrap}
    assert len(latencies) > 50


def test_only_one_learner_holds_the_lease(loop):
    sessions = loop.runtime.sessions
    ttl = timedelta(seconds=30)
    assert acquire_lease(sessions=sessions, name="test-lease", holder="a", ttl=ttl)
    assert not acquire_lease(sessions=sessions, name="test-lease", holder="b", ttl=ttl)
    # renewal by the holder
    assert acquire_lease(sessions=sessions, name="test-lease", holder="a", ttl=ttl)
    release_lease(sessions=sessions, name="test-lease", holder="a")
    assert acquire_lease(sessions=sessions, name="test-lease", holder="b", ttl=ttl)
    release_lease(sessions=sessions, name="test-lease", holder="b")


def test_a_run_waits_while_another_learner_trains(loop, client):
    sessions = loop.runtime.sessions
    assert acquire_lease(
        sessions=sessions, name="learner", holder="someone-else", ttl=timedelta(seconds=60)
    )
    try:
        run_id = client.post("/v1/models/train").json()["run_id"]
        time.sleep(1.0)
        assert client.get(f"/v1/models/runs/{run_id}").json()["status"] == "queued"
    finally:
        release_lease(sessions=sessions, name="learner", holder="someone-else")
    loop.runtime.learner.poll()  # what the scheduler does every 30 s
    deadline = time.monotonic() + 120
    while (run := client.get(f"/v1/models/runs/{run_id}").json())["status"] in (
        "queued",
        "running",
    ):
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert run["status"] in ("succeeded", "skipped"), run


@pytest.mark.postgres
def test_replicas_on_postgres_pick_up_a_new_version_within_seconds(ingested, embedder, tmp_path):
    """Two API processes' worth of runtimes on one PostgreSQL database and data dir: activating a
    version through one makes the other serve it after its next poll."""
    from learner.child import child_head
    from model.checkpoint import load_head, save_head
    from storage.db import transaction
    from storage.registry import VersionIn, register_version

    with cloned_store(ingested, "postgres", tmp_path, model_poll_seconds=0.2) as store:
        heads = store.settings.data_dir / "heads"
        boot = ingested.report.head_version
        parent, _ = load_head(heads / boot)
        rts = [start_test_runtime(store.settings, embedder) for _ in range(2)]
        try:
            assert rts[0].searcher is not None
            child = child_head(parent, rts[0].searcher.index, rank=0)
            with __import__("torch").no_grad():
                child.interaction.diag.add_(0.01)  # a different, compatible head
            version = save_head(heads, child, {"parent": boot})
            with (
                live_server(store.settings, runtime=rts[0]) as a,
                live_server(store.settings, runtime=rts[1]) as b,
            ):
                with transaction(rts[0].sessions) as s:
                    register_version(
                        session=s, v=VersionIn(version, boot, "promoted", "0" * 64, reason="test")
                    )
                r = httpx.post(f"{a.url}/v1/models/{version}/activate", timeout=30)
                assert r.status_code == 200, r.text
                t0 = time.monotonic()
                while True:
                    body = httpx.post(f"{b.url}/v1/search", json={"query": "watch"}, timeout=30)
                    if body.json()["model_version"] == version:
                        break
                    assert time.monotonic() - t0 < 5, "replica b did not switch within 5 s"
                    time.sleep(0.1)
        finally:
            for rt in rts:
                rt.close()


def test_a_learner_killed_mid_run_leaves_a_failed_run_and_no_version(loop, client):
    """A run left 'running' by a dead learner (its lease expired) is failed by the next learner
    to take the lease; the registry gains nothing from it."""
    sessions = loop.runtime.sessions
    before = {v["version"] for v in client.get("/v1/models").json()["versions"]}
    dead = create_run(sessions=sessions, trigger="api")
    assert claim_run(sessions=sessions, run_id=dead)  # a learner took it ... and was killed
    assert not claim_run(sessions=sessions, run_id=dead)  # nobody else can take it twice
    fresh = client.post("/v1/models/train").json()["run_id"]
    deadline = time.monotonic() + 120
    while client.get(f"/v1/models/runs/{fresh}").json()["status"] in ("queued", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.3)
    run = client.get(f"/v1/models/runs/{dead}").json()
    assert run["status"] == "failed" and "lease expired" in run["error"]
    assert run["candidate"] is None
    after = {v["version"] for v in client.get("/v1/models").json()["versions"]}
    assert after - before <= {client.get(f"/v1/models/runs/{fresh}").json()["candidate"]}


def test_the_gate_refuses_a_type_whose_top_10_the_holdout_never_showed(loop, client, ingested):
    """The coverage branch of the gate, run for real: with the holdout margins waived every type
    the holdout judges is accepted, and a shown-share floor above 100% must then refuse each of
    them, keep the active version and say why."""
    sim = Simulator(loop.url, ingested.csv, k=10)
    report = sim.run(200, seed=11, concurrency=2, progress=False)
    assert report.failed == 0 and report.events > 50
    time.sleep(1.0)  # the impression writer flushes in the background
    sessions, learner = loop.runtime.sessions, loop.runtime.learner
    active = client.get("/v1/models").json()["active"]
    config = dataclasses.replace(
        learner_config(loop.settings).refresh,
        margin=-2.0,  # below any gain (all lie in [-1, 1]): at confidence 0.5 the bound is it
        confidence=0.5,
        logloss_tolerance=1e9,
        min_shown_share=1.01,
    )
    assert acquire_lease(
        sessions=sessions, name="learner", holder="gate-test", ttl=timedelta(seconds=300)
    )
    try:
        run_id = create_run(sessions=sessions, trigger="test")
        assert claim_run(sessions=sessions, run_id=run_id)
        detail = run_refresh(
            sessions=sessions,
            index=learner.index,
            heads_dir=loop.settings.data_dir / "heads",
            encoders=learner.encoders,
            config=config,
            run_id=run_id,
            fallback_version=learner.fallback_version,
        )
    finally:
        release_lease(sessions=sessions, name="learner", holder="gate-test")
    assert detail["status"] == "succeeded" and not detail.get("promoted"), detail
    holdout = detail["holdout"]["candidate"]
    judged = [t for t in QUERY_TYPES if holdout[t]["engaged"] >= config.min_holdout_engaged]
    assert judged and set(detail["coverage"]) >= set(judged), detail["coverage"]
    for t in judged:
        assert "were shown by the holdout searches" in detail["type_reasons"][t], detail
    assert client.get("/v1/models").json()["active"] == active


def test_a_replica_without_the_learner_only_queues_runs(ingested, embedder, tmp_path):
    """With the learner out of process (the default here), POST /v1/models/train queues the run
    for `fusionrank learner` instead of training on the API replica's CPU."""
    from helpers import app_client

    with (
        cloned_store(ingested, "sqlite", tmp_path) as store,
        app_client(store.settings, embedder) as c,
    ):
        run_id = c.post("/v1/models/train").json()["run_id"]
        time.sleep(0.5)
        assert c.get(f"/v1/models/runs/{run_id}").json()["status"] == "queued"
