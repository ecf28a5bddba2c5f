"""One search: encode the query, retrieve its pool (model.retrieval), let the head rank it."""

from __future__ import annotations

import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from model.attributes import NEIGHBOUR_POOL, photo_votes
from model.candidates import candidates
from model.filters import filter_values
from model.head import (
    QUERY_TYPES,
    FusionHead,
    Query,
)
from model.hybrid import mix_features
from model.position_bias import PositionBias, explore_deeper, explore_order
from model.query_memory import NO_LIFT, Evidence, QueryMemory
from model.retrieval import Pool, depth, retrieve
from service.catalog.index import CatalogIndex
from service.encoding.embedder import Embedder
from service.errors import BadRequest, NoProductImages, UnknownFilter
from service.search.explain import explain, memory_detail
from service.search.memory import memory_key
from service.search.query_cache import QueryCache
from storage.keys import content_key
from storage.products import ProductRecord

# Deep exploration picks from the products ranked just below the page: promising by the model's
# own ranking, and yet unseen for the query.
DEEPER = 10


def _unseen(recalled: Evidence | None, product_id: str) -> bool:
    """Whether shoppers of the query have had less than one expected look at the product."""
    return recalled is None or recalled.own_exam_of(product_id) < 1.0


def _unknown_attribute(what: str, attr: str, known: set[str]) -> UnknownFilter:
    """The error for a filter or facet on an attribute no product has, naming those there are."""
    there = ", ".join(sorted(known)) or "none (this catalog has no attributes)"
    return UnknownFilter(f"unknown {what} attribute {attr!r}; filterable: {there}")


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
    explain: bool = False  # say per hit what its score is made of (Hit.explanation)
    facets: list[str] = field(default_factory=list)  # attributes to count over the whole pool


@dataclass(frozen=True, slots=True)
class Hit:
    product: ProductRecord
    score: float
    model_position: int  # rank the model gave it; differs from the shown one when exploring
    propensity: float  # P(examined) at the shown position
    memory: float = 0.0  # the query memory's lift it was ranked with (logged for the learner)
    explanation: dict[str, Any] | None = None  # with SearchQuery.explain: see explain()


@dataclass(frozen=True, slots=True)
class SearchResult:
    search_id: str
    model_version: str
    query_type: str
    hits: list[Hit]
    latency_ms: float  # the whole search, encoders included
    encode_ms: float  # the frozen encoders alone (the floor a search cannot beat; 0 if cached)
    retrieve_ms: float  # candidates from every channel
    rank_ms: float  # the head scoring them
    explore: bool
    text_vector: np.ndarray | None  # the frozen query features, logged for the learner
    image_vector: np.ndarray | None
    colour_vector: np.ndarray | None
    # with SearchQuery.facets: per attribute, (value, count) over every candidate, not the page
    facets: dict[str, list[tuple[str, int]]] | None = None


class Searcher:
    def __init__(
        self,
        embedder: Embedder,
        index: CatalogIndex,
        active: ActiveHead,
        *,
        per_channel: int,
        concurrency: int = 1,
        encode_beside: bool = False,
        explore_rate: float = 0.0,
        explore_deep_rate: float = 0.0,
        rng: random.Random | None = None,
        query_cache: int = 0,
        memory: QueryMemory | None = None,
    ) -> None:
        """`encode_beside`: a composed query's text encodes on a thread of its own beside the
        photo (service.threads.ThreadPolicy says when that pays); `query_cache`: how many texts,
        and how many photos, keep their vectors
        (service.search.query_cache; 0: every query is encoded); `memory`: what shoppers of
        each query did (service.search.memory keeps it live; None: no memory)."""
        self.embedder = embedder
        self.index = index
        self.active = active
        self.per_channel = per_channel
        self.explore_rate = explore_rate
        self.explore_deep_rate = explore_deep_rate
        self.memory = memory
        self._rng = rng or random.Random()
        # More encodes at once than the encoders have cores for only makes each one slower.
        self._encode_slots = threading.BoundedSemaphore(concurrency)
        self._beside = (
            ThreadPoolExecutor(1, thread_name_prefix="encode-beside") if encode_beside else None
        )
        self.text_cache: QueryCache[np.ndarray] = QueryCache(query_cache)
        self.photo_cache: QueryCache[tuple[np.ndarray, np.ndarray | None]] = QueryCache(query_cache)

    def close(self) -> None:
        if self._beside is not None:
            self._beside.shutdown(wait=True)

    def warm_encoders(self) -> None:
        """Encode throwaway text, photo and composed queries before the first shopper: an
        encoder's first queries are slower (its first allocations)."""
        blank = Image.new("RGB", (224, 224), "white")
        for _ in range(2):
            self._encode("warm up", None)
            self._encode(None, blank)
            self._encode("warm up", blank)

    def _encode(
        self, text: str | None, image: Image.Image | None
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The frozen query vectors; a composed query's two encoders run side by side."""
        te, ie = self.embedder.text_encoder, self.embedder.image_encoder
        if text and image is not None and self._beside is not None:
            pending = self._beside.submit(te.encode, [text])
            qv = ie.encode([image])[0]
            return pending.result()[0], qv
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
        with self._encode_slots:
            started = time.perf_counter()
            new_t, new_v = self._encode(text, image)
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

    def _retrieve(
        self,
        q: Query,
        sq: SearchQuery,
        head: FusionHead,
        qv: np.ndarray | None,
        allowed: np.ndarray | None,
        recalled: Evidence | None,
    ) -> Pool:
        """The query's pool (model.retrieval), with the products the memory favours for it.
        Sets the photo's neighbour votes when the head reads them."""
        n = depth(self.per_channel, sq.k)
        extra = None
        if recalled is not None and self.memory is not None:
            extra = [self._memory_rows(self.memory.favoured(recalled), allowed)]
        pool = retrieve(self.index, q, [sq.text], n=n, allowed=allowed, extra=extra)[0]
        agree = head.attributes
        if agree is not None and agree.neighbours and qv is not None and q.pimage is not None:
            # the photo's channel found its neighbour pool when it searched as deep, unfiltered
            near = pool.photo_rows if allowed is None and n == NEIGHBOUR_POOL else None
            q.votes = photo_votes(agree, self.index, qv, q.pimage.numpy(), near)
        return pool

    def _memory_rows(self, product_ids: list[str], allowed: np.ndarray | None) -> np.ndarray:
        """The index rows of these products that exist and the search's filters allow."""
        found = [self.index.row_of.get(p, -1) for p in product_ids]
        rows = np.array([r for r in found if r >= 0], dtype=np.int64)
        if allowed is None or not len(rows):
            return rows
        rows = rows[rows < len(allowed)]  # a product re-added since the mask was made: not yet
        return rows[allowed[rows]]

    def _recall(
        self, sq: SearchQuery, qt: np.ndarray | None, qv: np.ndarray | None
    ) -> Evidence | None:
        """The query's memory, or None (no memory, or nothing in it for this query)."""
        if self.memory is None or (sq.image is not None and not sq.image_sha256):
            return None
        mk = memory_key(sq.text, sq.image_sha256)
        vector = qt if mk.kind == "text" else qv if mk.kind == "image" else None
        return self.memory.recall(mk.key, mk.kind, vector)

    def _rank(
        self, q: Query, sq: SearchQuery, active: ActiveHead, pool: Pool, recalled: Evidence | None
    ) -> tuple[list[Hit], bool]:
        """The top k of the pool as the head scores it, in the order shown (exploring or not)."""
        idx, head, rows = self.index, active.head, pool.rows
        cands = candidates(idx, rows, head, with_image=q.image is not None)
        ids = [idx.metas[r].id for r in rows.tolist()]
        memory, lifted = None, {}
        if recalled is not None and self.memory is not None and head.mix is not None:
            lifted = self.memory.lifts(recalled, ids)
            memory = np.array([lifted[p].lift if p in lifted else 0.0 for p in ids], np.float32)
        if head.mix is not None:
            lift = head.engagement.lift(ids) if head.engagement is not None else None
            cands.mix = torch.from_numpy(mix_features(rows, pool.lists, lift, memory))
        parts = head.parts(q, cands)
        scores = parts["score"].numpy()
        ranked = np.argsort(-scores, kind="stable")
        shown = list(range(min(sq.k, len(ranked))))
        explore = self._rng.random() < self.explore_rate
        if explore:
            shown = explore_order(len(shown), self._rng)
        elif self._rng.random() < self.explore_deep_rate:
            deeper = range(len(shown), min(len(shown) + DEEPER, len(ranked)))
            unseen = [r for r in deeper if _unseen(recalled, ids[ranked[r]])]
            shown = explore_deeper(shown, unseen, self._rng)
        lexical = pool.lists.lexical if pool.lists is not None else None
        why = explain(head, q, cands, parts, rows, lexical) if sq.explain else None

        def explained(i: int) -> dict[str, Any] | None:
            if why is None:
                return None
            term = None
            if memory is not None and recalled is not None:
                term = memory_detail(lifted.get(ids[i], NO_LIFT), recalled)
            return why[i] | {"memory": term}

        hits = [
            Hit(
                idx.metas[rows[ranked[r]]],
                float(scores[ranked[r]]),
                model_position=r + 1,
                propensity=active.bias.propensity(pos),
                memory=0.0 if memory is None else float(memory[ranked[r]]),
                explanation=explained(ranked[r]),
            )
            for pos, r in enumerate(shown, start=1)
        ]
        return hits, explore

    def text_vector(self, text: str) -> np.ndarray:
        """A text's frozen vector as a search gets it (the query cache, the encode slots)."""
        qt, _, _, _ = self._vectors(SearchQuery(text=text))
        assert qt is not None
        return qt

    def normalise_filters(self, filters: dict[str, Any]) -> dict[str, list[str]]:
        known = self.index.attribute_names()
        for attr, value in filters.items():
            if attr not in known:
                raise _unknown_attribute("filter", attr, known)
            values = value if isinstance(value, list) else [value]
            if not values or not all(isinstance(v, str | int | float | bool) for v in values):
                raise BadRequest(f"filter {attr!r} needs a value or a non-empty list of values")
        return filter_values(filters)

    def check_facets(self, facets: list[str]) -> None:
        """Refuse a facet on an attribute no product has, as a filter on it is refused."""
        known = self.index.attribute_names()
        for attr in facets:
            if attr not in known:
                raise _unknown_attribute("facet", attr, known)

    @torch.inference_mode()
    def search(self, sq: SearchQuery) -> SearchResult:
        started = time.perf_counter()
        active = self.active  # one read: a swap mid-request cannot mix two heads
        filters = self.normalise_filters(sq.filters)
        self.check_facets(sq.facets)
        if sq.image is not None and not self.index.any_image():
            raise NoProductImages(
                "this catalog has no product images to compare a photo with; search by text"
            )
        qt, qv, qc, encode_ms = self._vectors(sq)
        q = active.head.query(
            None if qt is None else torch.from_numpy(qt),
            None if qv is None else torch.from_numpy(qv),
            None if qc is None else torch.from_numpy(qc),
        )
        allowed = self.index.filter_mask(filters) if filters else None
        retrieving = time.perf_counter()
        recalled = self._recall(sq, qt, qv)
        pool = self._retrieve(q, sq, active.head, qv, allowed, recalled)
        # counted over the candidates before the top-k cut: what the filters would narrow
        facets = self.index.facet_counts(pool.rows, sq.facets) if sq.facets else None
        ranking = time.perf_counter()
        hits, explore = self._rank(q, sq, active, pool, recalled) if len(pool.rows) else ([], False)
        done = time.perf_counter()
        return SearchResult(
            search_id=uuid.uuid4().hex,
            model_version=active.version,
            query_type=QUERY_TYPES[q.type_index],
            hits=hits,
            latency_ms=(done - started) * 1000,
            encode_ms=encode_ms,
            retrieve_ms=(ranking - retrieving) * 1000,
            rank_ms=(done - ranking) * 1000,
            explore=explore,
            text_vector=qt,
            image_vector=qv,
            colour_vector=qc,
            facets=facets,
        )
