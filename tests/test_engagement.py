"""Product engagement: debiased by position, decayed with age, smoothed toward the mean, left out
of the searches that made it, and stored with the head it was computed for."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from learner.dataset import LoggedSearch
from learner.engagement import HALF_LIFE_DAYS, compute_engagement, leave_one_out
from model.checkpoint import load_head, save_head
from model.engagement import Engagement
from model.head import FusionHead, HeadConfig
from model.position_bias import PositionBias
from storage.models import utcnow

NOW = utcnow()
BIAS = PositionBias.prior()


def search(sid: str, shown: list[str], grades: list[int], age_days: float = 0) -> LoggedSearch:
    return LoggedSearch(
        search_id=sid,
        created_at=NOW - timedelta(days=age_days),
        query_type=0,
        text_key=None,
        image_key=None,
        explore=False,
        product_ids=tuple(shown),
        model_positions=np.arange(1, len(shown) + 1),
        propensities=np.ones(len(shown)),
        grades=np.array(grades),
    )


def test_a_product_picked_more_than_its_positions_explain_is_lifted():
    searches = [search(f"s{i}", ["a", "b", "c"], [0, 1, 0]) for i in range(50)]
    table = compute_engagement(searches, BIAS, NOW, levels=3)
    a, b, c, unseen = table.lift(["a", "b", "c", "never-shown"])
    assert b > 0 > a and c < 0 and unseen == 0.0
    assert a < c  # a was looked at most (position 1) and never picked


def test_old_events_count_less():
    fresh = [search("new", ["a", "b"], [1, 0])]
    old = [search("old", ["a", "b"], [0, 1], age_days=4 * HALF_LIFE_DAYS)]
    a, b = compute_engagement(fresh + old, BIAS, NOW, levels=3).lift(["a", "b"])
    assert a > b


def test_a_search_does_not_see_its_own_click():
    """Trained on, a search's products read the table without its own events: a product
    clicked only there looks like any unseen one to it, and lifted to every other search."""
    searches = [search("s1", ["a", "b"], [0, 3]), search("s2", ["a", "c"], [0, 0])]
    table = compute_engagement(searches, BIAS, NOW, levels=3)
    own = leave_one_out(table, BIAS, NOW, levels=3)
    assert own(searches[0])[1] == pytest.approx(0.0, abs=1e-9)
    assert table.lift(["b"])[0] > 0.2
    held_out = search("h", ["b"], [0])
    assert own(held_out) == table.lift(["b"])


def test_the_table_is_stored_and_versioned_with_the_head(tmp_path):
    head = FusionHead(HeadConfig(hybrid=True))
    plain = save_head(tmp_path, head, {"parent": None})
    head.engagement = Engagement({"a": (2.0, 3.0), "b": (0.0, 4.0)}, 0.25)
    version = save_head(tmp_path, head, {"parent": None})
    assert version != plain  # same weights, another table: another ranking
    loaded, _ = load_head(tmp_path / version)
    assert loaded.engagement is not None
    assert loaded.engagement.lift(["a", "b"]) == head.engagement.lift(["a", "b"])
    assert load_head(tmp_path / plain)[0].engagement is None
    (tmp_path / version / "engagement.json").write_text('{"mean": 0.3, "products": {}}')
    with pytest.raises(Exception, match="sha256"):
        load_head(tmp_path / version)
