"""Each product's engagement (model.engagement), computed at a refresh from logged searches."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime

from learner.dataset import LoggedSearch
from model.engagement import Engagement
from model.position_bias import PositionBias
from storage.models import as_utc

HALF_LIFE_DAYS = 14.0  # a product's engagement a fortnight ago counts half as much as today's


def contributions(
    s: LoggedSearch, bias: PositionBias, now: datetime, levels: int
) -> Iterator[tuple[str, str, float, float]]:
    """(search id, product id, graded events, examination) of one search's shown products: the
    grade over the highest grade, and the chance its position was looked at, both decayed."""
    age_days = max((as_utc(now) - as_utc(s.created_at)).total_seconds(), 0.0) / 86400
    weight = 0.5 ** (age_days / HALF_LIFE_DAYS)
    for pos, (pid, grade) in enumerate(zip(s.product_ids, s.grades.tolist(), strict=True), 1):
        yield s.search_id, pid, weight * grade / levels, weight * bias.propensity(pos)


def compute_engagement(
    searches: Sequence[LoggedSearch], bias: PositionBias, now: datetime, levels: int
) -> Engagement:
    return Engagement.of(c for s in searches for c in contributions(s, bias, now, levels))


def leave_one_out(
    engagement: Engagement, bias: PositionBias, now: datetime, levels: int
) -> Callable[[LoggedSearch], list[float]]:
    """A search's products' engagement without what that search itself put in (its own click
    would otherwise teach that clicks predict clicks); as served for any other search."""

    def of(s: LoggedSearch) -> list[float]:
        own = None
        if s.search_id in engagement.sources:
            own = {pid: (g, e) for _, pid, g, e in contributions(s, bias, now, levels)}
        return engagement.lift(s.product_ids, own)

    return of
