"""Position bias: how likely a shopper is to even look at each result position.

Clicks mix relevance with examination: the first result gets clicks because it is first. The
learner weights clicks by 1/examination (clipped) so it stops learning to repeat its own ranking.
The curve starts from a prior and is re-fitted at every refresh from randomised traffic (adjacent
pairs swapped at random, see `explore_order`); the service also logs, with every shown result,
the examination probability it believed in at the time (the propensity), for auditing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

MAX_POSITION = 100  # the API's largest k


@dataclass(frozen=True, slots=True)
class PositionBias:
    """examination[i] = P(examined | shown at position i + 1), with examination[0] = 1."""

    examination: tuple[float, ...]
    source: str = "prior"  # prior | estimated
    eta: float = 1.0

    @classmethod
    def power(cls, eta: float, source: str, positions: int = MAX_POSITION) -> PositionBias:
        return cls(tuple(1.0 / (k**eta) for k in range(1, positions + 1)), source, eta)

    @classmethod
    def prior(cls, eta: float = 1.0, positions: int = MAX_POSITION) -> PositionBias:
        """The usual 1/position^eta curve, until the service has randomised traffic of its own."""
        return cls.power(eta, "prior", positions)

    def propensity(self, position: int) -> float:
        ex = self.examination
        return ex[min(position, len(ex)) - 1]


def explore_order(n: int, rng: random.Random) -> list[int]:
    """A random order of n ranked items that moves each item at most one place: pairs
    (o+1, o+2), (o+3, o+4), ... for a random offset o in {0, 1}, each swapped with probability 1/2.
    Every adjacent pair is thus swapped in a quarter of explored searches, which identifies
    P(examined at k+1) / P(examined at k) for every k."""
    order = list(range(n))
    for i in range(rng.randrange(2), n - 1, 2):
        if rng.random() < 0.5:
            order[i], order[i + 1] = order[i + 1], order[i]
    return order


def explore_deeper(
    page: list[int], deeper: list[int], rng: random.Random, first_slot: int = 3
) -> list[int]:
    """The page with one of `deeper` (items ranked below it) in its place at a random slot from
    `first_slot` on, the page's last item dropped: how a product no shopper has seen for a query
    gets the examinations that let the query memory find it. Unchanged when either is empty."""
    if not page or not deeper:
        return page
    slot = rng.randint(min(first_slot, len(page)), len(page)) - 1
    return [*page[:slot], rng.choice(deeper), *page[slot:-1]]


def bias_of(card: dict[str, Any]) -> PositionBias:
    """The position bias a head was trained under, from its model card (the prior for a
    bootstrap head)."""
    pb = card.get("position_bias") or {}
    return PositionBias.power(float(pb.get("eta", 1.0)), str(pb.get("source", "prior")))
