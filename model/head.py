"""The fusion head: a shared text/image space plus a learned gate over similarity channels.

Two projections map frozen text (384-d) and image (1280-d) features into one D-dim space, aligned
contrastively on the catalog's own (image, title) pairs. A query and a candidate meet in five
similarity channels; a per-query-type softmax gate over the channels that exist for that pair
(a product may lack an image) fuses their calibrated scores. The projections define the FAISS
spaces. The scoring part, which the feedback learner fine-tunes and swaps without touching the
index or re-embedding anything, is the gate plus two residuals that start at zero: an
interaction term over query and product features, and attribute agreement
(`model.attributes`).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from model.attributes import AttributeAgreement
from model.engagement import Engagement

CHANNELS = ("text_text", "text_image", "image_image", "image_pimage", "image_text")
QUERY_TYPES = ("text", "image", "composed")
# What the hybrid mix weighs: the dense score above, then per-query rank and score features of
# the lexical channel (BM25) and the frozen text channel, the product's engagement, and the
# query memory's lift for this query and product (model.hybrid computes them).
MIX = ("dense", "lexical_score", "lexical_rrf", "text_rrf", "engagement", "memory")
# Before any click a text query ranks by reciprocal rank fusion of the lexical and the dense text
# channel plus the normalised BM25, which keeps a product only the lexical channel found near the
# top (plain RRF sinks it below products both lists hold in the middle), and the dense score,
# which carries what the words do not say (a titles-only catalog's attribute queries); the
# others rank by the dense score alone. Engagement counts for nothing until clicks show it
# helps. Chosen on both catalogs of benchmarks.hybrid as the best known-item ranking that is at
# least RRF on every query set (dense 0.1 instead of 0.8: titles-only attribute queries 0.747,
# below RRF's 0.758). The query memory's lift counts from the start: it is 0 for a query the
# memory knows nothing of, and where shoppers chose, what they chose is the best evidence there
# is (benchmarks.query_memory). The learner then moves these per query type.
MIX_START = {
    "text": (0.8, 2.0, 1.0, 1.0, 0.0, 1.0),
    "image": (1.0, 0.0, 0.0, 0.0, 0.0, 1.0),
    "composed": (1.0, 0.0, 0.0, 0.0, 0.0, 1.0),
}
assert all(len(w) == len(MIX) for w in MIX_START.values())


def query_type(has_text: bool, has_image: bool) -> str:
    return "composed" if has_text and has_image else "text" if has_text else "image"


@dataclass(frozen=True)
class HeadConfig:
    text_dim: int = 384
    image_dim: int = 1280
    dim: int = 256
    hidden: int = 512
    residual: bool = False  # the learned interaction term (absent in the bootstrap head)
    interaction_rank: int = 0  # rank of its bilinear part
    attributes: dict[str, list[str]] | None = None  # vocabulary of the attribute agreement
    colour_dim: int = 0  # width of the photos' colour descriptor the attribute agreement reads
    neighbours: bool = False  # whether the attribute agreement reads a photo's neighbours' votes
    hybrid: bool = False  # whether the mix over MIX exists (heads from before it rank by dense)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Query:
    """Frozen query features and their projections; either modality may be missing (None)."""

    text: torch.Tensor | None  # (text_dim,) normalised
    image: torch.Tensor | None  # (image_dim,) normalised
    ptext: torch.Tensor | None = None  # (dim,) projected text, filled by FusionHead.query
    pimage: torch.Tensor | None = None  # (dim,) projected image
    colour: torch.Tensor | None = None  # (colour_dim,) the photo's colour descriptor
    votes: torch.Tensor | None = None  # (classes,) its neighbours' votes (attributes.photo_votes)

    @property
    def type_index(self) -> int:
        return QUERY_TYPES.index(query_type(self.text is not None, self.image is not None))


@dataclass
class Candidates:
    """Per-candidate features: frozen (t, v) and their projections (pt, pv); has_image masks v/pv.

    `image` and `ptext` are only read for queries with an image, so text queries may omit them;
    `codes` (AttributeAgreement.codes) only by a head with attribute agreement.
    """

    text: torch.Tensor  # (n, text_dim)
    pimage: torch.Tensor  # (n, dim)
    has_image: torch.Tensor  # (n,) bool
    image: torch.Tensor | None = None  # (n, image_dim), zeros where missing
    ptext: torch.Tensor | None = None  # (n, dim)
    codes: torch.Tensor | None = None  # (n, A) long
    mix: torch.Tensor | None = None  # (n, len(MIX) - 1) model.hybrid.mix_features


def photo_features(
    image: torch.Tensor | None, colour: torch.Tensor | None, colour_dim: int
) -> torch.Tensor | None:
    """What the attribute agreement reads of a photo: its frozen vector, then its colour
    descriptor (zeros where it was not logged). One photo (d,) or a batch (n, d)."""
    if image is None or colour_dim == 0:
        return image
    if colour is None:
        colour = torch.zeros(*image.shape[:-1], colour_dim)
    return torch.cat([image, colour], dim=-1)


def search_channels(q: Query) -> list[tuple[str, torch.Tensor]]:
    """Which index space ("text", "ptext", "pimage") each query vector searches for candidates:
    its own modality and the other one; a composed query also searches with both asks summed.
    Works for one query (d,) or a batch (B, d)."""
    out: list[tuple[str, torch.Tensor]] = []
    if q.text is not None and q.ptext is not None:
        out += [("text", q.text), ("pimage", q.ptext)]
    if q.image is not None and q.pimage is not None:
        out += [("pimage", q.pimage), ("ptext", q.pimage)]
    if q.ptext is not None and q.pimage is not None:
        both = F.normalize(q.ptext + q.pimage, dim=-1)
        out += [("pimage", both), ("ptext", both)]
    return out


class Interaction(nn.Module):
    """What the frozen similarities cannot say: which products a query's shoppers actually pick.

    A learned re-weighting of the query-product feature agreement (a diagonal metric over frozen
    text and projected image dimensions, so "which dimensions matter" is shared by every query
    and product and generalises from little feedback) plus a low-rank bilinear term for
    cross-dimension effects; separate weights per query type. Both start at zero, so a fresh
    residual changes nothing until feedback moves it, and a query type whose residual did not
    pass the holdout can be reset to its parent's weights alone.
    """

    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        d, r, t = config.text_dim + config.dim, config.interaction_rank, len(QUERY_TYPES)
        self.diag = nn.Parameter(torch.zeros(t, d))
        self.query_w = nn.Parameter(torch.randn(t, d, r))  # unit-scale u: v learns fast
        self.product_w = nn.Parameter(torch.zeros(t, d, r))

    def forward(
        self, q_feat: torch.Tensor, c_feat: torch.Tensor, qtype: torch.Tensor
    ) -> torch.Tensor:
        """q_feat (B, d), c_feat (B, n, d), qtype (B,) -> residual scores (B, n)."""
        diag = torch.einsum("bd,bnd->bn", q_feat * self.diag[qtype], c_feat)
        u = torch.einsum("bd,bdr->br", q_feat, self.query_w[qtype])
        v = torch.einsum("bnd,bdr->bnr", c_feat, self.product_w[qtype])
        return diag + torch.einsum("br,bnr->bn", u, v)


def query_features(q: Query, config: HeadConfig) -> torch.Tensor:
    """(text_dim + dim,): the frozen text vector and the projected image, zeros where absent."""
    text = q.text if q.text is not None else torch.zeros(config.text_dim)
    image = q.pimage if q.pimage is not None else torch.zeros(config.dim)
    return torch.cat([text, image])


def product_features(c: Candidates) -> torch.Tensor:
    """(n, text_dim + dim): frozen product text vectors and projected images (zeros if none)."""
    return torch.cat([c.text, c.pimage], dim=-1)


class FusionHead(nn.Module):
    chan_mean: torch.Tensor  # buffers: per-channel calibration, set by bootstrap.calibrate
    chan_std: torch.Tensor
    engagement: Engagement | None  # set by a refresh, stored with the head (model.checkpoint)

    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        self.config = config
        self.text_proj = nn.Linear(config.text_dim, config.dim)
        self.image_proj = nn.Sequential(
            nn.Linear(config.image_dim, config.hidden),
            nn.GELU(),
            nn.Linear(config.hidden, config.dim),
        )
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.gate_logits = nn.Parameter(torch.zeros(len(QUERY_TYPES), len(CHANNELS)))
        self.register_buffer("chan_mean", torch.zeros(len(CHANNELS)))
        self.register_buffer("chan_std", torch.ones(len(CHANNELS)))
        self.interaction = Interaction(config) if config.residual else None
        self.mix = (
            nn.Parameter(torch.tensor([MIX_START[t] for t in QUERY_TYPES]))
            if config.hybrid
            else None
        )
        self.engagement = None
        self.attributes = (
            AttributeAgreement(
                config.attributes,
                config.text_dim,
                config.image_dim + config.colour_dim,
                len(QUERY_TYPES),
                neighbours=config.neighbours,
            )
            if config.attributes
            else None
        )

    def project_text(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_proj(x), dim=-1)

    def project_image(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_proj(x), dim=-1)

    def query(
        self,
        text: torch.Tensor | None,
        image: torch.Tensor | None,
        colour: torch.Tensor | None = None,
    ) -> Query:
        """A query with its projections into the shared space."""
        return Query(
            text,
            image,
            None if text is None else self.project_text(text),
            None if image is None else self.project_image(image),
            colour,
        )

    def channel_sims(self, q: Query, c: Candidates) -> tuple[torch.Tensor, torch.Tensor]:
        """Similarities (n, C) and availability mask (n, C) for one query against candidates."""
        n = c.text.shape[0]
        sims = torch.zeros(n, len(CHANNELS))
        mask = torch.zeros(n, len(CHANNELS), dtype=torch.bool)
        img = c.has_image
        if q.text is not None:
            qt = self.project_text(q.text) if q.ptext is None else q.ptext
            sims[:, 0], mask[:, 0] = c.text @ q.text, True
            sims[:, 1], mask[:, 1] = c.pimage @ qt, img
        if q.image is not None:
            assert c.image is not None and c.ptext is not None, "image queries need c.image/ptext"
            qv = self.project_image(q.image) if q.pimage is None else q.pimage
            sims[:, 2], mask[:, 2] = c.image @ q.image, img
            sims[:, 3], mask[:, 3] = c.pimage @ qv, img
            sims[:, 4], mask[:, 4] = c.ptext @ qv, True
        return sims, mask

    def fuse(
        self, sims: torch.Tensor, mask: torch.Tensor, query_type: int | torch.Tensor
    ) -> torch.Tensor:
        """Gate-weighted sum of calibrated channel scores, over the channels each pair has.
        One query: sims (n, C) and an int type; a batch: sims (B, n, C) and types (B,)."""
        z = (sims - self.chan_mean) / self.chan_std
        gate = self.gate_logits[query_type]
        if gate.dim() == 2:
            gate = gate[:, None, :]
        logits = gate.expand_as(z).masked_fill(~mask, float("-inf"))
        weights = torch.softmax(logits, dim=-1).nan_to_num(0.0)
        return (weights * z).sum(dim=-1)

    def score(self, q: Query, c: Candidates) -> torch.Tensor:
        return self.parts(q, c)["score"]

    def parts(self, q: Query, c: Candidates) -> dict[str, torch.Tensor]:
        """The score (n,) and what it is made of: the gate's fused channels, the learned
        adjustments (interaction, attribute agreement), the dense total, and the hybrid mix's
        terms. `score` ranks; the rest explains (service.search.searcher's explain)."""
        sims, mask = self.channel_sims(q, c)
        out = {"fused": self.fuse(sims, mask, q.type_index)}
        adjust = torch.zeros_like(out["fused"])
        if self.interaction is not None:
            q_feat, c_feat = query_features(q, self.config), product_features(c)
            residual = self.interaction(q_feat[None], c_feat[None], torch.tensor([q.type_index]))
            adjust = adjust + residual[0]
        if self.attributes is not None:
            assert c.codes is not None, "a head with attribute agreement needs c.codes"
            photo = photo_features(q.image, q.colour, self.config.colour_dim)
            feats = self.attributes.features(q.text, photo, c.codes, q.votes)
            adjust = adjust + self.attributes.score(feats, q.type_index)
        out["adjustment"] = adjust
        out["dense"] = out["fused"] + adjust
        out["score"] = self.mixed(out["dense"], c.mix, q.type_index)
        return out

    def mixed(
        self, dense: torch.Tensor, features: torch.Tensor | None, qtype: int | torch.Tensor
    ) -> torch.Tensor:
        """The hybrid mix of the dense score (n,) or (B, n) with the mix features (..., n, F)
        for query type(s) `qtype`: the dense score alone for a head without the mix."""
        if self.mix is None:
            return dense
        w = self.mix[qtype]  # (M,) or (B, M)
        if w.dim() == 2:
            w = w[:, None, :]
        out = w[..., 0] * dense
        if features is not None:
            out = out + (w[..., 1:] * features).sum(dim=-1)
        return out

    def projection_digest(self) -> str:
        """Fingerprint of the frozen projections: the FAISS spaces were built with these, so a
        head may only serve an index whose build used the same ones."""
        h = hashlib.sha256()
        for name, tensor in sorted(self.state_dict().items()):
            if name.startswith(("text_proj.", "image_proj.")):
                h.update(name.encode())
                h.update(tensor.detach().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def gate_weights(self) -> dict[str, dict[str, float]]:
        """The gate as readable numbers (for the model card), all channels available."""
        w = torch.softmax(self.gate_logits.detach(), dim=-1)
        return {
            qt: {ch: round(float(w[i, j]), 4) for j, ch in enumerate(CHANNELS)}
            for i, qt in enumerate(QUERY_TYPES)
        }
