"""Score calibration: how a head's scores map to the chance of an event, given examination."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from learner.features import Features, all_scores
from learner.losses import examination_at
from model.head import QUERY_TYPES, FusionHead
from model.position_bias import PositionBias

Calibration = dict[str, dict[str, tuple[float, float]]]  # event level -> query type -> (a, b)


def fit_calibration(
    head: FusionHead,
    f: Features,
    bias: PositionBias,
    levels: Mapping[str, int],
    steps: int = 200,
    *,
    searches: torch.Tensor | None = None,
) -> Calibration:
    """For each named event level and query type, (a, b) of P(grade >= level | shown at k) =
    examination(k) * sigmoid(a * s + b). Per type because the types' scores spread differently
    (a residual that sharpens composed queries would otherwise be judged against a
    text-dominated fit); a type without searches here gets the fit over all of them. The head
    scores `f` once for every level. `searches`: fit on those of `f` only (indexes), without
    copying their features."""
    b = f.batch
    s = all_scores(head, f, searches=searches)
    pick = (lambda t: t) if searches is None else (lambda t: t[searches])  # noqa: E731
    qtype, valid, grades = pick(b.qtype), pick(b.valid), pick(b.grades)
    ex = examination_at(pick(b.positions), bias)
    types = {
        t: sel for i, t in enumerate(QUERY_TYPES) if (sel := valid & (qtype == i)[:, None]).any()
    }
    picked = {t: (s[sel], ex[sel]) for t, sel in types.items()}
    out: Calibration = {}
    for name, level in levels.items():
        y = ((grades >= level) & valid).float()
        fits = {t: _fit_ab(*picked[t], y[sel], steps) for t, sel in types.items()}
        if len(fits) < len(QUERY_TYPES):
            overall = _fit_ab(s[valid], ex[valid], y[valid], steps)
            fits = {t: fits.get(t, overall) for t in QUERY_TYPES}
        out[name] = fits
    return out


def _fit_ab(s: torch.Tensor, ex: torch.Tensor, y: torch.Tensor, steps: int) -> tuple[float, float]:
    a = torch.tensor(1.0, requires_grad=True)
    c = torch.tensor(-2.0, requires_grad=True)
    opt = torch.optim.LBFGS([a, c], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        p = (ex * torch.sigmoid(a * s + c)).clamp(1e-6, 1 - 1e-6)
        loss = F.binary_cross_entropy(p, y)
        loss.backward()
        return loss

    if len(y):
        opt.step(closure)
    return float(a.detach()), float(c.detach())
