"""What simulated shoppers want and how they ask for it: in words, with a photo, or with a photo
plus a colour. What exists in the catalog is what shoppers ask for."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from service.catalog.files import read_catalog
from shoppers.known_items import KnownItemQuery, document_frequencies, known_item_query
from shoppers.phrasings import PHRASINGS, Phrasings
from storage.products import ProductRecord

DEFAULT_MIX = {"text": 0.5, "image": 0.25, "composed": 0.25}
# Shops whose shoppers also look for a product they know (hybrid retrieval, benchmarks.hybrid).
KNOWN_ITEM_MIX = {"text": 0.3, "known-item": 0.3, "image": 0.2, "composed": 0.2}


@dataclass(frozen=True, slots=True)
class Intent:
    kind: str  # text | known-item | image | composed
    target: dict[str, str]
    text: str | None
    photo: Path | None
    item: KnownItemQuery | None = None  # a known-item shopper's: graded by shoppers.known_items


def read_photos(csv_path: Path) -> dict[str, Path]:
    """Product id -> a shopper's photo of it, from a catalog-format CSV (image paths relative to
    its folder), such as fashion224/catalog_224.csv: 224 px photos of catalog products."""
    return {r.id: Path(r.image_path) for r in read_catalog(csv_path) if r.image_path}


class Shoppers:
    """Draws intents from the catalog.

    A photo shopper photographs a catalog product: with `photos` (id -> photo), one of those
    photos, which is not the catalog's own image; without, the product's catalog image itself,
    an exact duplicate the service finds by near-duplicate lookup."""

    def __init__(
        self,
        rows: Sequence[ProductRecord],
        mix: dict[str, float],
        photos: Mapping[str, Path] | None = None,
        phrasings: Phrasings = PHRASINGS["train"],
    ) -> None:
        self.rows = [r for r in rows if r.attributes.get("articleType")]
        self.words = phrasings
        if photos is not None:
            self.rows = [replace(r, image_path=_path(photos.get(r.id))) for r in self.rows]
        self.with_photo = [r for r in self.rows if r.image_path and Path(r.image_path).is_file()]
        self.mix = mix
        colours: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for r in self.rows:
            a = r.attributes
            colours[(a["articleType"], a.get("gender", ""))][a.get("baseColour", "")] += 1
        self.colours = colours
        self.df = document_frequencies([r.title for r in rows]) if "known-item" in mix else None

    def draw(self, rng: random.Random) -> Intent:
        kind = rng.choices(list(self.mix), weights=list(self.mix.values()))[0]
        if kind in ("image", "composed") and not self.with_photo:
            kind = "text"
        if kind == "text":
            return self._text(rng)
        if kind == "known-item":
            return self._known_item(rng)
        anchor = rng.choice(self.with_photo)
        photo = Path(anchor.image_path or "")
        a = anchor.attributes
        target = {k: a[k] for k in ("articleType", "baseColour", "gender") if a.get(k)}
        if kind == "image":
            return Intent("image", target, None, photo)
        options = sorted(
            c
            for c, n in self.colours[(a["articleType"], a.get("gender", ""))].items()
            if n >= 3 and c and c != a.get("baseColour")
        )
        if not options:
            return Intent("image", target, None, photo)
        colour = rng.choice(options)
        text = rng.choice(self.words.composed).format(colour=colour.lower())
        return Intent("composed", {**target, "baseColour": colour}, text, photo)

    def _text(self, rng: random.Random) -> Intent:
        while True:
            a = rng.choice(self.rows).attributes
            tpl = rng.choice(self.words.text)
            needs = {"colour": "baseColour", "gender": "gender", "usage": "usage"}
            if all(a.get(attr) for word, attr in needs.items() if f"{{{word}}}" in tpl) and (
                "{gender}" not in tpl or a.get("gender") in self.words.gender
            ):
                break
        target = {"articleType": a["articleType"]}
        for word, attr in needs.items():
            if f"{{{word}}}" in tpl:
                target[attr] = a[attr]
        text = tpl.format(
            colour=a.get("baseColour", "").lower(),
            type=a["articleType"].lower(),
            gender=self.words.gender.get(a.get("gender", ""), ""),
            usage=a.get("usage", "").lower(),
        )
        return Intent("text", target, text, None)

    def _known_item(self, rng: random.Random) -> Intent:
        assert self.df is not None
        while True:
            r = rng.choice(self.rows)
            item = known_item_query(r.id, r.title, self.df, rng)
            if item is not None:
                return Intent("known-item", {}, item.text, None, item)


def _path(photo: Path | None) -> str | None:
    return None if photo is None else str(photo)
