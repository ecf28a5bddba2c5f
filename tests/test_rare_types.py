"""A query type that is a small share of the traffic still learns under the default schedule:
its holdout carries over between refreshes until it can be judged, then it is promoted. A real
server, real encoders on a small catalog, simulated shoppers through HTTP, and the scheduler's
own trigger (`Learner.poll`, which APScheduler runs every 30 s) deciding when to refresh."""

from __future__ import annotations

import time

import httpx
import pytest
from helpers import cloned_store, live_server, start_test_runtime

from shoppers.simulator import Simulator

pytestmark = pytest.mark.slow

MIX = {"text": 0.95, "image": 0.05}  # photo search, a twentieth of the traffic
CHUNK = 650  # sessions between two polls: over 2,000 events, so each poll refreshes


def wait_for_runs(client: httpx.Client, timeout: float = 300) -> list[dict]:
    """Every run so far, oldest first, once none is queued or running."""
    deadline = time.monotonic() + timeout
    while True:
        runs = client.get("/v1/models/runs", params={"limit": 1000}).json()["runs"][::-1]
        if all(r["status"] not in ("queued", "running") for r in runs):
            return runs
        assert time.monotonic() < deadline, runs
        time.sleep(0.5)


def test_a_rare_query_type_is_judged_and_promoted_under_the_default_schedule(
    ingested, embedder, tmp_path
):
    # every learner setting at its default, exploration included; only the scheduler's clock is
    # driven by hand (poll below)
    with cloned_store(ingested, "sqlite", tmp_path, explore_rate=0.05) as store:
        settings = store.settings
        assert (
            settings.learner_min_holdout_engaged == 50 and settings.learner_min_new_events == 2000
        )
        rt = start_test_runtime(settings, embedder)
        rt.learner.runs_here = True
        try:
            with (
                live_server(settings, runtime=rt) as srv,
                httpx.Client(base_url=srv.url, timeout=60) as client,
            ):
                sim = Simulator(srv.url, ingested.csv, k=10, mix=MIX)
                runs: list[dict] = []
                for chunk in range(20):  # a paired test needs a clear gain
                    report = sim.run(CHUNK, seed=500 + chunk, concurrency=2, progress=False)
                    assert report.failed == 0
                    time.sleep(settings.learner_settle_seconds + 0.5)
                    rt.learner.poll()
                    runs = wait_for_runs(client)
                    if any(
                        r["promoted"] and "image" in r["detail"]["accepted_types"] for r in runs
                    ):
                        break
        finally:
            rt.close()
    refreshed = [r for r in runs if r["status"] == "succeeded"]
    assert len(refreshed) >= 2, runs
    held = [r["detail"]["holdout_searches"]["image"] for r in refreshed]
    reasons = [r["detail"]["type_reasons"]["image"] for r in refreshed]
    # at first too few engaged photo searches to judge them; the holdout grows across refreshes,
    # carrying earlier ones over, until photo search is judged
    assert "engaged holdout searches" in reasons[0] and held[0]["engaged"] < 50, (held, reasons)
    judged = next(i for i, why in enumerate(reasons) if "engaged holdout searches" not in why)
    assert held[judged]["engaged"] >= 50 and held[judged]["carried"] > 0, held
    # ... and promoted, without lowering any type on the holdout
    promoted = next(
        (r for r in refreshed if r["promoted"] and "image" in r["detail"]["accepted_types"]),
        None,
    )
    assert promoted is not None, [r["detail"].get("paired", {}).get("image") for r in refreshed]
    hold = promoted["detail"]["holdout"]
    for t in ("text", "image", "composed"):
        if hold["final"][t]["engaged"]:
            assert hold["final"][t]["ips_ndcg@10"] >= hold["active"][t]["ips_ndcg@10"] - 1e-9
