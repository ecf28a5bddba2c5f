"""Which searches a refresh trains on and which judge it (learner.split), and the replay's
shares per query type."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import numpy as np

from learner.dataset import LoggedSearch, even_shares
from learner.split import split_window
from model.head import QUERY_TYPES

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def searches(kinds: str, start: int = 0, engaged: bool = True) -> list[LoggedSearch]:
    """One search per letter (t, i, c: text, image, composed), a second apart."""
    code = {"t": 0, "i": 1, "c": 2}
    return [
        LoggedSearch(
            search_id=f"s{start + n}",
            created_at=T0 + timedelta(seconds=start + n),
            query_type=code[k],
            text_key=None,
            image_key=None,
            explore=False,
            product_ids=("a", "b"),
            model_positions=np.array([1, 2]),
            propensities=np.array([1.0, 0.5], dtype=np.float32),
            grades=np.array([int(engaged), 0]),
        )
        for n, k in enumerate(kinds)
    ]


def per_type(split, attr: str = "holdout") -> dict[str, int]:
    xs = getattr(split, attr)
    return {t: sum(x.query_type == i for x in xs) for i, t in enumerate(QUERY_TYPES)}


def test_a_common_type_holds_out_the_newest_fraction_of_its_window():
    window = searches("t" * 100)
    split = split_window(window, [], fraction=0.2, min_engaged=10, keep_engaged=10, fill=0.5)
    assert [x.search_id for x in split.holdout] == [f"s{n}" for n in range(80, 100)]
    assert len(split.train) == 80 and split.hold == {x.search_id for x in split.holdout}
    assert not split.release


def test_a_rare_type_holds_out_more_of_its_window_then_carries_earlier_holdouts():
    window = searches("t" * 90 + "i" * 10, start=1000)
    first = split_window(window, [], fraction=0.2, min_engaged=8, keep_engaged=8, fill=0.5)
    # 20% of 10 image searches is 2; short of 8 engaged, it holds out up to half of them
    assert per_type(first)["image"] == 5 and per_type(first, "train")["image"] == 5
    carried = [x for x in first.holdout if x.search_id in first.hold]
    second = split_window(
        searches("t" * 90 + "i" * 10, start=2000),
        carried,
        fraction=0.2,
        min_engaged=8,
        keep_engaged=8,
        fill=0.5,
    )
    held = second.held_per_type()["image"]
    assert held == {"searches": 8, "engaged": 8, "carried": 3}
    # text needs none of its carried searches, and the two oldest carried image searches go to
    # training now; nothing is both held out and trained on
    released = Counter(QUERY_TYPES[x.query_type] for x in carried if x.search_id in second.release)
    assert released == {"text": 18, "image": 2}
    assert second.release <= {x.search_id for x in second.train}
    assert not {x.search_id for x in second.train} & {x.search_id for x in second.holdout}
    times = [x.created_at for x in second.holdout]
    assert times == sorted(times)


def test_unengaged_searches_do_not_count_towards_a_types_holdout():
    window = searches("c" * 10, engaged=False) + searches("c" * 10, start=10)
    split = split_window(window, [], fraction=0.2, min_engaged=4, keep_engaged=4, fill=0.5)
    assert split.held_per_type()["composed"] == {"searches": 4, "engaged": 4, "carried": 0}
    lazy = split_window(window[:10], [], fraction=0.2, min_engaged=4, keep_engaged=4, fill=0.5)
    assert lazy.held_per_type()["composed"]["engaged"] == 0  # up to half, then it waits
    assert len(lazy.holdout) == 5


def test_even_shares_give_what_a_scarce_type_cannot_use_to_the_others():
    assert even_shares({"text": 50_000, "image": 900, "composed": 300}, 20_000) == {
        "composed": 300,
        "image": 900,
        "text": 18_800,
    }
    assert even_shares({"text": 10, "image": 10, "composed": 10}, 9) == dict.fromkeys(
        ("text", "image", "composed"), 3
    )
    assert even_shares({"text": 5, "image": 0}, 100) == {"text": 5}


def test_a_judged_type_keeps_carrying_its_holdout_up_to_the_engaged_searches_it_keeps():
    first = split_window(
        searches("t" * 80 + "i" * 20, start=1000),
        [],
        fraction=0.2,
        min_engaged=8,
        keep_engaged=30,
        fill=0.5,
    )
    assert first.held_per_type()["image"]["engaged"] == 8  # enough to be judged
    carried = [x for x in first.holdout if x.search_id in first.hold]
    second = split_window(
        searches("t" * 80 + "i" * 20, start=2000),
        carried,
        fraction=0.2,
        min_engaged=8,
        keep_engaged=30,
        fill=0.5,
    )
    # 8 of the new image searches, and every earlier one: 16 < 30, none is released yet
    assert second.held_per_type()["image"] == {"searches": 16, "engaged": 16, "carried": 8}
    # text: 16 new and 14 of its 16 carried make 30; its two oldest go to training
    assert second.held_per_type()["text"] == {"searches": 30, "engaged": 30, "carried": 14}
    released = Counter(QUERY_TYPES[x.query_type] for x in carried if x.search_id in second.release)
    assert released == {"text": 2}
