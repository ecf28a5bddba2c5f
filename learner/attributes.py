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
  neighbours mostly agree). Offline, with weights fitted to true grades on 150 photo queries and
  scored on 150 others: image NDCG@10 0.610 frozen, 0.621 with the maps, 0.834 with the votes;
  composed ("this but red") 0.680 with the maps, 0.852 with both;
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
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

MIN_COVERAGE = 0.5  # share of products that must have the attribute
MAX_VALUES = 500  # more distinct values than this is an identifier, not a category
RIDGE = 1.0
NEIGHBOURS = 10  # a photo's nearest catalog products that vote on its attributes...
NEIGHBOUR_POOL = 100  # ...re-ranked by frozen image cosine from this many projected-space hits
NEIGHBOUR_TEMPERATURE = 0.02  # softmax over their cosines: a near-duplicate outvotes the rest
# (catalog, vocabulary) -> (catalog, codes of its rows): see AttributeAgreement.row_codes. One
# entry per catalog and vocabulary in service, so it stays as small as the catalog itself.
_ROW_CODES: dict[tuple[int, tuple[Any, ...]], tuple[Sequence[Any], np.ndarray]] = {}


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
    x1 = torch.cat([x, torch.ones(len(x), 1)], dim=1).double()
    targets = torch.zeros(len(x), classes + 1, dtype=torch.float64)
    targets.scatter_(1, torch.where(codes < 0, classes, codes), 1.0)
    gram = x1.T @ x1 + RIDGE * torch.eye(x1.shape[1], dtype=torch.float64)
    return torch.linalg.solve(gram, x1.T @ targets[:, :classes]).float()


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

    def row_codes(self, metas: Sequence[Any], rows: np.ndarray) -> torch.Tensor:
        """codes() of catalog index rows (items with `.attributes`), cached: index rows are
        append-only (a changed product gets a new row), so each row is looked up once, and the
        cache is shared by every head with the same vocabulary (hot swaps between versions of
        one lineage reuse it). A cold build yields the interpreter between chunks, so that
        searches served meanwhile are not stalled behind it."""
        key = (id(metas), self.vocab_key)
        known = _ROW_CODES.get(key)
        if known is None or known[0] is not metas or len(known[1]) < len(metas):
            done = known[1] if known is not None and known[0] is metas else None
            parts = [] if done is None else [done]
            for start in range(0 if done is None else len(done), len(metas), 2048):
                chunk = metas[start : start + 2048]
                parts.append(self.codes([m.attributes for m in chunk]).numpy())
                time.sleep(0)
            known = (metas, np.concatenate(parts) if parts else np.zeros((0, len(self.names))))
            _ROW_CODES[key] = known  # one reference swap: concurrent searches see either
        return torch.from_numpy(known[1][rows])

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

    def votes(self, codes: torch.Tensor, sims: torch.Tensor) -> torch.Tensor:
        """(classes,): how strongly a photo's neighbours (their codes (k, A) and image cosines
        (k,)) vote for each attribute value."""
        w = torch.softmax(sims / NEIGHBOUR_TEMPERATURE, dim=0)
        out = torch.zeros(self.classes)
        known = codes >= 0
        out.index_add_(0, codes[known], w[:, None].expand_as(codes)[known])
        return out

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
        out = torch.zeros(codes.shape[0], self.n_features)
        known = codes >= 0
        a = len(self.names)
        blocks = [
            None if text is None else text @ self.text_map[:-1] + self.text_map[-1],
            None if image is None else image @ self.image_map[:-1] + self.image_map[-1],
        ]
        if self.neighbours:
            blocks.append(votes)
        for block, s in enumerate(blocks):
            if s is not None:
                out[:, block * a : (block + 1) * a] = torch.where(known, s[codes.clamp(min=0)], 0.0)
        return out

    def score(self, features: torch.Tensor, query_type: int | torch.Tensor) -> torch.Tensor:
        """features (n, F) with an int type, or (B, n, F) with types (B,) -> (n,) / (B, n)."""
        w = self.weights[query_type]
        if w.dim() == 2:
            w = w[:, None, :]
        return (features * w).sum(dim=-1)


class SearchableVectors(Protocol):
    """What the neighbour vote needs of the catalog index (service.index.CatalogIndex has it)."""

    @property
    def metas(self) -> Sequence[Any]: ...

    def search(
        self, space: str, query: np.ndarray, n: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def vectors(self, space: str, rows: np.ndarray) -> np.ndarray: ...


def photo_votes(
    agree: AttributeAgreement,
    index: SearchableVectors,
    image: np.ndarray,
    pimage: np.ndarray,
    pool: np.ndarray | None = None,
) -> torch.Tensor:
    """The votes of a photo's NEIGHBOURS nearest catalog products by frozen image cosine, found
    among the NEIGHBOUR_POOL best of the projected-image HNSW (`pool`: those rows, when the
    caller already searched for them). The same at serving and at training time."""
    if pool is None:
        pool = index.search("pimage", pimage, NEIGHBOUR_POOL)[0]
    if not len(pool):
        return torch.zeros(agree.classes)
    sims = index.vectors("image", pool) @ image
    top = np.argsort(-sims, kind="stable")[:NEIGHBOURS]
    codes = agree.row_codes(index.metas, pool[top])
    return agree.votes(codes, torch.from_numpy(np.ascontiguousarray(sims[top])))
