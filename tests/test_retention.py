"""Retention deletes old searches with their shown items and feedback, and nothing newer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import torch
from factories import event, impression
from sqlalchemy import func, select

from learner.versions import prune_heads
from model.checkpoint import load_head, save_head
from model.head import FusionHead, HeadConfig
from storage.artifacts import DELETED
from storage.db import transaction
from storage.feedback import record_events
from storage.impressions import add_impressions
from storage.models import FeedbackEvent, Impression, ImpressionItem, ModelVersion
from storage.registry import VersionIn, register_version, set_active
from storage.retention import purge_before


def test_purge_deletes_old_searches_items_and_events_only(sessions):
    now = datetime.now(UTC)
    shown = ["p0", "p1", "p2"]
    old = [
        impression(search_id=f"old{i}", created_at=now - timedelta(days=100), products=shown)
        for i in range(7)
    ]
    new = impression(search_id="new", created_at=now - timedelta(days=1), products=shown)
    with transaction(sessions) as s:
        add_impressions(session=s, impressions=[*old, new])
    with transaction(sessions) as s:
        events = [event(sid, "p1", ts=now) for sid in ("old0", "old3", "new")]
        assert record_events(session=s, events=events, received_at=now).accepted == 3
    with sessions() as s:
        assert purge_before(session=s, cutoff=now - timedelta(days=90), batch=3) == 7
    with sessions() as s:
        count = lambda model: s.scalar(select(func.count()).select_from(model))  # noqa: E731
        assert count(Impression) == 1 and count(ImpressionItem) == 3
        assert s.scalars(select(FeedbackEvent.search_id)).all() == ["new"]


def test_head_retention_keeps_the_newest_the_bootstraps_and_the_active(sessions, tmp_path):
    """Seven versions, keep=2: the two newest, the bootstrap and the (old) active head keep their
    files; the other three lose them but stay in the registry."""
    heads = tmp_path / "heads"
    statuses = ["bootstrap", "promoted", "rejected", "promoted", "rejected", "rejected", "promoted"]
    versions = []
    for seed, status in enumerate(statuses):
        torch.manual_seed(seed)
        version = save_head(heads, FusionHead(HeadConfig()), {"parent": "test"})
        versions.append(version)
        with transaction(sessions) as s:
            register_version(session=s, v=VersionIn(version, None, status, "0" * 64))
    with transaction(sessions) as s:
        set_active(session=s, version=versions[1])
    crashed = heads / f"{DELETED}{versions[2]}-0000"  # what a crash mid-delete leaves
    crashed.mkdir()
    with sessions() as s:
        pruned = prune_heads(s, heads, keep=2)
        rows = s.scalar(select(func.count()).select_from(ModelVersion))
    assert sorted(pruned) == sorted(versions[2:5])
    on_disk = {p.name for p in heads.iterdir()}  # the crash's leftover is gone too
    assert on_disk == {versions[0], versions[1], versions[5], versions[6]}
    assert rows == len(statuses)
    load_head(heads / versions[1])  # what is kept still verifies
    with sessions() as s:
        assert prune_heads(s, heads, keep=2) == []  # nothing left to prune
