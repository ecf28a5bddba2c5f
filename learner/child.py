"""The candidate's lineage: a trainable child of the active head, and merging it back per type."""

from __future__ import annotations

import copy
from dataclasses import asdict

import torch

from model.attributes import categorical_attributes
from model.catalog_view import ProductVectors
from model.head import QUERY_TYPES, FusionHead, HeadConfig, Interaction, photo_features


def child_head(
    parent: FusionHead, index: ProductVectors, rank: int, *, train_gate: bool = True
) -> FusionHead:
    """A trainable copy of `parent`. What the parent lacks starts at zero: a residual
    interaction of `rank`, and attribute agreement, whose maps are fitted on the catalog in
    `index` (the one time they are; children inherit them)."""
    cfg = parent.config
    vocab, rows, attributes, colour_dim = cfg.attributes, None, [], cfg.colour_dim
    if vocab is None:
        rows = index.alive_rows()
        attributes = [index.metas[int(r)].attributes for r in rows]
        vocab = categorical_attributes(attributes) or None
        colour_dim = index.dim("colour")
    child = FusionHead(
        HeadConfig(
            **{
                **asdict(cfg),
                "residual": True,
                "interaction_rank": cfg.interaction_rank if cfg.residual else rank,
                "attributes": vocab,
                "colour_dim": colour_dim,
                "neighbours": vocab is not None,
            }
        )
    )
    state = parent.state_dict()
    if child.attributes is not None and "attributes.weights" in state:
        # a parent from before neighbour votes: its weights, and zero for the new block
        state["attributes.weights"] = _widen(state["attributes.weights"], child.attributes.weights)
    missing, unexpected = child.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith(("interaction.", "attributes.")) for k in missing)
    if rows is not None and child.attributes is not None:
        photos = photo_features(
            torch.from_numpy(index.vectors("image", rows)),
            torch.from_numpy(index.vectors("colour", rows)),
            colour_dim,
        )
        assert photos is not None
        child.attributes.fit(
            torch.from_numpy(index.vectors("text", rows)),
            photos,
            torch.from_numpy(index.has_image(rows)),
            attributes,
        )
    _trainable(child, train_gate)
    return child


def _trainable(child: FusionHead, train_gate: bool) -> None:
    """Only the scoring part learns: the residual, the attribute weights, the hybrid mix, and
    the gate if asked."""
    for p in child.parameters():
        p.requires_grad_(False)
    child.gate_logits.requires_grad_(train_gate)
    assert child.interaction is not None
    for p in child.interaction.parameters():
        p.requires_grad_(True)
    if child.attributes is not None:
        child.attributes.weights.requires_grad_(True)
    if child.mix is not None:
        child.mix.requires_grad_(True)


def _widen(weights: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`weights` in the leading columns of a zero tensor shaped like `like`."""
    out = torch.zeros_like(like)
    out[:, : weights.shape[1]] = weights
    return out


def merge_per_type(
    candidate: FusionHead, parent: FusionHead, accept: dict[str, bool]
) -> FusionHead:
    """The candidate for accepted query types, the parent's behaviour for the rest."""
    merged = copy.deepcopy(candidate)
    assert merged.interaction is not None
    with torch.no_grad():
        for i, t in enumerate(QUERY_TYPES):
            if accept.get(t):
                continue
            merged.gate_logits[i] = parent.gate_logits[i]
            if merged.mix is not None and parent.mix is not None:
                merged.mix[i] = parent.mix[i]
            if merged.attributes is not None:
                keep = merged.attributes.weights[i].zero_()
                if parent.attributes is not None:
                    keep[: parent.attributes.n_features] = parent.attributes.weights[i]
            if isinstance(parent.interaction, Interaction):
                for name in ("diag", "query_w", "product_w"):
                    getattr(merged.interaction, name)[i] = getattr(parent.interaction, name)[i]
            else:
                merged.interaction.diag[i].zero_()
                merged.interaction.product_w[i].zero_()
    return merged
