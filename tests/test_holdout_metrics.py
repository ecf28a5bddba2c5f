"""The numbers a promotion is judged on, on hand-made searches whose answers are known."""

from __future__ import annotations

import math

import pytest
import torch

from learner.calibration import fit_calibration
from learner.features import Batch, Features
from learner.holdout import evaluate, ips_ndcg, judging_clip
from learner.losses import examination_at, examination_loss
from model.head import QUERY_TYPES, FusionHead, HeadConfig
from model.position_bias import PositionBias


def batch(scores: list[list[float]], grades: list[list[int]], qtype: list[int]) -> Batch:
    """Searches whose only channel (text_text) carries `scores`; shown in list order."""
    b, k = len(scores), len(scores[0])
    sims = torch.zeros(b, k, 5)
    sims[..., 0] = torch.tensor(scores)
    mask = torch.zeros(b, k, 5, dtype=torch.bool)
    mask[..., 0] = True
    return Batch(
        qtype=torch.tensor(qtype),
        q_feat=torch.zeros(b, 1),
        rows=torch.zeros(b, k, dtype=torch.long),
        valid=torch.ones(b, k, dtype=torch.bool),
        sims=sims,
        mask=mask,
        grades=torch.tensor(grades),
        positions=torch.arange(1, k + 1).repeat(b, 1),
        attr=torch.zeros(b, k, 0),
        mix=torch.zeros(b, k, 4),
    )


@pytest.fixture
def head() -> FusionHead:
    return FusionHead(HeadConfig())  # no residual: the score is the one channel itself


def test_ips_ndcg_is_a_ratio_of_sums(head):
    """Search 1 was clicked at position 1, search 2 at position 3 (inverse propensity 3 with
    eta = 1). Ranking search 2's click last: DCG 1 + 3 / log2(4) over ideal 1 + 3 = 0.625 (the
    mean of per-search ratios would say 0.75)."""
    bias = PositionBias.power(1.0, "test")
    grades = [[1, 0, 0], [0, 0, 1]]
    best = batch([[3, 2, 1], [1, 2, 3]], grades, [0, 0])
    worse = batch([[3, 2, 1], [3, 2, 1]], grades, [0, 0])
    assert ips_ndcg(head, Features(best, torch.zeros(1, 1)), bias, 20) == pytest.approx(1.0)
    assert ips_ndcg(head, Features(worse, torch.zeros(1, 1)), bias, 20) == pytest.approx(0.625)


def test_log_loss_is_calibrated_per_query_type(head):
    """Text scores spread ten times narrower than image scores, same click pattern: one
    fit per type finds that scale; judged with its own type's fit, each type's log-loss is
    as good as the other's."""
    bias = PositionBias.power(0.0, "test")  # every position examined: only the score matters
    torch.manual_seed(0)
    n, k = 400, 10
    s = torch.randn(n, k)
    clicked = (torch.rand(n, k) < torch.sigmoid(2 * s - 2)).long()
    scale = torch.tensor([10.0 if i % 2 == 0 else 1.0 for i in range(n)])[:, None]
    qtype = [
        QUERY_TYPES.index("text") if i % 2 == 0 else QUERY_TYPES.index("image") for i in range(n)
    ]
    f = Features(batch((s / scale).tolist(), clicked.tolist(), qtype), torch.zeros(1, 1))
    cal = fit_calibration(head, f, bias, {"click": 1})["click"]
    assert cal["text"][0] == pytest.approx(20, rel=0.25)
    assert cal["image"][0] == pytest.approx(2, rel=0.25)
    m = evaluate(head, f, bias, clip=20, calibration={"click": cal}, event_levels={"click": 1})
    assert math.isclose(m["text"]["click_logloss"], m["image"]["click_logloss"], rel_tol=0.1)


def test_a_skip_where_it_was_surely_seen_teaches_more_than_one_hardly_seen():
    """The examination loss: ten products, none engaged, scored alike. The one skipped at
    position 1 (examined surely) is pushed down about 19 times as hard as the one at position 10
    (examined a tenth of the time, eta = 1); a click pushes up whatever its position."""
    bias = PositionBias.power(1.0, "test")
    b = batch([[0.0] * 10], [[0] * 10], [0])
    ex = examination_at(b.positions, bias)
    ab = torch.tensor([[1.0, 0.0]] * len(QUERY_TYPES))
    s = torch.zeros(1, 10, requires_grad=True)
    examination_loss(s, b, ex, ab).backward()
    assert s.grad is not None
    g = s.grad[0]
    assert (g > 0).all()  # every skip lowers its product's score
    assert float(g[0] / g[9]) == pytest.approx(19, rel=0.05)
    clicked = batch([[0.0] * 10], [[1] + [0] * 8 + [1]], [0])
    s = torch.zeros(1, 10, requires_grad=True)
    examination_loss(s, clicked, ex, ab).backward()
    assert s.grad is not None
    assert s.grad[0, 0] < 0 and s.grad[0, 9] < 0
    assert float(s.grad[0, 0]) == pytest.approx(float(s.grad[0, 9]))  # no inverse weighting


def test_the_judging_clip_never_binds_within_the_top_ten():
    """With eta = 1 a click at position 10 weighs 10, under the clip of 20, which stands; with
    eta = 2 it weighs 100, and the judging clip rises to let it."""
    assert judging_clip(PositionBias.power(1.0, "test"), 20) == pytest.approx(20)
    assert judging_clip(PositionBias.power(2.0, "test"), 20) == pytest.approx(100)
