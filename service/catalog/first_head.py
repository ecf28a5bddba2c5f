"""The first head of a new index build, trained on the catalog alone: the shared space
bootstrapped from products' text and photos, and the gate fit on pseudo-queries made from their
attributes and re-photographed images."""

from __future__ import annotations

import io
from dataclasses import asdict

import numpy as np
from PIL import Image, ImageOps

from learner.bootstrap import (
    BootstrapReport,
    PseudoQueries,
    attribute_codes,
    bootstrap_head,
    fit_gate,
    make_pseudo_queries,
)
from model.checkpoint import save_head
from model.head import FusionHead, HeadConfig
from service.catalog.builds import Embedded, encoder_ids
from service.catalog.files import NOT_EMBEDDED
from service.config import Settings
from service.encoding.embedder import Embedder
from storage.products import ProductRecord


def bootstrap_catalog_head(
    settings: Settings,
    rows: list[ProductRecord],
    vecs: Embedded,
    embedder: Embedder,
    *,
    progress: bool,
) -> tuple[FusionHead, str, BootstrapReport, dict[str, str]]:
    """Train the first head from the catalog alone and store it; returns it, its version, the
    bootstrap's report and the encoder ids it was trained with."""
    config = HeadConfig(
        text_dim=embedder.text_encoder.dim,
        image_dim=embedder.image_encoder.dim,
        dim=settings.head_dim,
        hybrid=True,
    )
    head, boot = bootstrap_head(
        vecs.text,
        vecs.image,
        vecs.has_image,
        config,
        epochs=settings.bootstrap_epochs,
        max_steps=settings.bootstrap_max_steps,
        progress=progress,
    )
    gate_loss = _fit_gate(
        head,
        rows,
        vecs.text,
        vecs.image,
        vecs.has_image,
        embedder,
        progress=progress,
        n=settings.gate_fit_queries,
    )
    encoders = encoder_ids(embedder)
    card = {
        "parent": None,
        "kind": "bootstrap",
        "encoders": encoders,
        "bootstrap": asdict(boot),
        "gate_fit_loss": gate_loss,
    }
    return head, save_head(settings.data_dir / "heads", head, card), boot, encoders


def _fit_gate(
    head: FusionHead,
    rows: list[ProductRecord],
    text: np.ndarray,
    image: np.ndarray,
    has_image: np.ndarray,
    embedder: Embedder,
    *,
    progress: bool,
    n: int,
) -> float | None:
    """Fit the gate on pseudo-queries made from the catalog's attributes and re-photographed
    product images (flipped and cropped, standing in for a shopper's photo). None (no fit) for a
    catalog without categorical attributes or photos to make them from."""
    keys = sorted({k for r in rows for k in r.attributes if k not in NOT_EMBEDDED})
    codes, vocabs = attribute_codes([r.attributes for r in rows], keys)
    # only categorical attributes: few distinct values relative to the catalog
    categorical = [j for j, v in enumerate(vocabs) if 1 < len(v) <= max(200, len(rows) // 20)]
    if n == 0 or not categorical or has_image.sum() < 10:
        return None
    codes, vocabs = codes[:, categorical], [vocabs[j] for j in categorical]
    phrases, comp_phrases, arrays = make_pseudo_queries(codes, vocabs, has_image, n=n)
    rng = np.random.default_rng(0)

    def photos(idx: np.ndarray) -> np.ndarray:
        loaders = [_photo_loader(rows[i].image_path, rng) for i in idx]  # type: ignore[arg-type]
        return embedder.images(loaders, progress=False, use_cache=False).vectors

    pq = PseudoQueries(
        text_vecs=embedder.text_encoder.encode(phrases),
        composed_vecs=embedder.text_encoder.encode(comp_phrases),
        image_vecs=photos(arrays["image_rows"]),
        composed_image_vecs=photos(arrays["composed_rows"]),
        **arrays,
    )
    return fit_gate(head, text, image, has_image, codes, pq, progress=progress)


def _photo_loader(path: str, rng: np.random.Generator):  # type: ignore[no-untyped-def]
    """A different 'photo' of the product: mirrored, cropped to 85-95%, re-encoded."""
    crop = float(rng.uniform(0.85, 0.95))
    dx, dy = float(rng.uniform(0, 1 - crop)), float(rng.uniform(0, 1 - crop))

    def load() -> bytes:
        with Image.open(path) as src:
            im = ImageOps.mirror(src.convert("RGB"))
        w, h = im.size
        box = (int(dx * w), int(dy * h), int((dx + crop) * w), int((dy + crop) * h))
        buf = io.BytesIO()
        im.crop(box).save(buf, format="JPEG", quality=90)
        return buf.getvalue()

    return load
