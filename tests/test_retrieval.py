"""One retrieval (model.retrieval): for the same head and query, serving and the learner's
coverage guard score the same pool, and the learner's features give its products the scores
serving gave them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from learner.child import child_head
from learner.coverage import retrieval_pools
from learner.dataset import LoggedSearch
from learner.features import all_scores, build_features
from model.checkpoint import load_head
from model.head import QUERY_TYPES
from model.retrieval import Pool
from service.catalog.index import CatalogIndex
from service.search.searcher import ActiveHead, Searcher, SearchQuery, SearchResult
from storage.artifacts import current
from storage.models import utcnow

CASES = [
    ("text", {"query": "blue running shoes for men"}),
    ("text", {"query": "watch", "filters": {"gender": "Women"}}),
    ("image", {}),
    ("composed", {"query": "but in black"}),
    ("composed", {"query": "in red", "filters": {"gender": ["Men", "Women"]}}),
]


@pytest.fixture(scope="module")
def served(ingested, embedder):
    """A searcher with a hybrid head whose attribute maps are fitted, remembering its pools."""
    index = CatalogIndex.load(current(ingested.settings.index_dir))
    boot, _ = load_head(ingested.settings.data_dir / "heads" / ingested.report.head_version)
    head = child_head(boot, index, rank=0)
    head.eval()
    assert head.mix is not None and head.attributes is not None
    n = ingested.settings.candidates_per_channel
    searcher = Searcher(embedder, index, ActiveHead(head, "v"), per_channel=n)
    pools: list[Pool] = []
    retrieve = searcher._retrieve

    def remembered(*args, **kwargs) -> Pool:
        pool = retrieve(*args, **kwargs)
        pools.append(pool)
        return pool

    searcher._retrieve = remembered  # type: ignore[method-assign]
    return searcher, pools, n


@pytest.mark.parametrize("kind, ask", CASES)
def test_serving_and_the_gate_score_the_same_pool_the_same_way(served, jpeg, kind, ask):
    searcher, pools, n = served
    photo = jpeg if kind != "text" else None
    res = searcher.search(SearchQuery(text=ask.get("query"), image=photo, k=20, **_filters(ask)))
    assert res.query_type == kind and res.hits
    pool = pools[-1]
    index, head = searcher.index, searcher.active.head
    served_ids = {index.metas[r].id for r in pool.rows}
    logged = _logged(res, ask, tuple(h.product.id for h in res.hits))
    vectors = _vectors(res)
    again = retrieval_pools(head, [logged], vectors[0], vectors[1], index, n)
    assert len(again) == 1 and set(again[0].product_ids) == served_ids

    text, image, colour = vectors
    f, kept = build_features(head, again, text, image, index, colour, per_channel=n)
    assert len(kept) == 1
    learner_scores = dict(zip(kept[0].product_ids, all_scores(head, f)[0].tolist(), strict=False))
    got = torch.tensor([learner_scores[h.product.id] for h in res.hits])
    want = torch.tensor([h.score for h in res.hits])
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


def _filters(ask: dict) -> dict:
    return {"filters": ask["filters"]} if "filters" in ask else {}


def _logged(res: SearchResult, ask: dict, shown: tuple[str, ...]) -> LoggedSearch:
    filters = {a: v if isinstance(v, list) else [v] for a, v in ask.get("filters", {}).items()}
    return LoggedSearch(
        search_id=res.search_id,
        created_at=utcnow(),
        query_type=QUERY_TYPES.index(res.query_type),
        text_key="t" if res.text_vector is not None else None,
        image_key="p" if res.image_vector is not None else None,
        explore=False,
        product_ids=shown,
        model_positions=np.arange(1, len(shown) + 1),
        propensities=np.ones(len(shown)),
        grades=np.zeros(len(shown), np.int64),
        filters=filters or None,
        query_text=ask.get("query"),
    )


def _vectors(res: SearchResult) -> tuple[dict, dict, dict]:
    text = {"t": res.text_vector} if res.text_vector is not None else {}
    image = {"p": res.image_vector} if res.image_vector is not None else {}
    colour = {"p": res.colour_vector} if res.colour_vector is not None else {}
    return text, image, colour
