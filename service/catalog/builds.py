"""Index builds an ingest writes: a new one saved, or the current one updated in place (new
and changed products appended, removed ones deleted, the head kept)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import numpy as np
from tqdm import tqdm

from model.checkpoint import load_head
from model.head import FusionHead
from service.catalog.index import CatalogIndex, project
from service.catalog.vectors import VectorBackend
from service.config import Settings
from service.encoding.cache import content_key
from service.encoding.embedder import Embedder
from storage.artifacts import current, remove_stale_temps
from storage.errors import ArtifactError
from storage.products import ProductRecord


@dataclass
class Embedded:
    """An ingest's products as vectors: those of the catalog's rows `rows` (all of them for a
    new build, only those to index for an update), with every row's image hash."""

    rows: np.ndarray
    text: np.ndarray
    image: np.ndarray
    colour: np.ndarray
    image_hashes: list[str | None]
    has_image: np.ndarray  # per catalog row
    text_hits: int
    image_hits: int


def save_build(settings: Settings, index: CatalogIndex) -> str:
    """Save the index as a new build that CURRENT names; returns its name."""
    remove_stale_temps(settings.index_dir)
    name = f"build-{datetime.now(UTC):%Y%m%dT%H%M%S}-{content_key(str(time.time_ns()))[:6]}"
    index.save(settings.index_dir, name)
    return name


def encoder_ids(embedder: Embedder) -> dict[str, str]:
    encoders = {"text": embedder.text_encoder.id, "image": embedder.image_encoder.id}
    if embedder.colour_encoder is not None:
        encoders["colour"] = embedder.colour_encoder.id
    return encoders


@dataclass
class Build:
    """The current build, loaded to be updated, with the head whose projections made it."""

    index: CatalogIndex
    head: FusionHead
    version: str


def updatable(settings: Settings, embedder: Embedder, backend: VectorBackend) -> Build | str:
    """The current build if this ingest can update it, else why not (it is then rebuilt)."""
    path = current(settings.index_dir)
    if path is None:
        return "no index yet"
    try:
        index = CatalogIndex.load(path, backend=backend, exact_limit=settings.exact_filter_limit)
        version = str(index.meta["head_version"])
        head, _ = load_head(settings.data_dir / "heads" / version)
    except (ArtifactError, KeyError) as e:
        return f"the current index cannot be updated ({e})"
    if index.meta.get("encoders") != encoder_ids(embedder):
        return "the encoders changed"
    if index.meta.get("vector_index", "hnsw") != backend.config.kind:
        return "the vector index kind changed"
    return Build(index, head, version)


def update_build(
    settings: Settings,
    base: Build,
    rows: list[ProductRecord],
    vecs: Embedded,
    revision: int,
    *,
    progress: bool,
) -> tuple[str, dict[str, int]]:
    """Bring the current build to `rows`: the products `vecs` holds (those it lacks or holds
    otherwise, see `unchanged`) are added, those not in `rows` deleted; save it as a new build.
    Returns its name and the counts. Its dead rows are dropped once they are a quarter of all
    rows."""
    index = base.index
    todo = vecs.rows
    added = sum(rows[i].id not in index.row_of for i in todo.tolist())
    keep = {r.id for r in rows}
    gone = [p for p in list(index.row_of) if p not in keep]
    index.delete_many(gone)
    for start in tqdm(
        range(0, len(todo), 4096), desc="index changes", unit="batch", disable=not progress
    ):
        part = slice(start, start + 4096)
        chunk = todo[part]
        ptext, pimage = project(base.head, vecs.text[part], vecs.image[part])
        vectors = {
            "text": vecs.text[part],
            "image": vecs.image[part],
            "colour": vecs.colour[part],  # the same encoders as the build's (_updatable)
            "ptext": ptext,
            "pimage": pimage,
        }
        metas = [indexed(rows[i], bool(vecs.has_image[i])) for i in chunk.tolist()]
        index.upsert_many(metas, vectors, vecs.has_image[chunk])
    index.meta["revision"] = revision
    index.meta["attributes"] = sorted({a for r in rows for a in r.attributes})
    if index.n_rows > 4 * len(index) // 3:
        index = index.compacted()
    changes = {
        "added": added,
        "changed": len(todo) - added,
        "removed": len(gone),
        "unchanged": len(rows) - len(todo),
    }
    return save_build(settings, index), changes


def unchanged(
    index: CatalogIndex,
    rows: Sequence[ProductRecord],
    text: np.ndarray,
    image: np.ndarray,
    has_image: np.ndarray,
) -> np.ndarray:
    """Which of the products (with these vectors) the build holds as they are."""
    old = np.array([index.row_of.get(r.id, -1) for r in rows], dtype=np.int64)
    known = np.flatnonzero(old >= 0)
    same = np.zeros(len(rows), bool)
    if len(known):
        was = old[known]
        same[known] = (
            np.all(index.vectors("text", was) == text[known], axis=1)
            & np.all(index.vectors("image", was) == image[known], axis=1)
            & np.array(
                [
                    _same_product(index.metas[w], indexed(rows[i], bool(has_image[i])))
                    for w, i in zip(was.tolist(), known.tolist(), strict=True)
                ]
            )
        )
    return same


def indexed(row: ProductRecord, has_image: bool) -> ProductRecord:
    """The product as a build holds it: no image path where its image could not be read."""
    return row if has_image else replace(row, image_path=None)


def _same_product(a: ProductRecord, b: ProductRecord) -> bool:
    """Whether the index would hold the same of both (their vectors aside)."""
    fields = ("title", "attributes", "image_path", "description")
    return all(getattr(a, f) == getattr(b, f) for f in fields)
