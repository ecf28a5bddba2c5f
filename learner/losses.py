"""What a refresh trains on, per shown product: class and inverse-propensity weights and losses.

- ranking loss: listwise softmax cross-entropy over what a search showed, each engaged product
  weighted by its class weight (a rare purchase counts for more than a common click) and by its
  clipped inverse examination propensity (a deep click counts for more, undoing position bias);
- examination loss: every shown product, engaged or not, scored by the log-likelihood of the
  position-based click model, so skips where the shopper surely looked teach too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from learner.features import Batch
from model.position_bias import PositionBias


def class_weights(grades: torch.Tensor, valid: torch.Tensor, levels: int) -> dict[int, float]:
    """Balanced weights N / (classes * n_c) over grades 0..levels seen in the window, scaled so
    that a click (grade 1) weighs 1; absent classes get the largest weight seen."""
    g = grades[valid]
    counts = {c: int((g == c).sum()) for c in range(levels + 1)}
    present = {c: n for c, n in counts.items() if n}
    raw = {c: len(g) / (len(present) * n) for c, n in present.items()}
    top = max(raw.values(), default=1.0)
    ref = raw.get(1, top)
    return {c: round(raw.get(c, top) / ref, 4) for c in range(levels + 1)}


def examination_at(
    positions: torch.Tensor, bias: PositionBias, enabled: bool = True
) -> torch.Tensor:
    """P(examined) at each 1-based position; every position examined when not `enabled`."""
    if not enabled:
        return torch.ones_like(positions, dtype=torch.float32)
    ex = torch.tensor(bias.examination, dtype=torch.float32)
    return ex[(positions - 1).clamp(max=len(ex) - 1)]


def inverse_propensity(
    positions: torch.Tensor, bias: PositionBias, clip: float, enabled: bool
) -> torch.Tensor:
    return (1.0 / examination_at(positions, bias, enabled)).clamp(max=clip)


def ranking_loss(
    s: torch.Tensor, b: Batch, cw: torch.Tensor, ipw: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted listwise cross-entropy; returns (sum of losses, sum of weights)."""
    logp = torch.log_softmax(s, dim=-1).masked_fill(~b.valid, 0.0)
    w = cw[b.grades] * ipw * (b.grades > 0) * b.valid
    return -(w * logp).sum(), w.sum()


def examination_loss(s: torch.Tensor, b: Batch, ex: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """Summed log-loss of P(engaged | shown at k) = ex(k) * sigmoid(a * s + b) over the shown
    products, with (a, b) per query type (`ab`: (types, 2)).

    The listwise loss learns only from searches with an engagement, which shoppers who look at
    one or two results leave few of; a skip at the top, seen almost surely, is evidence of its
    own. Examination enters as a factor, not as an inverse weight, so nothing is clipped and no
    rare click dominates."""
    return event_nll(s, b, ex, ab).sum()


def event_nll(
    s: torch.Tensor, b: Batch, ex: torch.Tensor, ab: torch.Tensor, level: int = 1
) -> torch.Tensor:
    """(B, K) log-loss of P(grade >= level | shown at k) = ex(k) * sigmoid(a * s + b) per shown
    product, with (a, b) per query type (`ab`: (types, 2)); zero where nothing was shown."""
    a, c = ab[b.qtype, :1], ab[b.qtype, 1:]
    p = (ex * torch.sigmoid(a * s.masked_fill(~b.valid, 0.0) + c)).clamp(1e-6, 1 - 1e-6)
    y = (b.grades >= level).float()
    return F.binary_cross_entropy(p, y, reduction="none") * b.valid
