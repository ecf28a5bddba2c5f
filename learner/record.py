"""A refresh run's record: where its time went, and the detail stored with the run."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from sqlalchemy.orm import Session, sessionmaker

from storage.models import RunStatus
from storage.registry import update_run, utcnow

log = logging.getLogger(__name__)


@dataclass
class RunRecord:
    sessions: sessionmaker[Session]
    run_id: int
    started: float = field(default_factory=time.perf_counter)
    phases: dict[str, float] = field(default_factory=dict)  # phase -> seconds, in the detail
    detail: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._last = self.started

    def lap(self, name: str) -> None:
        """Record the time since the previous lap (or the start) as phase `name`."""
        t = time.perf_counter()
        self.phases[name], self._last = round(t - self._last, 2), t

    def finish(self, status: RunStatus, **fields: Any) -> dict[str, Any]:
        """Store the run's outcome and detail; returns the detail."""
        detail = self.detail
        detail["seconds"] = round(time.perf_counter() - self.started, 2)
        detail["status"] = status
        update_run(
            sessions=self.sessions,
            run_id=self.run_id,
            status=status,
            finished_at=utcnow(),
            detail=jsonable(detail),
            **fields,
        )
        log.info("refresh run %d %s: %s", self.run_id, status, detail.get("reason", ""))
        return detail


def jsonable(x: Any) -> Any:
    """`x` as JSON can store it: string keys, lists, no NaN or infinity (None instead)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, torch.Tensor):
        return x.tolist()
    return x
