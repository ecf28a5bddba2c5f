"""Fine-tuning the scoring part of a head from logged searches and feedback.

Only the scoring part learns: the per-type attribute-agreement weights, the residual interaction
term and (optionally) the gate. The projections (and so the FAISS spaces) and the frozen encoders
never change, and nothing is re-embedded: query vectors come from the log, product vectors and
attributes from the index. The losses are in learner.losses.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from tqdm import tqdm

from learner.calibration import fit_calibration
from learner.features import Batch, Features, scores
from learner.holdout import ips_ndcg, judging_clip
from learner.losses import (
    class_weights,
    examination_at,
    examination_loss,
    inverse_propensity,
    ranking_loss,
)
from model.head import QUERY_TYPES, FusionHead
from model.position_bias import PositionBias


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How a refresh trains. `ips_clip` is a user setting (Settings.learner_ips_clip) and has no
    default here; the rest are the learner's own hyperparameters. `class_weights`, `ips` and
    `pbm_weight` exist to switch a feature off and measure it (benchmarks.ablations)."""

    epochs: int = 12
    lr: float = 3e-3
    attribute_lr: float = 0.02  # the attribute-agreement and mix weights: few, they must move
    batch_size: int = 128
    weight_decay: float = 0.05
    ips_clip: float  # largest inverse-propensity weight
    pbm_weight: float = 1.0  # weight of the examination loss (0: off)
    class_weights: bool = True
    ips: bool = True
    # A bilinear residual never beat its start on validation, and training the gate did worse
    # than the attribute weights alone: so rank 0 (the diagonal term stays) and a fixed gate.
    rank: int = 0  # bilinear rank for a head that has no residual yet
    train_gate: bool = False
    val_fraction: float = 0.15  # newest engaged training searches used for early stopping
    seed: int = 0


@dataclass
class _Run:
    """One training run's fixed inputs: which searches train and validate, and their weights."""

    train_idx: torch.Tensor
    n_val: int
    val: Features
    val_clip: float
    cw_map: dict[int, float]
    cw: torch.Tensor
    ipw_all: torch.Tensor
    ex_all: torch.Tensor


def train(
    head: FusionHead,
    f: Features,
    bias: PositionBias,
    config: TrainConfig,
    *,
    levels: int,
    progress: bool = False,
) -> tuple[FusionHead, dict[str, object]]:
    """Train `head` (a `child_head`, modified in place) on the searches in `f` with an engaged
    product.

    The newest `val_fraction` of them (f is in time order) is held back; the epoch with the
    best IPS-weighted NDCG@10 there is kept (early stopping: with a few thousand searches the
    residual memorises products within a few epochs)."""
    torch.manual_seed(config.seed)
    run = _prepare(f, bias, config, levels)
    opt, ab = _optimizer(head, f, bias, config, run.train_idx)

    def val_ndcg() -> float:
        return ips_ndcg(head, run.val, bias, run.val_clip) if run.n_val else 0.0

    best, best_epoch = val_ndcg(), 0
    best_state = copy.deepcopy(head.state_dict())
    curve = [round(best, 5)]
    steps = max(1, math.ceil(len(run.train_idx) / config.batch_size)) * config.epochs
    with tqdm(total=steps, desc="fine-tune head", unit="step", disable=not progress) as bar:
        for epoch in range(1, config.epochs + 1):
            head.train()
            _epoch(head, f, run, config, opt, ab, bar)
            head.eval()
            score = val_ndcg()
            curve.append(round(score, 5))
            if score > best or not run.n_val:
                best, best_epoch = score, epoch
                best_state = copy.deepcopy(head.state_dict())
    head.load_state_dict(best_state)
    for p in head.parameters():
        p.requires_grad_(False)
    info: dict[str, object] = {
        "train_searches": int(len(run.train_idx)),
        "val_searches": run.n_val,
        "best_epoch": best_epoch,
        "val_ips_ndcg@10": curve,
        "class_weights": run.cw_map if config.class_weights else None,
        "config": asdict(config),
    }
    return head, info


def _prepare(f: Features, bias: PositionBias, config: TrainConfig, levels: int) -> _Run:
    """The training and validation searches, and the weights of every shown product."""
    b = f.batch
    engaged = torch.nonzero((b.grades > 0).any(dim=1)).flatten()
    n_val = int(len(engaged) * config.val_fraction)
    train_idx, val_idx = engaged[: len(engaged) - n_val], engaged[len(engaged) - n_val :]
    if config.pbm_weight > 0:  # searches nobody engaged with teach the examination loss
        seen = torch.nonzero(b.valid.any(dim=1)).flatten()
        train_idx = seen[seen < val_idx.min()] if n_val else seen
    cw_map = class_weights(b.grades[train_idx], b.valid[train_idx], levels)
    cw = torch.tensor([cw_map[c] if config.class_weights else 1.0 for c in range(levels + 1)])
    return _Run(
        train_idx=train_idx,
        n_val=n_val,
        val=Features(b.take(val_idx), f.products),
        val_clip=judging_clip(bias, config.ips_clip),
        cw_map=cw_map,
        cw=cw,
        ipw_all=inverse_propensity(b.positions, bias, config.ips_clip, config.ips),
        # without position-bias correction (an ablation) every shown product counts as examined
        ex_all=examination_at(b.positions, bias, config.ips),
    )


def _optimizer(
    head: FusionHead, f: Features, bias: PositionBias, config: TrainConfig, train_idx: torch.Tensor
) -> tuple[torch.optim.Optimizer, torch.Tensor]:
    """AdamW over the trainable weights, and the examination loss's calibration (a, b) per
    query type: fitted to the start head, then trained along with it."""
    agree = head.attributes.weights if head.attributes is not None else None
    mix = head.mix
    params = [p for p in head.parameters() if p.requires_grad and p is not agree and p is not mix]
    groups: list[dict[str, Any]] = [{"params": params}]
    if agree is not None:
        groups.append({"params": [agree], "lr": config.attribute_lr})
    if mix is not None and mix.requires_grad:  # few weights that must move; no decay to zero
        groups.append({"params": [mix], "lr": config.attribute_lr, "weight_decay": 0.0})
    ab = torch.zeros(len(QUERY_TYPES), 2)
    if config.pbm_weight > 0:
        cal = fit_calibration(head, f, bias, {"click": 1}, searches=train_idx)["click"]
        ab = torch.tensor([cal[t] for t in QUERY_TYPES]).requires_grad_(True)
        groups.append({"params": [ab], "weight_decay": 0.0})
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay), ab


def _epoch(
    head: FusionHead,
    f: Features,
    run: _Run,
    config: TrainConfig,
    opt: torch.optim.Optimizer,
    ab: torch.Tensor,
    bar: tqdm[Any],
) -> None:
    """One pass over the training searches in a random order."""
    b: Batch = f.batch
    perm = run.train_idx[torch.randperm(len(run.train_idx))]
    for start in range(0, len(perm), config.batch_size):
        idx = perm[start : start + config.batch_size]
        mb = b.take(idx)
        s = scores(head, f, mb)
        loss_sum, w_sum = ranking_loss(s, mb, run.cw, run.ipw_all[idx])
        loss = loss_sum / w_sum.clamp(min=1e-6)
        if config.pbm_weight > 0:
            pbm = examination_loss(s, mb, run.ex_all[idx], ab)
            loss = loss + config.pbm_weight * pbm / len(idx)
        opt.zero_grad()
        loss.backward()
        opt.step()
        bar.update()
