"""Randomised exploration: a permutation that moves each result at most one place and swaps every
adjacent pair equally often, so the examination ratio of each pair of positions is identified."""

from __future__ import annotations

import random

import pytest

from learner.position_bias import estimate
from model.position_bias import PositionBias, explore_deeper, explore_order


def test_explore_order_moves_items_at_most_one_place_and_swaps_every_pair_a_quarter():
    rng = random.Random(3)
    n, draws = 10, 8000
    swaps = [0] * (n - 1)
    for _ in range(draws):
        order = explore_order(n, rng)
        assert sorted(order) == list(range(n))
        assert all(abs(shown - ranked) <= 1 for shown, ranked in enumerate(order))
        for k in range(n - 1):
            swaps[k] += order[k] == k + 1
    assert [s / draws for s in swaps] == pytest.approx([0.25] * (n - 1), abs=0.025)


def test_prior_is_one_over_position_and_clamps_past_its_end():
    bias = PositionBias.prior(eta=1.0, positions=5)
    assert [bias.propensity(k) for k in (1, 2, 4, 5, 9)] == pytest.approx([1, 0.5, 0.25, 0.2, 0.2])


def simulated_searches(n: int, eta: float, rng: random.Random, explore_rate: float = 0.5):
    """Searches of 10 results under a position-based click model with examination k^-eta;
    relevance falls with the model's rank, as for a decent ranker."""
    from datetime import UTC, datetime

    import numpy as np

    from learner.dataset import LoggedSearch

    out = []
    for i in range(n):
        explore = rng.random() < explore_rate
        order = explore_order(10, rng) if explore else list(range(10))
        rel = [0.8 * 0.85**r for r in range(10)]  # P(click | examined) by model rank
        grades = [
            int(rng.random() < (pos + 1) ** -eta and rng.random() < rel[r])
            for pos, r in enumerate(order)
        ]
        out.append(
            LoggedSearch(
                search_id=str(i),
                created_at=datetime.now(UTC),
                query_type=0,
                text_key=None,
                image_key=None,
                explore=explore,
                product_ids=tuple(f"p{r}" for r in order),
                model_positions=np.array([r + 1 for r in order]),
                propensities=np.ones(10, np.float32),
                grades=np.array(grades),
            )
        )
    return out


def test_swap_interventions_recover_the_examination_curve():
    searches = simulated_searches(20000, eta=0.7, rng=random.Random(11))
    curve, stats = estimate(searches, prior_eta=1.0, positions=10)
    truth = [k**-0.7 for k in range(1, 11)]
    assert curve.source == "estimated" and stats["explored_searches"] > 9000
    assert stats["eta"] == pytest.approx(0.7, abs=0.05)
    assert list(curve.examination[:10]) == pytest.approx(truth, rel=0.08)
    # clearly not the prior it started from
    assert curve.propensity(10) > 1.5 * PositionBias.prior(eta=1.0).propensity(10)


def test_without_explored_traffic_the_prior_stands():
    searches = simulated_searches(2000, eta=0.7, rng=random.Random(2), explore_rate=0.0)
    prior = PositionBias.prior(eta=1.0)
    curve, _ = estimate(searches, prior_eta=1.0, positions=10)
    assert curve.examination == pytest.approx(prior.examination)
    assert curve.source == "prior"


def test_deeper_exploration_puts_one_unseen_product_on_the_page_from_the_third_place():
    rng = random.Random(0)
    page, deeper = list(range(10)), [14, 17]
    slots = set()
    for _ in range(300):
        shown = explore_deeper(page, deeper, rng)
        assert len(shown) == 10 and len(set(shown)) == 10
        (new,) = set(shown) - set(page)
        assert new in deeper and 9 not in shown  # the page's last gives way
        slot = shown.index(new)
        assert slot >= 2 and [x for x in shown if x != new] == page[:9]  # the rest keep order
        slots.add(slot)
    assert slots == set(range(2, 10))
    assert explore_deeper(page, [], rng) == page and explore_deeper([], deeper, rng) == []
    assert explore_deeper([0, 1], [5], rng) == [0, 5]  # a short page: its last place
