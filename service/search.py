"""One search: encode the query, gather candidates from FAISS channels, let the head rank them."""

from __future__ import annotations

import os
import random
import statistics
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from model.attributes import NEIGHBOUR_POOL, photo_votes
from model.candidates import candidates
from model.filters import filter_values
from model.head import QUERY_TYPES, FusionHead, query_type, search_channels
from model.position_bias import PositionBias, explore_order
from service.embedder import Embedder
from service.encoders import TextEncoder
from service.errors import BadRequest, UnknownFilter
from service.index import CatalogIndex, ProductMeta
from service.query_cache import QueryCache
from storage.keys import content_key


@dataclass(frozen=True, slots=True)
class ActiveHead:
    """The scoring model in service, with the position bias it was trained under. Swapped as one
    reference, never mutated."""

    head: FusionHead
    version: str
    bias: PositionBias = field(default_factory=PositionBias.prior)


@dataclass
class SearchQuery:
    text: str | None = None
    # a decoded photo, or its bytes as uploaded: decoded only when its vectors are not cached, so
    # a repeated upload skips decoding too (a 12 MP photo takes longer to decode than to encode)
    image: Image.Image | bytes | None = None
    image_sha256: str | None = None  # of the photo's bytes (content_key): keys the query cache
    k: int = 20
    filters: dict[str, Any] = field(default_factory=dict)  # raw; validated by the searcher
    user_id: str | None = None


@dataclass(frozen=True, slots=True)
class Hit:
    product: ProductMeta
    score: float
    model_position: int  # rank the model gave it; differs from the shown one when exploring
    propensity: float  # P(examined) at the shown position


@dataclass(frozen=True, slots=True)
class SearchResult:
    search_id: str
    model_version: str
    query_type: str
    hits: list[Hit]
    latency_ms: float  # the whole search, encoders included
    encode_ms: float  # the frozen encoders alone (the floor a search cannot beat; 0 if cached)
    explore: bool
    text_vector: np.ndarray | None  # the frozen query features, logged for the learner
    image_vector: np.ndarray | None
    colour_vector: np.ndarray | None


@torch.inference_mode()
def _encode_text(encoder: TextEncoder, text: str, threads: int) -> np.ndarray:
    torch.set_num_threads(threads)  # per OS thread: the helper's own count
    return encoder.encode([text])[0]


class ThreadChoice:
    """Whether a lone query encodes faster on every free core or on one, learned from its own
    encode times. Two threads usually win (text 11.6 -> 9.8 ms, image 14.4 -> 11.9 ms on 2
    cores), but when something else takes a core (a `fusionrank learner` beside the API, a noisy
    neighbour) a two-thread team waits at every layer's barrier for the thread that was parked,
    and one thread is 3-5x faster. So the choice follows the median of each arm's recent times
    and now and then tries the other arm, so that a freed core is noticed: after `explore_every`
    queries, then twice as long each time the best arm stayed the same (up to `max_every`), so
    that a clearly slower arm costs under 1% of queries. Until the other arm has `min_samples`
    times it is tried every `warmup` queries, so that a service started beside a busy core
    moves to one thread within about a dozen queries rather than sixty. While one thread is
    chosen, a tried all-core encode that beats it is tried again every `warmup` queries: a
    burst of noise (a host that stalls a core for a moment hurts two threads most) can fill the
    all-core window with bad times that doubling intervals would take hundreds of queries to
    age out. The other way round stays slow on purpose: trying one thread more often on a
    noisy host cost image encodes 3 ms at the median in a side-by-side run. State: a few short
    deques per query type."""

    def __init__(
        self,
        *,
        window: int = 7,
        explore_every: int = 16,
        max_every: int = 256,
        warmup: int = 4,
        min_samples: int = 3,
        margin: float = 0.85,
    ) -> None:
        self.margin = margin
        self._window, self._min = window, min_samples
        self._base, self._max, self._warmup = explore_every, max_every, warmup
        self._times: dict[tuple[str, int], deque[float]] = {}
        self._countdown: dict[tuple[str, int], int] = {}
        self._every: dict[tuple[str, int], int] = {}
        self._explored_best: dict[tuple[str, int], int] = {}

    def choose(self, kind: str, free: int) -> int:
        if free <= 1:
            return 1
        key = (kind, free)
        best = self.best(kind, free)
        other = 1 if best == free else free
        left = self._countdown.get(key, self._warmup) - 1
        if left > 0:
            self._countdown[key] = left
            return best
        if len(self._times.get((kind, other), ())) + 1 < self._min:
            self._countdown[key] = self._warmup  # still measuring the other arm
        else:
            every = self._every.get(key, self._base)
            same = self._explored_best.get(key) == best
            every = min(every * 2, self._max) if same else self._base
            self._every[key] = self._countdown[key] = every
        self._explored_best[key] = best
        return other

    def best(self, kind: str, free: int) -> int:
        medians = {
            n: statistics.median(t)
            for n in (free, 1)
            if len(t := self._times.get((kind, n), ())) >= self._min
        }
        if len(medians) < 2:
            return free  # the usual winner, until both arms have been measured
        # one thread must win clearly: where the two are close, noise would flip the choice
        return 1 if medians[1] < self.margin * medians[free] else free

    def observe(self, kind: str, threads: int, ms: float, free: int = 0) -> None:
        """`free`: the cores `choose` chose between for this encode (0: not from `choose`)."""
        chosen = self.best(kind, free) if free > 1 else threads
        self._times.setdefault((kind, threads), deque(maxlen=self._window)).append(ms)
        if threads == free != chosen and ms < statistics.median(self._times[(kind, chosen)]):
            self._countdown[(kind, free)] = self._warmup  # every core is back: confirm it soon
            self._every.pop((kind, free), None)

    def samples(self) -> dict[tuple[str, int], int]:
        """How many recent times each (query type, threads) arm holds."""
        return {arm: len(t) for arm, t in self._times.items()}


def off_the_leader() -> None:
    """One torch thread for the calling thread, for torch work off the event loop (catalog
    writes, head loads): a thread that ran it on every core would lead a second OpenMP team,
    after which every search pays (EncodeThreads.lead). New threads inherit the count the last
    lone search set, so such work must set its own."""
    torch.set_num_threads(1)


class EncodeThreads:
    """torch threads for one query's encoders: the faster of every free core and one while it is
    the only query encoding on the leading thread (ThreadChoice; see `lead` below), one core each
    while several are, so that concurrent queries run side by side instead of fighting over one
    team. torch's thread count is per OS thread, so each search sets its own. `fixed` keeps a
    configured count.

    Background work in the same process (a refresh) reserves cores first: an OpenMP team with
    more threads than there are free cores waits at every barrier for a thread the scheduler
    has parked, and a search runs several times slower.

    Only one OS thread leads a team (`lead`): GNU OpenMP keeps a team of workers for every
    thread that ever ran a region on several threads, and once it manages more threads than
    there are cores, every team stops spinning between layers for the life of the process. One
    lone search on a pool thread after a burst of concurrent ones was enough: lone text encodes
    on the event loop went from 12.1 to 14.0 ms for good (measured in process, twice), and the
    latency benchmark's runs after its throughput phase paid 2-3 ms a search."""

    def __init__(self, cores: int, *, fixed: bool = False) -> None:
        self._cores = max(1, cores)
        self._fixed = fixed
        self._busy = 0
        self._reserved = 0
        self._changes = 0  # claims and reservations so far: did anything overlap an encode?
        self._leader: int | None = None  # the thread whose lone encodes may use every core
        self._lock = threading.Lock()
        self.choice = ThreadChoice()

    def lead(self) -> None:
        """From now on, only the calling thread encodes on more than one core (unless `fixed`);
        lone queries on any other thread use one. Until called, any thread may."""
        self._leader = threading.get_ident()

    def counts(self) -> list[int]:
        """Every torch thread count an encode may be given."""
        return [self._cores] if self._fixed else sorted({1, self._cores})

    @contextmanager
    def claim(self, kind: str = "") -> Iterator[int]:
        """`kind` (the query type) keys the learned choice: text and image encoders differ."""
        with self._lock:
            self._busy += 1
            self._changes += 1
            leads = self._leader in (None, threading.get_ident())
            alone, start = self._busy == 1 and not self._fixed and leads, self._changes
            free = max(1, self._cores - self._reserved)
            if self._fixed:
                n = self._cores
            elif alone:
                n = self.choice.choose(kind, free)
            else:
                n = 1
        torch.set_num_threads(n)
        started = time.perf_counter()
        try:
            yield n
        finally:
            ms = (time.perf_counter() - started) * 1000
            with self._lock:
                self._busy -= 1
                if alone and self._changes == start and free > 1:  # nothing shared the cores
                    self.choice.observe(kind, n, ms, free)

    @contextmanager
    def reserve(self, share: float = 0.5) -> Iterator[int]:
        """Set aside `share` of the cores for background work while searches are served (at
        least one, and one is always left to searches unless there is only one); yields how
        many threads that work should use."""
        n = max(1, min(self._cores - 1, round(self._cores * share)))
        with self._lock:
            self._reserved += n
            self._changes += 1
        try:
            yield n
        finally:
            with self._lock:
                self._reserved -= n
                self._changes += 1


class Searcher:
    def __init__(
        self,
        embedder: Embedder,
        index: CatalogIndex,
        active: ActiveHead,
        *,
        per_channel: int,
        concurrency: int = 1,
        threads: int = 0,
        explore_rate: float = 0.0,
        rng: random.Random | None = None,
        query_cache: int = 0,
    ) -> None:
        """`query_cache`: how many texts, and how many photos, keep their vectors
        (service.query_cache; 0: every query is encoded)."""
        self.embedder = embedder
        self.index = index
        self.active = active
        self.per_channel = per_channel
        self.explore_rate = explore_rate
        self._rng = rng or random.Random()
        # More encodes at once than torch has cores for only makes every one of them slower.
        self._encode_slots = threading.BoundedSemaphore(concurrency)
        self.cores = EncodeThreads(threads or os.cpu_count() or 1, fixed=threads > 0)
        # a composed query's text encoder, beside its image encoder (a thread starts on first use)
        self._text_thread = ThreadPoolExecutor(1, thread_name_prefix="encode-text")
        self.text_cache: QueryCache[np.ndarray] = QueryCache(query_cache)
        self.photo_cache: QueryCache[tuple[np.ndarray, np.ndarray | None]] = QueryCache(query_cache)

    @torch.inference_mode()
    def warm_encoders(self) -> None:
        """Encode a throwaway text and image at every thread count a search may use, before the
        first shopper: the first encodes at a thread count take 2-3x as long (55 and 72 ms
        against 25 for a text and an image, measured), and the choice between counts must not
        learn from them. Call it on the thread that runs lone searches (the event loop): it
        becomes the only one whose encodes use every core (EncodeThreads.lead)."""
        self.cores.lead()
        blank = Image.new("RGB", (224, 224), "white")
        before = torch.get_num_threads()
        try:
            for n in self.cores.counts():
                torch.set_num_threads(n)
                for _ in range(2):
                    self.embedder.text_encoder.encode(["warm up"])
                    self.embedder.image_encoder.encode([blank])
        finally:
            torch.set_num_threads(before)

    def _encode(
        self, text: str | None, image: Image.Image | None, threads: int
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The frozen query vectors, on `threads` torch threads. A composed query given more
        than one runs its two encoders side by side on half of them each: neither makes good
        use of a second core for a single query (on 2 cores, 33.8 against 45.1 ms for both one
        after the other on two threads, measured in process)."""
        te, ie = self.embedder.text_encoder, self.embedder.image_encoder
        if text and image is not None and threads > 1:
            torch.set_num_threads(threads - threads // 2)
            pending = self._text_thread.submit(_encode_text, te, text, threads // 2)
            qv = ie.encode([image])[0]
            return pending.result(), qv
        qt = te.encode([text])[0] if text else None
        qv = ie.encode([image])[0] if image is not None else None
        return qt, qv

    def _vectors(
        self, sq: SearchQuery
    ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None, float]:
        """The query's frozen text, image and colour vectors, from the query cache where it has
        them (a photo given decoded only with its `image_sha256`); the encoders run for the
        rest. Also the milliseconds spent in them (0 when everything was cached)."""
        te, ie = self.embedder.text_encoder, self.embedder.image_encoder
        qt = self.text_cache.get(te.id, sq.text) if sq.text else None
        key = sq.image_sha256
        if isinstance(sq.image, bytes) and key is None:
            key = content_key(sq.image)
        photo = self.photo_cache.get(ie.id, key) if sq.image is not None and key else None
        qv, qc = photo if photo is not None else (None, None)
        text = sq.text if qt is None else None
        image = None
        if sq.image is not None and photo is None:
            image = self.embedder.decode(sq.image) if isinstance(sq.image, bytes) else sq.image
        if not text and image is None:
            return qt, qv, qc, 0.0
        # the thread choice learns from what is encoded, not from what was asked
        with self._encode_slots, self.cores.claim(query_type(bool(text), image is not None)) as n:
            started = time.perf_counter()
            new_t, new_v = self._encode(text, image, n)
            encode_ms = (time.perf_counter() - started) * 1000
        if text and new_t is not None:
            qt = new_t
            self.text_cache.put(te.id, text, qt)
        if image is not None:
            assert new_v is not None
            qv, qc = new_v, self.embedder.colour(image)
            if key:
                self.photo_cache.put(ie.id, key, (qv, qc))
        return qt, qv, qc, encode_ms

    def normalise_filters(self, filters: dict[str, Any]) -> dict[str, list[str]]:
        known = self.index.attribute_names()
        for attr, value in filters.items():
            if attr not in known:
                raise UnknownFilter(
                    f"unknown filter attribute {attr!r}; filterable: {', '.join(sorted(known))}"
                )
            values = value if isinstance(value, list) else [value]
            if not values or not all(isinstance(v, str | int | float | bool) for v in values):
                raise BadRequest(f"filter {attr!r} needs a value or a non-empty list of values")
        return filter_values(filters)

    @torch.inference_mode()
    def search(self, sq: SearchQuery) -> SearchResult:
        started = time.perf_counter()
        active = self.active  # one read: a swap mid-request cannot mix two heads
        filters = self.normalise_filters(sq.filters)
        qt, qv, qc, encode_ms = self._vectors(sq)
        q = active.head.query(
            None if qt is None else torch.from_numpy(qt),
            None if qv is None else torch.from_numpy(qv),
            None if qc is None else torch.from_numpy(qc),
        )
        allowed = self.index.filter_mask(filters) if filters else None
        n = max(self.per_channel, sq.k)
        channels = search_channels(q)
        found = [self.index.search(space, vec.numpy(), n, allowed)[0] for space, vec in channels]
        agree = active.head.attributes
        if agree is not None and agree.neighbours and qv is not None and q.pimage is not None:
            pool = None
            if allowed is None and n == NEIGHBOUR_POOL:  # that channel found them: no 2nd search
                pool = next(
                    rows
                    for (space, vec), rows in zip(channels, found, strict=True)
                    if space == "pimage" and vec is q.pimage
                )
            q.votes = photo_votes(agree, self.index, qv, q.pimage.numpy(), pool)
        rows = np.unique(np.concatenate(found)) if found else np.zeros(0, np.int64)
        hits: list[Hit] = []
        explore = False
        if len(rows):
            idx = self.index
            cands = candidates(idx, rows, active.head, with_image=q.image is not None)
            scores = active.head.score(q, cands).numpy()
            ranked = np.argsort(-scores, kind="stable")[: sq.k]
            shown = list(range(len(ranked)))
            explore = self._rng.random() < self.explore_rate
            if explore:
                shown = explore_order(len(ranked), self._rng)
            hits = [
                Hit(
                    idx.metas[rows[ranked[r]]],
                    float(scores[ranked[r]]),
                    model_position=r + 1,
                    propensity=active.bias.propensity(pos),
                )
                for pos, r in enumerate(shown, start=1)
            ]
        return SearchResult(
            search_id=uuid.uuid4().hex,
            model_version=active.version,
            query_type=QUERY_TYPES[q.type_index],
            hits=hits,
            latency_ms=(time.perf_counter() - started) * 1000,
            encode_ms=encode_ms,
            explore=explore,
            text_vector=qt,
            image_vector=qv,
            colour_vector=qc,
        )
