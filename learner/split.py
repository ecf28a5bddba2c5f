"""Which logged searches a refresh trains on, and which judge its candidate.

Each query type keeps a holdout of its own, which carries over from one refresh to the next:
the newest `fraction` of the type's new searches, and, while that has fewer than `min_engaged`
engaged searches, more of them (up to `fill`); then the newest searches held out by earlier
refreshes, until the holdout has `keep_engaged` engaged searches. Held-out searches are marked
in SQL (impressions.holdout) and no refresh trains on them while they stay marked; once a type
has enough newer ones, the older are released to training. So a type that is a small share of
the traffic is judged once enough of it has accumulated, however often refreshes run and however
small each window is, and its holdout keeps growing past that, which narrows the paired test's
interval: with 50 searches a true gain of a few points is rarely sure, with 200 it usually is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from learner.dataset import LoggedSearch
from model.head import QUERY_TYPES


@dataclass(frozen=True)
class Split:
    train: list[LoggedSearch]  # new searches not held out, and released ones
    holdout: list[LoggedSearch]  # oldest first
    hold: frozenset[str]  # search ids newly held out: to be marked
    release: frozenset[str]  # search ids held out before and trained on now: to be unmarked

    def held_per_type(self) -> dict[str, dict[str, int]]:
        """Per query type, the holdout's searches, its engaged ones, and how many it carried
        over from earlier refreshes (for the run's record)."""
        out = {}
        for i, t in enumerate(QUERY_TYPES):
            held = [x for x in self.holdout if x.query_type == i]
            out[t] = {
                "searches": len(held),
                "engaged": sum(_engaged(x) for x in held),
                "carried": sum(x.search_id not in self.hold for x in held),
            }
        return out


def split_window(
    window: Sequence[LoggedSearch],
    carried: Sequence[LoggedSearch],
    *,
    fraction: float,
    min_engaged: int,
    keep_engaged: int,
    fill: float,
) -> Split:
    """`window`: the new searches, oldest first; `carried`: those earlier refreshes held out and
    nobody trained on, oldest first (all older than the window). A `keep_engaged` below
    `min_engaged` keeps `min_engaged`."""
    train: list[LoggedSearch] = []
    holdout: list[LoggedSearch] = []
    hold: set[str] = set()
    release: set[str] = set()
    for i in range(len(QUERY_TYPES)):
        new = [x for x in window if x.query_type == i]
        old = [x for x in carried if x.query_type == i]
        take = _newest_to_hold(new, fraction=fraction, min_engaged=min_engaged, fill=fill)
        held_new = new[len(new) - take :]
        need = max(keep_engaged, min_engaged) - sum(_engaged(x) for x in held_new)
        keep = 0  # how many of the newest carried searches it takes to meet the need
        while need > 0 and keep < len(old):
            keep += 1
            need -= _engaged(old[-keep])
        held_old = old[len(old) - keep :]
        train += new[: len(new) - take] + old[: len(old) - keep]
        holdout += held_old + held_new
        hold |= {x.search_id for x in held_new}
        release |= {x.search_id for x in old[: len(old) - keep]}
    order = lambda x: (x.created_at, x.search_id)  # noqa: E731
    return Split(
        sorted(train, key=order), sorted(holdout, key=order), frozenset(hold), frozenset(release)
    )


def _newest_to_hold(
    new: Sequence[LoggedSearch], *, fraction: float, min_engaged: int, fill: float
) -> int:
    """How many of a type's new searches to hold out: the newest `fraction`, or more (up to
    `fill`) until they hold `min_engaged` engaged searches."""
    if not new:
        return 0
    take = math.ceil(len(new) * fraction)
    most = max(take, math.floor(len(new) * fill))
    engaged = sum(_engaged(x) for x in new[len(new) - take :])
    while engaged < min_engaged and take < most:
        take += 1
        engaged += _engaged(new[-take])
    return take


def _engaged(x: LoggedSearch) -> bool:
    return bool(x.grades.any())
