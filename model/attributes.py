"""Attribute agreement: does a candidate have the category, colour, gender... the query asks for?

Similarity in an embedding space cannot say which of a product's attributes the shopper cares
about: a photo of a red women's top is near red men's tops and pink women's tops alike. The
catalog knows every product's attributes, so the head reads them off the query instead:

- a ridge map per modality, fitted in closed form on the catalog's own frozen vectors, scores
  every value of every categorical attribute for a query (text from its words, image from its
  photo);
- a candidate's feature per (modality, attribute) is the score of the value it actually has;
- a photo also asks through its nearest catalog products: their attribute values, weighted by a
  sharp softmax over their image cosines, vote on what it shows (a linear map reads a photo's
  colour and gender poorly; a near-duplicate in the catalog knows them, and several close
  neighbours mostly agree; docs/design.md has the offline comparison);
- how much each feature counts is learned per query type from feedback, starting at zero, so
  shoppers decide which attributes matter (gender for a photo, colour for "this but red").

The maps are fitted when a head without them is fine-tuned (until a candidate with them is
promoted, each refresh fits them afresh, in seconds) and are then inherited unchanged, like the
projections: only the per-type weights learn.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from model.catalog_view import CatalogView

MIN_COVERAGE = 0.5  # share of products that must have the attribute
MAX_VALUES = 500  # more distinct values than this is an identifier, not a category
RIDGE = 1.0
NEIGHBOURS = 10  # a photo's nearest catalog products that vote on its attributes...
NEIGHBOUR_POOL = 100  # ...re-ranked by frozen image cosine from this many projected-space hits
NEIGHBOUR_TEMPERATURE = 0.02  # softmax over their cosines: a near-duplicate outvotes the rest


def categorical_attributes(attributes: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Attribute -> its values, for the attributes that look categorical: present on at least
    MIN_COVERAGE of the products, with 2..MAX_VALUES distinct string values that repeat (on
    average at least twice, so per-product identifiers are left out)."""
    n = max(1, len(attributes))
    values: dict[str, Counter[str]] = {}
    for attrs in attributes:
        for name, v in attrs.items():
            if isinstance(v, str) and v:
                values.setdefault(name, Counter())[v] += 1
    return {
        name: sorted(c)
        for name, c in sorted(values.items())
        if sum(c.values()) >= MIN_COVERAGE * n
        and 2 <= len(c) <= min(MAX_VALUES, sum(c.values()) / 2)
    }


def fit_ridge(x: torch.Tensor, codes: torch.Tensor, classes: int) -> torch.Tensor:
    """(d + 1, classes) least-squares map from vectors (with a bias) to one-hot attribute
    columns; codes (n, A) hold global column indices, -1 where a product lacks the attribute."""
    x1 = torch.cat([x, torch.ones(len(x), 1)], dim=1)
    targets = torch.zeros(len(x), classes + 1)
    targets.scatter_(1, torch.where(codes < 0, classes, codes), 1.0)
    # products in float32 (44k x 1793 image-side rows: 2.7 s against 4.8 s in float64, weights
    # within 2e-4), the solve in float64
    gram = (x1.T @ x1).double() + RIDGE * torch.eye(x1.shape[1], dtype=torch.float64)
    return torch.linalg.solve(gram, (x1.T @ targets[:, :classes]).double()).float()


class AttributeAgreement(nn.Module):
    """Per-(modality, attribute) agreement features and their learned per-query-type weights."""

    text_map: torch.Tensor  # buffers: the fitted ridge maps
    image_map: torch.Tensor

    def __init__(
        self,
        vocab: Mapping[str, Sequence[str]],
        text_dim: int,
        image_dim: int,
        types: int,
        *,
        neighbours: bool = False,
    ) -> None:
        super().__init__()
        self.names = list(vocab)
        self.neighbours = neighbours  # a third block of features: the photo's neighbours' votes
        self.column: list[dict[str, int]] = []
        offset = 0
        for name in self.names:
            self.column.append({v: offset + i for i, v in enumerate(vocab[name])})
            offset += len(vocab[name])
        self.classes = offset
        self.register_buffer("text_map", torch.zeros(text_dim + 1, offset))
        self.register_buffer("image_map", torch.zeros(image_dim + 1, offset))
        self.weights = nn.Parameter(torch.zeros(types, self.n_features))
        self.vocab_key = tuple((name, tuple(vocab[name])) for name in self.names)

    def row_codes(self, index: CatalogView, rows: np.ndarray) -> torch.Tensor:
        """codes() of catalog index rows, cached in the index (`index.code_cache`, one entry per
        vocabulary): rows are append-only (a changed product gets a new row), so each row is
        looked up once, and every head with this vocabulary (hot swaps within one lineage)
        shares the entry. A cold build yields the interpreter between chunks, so that searches
        served meanwhile are not stalled behind it."""
        metas = index.metas
        done = index.code_cache.get(self.vocab_key)
        if done is None or len(done) < len(metas):
            parts = [] if done is None else [done]
            for start in range(0 if done is None else len(done), len(metas), 2048):
                chunk = metas[start : start + 2048]
                parts.append(self.codes([m.attributes for m in chunk]).numpy())
                time.sleep(0)
            done = np.concatenate(parts) if parts else np.zeros((0, len(self.names)), np.int64)
            index.code_cache[self.vocab_key] = done  # one reference swap: searches see either
        return torch.from_numpy(done[rows])

    @property
    def n_features(self) -> int:
        return (3 if self.neighbours else 2) * len(self.names)

    def codes(self, attributes: Sequence[Mapping[str, Any]]) -> torch.Tensor:
        """(n, A) global value columns of each product's attributes, -1 where unknown."""
        return torch.tensor(
            [
                [
                    col.get(a.get(name) or "", -1)
                    for name, col in zip(self.names, self.column, strict=True)
                ]
                for a in attributes
            ],
            dtype=torch.long,
        ).reshape(len(attributes), len(self.names))

    def fit(
        self,
        text: torch.Tensor,
        image: torch.Tensor,
        has_image: torch.Tensor,
        attributes: Sequence[Mapping[str, Any]],
    ) -> None:
        """Fit both maps on the catalog: product text vectors and (where there is one) image
        vectors against the products' own attribute values."""
        codes = self.codes(attributes)
        with torch.no_grad():
            self.text_map.copy_(fit_ridge(text, codes, self.classes))
            self.image_map.copy_(fit_ridge(image[has_image], codes[has_image], self.classes))

    def features(
        self,
        text: torch.Tensor | None,
        image: torch.Tensor | None,
        codes: torch.Tensor,
        votes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(n, F): the query's score for each candidate's value of each attribute: from its text,
        from its photo, and (with neighbours) its photo's neighbours' votes; zeros for an absent
        modality or an unknown value."""
        return self.features_of(self.asks(text, image, votes), codes)

    def asks(
        self, text: torch.Tensor | None, image: torch.Tensor | None, votes: torch.Tensor | None
    ) -> list[torch.Tensor | None]:
        """How strongly a query (d,) or a batch of them (B, d) asks for every attribute value,
        per source (text map, photo map, neighbours' votes): (classes,) or (B, classes) each,
        None for an absent source."""
        out = [
            None if text is None else text @ self.text_map[:-1] + self.text_map[-1],
            None if image is None else image @ self.image_map[:-1] + self.image_map[-1],
        ]
        return [*out, votes] if self.neighbours else out

    def features_of(self, asks: Sequence[torch.Tensor | None], codes: torch.Tensor) -> torch.Tensor:
        """Features from asks(): codes (n, A) with asks (classes,) gives (n, F); codes (B, n, A)
        with asks (B, classes) gives (B, n, F)."""
        out = torch.zeros(*codes.shape[:-1], self.n_features)
        known, at = codes >= 0, codes.clamp(min=0)
        a = len(self.names)
        for block, s in enumerate(asks):
            if s is not None:
                wide = s.unsqueeze(-2).expand(*codes.shape[:-1], s.shape[-1])
                out[..., block * a : (block + 1) * a] = torch.where(
                    known, torch.gather(wide, -1, at), 0.0
                )
        return out

    def score(self, features: torch.Tensor, query_type: int | torch.Tensor) -> torch.Tensor:
        """features (n, F) with an int type, or (B, n, F) with types (B,) -> (n,) / (B, n)."""
        w = self.weights[query_type]
        if w.dim() == 2:
            w = w[:, None, :]
        return (features * w).sum(dim=-1)


def photo_votes(
    agree: AttributeAgreement,
    index: CatalogView,
    image: np.ndarray,
    pimage: np.ndarray,
    pool: np.ndarray | None = None,
) -> torch.Tensor:
    """The votes of a photo's NEIGHBOURS nearest catalog products by frozen image cosine, found
    among the NEIGHBOUR_POOL best of the projected-image HNSW (`pool`: those rows, when the
    caller already searched for them). The same at serving and at training time."""
    if pool is None:
        pool = index.search("pimage", pimage, NEIGHBOUR_POOL)[0]
    return pooled_votes(agree, index, image[None], [pool])[0]


def many_photo_votes(
    agree: AttributeAgreement, index: CatalogView, images: np.ndarray, pimages: np.ndarray
) -> torch.Tensor:
    """photo_votes() of many photos (P, classes), with batched neighbour searches on as many
    threads as torch has here: the learner asks this for every logged photo."""
    out = torch.zeros(len(images), agree.classes)
    for start in range(0, len(images), 256):
        end = start + 256
        pools = index.search_many(
            "pimage", pimages[start:end], NEIGHBOUR_POOL, threads=torch.get_num_threads()
        )
        out[start:end] = pooled_votes(agree, index, images[start:end], pools)
    return out


def pooled_votes(
    agree: AttributeAgreement,
    index: CatalogView,
    images: np.ndarray,
    pools: Sequence[np.ndarray],
) -> torch.Tensor:
    """(P, classes) votes of each photo's NEIGHBOURS nearest rows by image cosine among its pool
    (a photo with an empty pool has no votes)."""
    width = max((len(p) for p in pools), default=0)
    out = torch.zeros(len(pools), agree.classes)
    if width == 0:
        return out
    rows = np.zeros((len(pools), width), np.int64)
    sims = np.full((len(pools), width), -np.inf, np.float32)
    for i, (pool, image) in enumerate(zip(pools, images, strict=True)):
        rows[i, : len(pool)] = pool
        sims[i, : len(pool)] = index.vectors("image", pool) @ image
    top = np.argsort(-sims, axis=1, kind="stable")[:, :NEIGHBOURS]
    top_sims = torch.from_numpy(np.take_along_axis(sims, top, axis=1))
    w = torch.softmax(top_sims / NEIGHBOUR_TEMPERATURE, dim=1).nan_to_num(0.0)  # (P, k)
    codes = agree.row_codes(index, np.take_along_axis(rows, top, axis=1).reshape(-1))
    codes = codes.reshape(len(pools), top.shape[1], -1)  # (P, k, A)
    weight = torch.where(codes >= 0, w[:, :, None], 0.0).reshape(len(pools), -1)
    out.scatter_add_(1, codes.clamp(min=0).reshape(len(pools), -1), weight)
    return out
