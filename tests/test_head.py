"""The fusion head on real cached features: bootstrap learns, artifacts round-trip and verify."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import ARTICLE_TYPES

from learner.bootstrap import bootstrap_head
from model.checkpoint import CARD, WEIGHTS, load_head, save_head
from model.head import CHANNELS, QUERY_TYPES, Candidates, FusionHead, HeadConfig
from service.catalog.files import product_text
from storage.errors import ArtifactError

pytestmark = pytest.mark.slow  # embeds 300 real products

HELD = 50


@pytest.fixture(scope="module")
def features(embedder, catalog_rows, source_rows):
    """Real frozen features of 300 products: the 150 ingested ones (cached) and 150 more."""
    seen = {r["id"] for r in catalog_rows}
    pool = [r for r in source_rows if r["id"] not in seen and r["articleType"] in ARTICLE_TYPES]
    extra = random.Random(99).sample(pool, 150)
    rows = catalog_rows + extra
    attrs = [
        {k: v for k, v in r.items() if k not in ("id", "productDisplayName", "image_path") and v}
        for r in rows
    ]
    text, _ = embedder.texts(
        [product_text(r["productDisplayName"], a) for r, a in zip(rows, attrs, strict=True)]
    )
    image, _, hashes, _ = embedder.images(
        [(lambda p=r["image_path"]: Path(p).read_bytes()) for r in rows]
    )
    has_image = np.array([h is not None for h in hashes])
    assert has_image.all(), "every chosen catalog image should decode"
    return text, image, has_image


def contrastive_loss(head: FusionHead, text: np.ndarray, image: np.ndarray) -> float:
    with torch.no_grad():
        pt = head.project_text(torch.from_numpy(text))
        pv = head.project_image(torch.from_numpy(image))
        logits = head.logit_scale.exp().clamp(max=100) * pv @ pt.T
        target = torch.arange(len(text))
        return float((F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2)


def recall_at(head: FusionHead, text: np.ndarray, image: np.ndarray, k: int) -> float:
    """Image -> own title among the given products."""
    with torch.no_grad():
        sims = (
            head.project_image(torch.from_numpy(image))
            @ head.project_text(torch.from_numpy(text)).T
        )
    top = sims.topk(k, dim=1).indices
    return float((top == torch.arange(len(text))[:, None]).any(dim=1).float().mean())


@pytest.fixture(scope="module")
def trained(features):
    text, image, has_image = features
    tr = slice(HELD, None)  # the first HELD products are never seen by the bootstrap
    head, report = bootstrap_head(
        text[tr], image[tr], has_image[tr], HeadConfig(), epochs=20, progress=False
    )
    return head, report


def test_bootstrap_lowers_the_contrastive_loss(features, trained):
    text, image, _ = features
    head, report = trained
    torch.manual_seed(0)  # bootstrap_head seeds 0 before building its head: same starting point
    untrained = FusionHead(HeadConfig())
    tr, ho = slice(HELD, None), slice(0, HELD)
    assert (
        contrastive_loss(head, text[tr], image[tr])
        < contrastive_loss(untrained, text[tr], image[tr]) - 0.5
    )
    assert contrastive_loss(head, text[ho], image[ho]) < contrastive_loss(
        untrained, text[ho], image[ho]
    )
    assert report.epochs == 20 and np.isfinite(report.final_loss)
    assert report.pairs + min(1000, (len(text) - HELD) // 10) == len(text) - HELD


def test_bootstrap_generalises_to_held_out_products(features, trained):
    text, image, _ = features
    head, report = trained
    k = 5
    chance = k / HELD
    held = recall_at(head, text[:HELD], image[:HELD], k)
    torch.manual_seed(0)
    before = recall_at(FusionHead(HeadConfig()), text[:HELD], image[:HELD], k)
    msg = f"held-out image->title recall@{k}: {held:.2f} (untrained {before:.2f}, chance {chance})"
    assert held > 2 * chance and held >= before + 0.1, msg
    assert report.heldout_recall_at_10 > 10 / ((len(text) - HELD) // 10)


def test_calibration_makes_channels_comparable(trained):
    head, _ = trained
    assert head.chan_mean.shape == (len(CHANNELS),)
    assert torch.all(head.chan_std > 1e-3)
    assert not torch.equal(head.chan_mean, torch.zeros(len(CHANNELS))), "calibration ran"


def _query_and_candidates(features, head, n: int = 40):
    text, image, has_image = features
    t, v = torch.from_numpy(text[:n]), torch.from_numpy(image[:n])
    with torch.no_grad():
        cands = Candidates(
            text=t,
            image=v,
            ptext=head.project_text(t),
            pimage=head.project_image(v),
            has_image=torch.ones(n, dtype=torch.bool),
        )
    return t, v, cands


def test_save_and_load_round_trip_gives_identical_scores(features, trained, tmp_path):
    head, _ = trained
    version = save_head(tmp_path, head, {"kind": "bootstrap"})
    assert not (tmp_path / "CURRENT").exists()  # the SQL registry says which version serves
    loaded, card = load_head(tmp_path / version)
    assert card["version"] == version and card["kind"] == "bootstrap"
    assert card["config"] == HeadConfig().to_dict()
    assert set(card["gate"]) == set(QUERY_TYPES)
    assert not any(p.requires_grad for p in loaded.parameters())
    t, v, cands = _query_and_candidates(features, head)
    with torch.no_grad():
        for qt, qv in ((t[0], None), (None, v[1]), (t[2], v[3])):
            a = head.score(head.query(qt, qv), cands)
            b = loaded.score(loaded.query(qt, qv), cands)
            assert torch.equal(a, b)
            assert torch.isfinite(a).all()
    # same weights -> same version, stored once
    assert save_head(tmp_path, loaded, {"kind": "bootstrap"}) == version
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("h-")]) == 1


@pytest.mark.parametrize("fname", [WEIGHTS, CARD])
def test_a_corrupted_head_file_is_refused(trained, tmp_path, fname):
    head, _ = trained
    version = save_head(tmp_path, head, {"kind": "bootstrap"})
    path = tmp_path / version / fname
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=fname):
        load_head(tmp_path / version)


def test_a_missing_head_is_refused(tmp_path):
    with pytest.raises(ArtifactError):
        load_head(tmp_path / "h-000000000000")


def test_a_product_without_image_is_scored_on_its_text_channels(features, trained):
    head, _ = trained
    t, v, cands = _query_and_candidates(features, head, n=6)
    no_img = cands.has_image.clone()
    no_img[0] = False
    # the product without an image: its image rows are zeros in the index
    image = cands.image.clone()
    image[0] = 0
    a = Candidates(
        text=cands.text, image=image, ptext=cands.ptext, pimage=cands.pimage, has_image=no_img
    )
    garbage = cands.pimage.clone()
    garbage[0] = torch.randn(garbage.shape[1])
    b = Candidates(
        text=cands.text, image=image, ptext=cands.ptext, pimage=garbage, has_image=no_img
    )
    with torch.no_grad():
        for qt, qv in ((t[1], None), (None, v[1]), (t[1], v[1])):
            q = head.query(qt, qv)
            sa, sb = head.score(q, a), head.score(q, b)
            assert torch.isfinite(sa).all(), QUERY_TYPES[q.type_index]
            # whatever sits in its image slots is ignored
            assert sa[0] == sb[0]
            sims, mask = head.channel_sims(q, a)
            assert not mask[0, [1, 2, 3]].any()
            assert mask[0].any()
