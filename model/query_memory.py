"""The query memory: what the shoppers of each query did with each product, read as a lift.

For every normalised query and product the memory holds examinations (each shown position's
examination probability, from the fitted position bias) and graded events (grade over the
highest grade), each shopper counted once and both decayed with a half-life. A product's rate
for a query is its graded events per examination, smoothed toward its rate over every other
query, itself smoothed toward the catalog's; the hybrid mix reads the log of that rate over the
product's elsewhere, so a query with no memory gets 0 for every product and changes nothing,
and a product shoppers choose for this query alone still rises for it.

A query with little evidence of its own borrows from the logged queries nearest to it (by its
frozen vector, above a similarity floor), weighted by similarity, and less the more it has of
its own. Text queries borrow from texts; a photo from near-duplicate photos (a higher floor);
a composed query only from itself, since its words change what the photo asks for.

Values are kept scaled to one reference time (value * 2^((at - t0) / half_life)), so sums over
pairs updated at different times add up, and a rate, a ratio of two sums, needs no decay.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import faiss
import numpy as np


def decay(age_s: float, half_life_days: float) -> float:
    """What a value `age_s` seconds old is worth now."""
    return 0.5 ** (max(age_s, 0.0) / (half_life_days * 86400))


@dataclass(frozen=True, kw_only=True)
class MemoryConfig:
    """How the memory is read: the first four fields are user settings (service.config)."""

    half_life_days: float
    prior: float  # examinations' worth of the product's rate elsewhere a (query, product) starts
    similar_floor: float  # least cosine of a text query another one borrows from
    photo_floor: float  # least cosine of a near-duplicate photo
    similar_k: int = 5  # most neighbours borrowed from
    borrow_until: float = 10.0  # a query with this many examinations of its own borrows half
    product_prior: float = 5.0  # examinations' worth of the catalog's rate a product starts with
    channel: int = 20  # most products the memory adds to a query's candidates


Sums = dict[str, tuple[float, float]]  # product id -> scaled (gain, exam)


@dataclass(frozen=True, slots=True)
class Evidence:
    """One query's memory as a search reads it: copies, so the follower may write meanwhile."""

    own: Sums
    borrowed: Sums  # from similar queries, weighted by similarity and by how little is own
    lent: Sums  # the same unweighted: the prior leaves it out, as it leaves out `own`
    neighbours: list[tuple[str, float]]  # (normal form, similarity) of the queries borrowed from
    t0: float  # the reference time its values are scaled to
    now: float  # what a scaled value is worth now
    # whether anyone chose anything: shown and never chosen says the query's shoppers did not
    # engage (monitoring probes, shoppers who only look), not which product is better, so such
    # evidence lifts nothing; it still says what they have seen (deep exploration)
    chosen: bool

    def own_exam_of(self, product_id: str) -> float:
        """The query's own examinations of the product, decayed to now."""
        return self.own.get(product_id, (0.0, 0.0))[1] * self.now


class Lift(NamedTuple):
    """A product's memory term and what it rests on, for `explain` (a tuple: a search builds
    dozens, and a frozen dataclass takes three times as long to build)."""

    lift: float
    events: float  # graded events, decayed to now (own plus borrowed)
    exam: float  # examinations, decayed to now
    rate: float  # smoothed events per examination
    product_rate: float  # what the product gets for every other query (the prior)
    borrowed_share: float  # of the examinations, the part from similar queries


NO_LIFT = Lift(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)  # a product the query's shoppers never saw


@dataclass
class _Neighbours:
    """Logged queries of one kind by frozen vector: HNSW, so a search stays well under a
    millisecond with a hundred thousand logged queries."""

    floor: float
    index: faiss.Index | None = None
    keys: list[str] = field(default_factory=list)

    def add(self, key: str, vector: np.ndarray) -> None:
        if self.index is None:
            self.index = faiss.IndexHNSWFlat(len(vector), 16, faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efSearch = 64
        if len(vector) != self.index.d:  # another encoder's: the follower keeps only ours
            return
        self.index.add(np.ascontiguousarray(vector[None], dtype=np.float32))
        self.keys.append(key)

    def near(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        if self.index is None or not self.keys or len(vector) != self.index.d:
            return []
        sims, ids = self.index.search(np.ascontiguousarray(vector[None], dtype=np.float32), k)
        return [
            (self.keys[i], float(s))
            for s, i in zip(sims[0], ids[0], strict=True)
            if i >= 0 and s >= self.floor
        ]


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


class QueryMemory:
    """The memory one process reads, filled by whoever follows the store (service.search.memory)
    or, in tests, directly. Thread safe: one follower writes while searches read."""

    def __init__(self, config: MemoryConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = clock
        self._t0 = clock()
        self._lock = threading.Lock()
        self.pairs: dict[str, Sums] = {}  # query key -> its products
        self.queries: dict[str, str] = {}  # query key -> normal form
        self._products: Sums = {}  # per product, over every query
        self._total = (0.0, 0.0)
        self._near = {
            "text": _Neighbours(config.similar_floor),
            "image": _Neighbours(config.photo_floor),
        }
        self._has_vector: set[str] = set()

    # ---- writing --------------------------------------------------------------------------
    def _scale(self, at: float) -> float:
        return 2.0 ** ((at - self._t0) / (self.config.half_life_days * 86400))

    def put_pair(self, key: str, product_id: str, gain: float, exam: float, at: float) -> None:
        """Set a pair's decayed values as of `at` (epoch seconds), replacing what it held."""
        with self._lock:
            s = self._scale(at)
            new = (gain * s, exam * s)
            by_product = self.pairs.setdefault(key, {})
            old = by_product.get(product_id, (0.0, 0.0))
            by_product[product_id] = new
            g, e = self._products.get(product_id, (0.0, 0.0))
            self._products[product_id] = (g + new[0] - old[0], e + new[1] - old[1])
            self._total = (
                self._total[0] + new[0] - old[0],
                self._total[1] + new[1] - old[1],
            )

    def put_query(self, key: str, kind: str, text: str, vector: np.ndarray | None) -> None:
        with self._lock:
            self.queries[key] = text
            if vector is not None and kind in self._near and key not in self._has_vector:
                self._near[kind].add(key, _unit(vector))
                self._has_vector.add(key)

    def adopt(self, other: QueryMemory) -> None:
        """Take over everything `other` holds at once (a follower's fresh reload)."""
        with self._lock:
            self._t0, self.pairs, self.queries = other._t0, other.pairs, other.queries
            self._products, self._total = other._products, other._total
            self._near, self._has_vector = other._near, other._has_vector

    def __len__(self) -> int:
        return sum(len(p) for p in self.pairs.values())

    # ---- reading --------------------------------------------------------------------------
    def decay(self, at: float) -> float:
        """What a value as of `at` (epoch seconds) is worth now."""
        return decay(self._clock() - at, self.config.half_life_days)

    def recall(self, key: str, kind: str, vector: np.ndarray | None) -> Evidence | None:
        """The query's own memory and, while it has little, what similar queries lend; None
        when the memory has nothing for it (the search then skips the memory entirely)."""
        if not self._total[1]:
            return None
        cfg = self.config
        with self._lock:
            t0 = self._t0
            now = 1.0 / self._scale(self._clock())
            own = dict(self.pairs.get(key, {}))
            lend = cfg.borrow_until / (cfg.borrow_until + sum(e for _, e in own.values()) * now)
            near = self._near.get(kind)
            found = []
            if vector is not None and near is not None and lend > 0.05:
                found = near.near(_unit(vector), cfg.similar_k + 1)
            borrowed: Sums = {}
            lent: Sums = {}
            neighbours = []
            for other, sim in found:
                pairs = self.pairs.get(other)
                if other == key or not pairs:
                    continue
                w = lend * (sim - near.floor) / (1.0 - near.floor + 1e-9)  # type: ignore[union-attr]
                neighbours.append((self.queries.get(other, other), sim))
                for pid, (g, e) in pairs.items():
                    bg, be = borrowed.get(pid, (0.0, 0.0))
                    borrowed[pid] = (bg + w * g, be + w * e)
                    lg, le = lent.get(pid, (0.0, 0.0))
                    lent[pid] = (lg + g, le + e)
        if not own and not borrowed:
            return None
        chosen = any(g for g, _ in own.values()) or any(g for g, _ in borrowed.values())
        return Evidence(own, borrowed, lent, neighbours, t0, now, chosen)

    def lifts(self, evidence: Evidence, product_ids: Sequence[str]) -> dict[str, Lift]:
        """The lift of each of these products the query's shoppers saw (the many others: 0),
        read at one moment, so what a search ranks by and what it explains agree."""
        if not evidence.chosen:
            return {}
        own, borrowed, read = evidence.own, evidence.borrowed, self._reader(evidence)
        return {pid: read(pid) for pid in product_ids if pid in own or pid in borrowed}

    def lift(self, evidence: Evidence, product_id: str) -> Lift:
        return self.lifts(evidence, [product_id]).get(product_id, NO_LIFT)

    def _reader(self, evidence: Evidence) -> Callable[[str], Lift]:
        """The lift of a product for this evidence: what all products share is worked out once,
        as a search reads dozens."""
        cfg = self.config
        # the evidence's values in this memory's scale, should a reload have moved it since
        to_here = 2.0 ** ((evidence.t0 - self._t0) / (cfg.half_life_days * 86400))
        now = evidence.now / to_here
        total_g, total_e = self._total
        catalog = total_g / total_e if total_e > 0 else 0.0
        own, borrowed, lent = evidence.own, evidence.borrowed, evidence.lent
        products, none, a, b = self._products, (0.0, 0.0), cfg.prior, cfg.product_prior

        def read(pid: str) -> Lift:
            pg, pe = products.get(pid, none)
            og, oe = own.get(pid, none)
            bg, be = borrowed.get(pid, none)
            lg, le = lent.get(pid, none)
            # own and lent are in the evidence's scale: to_here brings them to this one
            rest_g = max(pg - (og + lg) * to_here, 0.0) * now
            rest_e = max(pe - (oe + le) * to_here, 0.0) * now
            product = (rest_g + b * catalog) / (rest_e + b)
            f = to_here * now
            g, e = (og + bg) * f, (oe + be) * f
            if product <= 0 or e <= 0:
                return Lift(0.0, g, e, product, product, 0.0)
            rate = (g + a * product) / (e + a)
            return Lift(math.log(rate / product), g, e, rate, product, be * f / e)

        return read

    def favoured(self, evidence: Evidence) -> list[str]:
        """The products the memory lifts most for the query, best first: a channel of their
        own, so a product shoppers keep choosing stays a candidate whatever retrieval finds.
        Only products with events can be lifted, so only they are scored."""
        chosen = {p for p, (g, _) in evidence.own.items() if g > 0}
        chosen |= {p for p, (g, _) in evidence.borrowed.items() if g > 0}
        read = self._reader(evidence)
        scored = [(read(pid).lift, pid) for pid in chosen]
        return [
            pid for lift, pid in sorted(scored, reverse=True)[: self.config.channel] if lift > 0
        ]
