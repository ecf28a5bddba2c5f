"""Randomised exploration: a permutation that moves each result at most one place and swaps every
adjacent pair equally often, so the examination ratio of each pair of positions is identified."""

from __future__ import annotations

import random

import pytest

from learner.position_bias import PositionBias, explore_order


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
