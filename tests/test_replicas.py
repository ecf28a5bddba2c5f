"""The documented deployment (compose.yaml), as plain processes on this machine: two
`fusionrank serve` replicas and one `fusionrank learner`, on PostgreSQL, sharing one data
directory. A model the learner trains is served by both replicas, and a catalog change made
through one replica is searchable through the other within CATALOG_REACH_SECONDS."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import httpx
import pytest
from helpers import QUICK_LEARNING, Process, cloned_store, fusionrank_process, settings_env

from shoppers.simulator import Simulator

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

# What the README states: FUSIONRANK_CATALOG_POLL_SECONDS (2 s) plus encoding the product.
CATALOG_REACH_SECONDS = 5.0


@dataclass
class Deployment:
    a: Process
    b: Process
    learner: Process
    csv: object


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, ingested) -> Iterator[Deployment]:
    directory = tmp_path_factory.mktemp("replicas")
    with (
        cloned_store(
            ingested,
            "postgres",
            directory,
            **QUICK_LEARNING,
        ) as store,
        ExitStack() as stack,
    ):
        # the defaults for how often replicas look at the registry and the catalog
        env = settings_env(store.settings, learner_poll_seconds=0.5)
        learner = stack.enter_context(fusionrank_process(["learner"], env, directory / "l.log"))
        a = stack.enter_context(fusionrank_process(["serve"], env, directory / "a.log", serve=True))
        b = stack.enter_context(fusionrank_process(["serve"], env, directory / "b.log", serve=True))
        assert learner.proc.poll() is None, learner.tail()
        yield Deployment(a, b, learner, ingested.csv)


def _eventually(check: Callable[[], bool], seconds: float, what: str) -> float:
    """Seconds until `check()` held; fails after `seconds`."""
    t0 = time.monotonic()
    while not check():
        assert time.monotonic() - t0 < seconds, f"{what}: not within {seconds} s"
        time.sleep(0.05)
    return time.monotonic() - t0


def _top(url: str, query: str, n: int = 5) -> list[str]:
    """The first `n` results. Exploration (explore_rate) may swap the first two: a product
    that ranks first is asserted to be in the top 2."""
    r = httpx.post(f"{url}/v1/search", json={"query": query, "k": 5}, timeout=60)
    assert r.status_code == 200, r.text
    return [hit["product_id"] for hit in r.json()["results"]][:n]


def test_a_model_the_learner_trains_is_served_by_both_replicas(deployment):
    a, b = deployment.a.url, deployment.b.url
    for url, seed in ((a, 1), (b, 2)):  # shoppers on both replicas, one shared log
        report = Simulator(url, deployment.csv, k=10).run(
            150, seed=seed, concurrency=2, progress=False
        )
        assert report.failed == 0 and report.events > 40
    run_id = httpx.post(f"{a}/v1/models/train", timeout=30).json()["run_id"]

    def finished() -> bool:  # asked of the other replica: the registry is shared
        status = httpx.get(f"{b}/v1/models/runs/{run_id}", timeout=30).json()["status"]
        return status not in ("queued", "running")

    _eventually(finished, 180, f"run {run_id}\n{deployment.learner.tail()}")
    run = httpx.get(f"{b}/v1/models/runs/{run_id}", timeout=30).json()
    assert run["status"] == "succeeded" and run["candidate"], run
    version = run["candidate"]
    if not run["promoted"]:  # the gate kept the old one: an operator activates it on purpose
        r = httpx.post(f"{b}/v1/models/{version}/activate", timeout=60)
        assert r.status_code == 200, r.text
    for url in (a, b):

        def serves(url: str = url) -> bool:
            body = httpx.post(f"{url}/v1/search", json={"query": "watch"}, timeout=60).json()
            return bool(body["model_version"] == version)

        _eventually(serves, 15, f"{url} serving {version}")
    assert "refresh run" in deployment.learner.tail(100_000)  # trained in the learner process


def test_a_catalog_change_through_one_replica_is_searchable_through_the_other(deployment, jpeg):
    a, b = deployment.a.url, deployment.b.url
    title = "Quokkafell Zephyrine Trail Parka"
    r = httpx.put(
        f"{a}/v1/products/replica-1",
        data={"title": title, "attributes": json.dumps({"articleType": "Jackets"})},
        files={"image": ("parka.jpg", jpeg, "image/jpeg")},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    assert "replica-1" in _top(a, "Quokkafell Zephyrine", 2)  # at once where it was made
    took = _eventually(
        lambda: "replica-1" in _top(b, "Quokkafell Zephyrine", 2),
        CATALOG_REACH_SECONDS,
        "the new product on the other replica",
    )
    print(f"PUT through a, searchable through b after {took:.2f} s")
    image = httpx.get(f"{b}/v1/products/replica-1/image", timeout=30)
    assert image.status_code == 200 and image.content == jpeg

    r = httpx.put(f"{b}/v1/products/replica-1", json={"title": "Marmoset Ultraviolet Beanie"})
    assert r.status_code == 200, r.text
    took = _eventually(
        lambda: (
            (_top(a, "Marmoset Ultraviolet")[:1] == ["replica-1"])
            and "replica-1" not in _top(a, "Quokkafell Zephyrine")
        ),
        CATALOG_REACH_SECONDS,
        "the replaced product on the first replica",
    )
    print(f"replaced through b, new title searchable through a after {took:.2f} s")

    assert httpx.delete(f"{a}/v1/products/replica-1", timeout=30).status_code == 204
    took = _eventually(
        lambda: "replica-1" not in _top(b, "Marmoset Ultraviolet"),
        CATALOG_REACH_SECONDS,
        "the deletion on the other replica",
    )
    print(f"deleted through a, gone from b after {took:.2f} s")
    assert httpx.get(f"{b}/v1/products/replica-1", timeout=30).status_code == 404
