"""The frozen pretrained encoders on real catalog content."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from service.encoding.encoders import EfficientNetLite0ImageEncoder, MiniLMTextEncoder


def test_minilm_gives_unit_384d_rows(embedder):
    enc = embedder.text_encoder
    vecs = enc.encode(["red dress", "Women Red Maxi Dress", "men's leather wallet"])
    assert enc.dim == 384
    assert vecs.shape == (3, 384) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert enc.encode([]).shape == (0, 384)


def test_minilm_puts_a_query_near_its_product(embedder):
    q, dress, wallet = embedder.text_encoder.encode(
        ["red dress", "Women Red Maxi Dress", "Men Brown Leather Wallet"]
    )
    assert float(q @ dress) > float(q @ wallet) + 0.1


def test_minilm_matches_real_titles_of_the_right_type(embedder, catalog_rows):
    """Each article-type word retrieves mostly titles of that type among the catalog rows."""
    titles = [r["productDisplayName"] for r in catalog_rows]
    types = np.array([r["articleType"] for r in catalog_rows])
    t = embedder.text_encoder.encode(titles)
    for query, article in [("wrist watch", "Watches"), ("handbag", "Handbags")]:
        q = embedder.text_encoder.encode([query])[0]
        top = np.argsort(-(t @ q))[:10]
        assert (types[top] == article).mean() >= 0.7, (query, types[top])


def test_efficientnet_gives_unit_1280d_rows(embedder, catalog_rows):
    enc = embedder.image_encoder
    images = [Image.open(r["image_path"]) for r in catalog_rows[:3]]
    vecs = enc.encode(images)
    assert enc.dim == 1280
    assert vecs.shape == (3, 1280) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert np.all(np.isfinite(vecs))
    assert enc.encode([]).shape == (0, 1280)


def test_same_image_twice_gives_identical_vectors(embedder, catalog_rows):
    path, other = catalog_rows[0]["image_path"], catalog_rows[1]["image_path"]
    a = embedder.image_encoder.encode([Image.open(path)])
    b = embedder.image_encoder.encode([Image.open(path)])
    np.testing.assert_array_equal(a, b)
    # In another batch the same image gets the same vector up to float rounding.
    c = embedder.image_encoder.encode([Image.open(path), Image.open(other)])
    np.testing.assert_allclose(c[0], a[0], atol=1e-6)
    assert float(c[0] @ c[1]) < 0.999  # and a different image a different one


def test_similar_products_have_closer_image_vectors(embedder, catalog_rows):
    """Watches look more like watches than like handbags (the features carry visual meaning)."""
    watches = [r["image_path"] for r in catalog_rows if r["articleType"] == "Watches"][:8]
    bags = [r["image_path"] for r in catalog_rows if r["articleType"] == "Handbags"][:8]
    w = embedder.image_encoder.encode([Image.open(p) for p in watches])
    b = embedder.image_encoder.encode([Image.open(p) for p in bags])
    within = (w @ w.T)[np.triu_indices(len(w), 1)].mean()
    across = (w @ b.T).mean()
    assert within > across


@pytest.mark.parametrize("make", [MiniLMTextEncoder, EfficientNetLite0ImageEncoder])
def test_the_pytorch_encoders_are_frozen(make):
    """FUSIONRANK_ENCODER_BACKEND=torch: eager PyTorch, never trained by anything."""
    model = make().model
    params = list(model.parameters())
    assert params, "the encoder has no parameters at all?"
    assert not any(p.requires_grad for p in params)
    assert not model.training


def test_encoder_ids_name_the_checkpoint(embedder):
    assert embedder.text_encoder.id == "all-MiniLM-L6-v2"
    assert embedder.image_encoder.id == "efficientnet-lite0@112"


def _on_white(colour: tuple[int, int, int], box: tuple[int, int, int, int]) -> Image.Image:
    img = Image.new("RGB", (60, 80), (255, 255, 255))
    img.paste(colour, box)
    return img


def test_colour_histogram_describes_the_product_not_the_background(embedder):
    enc = embedder.colour_encoder
    red_small, red_big, blue = enc.encode(
        [
            _on_white((200, 20, 30), (15, 20, 45, 60)),
            _on_white((200, 20, 30), (5, 5, 55, 75)),
            _on_white((20, 30, 200), (5, 5, 55, 75)),
        ]
    )
    assert red_small.shape == (enc.dim,) and red_small.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(red_small), 1.0, atol=1e-5)
    # the white around a product does not count, so its size on the canvas does not matter
    assert float(red_small @ red_big) > 0.95
    assert float(red_big @ blue) < 0.05
    white_shirt = enc.encode([Image.new("RGB", (60, 80), (250, 250, 250))])[0]
    assert np.isfinite(white_shirt).all() and white_shirt.sum() > 0  # all-white: every pixel


def test_colour_descriptors_group_real_products_by_colour(embedder, catalog_rows):
    """Catalog photos of one baseColour are closer in colour than photos of two colours."""
    by_colour: dict[str, list[str]] = {}
    for r in catalog_rows:
        by_colour.setdefault(r["baseColour"], []).append(r["image_path"])
    a, b = sorted(by_colour, key=lambda c: -len(by_colour[c]))[:2]
    enc = embedder.colour_encoder
    va = enc.encode([Image.open(p) for p in by_colour[a]])
    vb = enc.encode([Image.open(p) for p in by_colour[b]])
    within = (np.mean(va @ va.T) + np.mean(vb @ vb.T)) / 2
    across = float(np.mean(va @ vb.T))
    assert within > across + 0.1, (a, b, within, across)
