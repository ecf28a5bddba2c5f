"""Folding the logs into the query memory (service.search.memory), by one process at a time.

The fold reads the impressions and events it has not counted yet (each is marked in the same
transaction, so one committed late is counted once all the same), counts each shopper once per
query and product (a user id; a key that sends none; else the search itself, as the API without
keys trusts its loopback caller), decays what was there and what came from the past, and
writes the changed rows numbered by fold, which every process's MemoryFollower reads.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from model.query_memory import decay
from service.polling import Poller
from service.search.analytics import DAY_S, tally
from service.search.memory import MemoryKey, memory_key
from storage.analytics import add_tally, counted_events, purge_analytics
from storage.db import transaction
from storage.impressions import query_vectors
from storage.keys import content_key
from storage.memory import (
    FoldRace,
    Given,
    LoggedQuery,
    ShopperKey,
    UnfoldedEvent,
    claim_fold,
    mark_folded,
    pairs,
    purge_memory,
    put_pairs,
    put_queries,
    put_shoppers,
    queries,
    shoppers,
    unfolded_events,
    unfolded_impressions,
)
from storage.registry import acquire_lease, lease_holder, release_lease

log = logging.getLogger(__name__)
LEASE = "query-memory"


def shopper_of(q: LoggedQuery) -> str:
    """Who counts once: the user id, else the key that searched, else the search itself."""
    if q.user_id:
        return f"user:{q.user_id}"
    if q.caller:
        return f"key:{q.caller}"
    return f"search:{q.search_id}"


@dataclass
class _Gift:
    """What one shopper gave one (query, product) in the logs being folded, and when."""

    exam: float = 0.0
    grade: float = 0.0
    types: set[str] = field(default_factory=set)
    at: float = 0.0  # epoch seconds of the newest log it comes from


@dataclass
class _Query:
    key: MemoryKey
    wording: str | None
    text_key: str | None
    image_key: str | None
    searches: float = 0.0  # decayed to the fold's time


@dataclass(frozen=True, kw_only=True)
class FoldConfig:
    grades: Mapping[str, int]
    half_life_days: float
    text_encoder: str
    image_encoder: str
    retention_days: float  # memory nothing was added to for this long is dropped
    max_pairs: int  # and the least recently updated pairs beyond this many
    analytics_days: float  # search analytics older than this are dropped
    batch: int = 2000  # searches per fold transaction (and four times as many events)
    purge_hours: float = 6.0


Deltas = dict[tuple[str, str], tuple[float, float, Counter[str]]]
GiftKey = tuple[str, str, str]  # (query key, product id, shopper)


class MemoryFold:
    """Folds new logs into the memory tables; one process at a time (a lease, and claim_fold
    for a lease that lapsed mid-fold)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        config: FoldConfig,
        *,
        lease_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sessions, self.config, self._clock = sessions, config, clock
        self._ttl = timedelta(seconds=lease_seconds)
        self.holder = lease_holder()
        self._purged = 0.0
        self._poller: Poller | None = None

    def run(self) -> int:
        """Fold everything new, a batch per transaction; returns how many searches and events
        it counted. Does nothing while another process holds the lease."""
        total = 0
        while self._lease():
            if self._clock() - self._purged > self.config.purge_hours * 3600:
                self.purge()
            try:
                n, more = self._fold_once()
            except FoldRace:
                log.warning("another process folded the query memory meanwhile; leaving it")
                return total
            total += n
            if not more:
                return total
        return total

    def _lease(self) -> bool:
        """Take or renew the lease, for one batch."""
        return acquire_lease(sessions=self.sessions, name=LEASE, holder=self.holder, ttl=self._ttl)

    def start(self, seconds: float) -> None:
        """Fold every `seconds` in a background thread."""
        self._poller = Poller("memory-fold", self.run, seconds)
        self._poller.start()

    def stop(self) -> None:
        """Stop folding and let another process fold at once, not when the lease runs out."""
        if self._poller is not None:
            self._poller.stop()
        try:
            release_lease(sessions=self.sessions, name=LEASE, holder=self.holder)
        except Exception:  # a database that is down: the lease runs out by itself
            log.warning("could not release the query memory's lease", exc_info=True)

    def _fold_once(self) -> tuple[int, bool]:
        cfg, now = self.config, self._clock()
        try:
            with transaction(self.sessions) as s:
                fold = claim_fold(session=s)
                imps = unfolded_impressions(session=s, limit=cfg.batch)
                evs = unfolded_events(session=s, limit=4 * cfg.batch)
                if not imps and not evs:
                    raise _Nothing  # and the fold number goes back
                gifts, direct, found = self._gifts(imps, evs, now)
                self._write_pairs(s, self._deltas(s, gifts, direct, now), now, fold)
                self._write_queries(s, found, now, fold)
                counted = counted_events(
                    session=s, searches=[(e.query.search_id, e.query.created_at) for e in evs]
                )
                add_tally(session=s, tally=tally([(q, len(i)) for q, i in imps], evs, counted))
                mark_folded(
                    session=s,
                    searches=[(q.search_id, q.created_at) for q, _ in imps],
                    events=[(e.id, e.query.created_at) for e in evs],
                )
        except _Nothing:
            return 0, False
        return len(imps) + len(evs), len(imps) >= cfg.batch or len(evs) >= 4 * cfg.batch

    def _gifts(
        self,
        imps: list[tuple[LoggedQuery, list[tuple[str, int, float | None]]]],
        evs: list[UnfoldedEvent],
        now: float,
    ) -> tuple[dict[GiftKey, _Gift], Deltas, dict[str, _Query]]:
        """Per (query, product, shopper) the most each gave; the examinations of anonymous
        searches, decayed from when they were shown (a search is shown once, so they need no
        de-duplication); the queries."""
        top = max(self.config.grades.values())
        gifts: dict[GiftKey, _Gift] = {}
        direct: Deltas = {}
        found: dict[str, _Query] = {}

        def query(q: LoggedQuery) -> MemoryKey:
            mk = memory_key(q.query_text, q.image_sha256)
            if mk.key not in found:
                text_key = content_key(q.query_text) if q.query_text else None
                found[mk.key] = _Query(mk, q.query_text, text_key, q.image_sha256)
            return mk

        for q, items in imps:
            mk, at = query(q), q.created_at.timestamp()
            found[mk.key].searches += self._decay(at, now)
            shopper = shopper_of(q)
            for pid, pos, propensity in items:
                exam = propensity if propensity else 1.0 / pos
                if shopper.startswith("search:"):
                    e, g, types = direct.get((mk.key, pid), (0.0, 0.0, Counter()))
                    direct[(mk.key, pid)] = (e + exam * self._decay(at, now), g, types)
                else:
                    gift = gifts.setdefault((mk.key, pid, shopper), _Gift())
                    gift.exam, gift.at = max(gift.exam, exam), max(gift.at, at)
        for ev in evs:
            grade = self.config.grades.get(ev.type)
            if grade is None:  # a type removed from the settings no longer counts
                continue
            mk = query(ev.query)
            gift = gifts.setdefault((mk.key, ev.product_id, shopper_of(ev.query)), _Gift())
            gift.grade = max(gift.grade, grade / top)
            gift.at = max(gift.at, ev.received_at.timestamp())
            gift.types.add(ev.type)
        return gifts, direct, found

    def _deltas(
        self, s: Session, gifts: dict[GiftKey, _Gift], direct: Deltas, now: float
    ) -> Deltas:
        """What each (query, product) gains: (examinations, graded events, new shoppers per event
        type), each shopper's most counted once (until retention forgets it, product by product),
        decayed from when they gave it."""
        cutoff = now - self.config.retention_days * 86400
        before = {
            k: {pid: v for pid, v in given.items() if v[3] >= cutoff}
            for k, given in shoppers(
                session=s, keys=list({(key, who) for key, _, who in gifts})
            ).items()
        }
        out = dict(direct)
        changed: dict[ShopperKey, Given] = {}
        for (key, pid, shopper), g in gifts.items():
            given = before.setdefault((key, shopper), {})
            exam0, grade0, types0, _ = given.get(pid, (0.0, 0.0, [], now))
            d_exam, d_grade = max(g.exam - exam0, 0.0), max(g.grade - grade0, 0.0)
            new_types = g.types - set(types0)
            if not (d_exam or d_grade or new_types):
                continue
            f = self._decay(g.at, now)
            e, gr, types = out.get((key, pid), (0.0, 0.0, Counter()))
            types = types + Counter(dict.fromkeys(new_types, 1))
            out[(key, pid)] = (e + d_exam * f, gr + d_grade * f, types)
            types1 = sorted(set(types0) | g.types)
            given[pid] = [max(g.exam, exam0), max(g.grade, grade0), types1, now]
            changed[(key, shopper)] = given
        put_shoppers(
            session=s,
            rows=[
                {"key": key, "shopper": shopper, "products": given, "at": now}
                for (key, shopper), given in changed.items()
            ],
        )
        return out

    def _decay(self, at: float, now: float) -> float:
        return decay(now - at, self.config.half_life_days)

    def _write_pairs(self, s: Session, deltas: Deltas, now: float, fold: int) -> None:
        stored = pairs(session=s, keys=list(deltas))
        rows = []
        for (key, pid), (d_exam, d_gain, types) in deltas.items():
            exam, gain, events, at = stored.get((key, pid), (0.0, 0.0, {}, now))
            f = self._decay(at, now)
            events = {t: n * f for t, n in events.items()}
            for t, n in types.items():
                events[t] = events.get(t, 0.0) + n
            rows.append(
                {
                    "key": key,
                    "product_id": pid,
                    "exam": exam * f + d_exam,
                    "gain": gain * f + d_gain,
                    "events": events,
                    "at": now,
                    "fold": fold,
                }
            )
        put_pairs(session=s, rows=rows)

    def _write_queries(self, s: Session, found: dict[str, _Query], now: float, fold: int) -> None:
        stored = queries(session=s, keys=list(found))
        cfg = self.config
        text_vecs = query_vectors(
            session=s,
            keys=[q.text_key for q in found.values() if q.key.kind == "text" and q.text_key],
            encoder=cfg.text_encoder,
        )
        image_vecs = query_vectors(
            session=s,
            keys=[q.image_key for q in found.values() if q.key.kind == "image" and q.image_key],
            encoder=cfg.image_encoder,
        )
        rows = []
        for k, q in found.items():
            n, at = stored.get(k, (0.0, now))
            vector, encoder = None, None
            if q.key.kind == "text" and q.text_key in text_vecs:
                vector, encoder = text_vecs[q.text_key], cfg.text_encoder
            elif q.key.kind == "image" and q.image_key in image_vecs:
                vector, encoder = image_vecs[q.image_key], cfg.image_encoder
            rows.append(
                {
                    "key": k,
                    "kind": q.key.kind,
                    "text": q.key.normal,
                    "wording": q.wording,
                    "encoder": encoder,
                    "vector": vector,
                    "searches": n * self._decay(at, now) + q.searches,
                    "at": now,
                    "fold": fold,
                }
            )
        put_queries(session=s, rows=rows)

    def purge(self) -> int:
        """Drop the memory nobody added to within the retention period, the least recently
        updated pairs beyond the cap (followers drop them at their next reload), and analytics
        past theirs."""
        cfg, now = self.config, self._clock()
        with transaction(self.sessions) as s:
            gone = purge_memory(
                session=s, before=now - cfg.retention_days * 86400, max_pairs=cfg.max_pairs
            )
            purge_analytics(session=s, before_day=int(now // DAY_S - cfg.analytics_days))
        self._purged = now
        if gone:
            log.info("query memory: dropped %d pairs", gone)
        return gone


class _Nothing(Exception):
    """Nothing new to fold: the transaction rolls back, the fold number stays."""
