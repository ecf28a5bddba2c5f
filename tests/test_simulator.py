"""The simulated shoppers: photo shoppers send the photos they are given, not indexed images."""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image

from service.catalog import read_catalog
from service.simulator import Shoppers, read_photos
from tests.helpers import write_catalog


def test_photo_shoppers_send_their_own_photos_not_the_catalog_images(
    catalog_csv, catalog_rows, tmp_path
):
    rows = read_catalog(catalog_csv)
    photographed = rows[:5]
    photo_rows = []
    for r in photographed:  # a "shopper's photo": another, larger picture of the same product
        assert r.image_path is not None
        path = tmp_path / "photos" / f"{r.id}.jpg"
        path.parent.mkdir(exist_ok=True)
        Image.open(r.image_path).convert("RGB").resize((224, 224)).save(path)
        source = next(c for c in catalog_rows if c["id"] == r.id)
        photo_rows.append({**source, "image_path": str(path)})
    photos = read_photos(write_catalog(photo_rows, tmp_path / "photos.csv"))
    assert set(photos) == {r.id for r in photographed}

    mix = {"text": 0.2, "image": 0.4, "composed": 0.4}
    with_photos, plain = Shoppers(rows, mix, photos), Shoppers(rows, mix)
    own_images = {r.image_path for r in rows}
    sent: set[Path] = set()
    for seed in range(200):
        intent = with_photos.draw(random.Random(seed))
        if intent.kind == "text":
            assert intent.photo is None and intent.text
            continue
        assert intent.photo in photos.values() and intent.photo not in own_images
        sent.add(intent.photo)
        anchor = next(r for r in rows if photos.get(r.id) == intent.photo)
        assert intent.target["articleType"] == anchor.attributes["articleType"]
    assert len(sent) >= 3  # the photographed products are all drawn, not one of them
    plain_photos = {plain.draw(random.Random(s)).photo for s in range(200)} - {None}
    assert plain_photos <= own_images and len(plain_photos) > 20
