"""The live query memory (model.query_memory): keyed like the lexical channel, folded from the
logs by one process, followed by every process.

The fold reads impressions and events a few seconds after they are committed, counts each
shopper once per query and product (a user id; a key that sends none; else the search itself,
as the API without keys trusts its loopback caller), decays what was there and writes the
changed rows numbered by fold. Every process, replicas included, reads the rows of newer folds
every `memory_poll_seconds`: a product distinct shoppers keep buying for a query rises within
seconds, through SQL alone.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from model.query_memory import QueryMemory
from service.catalog.tokens import fold as fold_text
from service.catalog.tokens import query_terms
from storage.db import transaction
from storage.impressions import query_vectors
from storage.keys import content_key
from storage.memory import (
    Cursor,
    LoggedQuery,
    ShopperKey,
    changed_pairs,
    changed_queries,
    cursor,
    new_events,
    new_impressions,
    pairs,
    purge_memory,
    put_pairs,
    put_queries,
    put_shoppers,
    queries,
    set_cursor,
    shoppers,
)
from storage.registry import acquire_lease, release_lease

log = logging.getLogger(__name__)
LEASE = "query-memory"
# Impressions reach SQL within the writer's flush interval (200 ms): the fold reads only what
# is older than this, so it does not pass over a batch still being committed.
LAG = timedelta(seconds=3)


@dataclass(frozen=True, slots=True)
class MemoryKey:
    key: str  # sha256 of `normal`
    kind: str  # text | image | composed
    normal: str  # the normal form: lexical terms, sorted; photo:<sha256> for a photo


def memory_key(text: str | None, image_sha256: str | None) -> MemoryKey:
    """A query's memory key: its lexical terms (case, accents, plurals and units folded, as the
    lexical channel reads them), in any order, and for a photo its content."""
    words = ""
    if text:
        words = " ".join(sorted(query_terms(text))) or " ".join(fold_text(text).split())
    if image_sha256:
        normal = f"photo:{image_sha256}" + (f" {words}" if words else "")
        kind = "composed" if words else "image"
    else:
        normal, kind = words, "text"
    return MemoryKey(content_key(normal), kind, normal)


def shopper_of(q: LoggedQuery) -> str:
    """Who counts once: the user id, else the key that searched, else the search itself."""
    if q.user_id:
        return f"user:{q.user_id}"
    if q.caller:
        return f"key:{q.caller}"
    return f"search:{q.search_id}"


@dataclass
class _Gift:
    """What one shopper gave one (query, product) in the logs being folded."""

    exam: float = 0.0
    grade: float = 0.0
    types: set[str] = field(default_factory=set)


@dataclass
class _Query:
    key: MemoryKey
    wording: str | None
    text_key: str | None
    image_key: str | None
    searches: int = 0


@dataclass(frozen=True, kw_only=True)
class FoldConfig:
    grades: Mapping[str, int]
    half_life_days: float
    text_encoder: str
    image_encoder: str
    retention_days: float  # memory nothing was added to for this long is dropped
    max_pairs: int  # and the least recently updated pairs beyond this many
    batch: int = 2000  # searches per fold transaction (and four times as many events)
    purge_hours: float = 6.0


class MemoryFold:
    """Folds new logs into the memory tables; one process at a time (a lease)."""

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
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._purged = 0.0

    def run(self) -> int:
        """Fold everything new (a batch per transaction); returns how many searches and
        events it read. Does nothing while another process holds the lease."""
        if not acquire_lease(sessions=self.sessions, name=LEASE, holder=self.holder, ttl=self._ttl):
            return 0
        if self._clock() - self._purged > self.config.purge_hours * 3600:
            self.purge()
        total = 0
        while True:
            n, more = self._fold_once()
            total += n
            if not more:
                return total

    def close(self) -> None:
        release_lease(sessions=self.sessions, name=LEASE, holder=self.holder)

    def _fold_once(self) -> tuple[int, bool]:
        cfg = self.config
        now = self._clock()
        until = datetime.fromtimestamp(now, UTC) - LAG
        with transaction(self.sessions) as s:
            c = cursor(session=s)
            imps = new_impressions(
                session=s, after=c.impressions_until, until=until, limit=cfg.batch
            )
            evs = new_events(session=s, after=c.events_until, until=until, limit=4 * cfg.batch)
            if not imps and not evs:
                return 0, False
            gifts, direct, found = self._gifts(imps, evs)
            fold = c.fold + 1
            pair_delta = self._deltas(s, gifts, direct, now)
            self._write_pairs(s, pair_delta, now, fold)
            self._write_queries(s, found, now, fold)
            # up to the last time read, not `until`: a batch committed late but stamped after
            # the last one read is still ahead of the cursor
            read_imp = imps[-1][0].created_at if imps else c.impressions_until
            read_ev = evs[-1][0] if evs else c.events_until
            set_cursor(session=s, c=Cursor(read_imp, read_ev, fold))
        more = len(imps) >= cfg.batch or len(evs) >= 4 * cfg.batch
        return len(imps) + len(evs), more

    def _gifts(
        self,
        imps: list[tuple[LoggedQuery, list[tuple[str, int, float | None]]]],
        evs: list[tuple[datetime, LoggedQuery, str, str]],
    ) -> tuple[dict[ShopperKey, _Gift], dict[tuple[str, str], float], dict[str, _Query]]:
        """Per (query, product, identified shopper) the most each gave; the examinations of
        anonymous searches, which need no de-duplication (a search is shown once); the queries."""
        top = max(self.config.grades.values())
        gifts: dict[ShopperKey, _Gift] = {}
        direct: dict[tuple[str, str], float] = defaultdict(float)
        found: dict[str, _Query] = {}

        def query(q: LoggedQuery) -> MemoryKey:
            mk = memory_key(q.query_text, q.image_sha256)
            if mk.key not in found:
                text_key = content_key(q.query_text) if q.query_text else None
                found[mk.key] = _Query(mk, q.query_text, text_key, q.image_sha256)
            return mk

        for q, items in imps:
            mk = query(q)
            found[mk.key].searches += 1
            shopper = shopper_of(q)
            anonymous = shopper.startswith("search:")
            for pid, pos, propensity in items:
                exam = propensity if propensity else 1.0 / pos
                if anonymous:
                    direct[(mk.key, pid)] += exam
                else:
                    g = gifts.setdefault((mk.key, pid, shopper), _Gift())
                    g.exam = max(g.exam, exam)
        for _, q, pid, etype in evs:
            grade = self.config.grades.get(etype)
            if grade is None:  # a type removed from the settings no longer counts
                continue
            mk = query(q)
            g = gifts.setdefault((mk.key, pid, shopper_of(q)), _Gift())
            g.grade = max(g.grade, grade / top)
            g.types.add(etype)
        return gifts, direct, found

    def _deltas(
        self,
        s: Session,
        gifts: dict[ShopperKey, _Gift],
        direct: dict[tuple[str, str], float],
        now: float,
    ) -> dict[tuple[str, str], tuple[float, float, Counter[str]]]:
        """What each (query, product) gains: (examinations, graded events, new shoppers per event
        type), each shopper's most counted once ever (until retention forgets them)."""
        before = shoppers(session=s, keys=list(gifts))
        out: dict[tuple[str, str], tuple[float, float, Counter[str]]] = {
            k: (v, 0.0, Counter()) for k, v in direct.items()
        }
        rows = []
        for (key, pid, shopper), g in gifts.items():
            exam0, grade0, types0 = before.get((key, pid, shopper), (0.0, 0.0, ""))
            seen = set(filter(None, types0.split(",")))
            d_exam, d_grade = max(g.exam - exam0, 0.0), max(g.grade - grade0, 0.0)
            new_types = g.types - seen
            if not (d_exam or d_grade or new_types):
                continue
            e, gr, types = out.get((key, pid), (0.0, 0.0, Counter()))
            types.update(new_types)
            out[(key, pid)] = (e + d_exam, gr + d_grade, types)
            rows.append(
                {
                    "key": key,
                    "product_id": pid,
                    "shopper": shopper[:200],
                    "exam": max(g.exam, exam0),
                    "grade": max(g.grade, grade0),
                    "types": ",".join(sorted(seen | g.types)),
                    "at": now,
                }
            )
        put_shoppers(session=s, rows=rows)
        return out

    def _decay(self, at: float, now: float) -> float:
        return 0.5 ** (max(now - at, 0.0) / (self.config.half_life_days * 86400))

    def _write_pairs(
        self,
        s: Session,
        deltas: dict[tuple[str, str], tuple[float, float, Counter[str]]],
        now: float,
        fold: int,
    ) -> None:
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
        new = [q for k, q in found.items() if k not in stored]
        text_vecs = query_vectors(
            session=s,
            keys=[q.text_key for q in new if q.key.kind == "text" and q.text_key],
            encoder=self.config.text_encoder,
        )
        image_vecs = query_vectors(
            session=s,
            keys=[q.image_key for q in new if q.key.kind == "image" and q.image_key],
            encoder=self.config.image_encoder,
        )
        rows = []
        for k, q in found.items():
            n, at = stored.get(k, (0.0, now))
            vector = None
            if q.key.kind == "text" and q.text_key:
                vector = text_vecs.get(q.text_key)
            elif q.key.kind == "image" and q.image_key:
                vector = image_vecs.get(q.image_key)
            rows.append(
                {
                    "key": k,
                    "kind": q.key.kind,
                    "text": q.key.normal,
                    "wording": q.wording,
                    "vector": vector,
                    "searches": n * self._decay(at, now) + q.searches,
                    "at": now,
                    "fold": fold,
                }
            )
        put_queries(session=s, rows=rows)

    def purge(self) -> int:
        """Drop the memory nobody added to within the retention period, and the least recently
        updated pairs beyond the cap (a process that followed them keeps them until it starts
        again)."""
        cfg, now = self.config, self._clock()
        with transaction(self.sessions) as s:
            gone = purge_memory(
                session=s, before=now - cfg.retention_days * 86400, max_pairs=cfg.max_pairs
            )
        self._purged = now
        if gone:
            log.info("query memory: dropped %d pairs", gone)
        return gone


class MemoryFollower:
    """Keeps one process's QueryMemory up to date with the folds any process commits. It loads
    everything afresh every `reload_hours`, so what retention dropped leaves this process too."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        memory: QueryMemory,
        *,
        reload_hours: float = 6.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sessions, self.memory, self._clock = sessions, memory, clock
        self.reload_s = reload_hours * 3600
        self.fold = 0
        self._loaded = clock()

    def poll(self) -> int:
        """Apply the rows of folds newer than the last one seen; returns how many."""
        if self.fold and self._clock() - self._loaded > self.reload_s:
            fresh = MemoryFollower(self.sessions, QueryMemory(self.memory.config, self._clock))
            n = fresh.poll()
            self.memory.adopt(fresh.memory)
            self.fold, self._loaded = fresh.fold, self._clock()
            return n
        n, last = 0, self.fold
        with self.sessions() as s:
            for key, kind, text, vector, searches in changed_queries(session=s, after_fold=last):
                vec = None if vector is None else np.frombuffer(vector, dtype=np.float32)
                self.memory.put_query(key, kind, text, vec, searches)
            for key, pid, gain, exam, at, fold in changed_pairs(session=s, after_fold=last):
                self.memory.put_pair(key, pid, gain, exam, at)
                self.fold = max(self.fold, fold)
                n += 1
        return n
