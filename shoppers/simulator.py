"""A shopper simulator that drives the real HTTP API: search, look, click, buy, send feedback.

Each simulated shopper draws an intent (shoppers.intents) and reacts to what the service shows:

- position-based examination: position k is looked at with probability k^-eta;
- an examined product is clicked with a probability that grows with its true relevance grade;
- a clicked product goes to the cart, and a cart to a purchase, more often the more relevant it is.

The simulator reports the NDCG@10 of what the service showed against the true grades
(shoppers.grades), which is what the learning loop should raise.
"""

from __future__ import annotations

import base64
import contextlib
import random
import threading
from collections import defaultdict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from tqdm import tqdm

from service.catalog.files import read_catalog
from shoppers.grades import Relevance, ndcg_at_10
from shoppers.intents import DEFAULT_MIX, Shoppers
from shoppers.known_items import KnownItemGrades
from shoppers.phrasings import PHRASINGS, Phrasings

CLICK = (0.03, 0.15, 0.45, 0.85)  # P(click | examined, grade)
CART = (0.0, 0.05, 0.2, 0.45)  # P(add_to_cart | click, grade)
BUY = (0.0, 0.1, 0.3, 0.6)  # P(purchase | add_to_cart, grade)


def reactions(rng: random.Random, shown: Sequence[int], eta: float) -> list[tuple[int, list[str]]]:
    """(position, event types) for each shown product the shopper clicked, given its grade."""
    out = []
    for pos, g in enumerate(shown, start=1):
        if rng.random() >= pos**-eta or rng.random() >= CLICK[g]:
            continue
        types = ["click"]
        if rng.random() < CART[g]:
            types.append("add_to_cart")
            if rng.random() < BUY[g]:
                types.append("purchase")
        out.append((pos, types))
    return out


@dataclass
class SimulationReport:
    sessions: int = 0
    failed: int = 0
    events: int = 0
    by_kind: dict[str, dict[str, float]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "sessions": self.sessions,
            "failed": self.failed,
            "events": self.events,
            "by_kind": self.by_kind,
        }


class Simulator:
    def __init__(
        self,
        url: str,
        catalog: Path,
        *,
        eta: float = 1.0,
        k: int = 20,
        mix: dict[str, float] | None = None,
        photos: Mapping[str, Path] | None = None,
        timeout: float = 60.0,
        send_feedback: bool = True,
        phrasings: Phrasings = PHRASINGS["train"],
    ) -> None:
        self.url = url.rstrip("/")
        rows = read_catalog(catalog)
        self.relevance = Relevance([{"id": r.id, **r.attributes} for r in rows])
        self.shoppers = Shoppers(rows, mix or DEFAULT_MIX, photos, phrasings)
        self.known = KnownItemGrades([r.id for r in rows], [r.title for r in rows])
        self.eta, self.k, self.timeout = eta, k, timeout
        self.send_feedback = send_feedback
        self._local = threading.local()
        self._clients: list[httpx.Client] = []  # one per worker thread, closed after a run
        self._clients_lock = threading.Lock()

    def _client(self) -> httpx.Client:
        if not hasattr(self._local, "client"):
            self._local.client = httpx.Client(base_url=self.url, timeout=self.timeout)
            with self._clients_lock:
                self._clients.append(self._local.client)
        return self._local.client  # type: ignore[no-any-return]

    def close(self) -> None:
        with self._clients_lock:
            for c in self._clients:
                c.close()
            self._clients.clear()
        self._local = threading.local()

    def session(self, seed: int) -> tuple[str, float, int] | None:
        """One shopper: returns (kind, NDCG@10 of what was shown, events), None on failure.
        With `send_feedback` off the shopper only looks (evaluation traffic)."""
        rng = random.Random(seed)
        intent = self.shoppers.draw(rng)
        body: dict[str, object] = {"k": self.k, "user_id": f"sim-{seed % 5000}"}
        if intent.text:
            body["query"] = intent.text
        if intent.photo:
            body["image"] = base64.b64encode(intent.photo.read_bytes()).decode()
        client = self._client()
        r = client.post("/v1/search", json=body)
        if r.status_code != 200:
            return None
        res = r.json()
        if intent.item is not None:
            grades = self.known.grades(intent.item)
        else:
            grades = self.relevance.grades(intent.target)
        shown = [int(grades[self.relevance.pos[h["product_id"]]]) for h in res["results"]]
        events = [
            {
                "event_id": f"{res['search_id']}-{pos}-{t}",
                "search_id": res["search_id"],
                "product_id": res["results"][pos - 1]["product_id"],
                "type": t,
            }
            for pos, types in reactions(rng, shown, self.eta)
            for t in types
        ]
        if events and self.send_feedback:
            fb = client.post("/v1/feedback", json={"events": events})
            if fb.status_code != 202:
                return None
        return intent.kind, ndcg_at_10(shown, grades), len(events)

    def run(
        self, sessions: int, *, seed: int = 0, concurrency: int = 4, progress: bool = True
    ) -> SimulationReport:
        report = SimulationReport()
        ndcg: dict[str, list[float]] = defaultdict(list)
        clicked: dict[str, int] = defaultdict(int)
        with (
            contextlib.closing(self),
            ThreadPoolExecutor(concurrency) as pool,
            tqdm(total=sessions, desc="simulate", unit="session", disable=not progress) as bar,
        ):
            seeds = range(seed * 10_000_000, seed * 10_000_000 + sessions)
            for out in pool.map(self.session, seeds):
                bar.update()
                report.sessions += 1
                if out is None:
                    report.failed += 1
                    continue
                kind, score, n_events = out
                ndcg[kind].append(score)
                clicked[kind] += n_events > 0
                report.events += n_events
        report.by_kind = {
            kind: {
                "sessions": len(v),
                "ndcg@10": float(np.mean(v)),
                "sessions_with_events": clicked[kind] / len(v),
            }
            for kind, v in sorted(ndcg.items())
        }
        return report
