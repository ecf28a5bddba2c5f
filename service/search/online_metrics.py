"""Online metrics on live traffic, per model version, with river: rolling click-through rate,
rolling click MRR and purchase rate, and an ADWIN drift detector on the click-through stream.

A search is scored once its outcome is known: `settle_seconds` after it was shown (feedback
normally arrives within that), or earlier when the pending set is full. Memory is bounded: at
most `max_pending` open searches, `window` searches per rolling metric, `max_versions` versions
(the least recently served one is dropped). Each process sees its own traffic only.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from river import drift, stats, utils


@dataclass
class _Open:
    version: str
    shown_at: float
    first_click: int | None = None
    purchased: bool = False


@dataclass
class _VersionStats:
    window: int
    ctr: Any = field(init=False)  # river.utils.Rolling over stats.Mean
    mrr: Any = field(init=False)
    purchase: Any = field(init=False)
    adwin: drift.ADWIN = field(default_factory=lambda: drift.ADWIN(delta=0.002))
    searches: int = 0
    drifts: int = 0

    def __post_init__(self) -> None:
        self.ctr = utils.Rolling(stats.Mean, window_size=self.window)
        self.mrr = utils.Rolling(stats.Mean, window_size=self.window)
        self.purchase = utils.Rolling(stats.Mean, window_size=self.window)


class OnlineMetrics:
    def __init__(
        self,
        *,
        purchase_type: str = "purchase",
        window: int = 1000,
        settle_seconds: float = 60.0,
        max_pending: int = 50_000,
        max_versions: int = 8,
        on_drift: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.purchase_type, self.window, self.settle = purchase_type, window, settle_seconds
        self.max_pending, self.max_versions = max_pending, max_versions
        self.on_drift, self.clock = on_drift, clock
        self._open: OrderedDict[str, _Open] = OrderedDict()
        self._versions: OrderedDict[str, _VersionStats] = OrderedDict()
        self._lock = threading.Lock()

    def shown(self, search_id: str, version: str) -> None:
        with self._lock:
            self._open[search_id] = _Open(version, self.clock())
            drifted = self._settle_locked()
        self._notify(drifted)

    def event(self, search_id: str, position: int, type_: str) -> None:
        with self._lock:
            s = self._open.get(search_id)
            if s is None:  # shown by another process, or already scored
                return
            if type_ == self.purchase_type:
                s.purchased = True
            if s.first_click is None or position < s.first_click:
                s.first_click = position

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            drifted = self._settle_locked()
            out = {
                "window": self.window,
                "settle_seconds": self.settle,
                "pending_searches": len(self._open),
                "versions": {
                    v: {
                        "searches": st.searches,
                        "ctr": st.ctr.get(),
                        "click_mrr": st.mrr.get(),
                        "purchase_rate": st.purchase.get(),
                        "drifts": st.drifts,
                    }
                    for v, st in self._versions.items()
                },
            }
        self._notify(drifted)
        return out

    def _notify(self, drifted: list[str]) -> None:
        """Outside the lock: the callback may be slow (it must not block a request for long)."""
        if self.on_drift is not None:
            for version in drifted:
                self.on_drift(version)

    def _settle_locked(self) -> list[str]:
        """Score every search past its settle time; returns the versions that drifted."""
        now = self.clock()
        drifted: list[str] = []
        while self._open:
            sid, s = next(iter(self._open.items()))
            if now - s.shown_at < self.settle and len(self._open) <= self.max_pending:
                break
            del self._open[sid]
            if self._score_locked(s):
                drifted.append(s.version)
        return drifted

    def _score_locked(self, s: _Open) -> bool:
        st = self._versions.get(s.version)
        if st is None:
            st = self._versions[s.version] = _VersionStats(self.window)
            while len(self._versions) > self.max_versions:
                self._versions.popitem(last=False)
        self._versions.move_to_end(s.version)
        clicked = s.first_click is not None
        st.searches += 1
        st.ctr.update(float(clicked))
        st.mrr.update(1.0 / s.first_click if s.first_click else 0.0)
        st.purchase.update(float(s.purchased))
        st.adwin.update(float(clicked))
        if st.adwin.drift_detected:
            st.drifts += 1
            return True
        return False
