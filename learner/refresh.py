"""One refresh of the scoring head: new feedback in, a gated candidate out.

1. Window: searches logged since the previous refresh's window ended, up to `settle` ago (their
   feedback has had time to arrive), plus a bounded random replay of older engaged searches, so
   the head does not forget what it learnt before.
2. Each query type keeps a holdout that carries over between refreshes (learner.split): the
   newest `holdout_fraction` of its new searches, topped up from earlier refreshes' holdouts
   until it has `keep_holdout_engaged` engaged searches; it is judged from
   `min_holdout_engaged`. Nothing trains on a held-out search.
3. The position bias is re-fitted; the candidate warm-starts from the active head.
4. Per query type, the candidate must be surely better than the active head on the holdout's
   IPS-weighted NDCG@10: a paired test over its engaged searches, whose lower confidence bound
   (at `confidence`) of the gain must exceed `margin` (learner.gate.gain_test). Its click
   log-loss may not be surely worse (the same paired test's lower bound of the increase above
   `logloss_tolerance`), and the holdout must have shown enough of what it would serve
   (learner.coverage); types that fail keep the active head's behaviour, so no promotion can
   lower any type's holdout metric.
5. The candidate is stored (atomically, verified on load) and registered either way: promoted
   and activated, or rejected with its reason and metrics.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sqlalchemy.orm import Session, sessionmaker

from learner.calibration import Calibration, fit_calibration
from learner.child import child_head, merge_per_type
from learner.dataset import Encoders, logged_query_vectors
from learner.engagement import compute_engagement, leave_one_out
from learner.features import Features, build_features
from learner.gate import coverage_gate, holdout_gate, paired_tests
from learner.holdout import Metrics, evaluate, judging_clip
from learner.position_bias import estimate
from learner.record import RunRecord, jsonable
from learner.split import Split, split_window
from learner.train import TrainConfig, train
from learner.versions import prune_heads
from learner.window import Window, load_window
from model.catalog_view import ProductVectors
from model.checkpoint import WEIGHTS, load_head, save_head
from model.head import QUERY_TYPES, FusionHead
from model.position_bias import PositionBias, bias_of
from storage.artifacts import read_manifest
from storage.db import transaction
from storage.impressions import mark_holdout
from storage.models import RunStatus, VersionStatus
from storage.registry import VersionIn, active_version, register_version, set_active

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class RefreshConfig:
    """How a refresh windows, judges and keeps. The fields without a default are user settings
    (service.config.Settings holds their defaults; service.learning.learner_config copies them)."""

    event_grades: dict[str, int]
    settle: timedelta
    holdout_fraction: float
    # while a type's holdout is short of min_holdout_engaged, up to this share of its new searches
    holdout_fill: float = 0.5
    min_new_engaged: int
    min_holdout_engaged: int  # per query type, to judge that type at all
    keep_holdout_engaged: int  # per query type, carried over while the holdout has fewer
    replay: int
    max_window: int
    margin: float  # the least gain the lower confidence bound of a type's paired gain must exceed
    confidence: float  # of that one-sided bound
    # the click log-loss increase whose lower confidence bound refuses a type (learner.gate)
    logloss_tolerance: float = 0.002
    # learner.coverage: the least share of a type's served top 10 its holdout searches showed
    min_shown_share: float
    per_channel: int  # candidates per channel, as served
    coverage_sample: int = 100  # newest holdout searches per query type it is measured on
    keep_heads: int  # newest versions whose artifacts stay on disk (learner.versions)
    train: TrainConfig


@dataclass
class _Run:
    """What every phase of one refresh needs, and the run's record."""

    sessions: sessionmaker[Session]
    index: ProductVectors
    heads_dir: Path
    encoders: Encoders
    config: RefreshConfig
    fallback_version: str
    progress: bool
    record: RunRecord

    @property
    def detail(self) -> dict[str, Any]:
        return self.record.detail

    def lap(self, name: str) -> None:
        self.record.lap(name)

    def finish(self, status: RunStatus, **fields: Any) -> dict[str, Any]:
        return self.record.finish(status, **fields)


@dataclass
class _Fitted:
    """The trained candidate and what it is judged with."""

    parent: FusionHead
    candidate: FusionHead
    info: dict[str, object]
    bias: PositionBias
    bias_stats: dict[str, Any]
    split: Split
    f_train: Features
    f_hold: Features
    vectors: tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]
    event_levels: dict[str, int]
    clip: float

    def judge(self, head: FusionHead) -> tuple[Metrics, Calibration]:
        """`head`'s holdout metrics, with its calibration fitted on the training searches."""
        cal = fit_calibration(head, self.f_train, self.bias, self.event_levels)
        metrics = evaluate(
            head,
            self.f_hold,
            self.bias,
            clip=self.clip,
            calibration=cal,
            event_levels=self.event_levels,
        )
        return metrics, cal


@dataclass
class _Verdict:
    parent_m: Metrics
    cand_m: Metrics
    cand_cal: Calibration
    accept: dict[str, bool]
    reasons: dict[str, str]


def run_refresh(
    *,
    sessions: sessionmaker[Session],
    index: ProductVectors,
    heads_dir: Path,
    encoders: Encoders,
    config: RefreshConfig,
    run_id: int,
    fallback_version: str,
    progress: bool = False,
) -> dict[str, Any]:
    """Train, judge and register one candidate. Returns the run's detail (also stored)."""
    record = RunRecord(sessions, run_id)
    run = _Run(sessions, index, heads_dir, encoders, config, fallback_version, progress, record)
    w = _load_window(run)
    if "reason" in run.detail:
        return run.finish(RunStatus.SKIPPED)
    fit = _fit(run, w)
    if fit is None:
        return run.finish(RunStatus.SKIPPED)
    verdict = _judge(run, fit)
    if any(verdict.accept.values()):  # what the holdout cannot see: products it never showed
        _coverage_gate(run, fit, verdict)
    return _register(run, w, fit, verdict)


def _load_window(run: _Run) -> Window:
    """The new searches and the replay sample; a reason in the detail if there are too few."""
    config = run.config
    with run.sessions() as s:
        w = load_window(
            s,
            grades=config.event_grades,
            settle=config.settle,
            max_window=config.max_window,
            replay=config.replay,
            fallback_version=run.fallback_version,
        )
    run.lap("load_searches")
    run.detail.update({"phase_seconds": run.record.phases, **w.describe()})
    if w.engaged < config.min_new_engaged:
        run.detail["reason"] = (
            f"not enough new feedback: {w.engaged} engaged searches since the last refresh, "
            f"{config.min_new_engaged} needed"
        )
    return w


def _fit(run: _Run, w: Window) -> _Fitted | None:
    """The candidate, warm-started from the active head and trained on all but the holdout;
    None (with the reason in the detail) if the active head belongs to another index build."""
    config, index, heads_dir = run.config, run.index, run.heads_dir
    parent, parent_card = load_head(heads_dir / w.parent_version)
    index_head, _ = load_head(heads_dir / run.fallback_version)
    if parent.projection_digest() != index_head.projection_digest():
        run.detail["reason"] = (
            f"active head {w.parent_version} belongs to another index build than this "
            f"learner's ({run.fallback_version}); restart the learner after an ingest"
        )
        return None
    split = split_window(
        w.searches,
        w.carried,
        fraction=config.holdout_fraction,
        min_engaged=config.min_holdout_engaged,
        keep_engaged=config.keep_holdout_engaged,
        fill=config.holdout_fill,
    )
    train_searches, holdout = w.replay + split.train, split.holdout
    run.detail["holdout_searches"] = split.held_per_type()
    bias, bias_stats = estimate(train_searches + holdout, prior_eta=bias_of(parent_card).eta)
    run.lap("heads_and_bias")
    with run.sessions() as s:
        tv, iv, cv = logged_query_vectors(s, train_searches + holdout, run.encoders)
    run.lap("load_vectors")
    tc = config.train
    torch.manual_seed(tc.seed)  # a bilinear residual starts from random query weights
    candidate = child_head(parent, index, tc.rank, train_gate=tc.train_gate)
    run.lap("child_head")  # the first refresh also fits the attribute maps here
    levels = max(config.event_grades.values())
    table = compute_engagement(train_searches, bias, w.cutoff, levels)  # never the holdout's
    candidate.engagement = table if candidate.mix is not None else None
    n, own = config.per_channel, leave_one_out(table, bias, w.cutoff, levels)
    f_train, _ = build_features(
        candidate, train_searches, tv, iv, index, cv, per_channel=n, engagement=own
    )
    f_hold, _ = build_features(candidate, holdout, tv, iv, index, cv, per_channel=n)
    run.lap("features")
    candidate, info = train(candidate, f_train, bias, tc, levels=levels, progress=run.progress)
    run.lap("train")
    return _Fitted(
        parent=parent,
        candidate=candidate,
        info=info,
        bias=bias,
        bias_stats=bias_stats,
        split=split,
        f_train=f_train,
        f_hold=f_hold,
        vectors=(tv, iv, cv),
        event_levels={"click": 1, "purchase": levels},
        clip=judging_clip(bias, tc.ips_clip),
    )


def _judge(run: _Run, fit: _Fitted) -> _Verdict:
    """Per query type, whether the candidate is surely better than the active head on the
    holdout, and why; the paired tests' numbers go in the detail."""
    config = run.config
    parent_m, parent_cal = fit.judge(fit.parent)
    cand_m, cand_cal = fit.judge(fit.candidate)
    tests, logloss = paired_tests(
        (fit.candidate, cand_cal),
        (fit.parent, parent_cal),
        fit.f_hold,
        fit.bias,
        fit.clip,
        margin=config.margin,
        confidence=config.confidence,
        logloss_tolerance=config.logloss_tolerance,
    )
    run.detail["paired"] = {t: test.as_detail() for t, test in tests.items()}
    run.detail["paired_logloss"] = {t: test.as_detail() for t, test in logloss.items()}
    accept, reasons = holdout_gate(cand_m, tests, logloss, min_engaged=config.min_holdout_engaged)
    run.lap("judge")
    return _Verdict(parent_m, cand_m, cand_cal, accept, reasons)


def _coverage_gate(run: _Run, fit: _Fitted, verdict: _Verdict) -> None:
    """Refuse the accepted types whose served top 10 the holdout searches mostly never showed."""
    config = run.config
    run.detail["coverage"] = coverage_gate(
        fit.candidate,
        fit.split.holdout,
        fit.vectors,
        run.index,
        verdict.accept,
        verdict.reasons,
        sample=config.coverage_sample,
        per_channel=config.per_channel,
        min_shown_share=config.min_shown_share,
    )
    run.lap("coverage")


def _register(run: _Run, w: Window, fit: _Fitted, verdict: _Verdict) -> dict[str, Any]:
    """Merge the accepted types into the active head, store the result and register it."""
    accept, parent_m = verdict.accept, verdict.parent_m
    # Judged again only when it differs from both: all accepted is the candidate itself, and
    # with none accepted the candidate is what is kept (as rejected).
    final, final_m, calibration = fit.candidate, verdict.cand_m, verdict.cand_cal
    if any(accept.values()) and not all(accept.values()):
        final = merge_per_type(fit.candidate, fit.parent, accept)
        final_m, calibration = fit.judge(final)
    run.lap("merge")
    promoted = any(accept.values()) and all(
        final_m[t]["ips_ndcg@10"] >= parent_m[t]["ips_ndcg@10"] - 1e-9
        for t in QUERY_TYPES
        if final_m[t]["engaged"]
    )
    run.detail.update(
        {
            "position_bias": {
                "eta": fit.bias_stats["eta"],
                "source": fit.bias.source,
                **fit.bias_stats,
            },
            "train": fit.info,
            "accepted_types": [t for t, ok in accept.items() if ok],
            "type_reasons": verdict.reasons,
            "holdout": {"active": parent_m, "candidate": verdict.cand_m, "final": final_m},
            "calibration": calibration,
        }
    )
    if promoted:
        return _keep(run, w, fit, verdict, final, final_m, calibration, promoted=True)
    return _keep(
        run, w, fit, verdict, fit.candidate, verdict.cand_m, verdict.cand_cal, promoted=False
    )


def _keep(
    run: _Run,
    w: Window,
    fit: _Fitted,
    verdict: _Verdict,
    head: FusionHead,
    metrics: Metrics,
    calibration: Calibration,
    *,
    promoted: bool,
) -> dict[str, Any]:
    """Save `head` (the merged one if promoted, else the rejected candidate) and register it,
    promoted and activated or rejected; then prune old artifacts."""
    card = {
        "parent": w.parent_version,
        "position_bias": {"eta": fit.bias_stats["eta"], "source": fit.bias.source},
        "class_weights": fit.info["class_weights"],
        "window": run.detail["window"],
        "holdout": metrics,
        "calibration": calibration,
    }
    version = save_head(run.heads_dir, head, card)
    weights_sha = read_manifest(run.heads_dir / version)["files"][WEIGHTS]
    if version == w.parent_version:
        run.detail["reason"] = "training did not change the head (no epoch beat the start)"
        return run.finish(RunStatus.SUCCEEDED, promoted=False)
    reason = (
        f"promoted for {', '.join(run.detail['accepted_types'])}"
        if promoted
        else "rejected: " + "; ".join(f"{t}: {r}" for t, r in verdict.reasons.items())
    )
    with transaction(run.sessions) as s:
        if promoted and active_version(session=s) not in (w.parent_version, None):
            promoted = False  # an operator switched versions meanwhile: theirs stands
            reason = "rejected: the active version changed during the run; " + reason
        registered = register_version(
            session=s,
            v=VersionIn(
                version=version,
                parent=w.parent_version,
                status=VersionStatus.PROMOTED if promoted else VersionStatus.REJECTED,
                artifact_sha256=weights_sha,
                reason=reason,
                run_id=run.record.run_id,
                window_start=w.start,
                window_end=w.cutoff,
                class_weights=jsonable(fit.info["class_weights"]),
                metrics={"holdout": metrics, "active": verdict.parent_m},
            ),
        )
        if promoted and registered:
            set_active(session=s, version=version)
        if registered:  # the window is consumed: its holdout stays out of later training
            mark_holdout(session=s, hold=fit.split.hold, release=fit.split.release)
    if not registered:
        reason = f"identical to the already registered {version}; nothing new registered"
        promoted = False
    run.detail.update({"candidate": version, "promoted": promoted, "reason": reason})
    _prune(run)
    return run.finish(RunStatus.SUCCEEDED, candidate=version, promoted=promoted)


def _prune(run: _Run) -> None:
    """Housekeeping: the version is registered whatever happens here."""
    try:
        with run.sessions() as s:
            run.detail["pruned_heads"] = prune_heads(s, run.heads_dir, run.config.keep_heads)
    except Exception as e:
        log.exception("pruning old head artifacts failed")
        run.detail["prune_error"] = f"{type(e).__name__}: {e}"
