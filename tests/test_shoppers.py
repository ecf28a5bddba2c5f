"""The simulated shoppers: photo shoppers send the photos they are given, not indexed images;
held-out wordings stay held out; and the product never imports them."""

from __future__ import annotations

import ast
import fnmatch
import random
import re
import tomllib
from pathlib import Path

from PIL import Image

from service.catalog.files import read_catalog
from shoppers.intents import Shoppers, read_photos
from shoppers.phrasings import PHRASINGS
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
    own_images = {Path(r.image_path) for r in rows if r.image_path}
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


def test_heldout_shoppers_never_word_a_need_as_training_shoppers_do(catalog_csv):
    """The held-out wordings must stay disjoint from the training ones, or an evaluation with
    them measures nothing new."""
    rows = read_catalog(catalog_csv)
    mix = {"text": 0.5, "image": 0.0, "composed": 0.5}
    train, heldout = PHRASINGS["train"], PHRASINGS["heldout"]
    assert not set(train.text) & set(heldout.text)
    assert not set(train.composed) & set(heldout.composed)
    shoppers = Shoppers(rows, mix, phrasings=heldout)
    kinds: set[str] = set()
    for seed in range(300):
        intent = shoppers.draw(random.Random(seed))
        kinds.add(intent.kind)
        if intent.kind == "image":  # a composed need with no other colour on offer
            continue
        assert intent.text
        templates = heldout.text if intent.kind == "text" else heldout.composed
        assert any(_fills(t, intent.text) for t in templates), intent.text
        if "gender" in intent.target and intent.kind == "text":
            assert heldout.gender[intent.target["gender"]] in intent.text.split()
    assert {"text", "composed"} <= kinds


def _fills(template: str, text: str) -> bool:
    """Whether `text` is `template` with its {placeholders} filled in."""
    parts = re.split(r"\{\w+\}", template)
    pattern = ".+".join(re.escape(p) for p in parts)
    return re.fullmatch(pattern, text) is not None


PRODUCT = ("service", "learner", "model", "storage")
ROOT = Path(__file__).resolve().parents[1]


def test_the_product_never_imports_the_shoppers():
    """Evaluation tools stay out of the product: nothing in it imports them (the simulator runs
    as `python -m shoppers`), and the wheel does not ship them."""
    found = []
    for package in PRODUCT:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for scope, node in _imports(tree, None):
                names = (
                    [node.module or ""]
                    if isinstance(node, ast.ImportFrom)
                    else [a.name for a in node.names]
                )
                if any(n == "shoppers" or n.startswith("shoppers.") for n in names):
                    found.append((str(path.relative_to(ROOT)), scope))
    assert found == []
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert not any(fnmatch.fnmatch("shoppers", p) for p in packages["packages"]["find"]["include"])


def _imports(node: ast.AST, scope: str | None):
    """(enclosing function or None, import node) for every import under `node`."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield scope, child
        inner = child.name if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else scope
        yield from _imports(child, inner)


def test_the_search_path_loads_no_training_code():
    """A search runs on model/ and service/ alone: importing the searcher (in a fresh process)
    loads nothing from learner/ or shoppers/."""
    import subprocess
    import sys

    probe = (
        "import sys, service.search.searcher, service.search.hot_swap, model.checkpoint; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('learner', 'shoppers')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]", out.stdout
