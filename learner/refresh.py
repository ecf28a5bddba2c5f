"""One refresh of the scoring head: new feedback in, a gated candidate out.

1. Window: searches logged since the previous refresh's window ended, up to `settle` ago (their
   feedback has had time to arrive), plus a bounded random replay of older engaged searches, so
   the head does not forget what it learnt before.
2. The newest `holdout_fraction` of the window (by time) is held out; nothing trains on it.
3. The position bias is re-fitted; the candidate warm-starts from the active head.
4. Per query type, the candidate must beat the active head on the holdout's IPS-weighted NDCG@10
   by `margin` without a worse click log-loss (beyond `logloss_tolerance`); types that do not
   keep the active head's behaviour, so no promotion can lower any type's holdout metric.
5. The candidate is stored (atomically, verified on load) and registered either way: promoted
   and activated, or rejected with its reason and metrics.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sqlalchemy.orm import Session, sessionmaker

from learner.coverage import retrieval_pools, shown_share
from learner.dataset import LoggedSearch, load_query_vectors, load_searches
from learner.finetune import (
    TrainConfig,
    build_features,
    child_head,
    evaluate,
    fit_calibration,
    judging_clip,
    merge_per_type,
    train,
)
from learner.position_bias import estimate
from learner.versions import prune_heads
from model.catalog_view import ProductVectors
from model.checkpoint import WEIGHTS, load_head, save_head
from model.head import QUERY_TYPES, FusionHead
from model.position_bias import bias_of
from storage.artifacts import read_manifest
from storage.db import transaction
from storage.registry import (
    VersionIn,
    active_version,
    last_window_end,
    register_version,
    set_active,
    update_run,
    utcnow,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RefreshConfig:
    event_grades: dict[str, int]
    settle: timedelta = timedelta(seconds=5)
    holdout_fraction: float = 0.2
    min_new_engaged: int = 100
    min_holdout_engaged: int = 50  # per query type, to judge that type at all
    replay: int = 20_000
    max_window: int = 200_000
    margin: float = 0.002
    logloss_tolerance: float = 0.002
    # learner.coverage: the least share of a type's served top 10 its holdout searches showed
    min_shown_share: float = 0.25
    per_channel: int = 100  # candidates per channel, as served (Settings.candidates_per_channel)
    coverage_sample: int = 100  # newest holdout searches per query type it is measured on
    keep_heads: int = 50  # newest versions whose artifacts stay on disk (learner.versions)
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class Encoders:
    text_id: str
    text_dim: int
    image_id: str
    image_dim: int
    colour_id: str | None = None  # the photos' colour descriptor, if one is logged
    colour_dim: int = 0


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
    started = time.perf_counter()
    phases: dict[str, float] = {}  # where a refresh's time goes, in its detail

    last = started

    def lap(name: str) -> None:
        nonlocal last
        t = time.perf_counter()
        phases[name], last = round(t - last, 2), t

    now = utcnow()
    cutoff = now - config.settle
    with sessions() as s:
        parent_version = active_version(s) or fallback_version
        start = last_window_end(s)
        window = load_searches(
            s, grades=config.event_grades, start=start, end=cutoff, limit=config.max_window
        )
        replay = (
            load_searches(
                s,
                grades=config.event_grades,
                end=start,
                with_events_only=True,
                limit=config.replay,
                sample=True,
            )
            if start is not None and config.replay
            else []
        )
    engaged = sum(bool(x.grades.any()) for x in window)
    lap("load_searches")
    detail: dict[str, Any] = {
        "phase_seconds": phases,
        "parent": parent_version,
        "window": {"start": start.isoformat() if start else None, "end": cutoff.isoformat()},
        "window_searches": len(window),
        "window_engaged": engaged,
        "replay_searches": len(replay),
    }
    if engaged < config.min_new_engaged:
        detail["reason"] = (
            f"not enough new feedback: {engaged} engaged searches since the last refresh, "
            f"{config.min_new_engaged} needed"
        )
        return _finish(sessions, run_id, "skipped", detail, started)

    parent, parent_card = load_head(heads_dir / parent_version)
    index_head, _ = load_head(heads_dir / fallback_version)
    if parent.projection_digest() != index_head.projection_digest():
        detail["reason"] = (
            f"active head {parent_version} belongs to another index build than this learner's "
            f"({fallback_version}); restart the learner after an ingest"
        )
        return _finish(sessions, run_id, "skipped", detail, started)
    split = len(window) - max(1, math.ceil(len(window) * config.holdout_fraction))
    train_searches, holdout = replay + window[:split], window[split:]
    bias, bias_stats = estimate(train_searches + holdout, prior_eta=bias_of(parent_card).eta)
    lap("heads_and_bias")
    with sessions() as s:
        tv, iv, cv = logged_query_vectors(s, window + replay, encoders)
    lap("load_vectors")
    tc = config.train
    torch.manual_seed(tc.seed)  # a bilinear residual starts from random query weights
    candidate = child_head(parent, index, tc.rank, train_gate=tc.train_gate)
    lap("child_head")  # the first refresh also fits the attribute maps here
    f_train, _ = build_features(candidate, train_searches, tv, iv, index, cv)
    f_hold, _ = build_features(candidate, holdout, tv, iv, index, cv)
    lap("features")
    levels = max(config.event_grades.values())
    candidate, info = train(candidate, f_train, bias, tc, levels=levels, progress=progress)
    lap("train")
    event_levels = {"click": 1, "purchase": levels}
    clip = judging_clip(bias, config.train.ips_clip)

    def judge(head: FusionHead) -> tuple[dict[str, Any], dict[str, dict[str, tuple[float, float]]]]:
        cal = fit_calibration(head, f_train, bias, event_levels)
        return evaluate(
            head, f_hold, bias, clip=clip, calibration=cal, event_levels=event_levels
        ), cal

    parent_m, _ = judge(parent)
    cand_m, cand_cal = judge(candidate)
    accept, reasons = {}, {}
    for t in QUERY_TYPES:
        p, c = parent_m[t], cand_m[t]
        if c["engaged"] < config.min_holdout_engaged:
            accept[t], reasons[t] = False, f"{c['engaged']} engaged holdout searches"
        elif not c["ips_ndcg@10"] >= p["ips_ndcg@10"] + config.margin:
            accept[t], reasons[t] = (
                False,
                (
                    f"ips_ndcg@10 {c['ips_ndcg@10']:.4f} vs active {p['ips_ndcg@10']:.4f} "
                    f"(needs +{config.margin})"
                ),
            )
        elif c["click_logloss"] > p["click_logloss"] + config.logloss_tolerance:
            accept[t], reasons[t] = (
                False,
                (f"click log-loss {c['click_logloss']:.4f} vs active {p['click_logloss']:.4f}"),
            )
        else:
            accept[t], reasons[t] = True, "better on the holdout"
    lap("judge")
    if any(accept.values()):  # what the holdout cannot see: products it never showed
        sample = [
            x
            for t in range(len(QUERY_TYPES))
            for x in [x for x in holdout if x.query_type == t][-config.coverage_sample :]
        ]
        pools = retrieval_pools(candidate, sample, tv, iv, index, config.per_channel)
        detail["coverage"] = shown_share(candidate, sample, pools, tv, iv, index, cv)
        for t in QUERY_TYPES:
            share = detail["coverage"].get(t, {}).get("shown_share")
            if accept[t] and share is not None and share < config.min_shown_share:
                accept[t], reasons[t] = (
                    False,
                    f"only {share:.0%} of its top 10 were shown by the holdout searches (at "
                    f"least {config.min_shown_share:.0%} needed): the holdout cannot vouch for "
                    "the rest",
                )
        lap("coverage")
    # Judged again only when it differs from both: all accepted is the candidate itself, and
    # with none accepted the candidate is what is kept (as rejected).
    final, final_m, calibration = candidate, cand_m, cand_cal
    if any(accept.values()) and not all(accept.values()):
        final = merge_per_type(candidate, parent, accept)
        final_m, calibration = judge(final)
    lap("merge")
    promoted = any(accept.values()) and all(
        final_m[t]["ips_ndcg@10"] >= parent_m[t]["ips_ndcg@10"] - 1e-9
        for t in QUERY_TYPES
        if final_m[t]["engaged"]
    )
    detail.update(
        {
            "position_bias": {"eta": bias_stats["eta"], "source": bias.source, **bias_stats},
            "train": info,
            "accepted_types": [t for t, ok in accept.items() if ok],
            "type_reasons": reasons,
            "holdout": {"active": parent_m, "candidate": cand_m, "final": final_m},
            "calibration": calibration,
        }
    )
    kept, kept_m, kept_cal = (
        (final, final_m, calibration) if promoted else (candidate, cand_m, cand_cal)
    )
    card = {  # of the head saved: the merged one if promoted, else the rejected candidate
        "parent": parent_version,
        "position_bias": {"eta": bias_stats["eta"], "source": bias.source},
        "class_weights": info["class_weights"],
        "window": detail["window"],
        "holdout": kept_m,
        "calibration": kept_cal,
    }
    version = save_head(heads_dir, kept, card)
    weights_sha = read_manifest(heads_dir / version)["files"][WEIGHTS]
    if version == parent_version:
        detail["reason"] = "training did not change the head (no epoch beat the start)"
        return _finish(sessions, run_id, "succeeded", detail, started, promoted=False)
    reason = (
        f"promoted for {', '.join(detail['accepted_types'])}"
        if promoted
        else "rejected: " + "; ".join(f"{t}: {r}" for t, r in reasons.items())
    )
    with transaction(sessions) as s:
        if promoted and active_version(s) not in (parent_version, None):
            promoted = False  # an operator switched versions meanwhile: theirs stands
            reason = "rejected: the active version changed during the run; " + reason
        registered = register_version(
            s,
            VersionIn(
                version=version,
                parent=parent_version,
                status="promoted" if promoted else "rejected",
                artifact_sha256=weights_sha,
                reason=reason,
                run_id=run_id,
                window_start=start,
                window_end=cutoff,
                class_weights=_jsonable(info["class_weights"]),
                metrics={"holdout": kept_m, "active": parent_m},
            ),
        )
        if promoted and registered:
            set_active(s, version)
    if not registered:
        reason = f"identical to the already registered {version}; nothing new registered"
        promoted = False
    detail.update({"candidate": version, "promoted": promoted, "reason": reason})
    try:  # housekeeping: the version is registered whatever happens here
        with sessions() as s:
            detail["pruned_heads"] = prune_heads(s, heads_dir, config.keep_heads)
    except Exception as e:
        log.exception("pruning old head artifacts failed")
        detail["prune_error"] = f"{type(e).__name__}: {e}"
    return _finish(
        sessions, run_id, "succeeded", detail, started, candidate=version, promoted=promoted
    )


def logged_query_vectors(
    session: Session, searches: list[LoggedSearch], encoders: Encoders
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The searches' frozen query vectors as logged: text, image and colour (by content key)."""
    texts = [x.text_key for x in searches if x.text_key]
    images = [x.image_key for x in searches if x.image_key]
    return (
        load_query_vectors(session, texts, encoders.text_id, encoders.text_dim),
        load_query_vectors(session, images, encoders.image_id, encoders.image_dim),
        load_query_vectors(session, images, encoders.colour_id, encoders.colour_dim)
        if encoders.colour_id
        else {},
    )


def _finish(
    sessions: sessionmaker[Session],
    run_id: int,
    status: str,
    detail: dict[str, Any],
    started: float,
    **fields: Any,
) -> dict[str, Any]:
    detail["seconds"] = round(time.perf_counter() - started, 2)
    detail["status"] = status
    update_run(
        sessions, run_id, status=status, finished_at=utcnow(), detail=_jsonable(detail), **fields
    )
    log.info("refresh run %d %s: %s", run_id, status, detail.get("reason", ""))
    return detail


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, torch.Tensor):
        return x.tolist()
    return x
