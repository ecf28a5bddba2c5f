"""What a refresh trains and judges on: per-search tensors built once from the frozen parts.

The same features FusionHead.score computes for one search at serving time (tested), built for
all searches at once, since a refresh reads about 100k shown products.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from learner.dataset import LoggedSearch
from model.attributes import AttributeAgreement, many_photo_votes
from model.catalog_view import ProductVectors
from model.head import CHANNELS, FusionHead, HeadConfig, photo_features
from model.hybrid import N_FEATURES, mix_features
from model.retrieval import depth, filter_key, text_lists

CHUNK = 1024 * 20  # shown products whose vectors are gathered at once (1,024 searches of 20)


@dataclass
class Batch:
    """Per-search tensors, precomputed once from frozen parts. K = most results in a search."""

    qtype: torch.Tensor  # (B,) long
    q_feat: torch.Tensor  # (B, d)
    rows: torch.Tensor  # (B, K) long into the product table, 0 where padded
    valid: torch.Tensor  # (B, K) bool
    sims: torch.Tensor  # (B, K, C)
    mask: torch.Tensor  # (B, K, C) bool
    grades: torch.Tensor  # (B, K) long
    positions: torch.Tensor  # (B, K) long, 1-based, as shown
    attr: torch.Tensor  # (B, K, F) attribute-agreement features (F = 0 without them)
    mix: torch.Tensor  # (B, K, 5) model.hybrid.mix_features (zeros for a head without the mix)

    def __len__(self) -> int:
        return int(self.qtype.shape[0])

    def take(self, idx: torch.Tensor) -> Batch:
        return Batch(**{k: v[idx] for k, v in self.__dict__.items()})


@dataclass
class Features:
    batch: Batch
    products: torch.Tensor  # (P, d) product features, indexed by Batch.rows


@dataclass
class _Queries:
    """The kept searches' query vectors, raw and projected into the shared space."""

    has_t: torch.Tensor  # (n,) bool
    has_v: torch.Tensor  # (n,) bool
    qt: torch.Tensor  # (n, text_dim)
    qv: torch.Tensor  # (n, image_dim)
    qc: torch.Tensor  # (n, colour_dim)
    pqt: torch.Tensor  # (n, dim)
    pqv: torch.Tensor  # (n, dim)


Kept = list[tuple[LoggedSearch, np.ndarray]]  # a search and the index rows it showed
EngagementOf = Callable[[LoggedSearch], list[float]]  # a search's products' engagement


def build_features(
    head: FusionHead,
    searches: Sequence[LoggedSearch],
    text_vecs: Mapping[str, np.ndarray],
    image_vecs: Mapping[str, np.ndarray],
    index: ProductVectors,
    colour_vecs: Mapping[str, np.ndarray] | None = None,
    *,
    per_channel: int,
    engagement: EngagementOf | None = None,
) -> tuple[Features, list[LoggedSearch]]:
    """Tensors for the searches whose query vectors and products are all still known (a deleted
    product or a query logged before vectors were kept drops out; a photo logged without its
    colour descriptor reads as colourless). Returns them and the kept searches, in order.
    `per_channel`: how deep the lexical and text lists that rank features read are, as served.
    `engagement`: each search's products' engagement (default: the head's table as served)."""
    cfg = head.config
    kept = _known(searches, text_vecs, image_vecs, index)
    uniq = np.unique(np.concatenate([r for _, r in kept])) if kept else np.zeros(0, np.int64)
    product = {
        space: torch.from_numpy(index.vectors(space, uniq))
        for space in ("text", "image", "ptext", "pimage")
    }
    has_img = torch.from_numpy(index.has_image(uniq))
    agree = head.attributes
    b = _empty_batch(kept, uniq, cfg, agree)
    with torch.no_grad():
        votes = None
        if agree is not None and agree.neighbours:
            votes = _photo_votes(head, agree, index, kept, image_vecs)
        # the coverage gate's pools show hundreds of products a search, not 20: a chunk of
        # searches is sized by their products, or its 1280-d photo vectors take a gigabyte
        step = max(1, CHUNK // b.rows.shape[1])
        for lo in range(0, len(b), step):
            sl = slice(lo, lo + step)
            # a chunk's query vectors at a time: a window's, all at once, held gigabytes
            q = _query_tensors(head, kept[sl], text_vecs, image_vecs, colour_vecs)
            b.q_feat[sl, : cfg.text_dim], b.q_feat[sl, cfg.text_dim :] = q.qt, q.pqv
            _fill_channels(b, sl, q, product, has_img)
            if agree is not None:
                _fill_attributes(b, sl, q, agree, votes, index, uniq, cfg.colour_dim)
        if head.mix is not None:
            text_dim, of = cfg.text_dim, engagement or served_engagement(head)
            _fill_mix(b, kept, text_dim, index, per_channel, of)
    return Features(b, torch.cat([product["text"], product["pimage"]], dim=-1)), [
        s for s, _ in kept
    ]


def _known(
    searches: Sequence[LoggedSearch],
    text_vecs: Mapping[str, np.ndarray],
    image_vecs: Mapping[str, np.ndarray],
    index: ProductVectors,
) -> Kept:
    """The searches whose query vectors and shown products are all known, with those rows."""
    kept: Kept = []
    for s in searches:
        if not s.vectors_in(text_vecs, image_vecs):
            continue
        found = [index.row_of.get(p, -1) for p in s.product_ids]
        if min(found) < 0:
            continue
        kept.append((s, np.array(found, dtype=np.int64)))
    return kept


def _empty_batch(
    kept: Kept, uniq: np.ndarray, cfg: HeadConfig, agree: AttributeAgreement | None
) -> Batch:
    """What the logs say directly (rows, grades, positions); zeros for what the head computes."""
    n, k_max = len(kept), max((len(r) for _, r in kept), default=1)
    rows = np.zeros((n, k_max), np.int64)
    valid = np.zeros((n, k_max), bool)
    grades = np.zeros((n, k_max), np.int64)
    for i, (s, shown) in enumerate(kept):
        rows[i, : len(shown)] = np.searchsorted(uniq, shown)
        valid[i, : len(shown)] = True
        grades[i, : len(shown)] = s.grades
    return Batch(
        qtype=torch.tensor([s.query_type for s, _ in kept], dtype=torch.long),
        q_feat=torch.zeros(n, cfg.text_dim + cfg.dim),
        rows=torch.from_numpy(rows),
        valid=torch.from_numpy(valid),
        sims=torch.zeros(n, k_max, len(CHANNELS)),
        mask=torch.zeros(n, k_max, len(CHANNELS), dtype=torch.bool),
        grades=torch.from_numpy(grades),
        positions=torch.where(torch.from_numpy(valid), torch.arange(1, k_max + 1), 1),
        attr=torch.zeros(n, k_max, agree.n_features if agree else 0),
        mix=torch.zeros(n, k_max, N_FEATURES),
    )


def _query_tensors(
    head: FusionHead,
    kept: Kept,
    text_vecs: Mapping[str, np.ndarray],
    image_vecs: Mapping[str, np.ndarray],
    colour_vecs: Mapping[str, np.ndarray] | None,
) -> _Queries:
    """The kept searches' query vectors (zeros where a search has none), and their projections."""
    cfg = head.config
    has_t = torch.tensor([bool(s.text_key) for s, _ in kept], dtype=torch.bool)
    has_v = torch.tensor([bool(s.image_key) for s, _ in kept], dtype=torch.bool)
    qt = _stack([text_vecs[s.text_key] if s.text_key else None for s, _ in kept], cfg.text_dim)
    qv = _stack([image_vecs[s.image_key] if s.image_key else None for s, _ in kept], cfg.image_dim)
    colours = (colour_vecs or {}) if cfg.colour_dim else {}  # a head without colour ignores it
    qc = _stack(
        [colours.get(s.image_key) if s.image_key else None for s, _ in kept], cfg.colour_dim
    )
    pqt = head.project_text(qt) * has_t[:, None]
    pqv = head.project_image(qv) * has_v[:, None]
    return _Queries(has_t, has_v, qt, qv, qc, pqt, pqv)


def _photo_votes(
    head: FusionHead,
    agree: AttributeAgreement,
    index: ProductVectors,
    kept: Kept,
    image_vecs: Mapping[str, np.ndarray],
) -> torch.Tensor:
    """(n, classes) neighbour votes of each search's photo: one neighbour search per photo."""
    first: dict[str, int] = {}
    for i, (s, _) in enumerate(kept):
        if s.image_key:
            first.setdefault(s.image_key, i)
    qv = _stack([image_vecs[key] for key in first], head.config.image_dim)
    by_photo = many_photo_votes(agree, index, qv.numpy(), head.project_image(qv).numpy())
    slot = {key: j for j, key in enumerate(first)}
    votes = torch.zeros(len(kept), agree.classes)
    for i, (s, _) in enumerate(kept):
        if s.image_key:
            votes[i] = by_photo[slot[s.image_key]]
    return votes


def _fill_channels(
    b: Batch,
    sl: slice,
    q: _Queries,
    product: Mapping[str, torch.Tensor],
    has_img: torch.Tensor,
) -> None:
    """The similarity channels of the searches in `sl` (`q`: their query vectors), in CHANNELS
    order."""
    r, ok = b.rows[sl], b.valid[sl]
    img = has_img[r] & ok
    t, v = q.has_t[:, None] & ok, q.has_v[:, None] & ok
    channels = (  # (sims, mask) in CHANNELS order, as FusionHead.channel_sims
        (torch.einsum("bkd,bd->bk", product["text"][r], q.qt), t),
        (torch.einsum("bkd,bd->bk", product["pimage"][r], q.pqt), t & img),
        (torch.einsum("bkd,bd->bk", product["image"][r], q.qv), v & img),
        (torch.einsum("bkd,bd->bk", product["pimage"][r], q.pqv), v & img),
        (torch.einsum("bkd,bd->bk", product["ptext"][r], q.pqv), v),
    )
    for c, (sim, m) in enumerate(channels):
        b.sims[sl, :, c], b.mask[sl, :, c] = sim * m, m


def _fill_attributes(
    b: Batch,
    sl: slice,
    q: _Queries,
    agree: AttributeAgreement,
    votes: torch.Tensor | None,
    index: ProductVectors,
    uniq: np.ndarray,
    colour_dim: int,
) -> None:
    """The attribute-agreement features of the searches in `sl` (`q`: their query vectors)."""
    r, ok = b.rows[sl], b.valid[sl]
    photo = photo_features(q.qv, q.qc, colour_dim)
    asks = agree.asks(q.qt, photo, None if votes is None else votes[sl])
    present = [q.has_t, q.has_v, q.has_v][: len(asks)]
    asks = [None if a is None else a * p[:, None] for a, p in zip(asks, present, strict=True)]
    codes = agree.row_codes(index, uniq[r.numpy()].reshape(-1))
    feats = agree.features_of(asks, codes.reshape(*r.shape, -1))
    b.attr[sl] = feats * ok[:, :, None]


def served_engagement(head: FusionHead) -> EngagementOf:
    """The products' engagement as `head` serves it (zeros for a head without a table)."""
    table = head.engagement
    return lambda s: table.lift(s.product_ids) if table else [0.0] * len(s.product_ids)


def _fill_mix(
    b: Batch, kept: Kept, text_dim: int, index: ProductVectors, n: int, engagement: EngagementOf
) -> None:
    """Each search's mix features: rank features from its lexical and text lists retrieved
    again as served (model.retrieval, among the products its filters allow; none for a search
    without text), its products' engagement, and the memory lift each was served with."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, (s, shown) in enumerate(kept):
        b.mix[i, : len(shown), 3] = torch.tensor(engagement(s))
        if s.memory is not None:
            b.mix[i, : len(shown), 4] = torch.from_numpy(s.memory)
        if s.query_text and s.text_key:
            key = (filter_key(s.filters), depth(n, len(shown)))
            groups.setdefault(key, []).append(i)
    for (_, deep), members in groups.items():
        filters = kept[members[0]][0].filters
        allowed = index.filter_mask(filters) if filters else None
        first: dict[str | None, int] = {}  # a repeated query's lists are the same: retrieved once
        for i in members:
            first.setdefault(kept[i][0].text_key, i)
        at = list(first.values())
        words = [kept[i][0].query_text for i in at]
        qt = b.q_feat[at, :text_dim].numpy()  # the frozen text vectors, as logged
        found = dict(zip(first, text_lists(index, qt, words, n=deep, allowed=allowed), strict=True))
        for i in members:
            s, shown = kept[i]
            lists = found[s.text_key]
            b.mix[i, : len(shown), :3] = torch.from_numpy(mix_features(shown, lists, None)[:, :3])


def _stack(vectors: Sequence[np.ndarray | None], dim: int) -> torch.Tensor:
    """(n, dim) rows of the given vectors, zeros where there is none."""
    out = np.zeros((len(vectors), dim), np.float32)
    for i, v in enumerate(vectors):
        if v is not None:
            out[i] = v
    return torch.from_numpy(out)


def scores(head: FusionHead, f: Features, b: Batch) -> torch.Tensor:
    """(B, K) scores of each search's shown products, exactly as FusionHead.score ranks them."""
    out = head.fuse(b.sims, b.mask, b.qtype)
    if head.interaction is not None:
        out = out + head.interaction(b.q_feat, f.products[b.rows], b.qtype)
    if head.attributes is not None:
        out = out + head.attributes.score(b.attr, b.qtype)
    return head.mixed(out, b.mix, b.qtype).masked_fill(~b.valid, float("-inf"))


@torch.no_grad()
def all_scores(
    head: FusionHead, f: Features, chunk: int = 2048, searches: torch.Tensor | None = None
) -> torch.Tensor:
    """`scores` of every search in `f` (or of those `searches` indexes), a chunk of searches at
    a time: all at once, the interaction would gather a (B, K, d) product tensor of gigabytes."""
    b = f.batch
    idx = torch.arange(len(b)) if searches is None else searches
    return torch.cat(
        [scores(head, f, b.take(idx[i : i + chunk])) for i in range(0, max(len(idx), 1), chunk)]
    )
