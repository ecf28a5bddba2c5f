"""The numbers a candidate is judged on: IPS-weighted NDCG@10 of re-ranking what was shown, its
paired gain over the active head, and the log-loss of its calibrated event probabilities."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from learner.calibration import Calibration
from learner.features import Batch, Features, all_scores
from learner.losses import event_nll, examination_at, inverse_propensity
from model.head import QUERY_TYPES, FusionHead
from model.position_bias import PositionBias

Metrics = dict[str, dict[str, float]]  # query type (and "all") -> metric -> value


def judging_clip(bias: PositionBias, clip: float, depth: int = 10) -> float:
    """The clip on inverse propensities when NDCG@`depth` is judged: at least 1 / examination
    at `depth`, so that no click within the top `depth` counts for less than it should (a clip
    that binds there favours the ranking that logged the clicks). Training keeps the lower clip:
    a few heavy deep clicks add variance to a gradient, not just to a verdict."""
    ex = bias.examination
    return max(clip, 1.0 / ex[min(depth, len(ex)) - 1])


def ips_ndcg(head: FusionHead, f: Features, bias: PositionBias, clip: float) -> float:
    dcg, idcg = _dcg_per_search(all_scores(head, f), f.batch, bias, clip)
    return _ratio(dcg, idcg, idcg > 0)


def evaluate(
    head: FusionHead,
    f: Features,
    bias: PositionBias,
    *,
    clip: float,
    calibration: Calibration,
    event_levels: dict[str, int],
) -> Metrics:
    """Per query type (and "all"): IPS-weighted NDCG@10 of re-ranking what was shown, over
    searches with an engaged product, and the log-loss of each calibrated event level."""
    b = f.batch
    s = all_scores(head, f)
    dcg, idcg = _dcg_per_search(s, b, bias, clip)
    has_pos = idcg > 0
    ex = examination_at(b.positions, bias)
    ll: dict[str, torch.Tensor] = {}
    for name, level in event_levels.items():
        ab = torch.tensor([calibration[name][t] for t in QUERY_TYPES])
        per = event_nll(s, b, ex, ab, level)
        ll[name] = per.sum(1) / b.valid.sum(1).clamp(min=1)
    out: Metrics = {}
    groups = {"all": torch.ones(len(b), dtype=torch.bool)}
    groups |= {t: b.qtype == i for i, t in enumerate(QUERY_TYPES)}
    for name, sel in groups.items():
        engaged = sel & has_pos
        row: dict[str, float] = {
            "searches": int(sel.sum()),
            "engaged": int(engaged.sum()),
            "ips_ndcg@10": _ratio(dcg, idcg, engaged),
        }
        for ev_name, v in ll.items():
            w = b.valid[sel].sum(1).float()
            row[f"{ev_name}_logloss"] = (
                float((v[sel] * w).sum() / w.sum()) if w.sum() > 0 else float("nan")
            )
        out[name] = row
    return out


@dataclass(frozen=True)
class PairedGain:
    """The candidate's difference from the active head on the same searches as a ratio of sums
    (its IPS-weighted NDCG@10 gain, or how much higher its click log-loss is), with the
    delta-method standard error of that ratio estimator."""

    gain: float  # e.g. sum(dcg_candidate - dcg_active) / sum(idcg)
    se: float  # inf with fewer than two searches, nan with none
    searches: int

    @classmethod
    def of(cls, diff: torch.Tensor, idcg: torch.Tensor) -> PairedGain:
        """From per-search DCG differences and ideal DCGs. The gain is a ratio of sums, so its
        variance is that of the linearised residual diff - gain * idcg, divided by sum(idcg)^2
        (with n / (n - 1) for the mean estimated from the same searches)."""
        n = len(diff)
        d, w = diff.double(), idcg.double()
        total = float(w.sum())
        if n == 0 or total <= 0:
            return cls(float("nan"), float("nan"), n)
        gain = float(d.sum()) / total
        if n < 2:  # one search says nothing about the spread between searches
            return cls(gain, math.inf, n)
        ss = float(((d - gain * w) ** 2).sum())
        return cls(gain, math.sqrt(ss * n / (n - 1)) / total, n)


def paired_gain(
    candidate: FusionHead, active: FusionHead, f: Features, bias: PositionBias, clip: float
) -> dict[str, PairedGain]:
    """Per query type: the candidate's IPS-weighted NDCG@10 gain over `active` on the same
    engaged searches `evaluate` scores. Pairing them search by search removes the variance the
    two heads share (which searches were easy), which two separate metrics would count twice."""
    b = f.batch
    dcg_c, idcg = _dcg_per_search(all_scores(candidate, f), b, bias, clip)
    dcg_a, _ = _dcg_per_search(all_scores(active, f), b, bias, clip)
    engaged = idcg > 0
    out: dict[str, PairedGain] = {}
    for i, t in enumerate(QUERY_TYPES):
        sel = engaged & (b.qtype == i)
        out[t] = PairedGain.of(dcg_c[sel] - dcg_a[sel], idcg[sel])
    return out


def paired_logloss(
    candidate: FusionHead,
    candidate_cal: Calibration,
    active: FusionHead,
    active_cal: Calibration,
    f: Features,
    bias: PositionBias,
) -> dict[str, PairedGain]:
    """Per query type: how much higher the candidate's click log-loss is than the active head's,
    each calibrated as `evaluate` calibrates it, per shown product of the same searches (the
    ratio of sums `evaluate` reports), so that a worse log-loss is judged as surely as a gain."""
    b = f.batch
    ex = examination_at(b.positions, bias)

    def per_search(head: FusionHead, cal: Calibration) -> torch.Tensor:
        ab = torch.tensor([cal["click"][t] for t in QUERY_TYPES])
        return event_nll(all_scores(head, f), b, ex, ab, 1).sum(1)

    diff = per_search(candidate, candidate_cal) - per_search(active, active_cal)
    shown = b.valid.sum(1).float()
    return {
        t: PairedGain.of(diff[b.qtype == i], shown[b.qtype == i]) for i, t in enumerate(QUERY_TYPES)
    }


def _dcg_per_search(
    s: torch.Tensor, b: Batch, bias: PositionBias, clip: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per search: IPS-weighted DCG@10 of re-ranking its shown products by `s`, and the ideal
    DCG@10 of the same gains (which does not depend on `s`)."""
    ipw = inverse_propensity(b.positions, bias, clip, True)
    gains = (2.0 ** b.grades.float() - 1) * ipw * b.valid
    order = torch.argsort(s, dim=1, descending=True)
    k = min(10, s.shape[1])
    disc = 1 / torch.log2(torch.arange(2, k + 2, dtype=torch.float32))
    dcg = (torch.gather(gains, 1, order)[:, :k] * disc).sum(1)
    idcg = (torch.sort(gains, dim=1, descending=True).values[:, :k] * disc).sum(1)
    return dcg, idcg


def _ratio(dcg: torch.Tensor, idcg: torch.Tensor, sel: torch.Tensor) -> float:
    """IPS-weighted NDCG@10 as a ratio of sums over the selected searches: the summed
    IPS-weighted DCG is the unbiased estimate of the model's DCG, and dividing by the summed
    ideal (a constant of the holdout) keeps it in [0, 1]. The mean of per-search ratios would be
    dominated by the few searches with a deep click, and would punish a model for lifting
    relevant products the shopper never saw."""
    total = float(idcg[sel].sum())
    return float(dcg[sel].sum()) / total if total > 0 else float("nan")
