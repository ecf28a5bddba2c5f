"""Attribute agreement: which attributes count as categories, ridge maps fitted on real catalog
vectors read a query's category, and a head carrying them scores the same after a round trip."""

from __future__ import annotations

import copy
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from learner.child import child_head
from learner.dataset import LoggedSearch
from learner.features import build_features, scores
from model.attributes import AttributeAgreement, categorical_attributes, photo_votes
from model.candidates import candidates
from model.checkpoint import load_head, save_head
from model.head import MIX, QUERY_TYPES, FusionHead, HeadConfig
from model.query_memory import MemoryConfig, QueryMemory
from service.catalog.index import CatalogIndex
from storage.artifacts import current
from storage.models import utcnow


def test_only_categorical_attributes_are_kept():
    rows = [
        {"type": t, "sku": f"sku-{i}", "colour": ["", "red", "", "blue"][i % 4], "one": "-", "n": i}
        for i, t in enumerate(["Shirts", "Watches"] * 10)
    ]
    vocab = categorical_attributes(rows)
    # `sku` is one value per product (an identifier); `one` never varies; `colour` is on half
    # the products (the minimum coverage); `n` is not a string
    assert vocab == {"colour": ["blue", "red"], "type": ["Shirts", "Watches"]}
    many = [{"code": f"c{i % 501}", "type": "a" if i % 2 else "b"} for i in range(2000)]
    assert list(categorical_attributes(many)) == ["type"]  # 501 distinct values: too many


@pytest.fixture(scope="module")
def index(ingested) -> CatalogIndex:
    build = current(ingested.settings.index_dir)
    assert build is not None
    return CatalogIndex.load(build)


@pytest.fixture(scope="module")
def agreeing_head(ingested, index):
    boot, _ = load_head(ingested.settings.data_dir / "heads" / ingested.report.head_version)
    return child_head(boot, index, rank=0, train_gate=False)


def test_fitted_maps_read_each_products_category(agreeing_head, index):
    agree: AttributeAgreement = agreeing_head.attributes
    assert agree is not None and "articleType" in agree.names
    # the image side reads the photo's colour descriptor too
    assert agreeing_head.config.colour_dim == index.dim("colour") > 0
    assert agree.image_map.shape[0] == index.dim("image") + index.dim("colour") + 1
    rows = np.array(sorted(index.row_of.values()))
    codes = agree.codes([index.metas[r].attributes for r in rows])
    a = agree.names.index("articleType")
    cols = sorted(agree.column[a].values())
    photos = torch.cat([torch.from_numpy(index.vectors(s, rows)) for s in ("image", "colour")], 1)
    for x, m in (
        (torch.from_numpy(index.vectors("text", rows)), agree.text_map),
        (photos, agree.image_map),
    ):
        predicted = (x @ m[:-1, cols] + m[-1, cols]).argmax(1) + cols[0]
        accuracy = float((predicted == codes[:, a]).float().mean())
        assert accuracy > 0.8, (m.shape, accuracy)


def test_a_text_query_agrees_with_products_of_the_category_it_names(
    agreeing_head, index, embedder, ingested
):
    agree = agreeing_head.attributes
    a = agree.names.index("articleType")
    rows = np.array(sorted(index.row_of.values()))
    kinds = [index.metas[r].attributes["articleType"] for r in rows]
    target = max(sorted(set(kinds)), key=kinds.count)  # ties broken the same way every run
    q = torch.from_numpy(embedder.text_encoder.encode([f"{target.lower()} for sale"])[0])
    feats = agree.features(q, None, agree.codes([index.metas[r].attributes for r in rows]))
    same = torch.tensor([k == target for k in kinds])
    assert feats[same, a].mean() > feats[~same, a].mean() + 0.3
    assert torch.all(feats[:, len(agree.names) :] == 0)  # no photo, no image half


def test_a_photos_neighbours_vote_for_what_it_shows(agreeing_head, index):
    """A catalog product's own photo finds the product itself first (cosine 1): its values carry
    the vote, and the third feature block reads the vote for each candidate's value."""
    agree = agreeing_head.attributes
    assert agree.neighbours and agree.n_features == 3 * len(agree.names)
    a = agree.names.index("articleType")
    rows = [r for r in sorted(index.row_of.values()) if index.has_image(np.array([r]))[0]][:20]
    for r in rows:
        image = index.vectors("image", np.array([r]))[0]
        q = agreeing_head.query(None, torch.from_numpy(image))
        votes = photo_votes(agree, index, image, q.pimage.numpy())
        own = agree.codes([index.metas[r].attributes])[0]
        assert float(votes[own[a]]) > 0.5
        torch.testing.assert_close(votes[sorted(agree.column[a].values())].sum(), torch.tensor(1.0))
        c = candidates(index, np.array([r]), agreeing_head, with_image=True)
        feats = agree.features(None, None, c.codes, votes)
        assert float(feats[0, 2 * len(agree.names) + a]) == float(votes[own[a]])


def test_a_parent_without_neighbour_votes_keeps_its_weights(agreeing_head, index):
    """A head promoted before neighbour votes existed: its child reads them with zero weight, so
    it scores exactly like the parent until feedback moves the new weights."""
    cfg = {**agreeing_head.config.to_dict(), "neighbours": False}
    parent = FusionHead(HeadConfig(**cfg))
    state = agreeing_head.state_dict()
    state["attributes.weights"] = torch.rand(len(QUERY_TYPES), 2 * len(parent.attributes.names))
    parent.load_state_dict(state)
    child = child_head(parent, index, rank=0)
    a2 = parent.attributes.n_features
    torch.testing.assert_close(child.attributes.weights[:, :a2], parent.attributes.weights)
    assert torch.all(child.attributes.weights[:, a2:] == 0)
    rows = np.arange(30)
    image = index.vectors("image", np.array([5]))[0]

    def score(head: FusionHead) -> torch.Tensor:
        q = head.query(None, torch.from_numpy(image))
        if head.attributes.neighbours:
            q.votes = photo_votes(head.attributes, index, image, q.pimage.numpy())
        return head.score(q, candidates(index, rows, head, with_image=True))

    torch.testing.assert_close(score(child), score(parent))


def test_the_weights_start_at_zero_and_survive_a_round_trip(agreeing_head, index, tmp_path):
    agreeing_head = copy.deepcopy(agreeing_head)  # the module's head stays untrained
    c = candidates(index, np.arange(12), agreeing_head, with_image=True)
    q = agreeing_head.query(torch.from_numpy(index.vectors("text", np.array([3]))[0]), None)
    parent_like = agreeing_head.fuse(*agreeing_head.channel_sims(q, c), q.type_index)
    torch.testing.assert_close(agreeing_head.parts(q, c)["dense"], parent_like)  # zero weights
    with torch.no_grad():
        agreeing_head.attributes.weights[QUERY_TYPES.index("text")].uniform_(0.5, 1.5)
    version = save_head(tmp_path, agreeing_head, {"parent": "test"})
    loaded, card = load_head(tmp_path / version)
    assert card["config"]["attributes"] == agreeing_head.config.attributes
    torch.testing.assert_close(loaded.score(q, c), agreeing_head.score(q, c))
    assert not torch.allclose(loaded.score(q, c), parent_like)


def test_row_codes_follow_appended_rows(agreeing_head, index):
    """The per-row cache extends when the catalog gains rows (an upsert appends one)."""
    agree = agreeing_head.attributes
    metas = index.metas
    rows = np.arange(len(metas))
    expected = agree.codes([m.attributes for m in metas])
    assert torch.equal(agree.row_codes(index, rows), expected)
    other = next(
        m for m in metas if m.attributes["articleType"] != metas[0].attributes["articleType"]
    )
    changed = {**metas[0].attributes, "articleType": other.attributes["articleType"]}
    view = SimpleNamespace(metas=[*metas, type(metas[0])("new", "new", changed, None)])
    view.code_cache = dict(index.code_cache)
    new_row = agree.row_codes(view, np.array([len(metas)]))
    assert torch.equal(new_row, agree.codes([changed]))
    assert not torch.equal(new_row, expected[:1])


def test_training_features_score_every_logged_search_as_serving_did(agreeing_head, index):
    """build_features() is the batched form of what one search computes: with every learned
    weight non-zero, each logged search's shown products get the scores FusionHead.score gives
    them at serving time, for text, image and composed queries (neighbour votes included)."""
    head = copy.deepcopy(agreeing_head)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in head.named_parameters():
            if name.startswith(("attributes.", "interaction.")):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    rng = np.random.default_rng(0)
    rows = np.array(sorted(index.row_of.values()))
    with_photo = rows[index.has_image(rows)]
    text_vecs, image_vecs, colour_vecs, searches = {}, {}, {}, []
    for i, kind in enumerate(QUERY_TYPES * 4):
        row = int(rng.choice(with_photo))
        text_key = image_key = None
        if kind != "image":
            text_key = f"text-{i}"
            text_vecs[text_key] = index.vectors("text", np.array([row]))[0]
        if kind != "text":
            image_key = f"photo-{i % 6}"  # photos repeat across searches, as they do in logs
            image_vecs[image_key] = index.vectors("image", np.array([row]))[0]
            colour_vecs[image_key] = index.vectors("colour", np.array([row]))[0]
        shown = rng.choice(rows, size=int(rng.integers(3, 21)), replace=False)
        searches.append(
            LoggedSearch(
                search_id=f"s{i}",
                created_at=utcnow(),
                query_type=QUERY_TYPES.index(kind),
                text_key=text_key,
                image_key=image_key,
                explore=False,
                product_ids=tuple(index.metas[r].id for r in shown),
                model_positions=np.arange(1, len(shown) + 1),
                propensities=np.ones(len(shown)),
                grades=rng.integers(0, 4, len(shown)),
            )
        )
    f, kept = build_features(
        head, searches, text_vecs, image_vecs, index, colour_vecs, per_channel=100
    )
    assert kept == searches
    got = scores(head, f, f.batch)
    for i, s in enumerate(searches):
        qt = torch.from_numpy(text_vecs[s.text_key]) if s.text_key else None
        qv = image_vecs[s.image_key] if s.image_key else None
        qc = torch.from_numpy(colour_vecs[s.image_key]) if s.image_key else None
        q = head.query(qt, None if qv is None else torch.from_numpy(qv), qc)
        if qv is not None:
            q.votes = photo_votes(head.attributes, index, qv, q.pimage.numpy())
        shown = np.array([index.row_of[p] for p in s.product_ids])
        want = head.score(q, candidates(index, shown, head, with_image=qv is not None))
        torch.testing.assert_close(got[i, : len(shown)], want, rtol=1e-4, atol=1e-4)
        assert torch.isinf(got[i, len(shown) :]).all()
        assert torch.equal(f.batch.grades[i, : len(shown)], torch.from_numpy(s.grades))


def test_a_head_without_colour_ignores_logged_colour_descriptors(ingested, index):
    """A head fitted before colour descriptors (colour_dim 0) trains on photos whose colour was
    logged anyway (a colour encoder configured on an older build)."""
    boot, _ = load_head(ingested.settings.data_dir / "heads" / ingested.report.head_version)
    assert boot.config.colour_dim == 0
    row = int(np.flatnonzero(index.has_image(np.arange(index.n_rows)))[0])
    shown = np.array(sorted(index.row_of.values())[:5])
    search = LoggedSearch(
        search_id="s",
        created_at=utcnow(),
        query_type=QUERY_TYPES.index("image"),
        text_key=None,
        image_key="photo",
        explore=False,
        product_ids=tuple(index.metas[r].id for r in shown),
        model_positions=np.arange(1, 6),
        propensities=np.ones(5),
        grades=np.array([0, 1, 0, 0, 0]),
    )
    image = {"photo": index.vectors("image", np.array([row]))[0]}
    colour = {"photo": np.ones(512, "f4")}
    f, kept = build_features(boot, [search], {}, image, index, colour, per_channel=100)
    assert kept == [search] and torch.isfinite(scores(boot, f, f.batch)).all()


def test_the_learner_rebuilds_the_mix_features_serving_used(ingested, index, embedder):
    """For a logged text search (filtered or not), the mix features the learner rebuilds for its
    shown products, and the scores it gives them, are those serving explained."""
    from service.search.memory import memory_key
    from service.search.searcher import ActiveHead, Searcher, SearchQuery

    head = child_head(
        load_head(ingested.settings.data_dir / "heads" / ingested.report.head_version)[0],
        index,
        rank=0,
    )
    head.eval()
    assert head.mix is not None
    n = ingested.settings.candidates_per_channel
    memory = QueryMemory(
        MemoryConfig(half_life_days=14, prior=5, similar_floor=0.8, photo_floor=0.95)
    )
    for i, pid in enumerate(m.id for m in index.metas[:40]):  # what shoppers of "watch" did
        memory.put_pair(memory_key("watch", None).key, pid, gain=i % 3, exam=2.0, at=time.time())
    searcher = Searcher(embedder, index, ActiveHead(head, "v"), per_channel=n, memory=memory)
    for text, filters in [("blue running shoes for men", {}), ("watch", {"gender": "Women"})]:
        res = searcher.search(SearchQuery(text=text, k=15, filters=filters, explain=True))
        logged = LoggedSearch(
            search_id="s",
            created_at=utcnow(),
            query_type=QUERY_TYPES.index("text"),
            text_key="t",
            image_key=None,
            explore=False,
            product_ids=tuple(h.product.id for h in res.hits),
            model_positions=np.arange(1, len(res.hits) + 1),
            propensities=np.ones(len(res.hits)),
            grades=np.zeros(len(res.hits), np.int64),
            filters={a: [v] for a, v in filters.items()} or None,
            query_text=text,
            memory=np.array([h.memory for h in res.hits], np.float32),
        )
        f, _ = build_features(head, [logged], {"t": res.text_vector}, {}, index, per_channel=n)
        for j, hit in enumerate(res.hits):
            mix = hit.explanation["mix"]
            want = [mix[m]["value"] for m in MIX[1:]]
            torch.testing.assert_close(f.batch.mix[0, j], torch.tensor(want), atol=1e-5, rtol=0)
        if text == "watch":  # the memory is part of what the learner must rebuild
            assert any(h.memory != 0 for h in res.hits)
        got = scores(head, f, f.batch)[0, : len(res.hits)]
        torch.testing.assert_close(
            got, torch.tensor([h.score for h in res.hits]), atol=1e-4, rtol=0
        )
