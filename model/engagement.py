"""What shoppers did with each product, as one number the hybrid mix can weigh: its engagement.

A product's engagement is its position-debiased, time-decayed rate of graded events (click,
add to cart, purchase) per examination, smoothed toward the catalog's mean and read as a log
lift over that mean: 0 for a product nobody was shown, positive for one shoppers pick more than
its positions explain. It carries over to queries never seen before, which is what clicks can
teach a catalog without images or attributes. The learner computes the table at each refresh
(learner.engagement) and it is stored and versioned with the head (model.checkpoint).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

PRIOR = 5.0  # examinations' worth of the catalog's mean rate every product starts with


@dataclass
class Engagement:
    """Per product id: (graded events, examinations), both decayed; and the catalog's mean."""

    totals: dict[str, tuple[float, float]]
    mean: float
    # searches whose events are in `totals` (training only; not stored): a search's own
    # events are left out of the features it is trained on
    sources: set[str] = field(default_factory=set)

    def lift(
        self, product_ids: Sequence[str], minus: Mapping[str, tuple[float, float]] | None = None
    ) -> list[float]:
        """Each product's log lift over the mean, without the contributions in `minus`."""
        if self.mean <= 0:
            return [0.0] * len(product_ids)
        out = []
        for pid in product_ids:
            gain, exam = self.totals.get(pid, (0.0, 0.0))
            if minus and pid in minus:
                gain, exam = gain - minus[pid][0], exam - minus[pid][1]
            rate = (max(gain, 0.0) + PRIOR * self.mean) / (max(exam, 0.0) + PRIOR)
            out.append(math.log(rate / self.mean))
        return out

    def to_json(self) -> str:
        return json.dumps(
            {"mean": self.mean, "products": {k: list(v) for k, v in sorted(self.totals.items())}},
            allow_nan=False,
        )

    @classmethod
    def from_json(cls, text: str) -> Engagement:
        data: dict[str, Any] = json.loads(text)
        totals = {str(k): (float(v[0]), float(v[1])) for k, v in data["products"].items()}
        return cls(totals, float(data["mean"]))

    @classmethod
    def of(cls, contributions: Iterable[tuple[str, str, float, float]]) -> Engagement:
        """From (search id, product id, graded events, examination) contributions."""
        totals: dict[str, tuple[float, float]] = {}
        sources: set[str] = set()
        for sid, pid, gain, exam in contributions:
            g, e = totals.get(pid, (0.0, 0.0))
            totals[pid] = (g + gain, e + exam)
            sources.add(sid)
        exams = sum(e for _, e in totals.values())
        mean = sum(g for g, _ in totals.values()) / exams if exams > 0 else 0.0
        return cls(totals, mean, sources)
