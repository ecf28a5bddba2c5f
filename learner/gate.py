"""Which query types a candidate may take over from the active head, and why not the others."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from learner.calibration import Calibration
from learner.coverage import retrieval_pools, shown_share
from learner.dataset import LoggedSearch
from learner.features import Features
from learner.holdout import Metrics, PairedGain, paired_gain, paired_logloss
from model.catalog_view import ProductVectors
from model.head import QUERY_TYPES, FusionHead
from model.position_bias import PositionBias

Vectors = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class GainTest:
    """Whether a query type's paired gain surely exceeds the margin. `ci_low`..`ci_high` is the
    two-sided interval at 2 * confidence - 1 (90% at 0.95), so each end is a one-sided bound at
    `confidence` and `ci_low` is the very bound the gate compares with the margin; `p_value` is
    one-sided, of a gain no larger than the margin."""

    gain: float
    se: float
    ci_low: float
    ci_high: float
    z: float
    p_value: float
    searches: int
    confidence: float
    margin: float
    metric: str = "ips_ndcg@10 gain"

    @property
    def passed(self) -> bool:
        return self.ci_low > self.margin

    def describe(self) -> str:
        """E.g. "ips_ndcg@10 gain +0.0021 (90% CI -0.0040..+0.0082, 48 searches, p=0.29)"."""
        return (
            f"{self.metric} {self.gain:+.4f} ({2 * self.confidence - 1:.0%} CI "
            f"{self.ci_low:+.4f}..{self.ci_high:+.4f}, {self.searches} searches, "
            f"p={self.p_value:.2g})"
        )

    def as_detail(self) -> dict[str, float | int | str]:
        return {
            "gain": self.gain,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "interval": f"two-sided {2 * self.confidence - 1:.0%}: each end one-sided "
            f"{self.confidence:.0%}",
            "se": self.se,
            "z": self.z,
            "p_value": self.p_value,  # of a gain no larger than the margin
            "margin": self.margin,
            "searches": self.searches,
        }


def gain_test(
    paired: PairedGain, *, margin: float, confidence: float, metric: str = "ips_ndcg@10 gain"
) -> GainTest:
    """The normal interval of the delta method for the paired ratio of sums, with a one-sided
    z-test of gain > `margin`. The delta method rather than a bootstrap because it is closed-form
    and reproducible without a seed and its p-value and bound agree by construction, while at the
    gate's 50-odd searches a percentile bootstrap is no more accurate (both are first-order)."""
    g, se = paired.gain, paired.se
    # at confidence 0.5 the bound is the estimate itself, even with an infinite error
    half = NormalDist().inv_cdf(confidence) * se if confidence > 0.5 else 0.0
    z = _z(g - margin, se)
    p = 1.0 - NormalDist().cdf(z)
    return GainTest(g, se, g - half, g + half, z, p, paired.searches, confidence, margin, metric)


def paired_tests(
    candidate: tuple[FusionHead, Calibration],
    active: tuple[FusionHead, Calibration],
    f: Features,
    bias: PositionBias,
    clip: float,
    *,
    margin: float,
    confidence: float,
    logloss_tolerance: float,
) -> tuple[dict[str, GainTest], dict[str, GainTest]]:
    """Per query type, on the holdout `f`: the test of the candidate's IPS-NDCG@10 gain over the
    active head (against `margin`), and the test of its click log-loss increase, each head
    calibrated its way (against `logloss_tolerance`); both at `confidence`."""
    gains = paired_gain(candidate[0], active[0], f, bias, clip)
    worse = paired_logloss(*candidate, *active, f, bias)
    increase = "click log-loss increase"
    return (
        {t: gain_test(g, margin=margin, confidence=confidence) for t, g in gains.items()},
        {
            t: gain_test(g, margin=logloss_tolerance, confidence=confidence, metric=increase)
            for t, g in worse.items()
        },
    )


def _z(above: float, se: float) -> float:
    """`above` / `se`, where a zero error (every search gained alike) makes the sign certain."""
    if se > 0:
        return above / se
    if se == 0 and not math.isnan(above):
        return math.copysign(math.inf, above) if above else 0.0
    return math.nan  # no engaged searches


def holdout_gate(
    cand_m: Metrics,
    tests: Mapping[str, GainTest],
    logloss: Mapping[str, GainTest],
    *,
    min_engaged: int,
) -> tuple[dict[str, bool], dict[str, str]]:
    """Per query type: accepted if, on at least `min_engaged` engaged holdout searches, the
    candidate is surely better than the active head on IPS-weighted NDCG@10 (its test passes: the
    lower confidence bound of the paired gain exceeds the margin) and its click log-loss is not
    surely worse (the lower bound of its paired increase does not exceed that test's margin, the
    tolerance); and the reason either way. Both at the same confidence: a fixed tolerance on a
    log-loss measured on a hundred searches refused gains as surely as a fixed margin took noise."""
    accept, reasons = {}, {}
    for t in QUERY_TYPES:
        test, worse = tests[t], logloss[t]
        if cand_m[t]["engaged"] < min_engaged:
            accept[t], reasons[t] = False, f"{cand_m[t]['engaged']} engaged holdout searches"
        elif not test.passed:
            accept[t], reasons[t] = False, f"{test.describe()}: {_not_sure(test)}"
        elif worse.passed:
            accept[t], reasons[t] = False, f"{worse.describe()}: surely worse than the active"
        else:
            accept[t], reasons[t] = True, f"better on the holdout: {test.describe()}"
    return accept, reasons


def _not_sure(test: GainTest) -> str:
    if test.margin:
        return f"not surely better by more than {test.margin:+.4f}"
    return "not surely better"


def coverage_gate(
    candidate: FusionHead,
    holdout: list[LoggedSearch],
    vectors: tuple[Vectors, Vectors, Vectors],
    index: ProductVectors,
    accept: dict[str, bool],
    reasons: dict[str, str],
    *,
    sample: int,
    per_channel: int,
    min_shown_share: float,
) -> dict[str, dict[str, float]]:
    """Refuse (in `accept` and `reasons`) each accepted type of which less than
    `min_shown_share` of the candidate's served top 10 had been shown by its newest `sample`
    holdout searches: the holdout cannot vouch for the rest. Returns the shares measured."""
    tv, iv, cv = vectors
    searches = [
        x
        for t in range(len(QUERY_TYPES))
        for x in [x for x in holdout if x.query_type == t][-sample:]
    ]
    pools = retrieval_pools(candidate, searches, tv, iv, index, per_channel)
    coverage = shown_share(candidate, searches, pools, tv, iv, index, cv, per_channel=per_channel)
    for t in QUERY_TYPES:
        share = coverage.get(t, {}).get("shown_share")
        if accept[t] and share is not None and share < min_shown_share:
            accept[t], reasons[t] = (
                False,
                f"only {share:.0%} of its top 10 were shown by the holdout searches (at "
                f"least {min_shown_share:.0%} needed): the holdout cannot vouch for the rest",
            )
    return coverage
