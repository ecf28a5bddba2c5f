"""What one refresh reads: the searches logged since the previous window ended (up to `settle`
ago, so their feedback has had time to arrive), a replay of older engaged ones, and the
holdout searches earlier refreshes kept (learner.split)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from learner.dataset import LoggedSearch, load_searches, replay_sample
from storage.registry import active_version, last_window_end, utcnow


@dataclass
class Window:
    parent_version: str
    start: datetime | None
    cutoff: datetime
    searches: list[LoggedSearch]
    replay: list[LoggedSearch]
    carried: list[LoggedSearch]  # held out by earlier refreshes, never trained on

    @property
    def engaged(self) -> int:
        return sum(bool(x.grades.any()) for x in self.searches)

    def describe(self) -> dict[str, Any]:
        """What a refresh's record says of its window."""
        start = self.start.isoformat() if self.start else None
        return {
            "parent": self.parent_version,
            "window": {"start": start, "end": self.cutoff.isoformat()},
            "window_searches": len(self.searches),
            "window_engaged": self.engaged,
            "replay_searches": len(self.replay),
            "carried_holdout_searches": len(self.carried),
        }


def load_window(
    session: Session,
    *,
    grades: dict[str, int],
    settle: timedelta,
    max_window: int,
    replay: int,
    fallback_version: str,
) -> Window:
    """The window of the next refresh, on the active head (or `fallback_version`)."""
    cutoff = utcnow() - settle
    parent_version = active_version(session=session) or fallback_version
    start = last_window_end(session=session)
    window = load_searches(session, grades=grades, start=start, end=cutoff, limit=max_window)
    replayed: list[LoggedSearch] = []
    carried: list[LoggedSearch] = []
    if start is not None:
        # the newest held-out searches, as many as a window: the split takes the newest first,
        # and older ones, never released, stay out of training until retention drops them
        carried = load_searches(session, grades=grades, end=start, holdout=True, limit=max_window)
        if replay:
            replayed = replay_sample(session, grades=grades, end=start, limit=replay)
    return Window(parent_version, start, cutoff, window, replayed, carried)
