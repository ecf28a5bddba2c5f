"""Fitting the position bias (model.position_bias) from the service's randomised traffic."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from model.position_bias import PositionBias

if TYPE_CHECKING:
    from learner.dataset import LoggedSearch


def estimate(
    searches: Sequence[LoggedSearch],
    prior_eta: float = 1.0,
    *,
    positions: int = 20,
    strength: float = 50.0,
) -> tuple[PositionBias, dict[str, object]]:
    """Fit examination = position^-eta from swap interventions.

    For each adjacent pair (k, k+1), searches that show it in model order (A) or swapped (B)
    show the same two products at both positions, so clicks at k+1 over clicks at k, averaged
    over A and B, estimate P(examined at k+1) / P(examined at k): relevance cancels. Searches
    that were not explored count in A (whether to explore was random too). eta is the weighted
    least-squares fit of the log ratios (weights ~ clicks behind each), shrunk towards the prior
    with `strength` pseudo-weight: a power law needs far less traffic than a free curve, and
    deep positions, where clicks are rare, borrow from shallow ones.
    """
    n = {"A": np.zeros(positions), "B": np.zeros(positions)}
    clicks = {side: np.zeros((positions, 2)) for side in ("A", "B")}  # [:, 0]: at k, [:, 1]: k+1
    explored = sum(s.explore for s in searches)
    for s in searches:
        mp, clicked = s.model_positions, s.grades > 0
        for k in range(1, min(positions, len(mp))):  # pair (k, k+1); index k-1 is position k
            a, b = mp[k - 1], mp[k]
            side = "A" if (a, b) == (k, k + 1) else "B" if (a, b) == (k + 1, k) else None
            if side is None:
                continue
            n[side][k - 1] += 1
            clicks[side][k - 1] += clicked[k - 1], clicked[k]
    sxx = sxy = 0.0
    ratios: list[float | None] = []
    for k in range(1, positions):
        i = k - 1
        if not (n["A"][i] and n["B"][i]):
            ratios.append(None)
            continue
        num = sum(clicks[s][i, 1] / n[s][i] for s in "AB")
        den = sum(clicks[s][i, 0] / n[s][i] for s in "AB")
        c_num, c_den = clicks["A"][i, 1] + clicks["B"][i, 1], clicks["A"][i, 0] + clicks["B"][i, 0]
        if min(c_num, c_den) < 1:
            ratios.append(None)
            continue
        ratios.append(round(float(num / den), 4))
        w = 1.0 / (1.0 / c_num + 1.0 / c_den)
        x = np.log((k + 1) / k)
        sxx += w * x * x
        sxy += w * x * -np.log(num / den)
    x_ref = float(np.log(2.0))  # the prior counts as `strength` weight on the first pair
    eta = (sxy + strength * x_ref * x_ref * prior_eta) / (sxx + strength * x_ref * x_ref)
    eta = float(np.clip(eta, 0.0, 3.0))
    fitted = sxx > 0 and explored > 0
    curve = PositionBias.power(eta, "estimated") if fitted else PositionBias.prior(prior_eta)
    stats = {"explored_searches": explored, "eta": round(eta, 4), "pair_ratios": ratios}
    return curve, stats
