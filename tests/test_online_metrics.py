"""river online metrics: exact rolling rates on a scripted stream, bounded state, ADWIN drift."""

from __future__ import annotations

import pytest

from service.search.online_metrics import OnlineMetrics


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_rates_are_scored_after_settling():
    clock = Clock()
    m = OnlineMetrics(window=4, settle_seconds=10, clock=clock)
    for i, (click, buy) in enumerate([(1, False), (None, False), (3, True), (2, False)]):
        m.shown(f"s{i}", "v1")
        if click:
            m.event(f"s{i}", click, "click")
        if buy:
            m.event(f"s{i}", click, "purchase")
    assert m.snapshot()["versions"] == {}  # nothing settled yet
    clock.t = 11
    v = m.snapshot()["versions"]["v1"]
    assert v["searches"] == 4
    assert v["ctr"] == pytest.approx(0.75)
    assert v["click_mrr"] == pytest.approx((1 + 0 + 1 / 3 + 1 / 2) / 4)
    assert v["purchase_rate"] == pytest.approx(0.25)


def test_state_is_bounded():
    clock = Clock()
    m = OnlineMetrics(window=10, settle_seconds=1e9, max_pending=100, max_versions=2, clock=clock)
    for i in range(1000):
        m.shown(str(i), f"v{i % 3}")
    snap = m.snapshot()
    assert snap["pending_searches"] <= 100
    assert len(snap["versions"]) == 2


def test_adwin_flags_a_drop_in_click_through():
    clock = Clock()
    drifted: list[str] = []
    m = OnlineMetrics(window=200, settle_seconds=0.5, clock=clock, on_drift=drifted.append)
    import random

    rng = random.Random(1)
    for i in range(6000):
        m.shown(str(i), "v1")
        if rng.random() < (0.5 if i < 3000 else 0.15):
            m.event(str(i), 1, "click")
        clock.t += 1
    m.snapshot()
    assert drifted and set(drifted) == {"v1"}
    assert m.snapshot()["versions"]["v1"]["ctr"] < 0.3
