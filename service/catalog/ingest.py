"""Catalog ingest: CSV -> vectors (cached) -> SQL products -> the index.

The first ingest bootstraps a head and builds the index. Later ones update the current build in
place when they can: new and changed products are added, removed ones deleted, and the head and
every version learned from it stay in service; nothing already indexed is embedded or indexed
again. A rebuild (asked for, or when the encoders or the index kind changed) starts over with a
new bootstrapped head."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session, sessionmaker
from tqdm import tqdm

from learner.versions import register_bootstrap
from model.head import FusionHead
from service.catalog.builds import (
    Build,
    Embedded,
    save_build,
    unchanged,
    updatable,
    update_build,
)
from service.catalog.files import CatalogColumns, product_text, read_catalog
from service.catalog.first_head import bootstrap_catalog_head
from service.catalog.index import CatalogIndex, project
from service.catalog.vectors import VectorBackend, VectorConfig, open_backend
from service.config import Settings
from service.encoding.embedder import Embedder, make_embedder
from service.encoding.export import Choice, judge
from service.errors import BadRequest
from storage.db import transaction
from storage.products import (
    ProductRecord,
    mark_deleted_except,
    next_revision,
    upsert_products,
)
from storage.registry import set_active


@dataclass(frozen=True)
class IngestReport:
    products: int
    without_image: int
    text_cache_hits: int
    image_cache_hits: int
    head_version: str
    head_heldout_recall_at_10: float | None  # None: too few photos to align, or not bootstrapped
    index: str
    seconds: dict[str, float]
    # per built-in model on ONNX: the graph it runs (fp32 or int8) and the gate's numbers
    encoders: dict[str, Choice] = field(default_factory=dict)
    # how the index was made: "built" (a new head and index, `reason` says why) or "updated"
    # (the current build; `changes` counts added, changed, removed and unchanged products)
    mode: str = "built"
    reason: str = ""
    changes: dict[str, int] = field(default_factory=dict)

    def products_per_second(self) -> float:
        return self.products / max(self.seconds["total"], 1e-9)


def ingest_catalog(
    catalog: Path,
    *,
    settings: Settings,
    sessions: sessionmaker[Session],
    embedder: Embedder | None = None,
    limit: int | None = None,
    progress: bool = True,
    rebuild: bool = False,
    vectors: VectorBackend | None = None,
) -> IngestReport:
    """Replace the catalog with the file's products (service.catalog.files) and save a new index
    build (the old one stays loadable until the new one is complete): the current build updated,
    or with `rebuild` (or no build to update) a new one. `embedder`: encoders already loaded,
    used as they are; None: the configured ones, their int8 graphs judged on this catalog first
    (service.encoding.export). `vectors`: where the vector stores live, kept open; None: the
    configured backend, opened for the ingest."""
    laps = _Laps()
    rows = read_catalog(catalog, catalog_columns(settings), limit=limit)
    if not rows:
        raise BadRequest(f"{catalog} has no products")
    graphs: dict[str, Choice] = {}
    if embedder is None:
        graphs = judge(settings, rows, progress=progress)
        embedder = make_embedder(settings)
        laps.lap("encoders")
    backend = vectors or open_backend(VectorConfig.of(settings))
    try:
        vecs, build = _store_and_index(
            settings,
            sessions,
            rows,
            embedder,
            backend,
            rebuild=rebuild,
            progress=progress,
            lap=laps.lap,
        )
    finally:
        if vectors is None:
            backend.close()
    return IngestReport(
        products=len(rows),
        without_image=int((~vecs.has_image).sum()),
        text_cache_hits=vecs.text_hits,
        image_cache_hits=vecs.image_hits,
        seconds=laps.seconds(),
        encoders=graphs,
        **build,
    )


def _store_and_index(
    settings: Settings,
    sessions: sessionmaker[Session],
    rows: list[ProductRecord],
    embedder: Embedder,
    backend: VectorBackend,
    *,
    rebuild: bool,
    progress: bool,
    lap: Callable[[str], None],
) -> tuple[Embedded, dict[str, Any]]:
    """Store the products and update the current build with them, or make a new build and head;
    returns their vectors and the report's fields on the build."""
    base = updatable(settings, embedder, backend) if not rebuild else "a rebuild was asked for"
    built = base.index if isinstance(base, Build) else None
    vecs = _embed(rows, embedder, progress=progress, lap=lap, built=built)
    revision = _store_products(sessions, rows, vecs.image_hashes)
    lap("sql")
    build: dict[str, Any]
    if isinstance(base, Build):
        name, changes = update_build(settings, base, rows, vecs, revision, progress=progress)
        build = {
            "head_version": base.version,
            "head_heldout_recall_at_10": None,
            "mode": "updated",
            "changes": changes,
        }
    else:
        head, version, boot, ids = bootstrap_catalog_head(
            settings, rows, vecs, embedder, progress=progress
        )
        lap("head")
        name = _build_index(
            settings, backend, rows, vecs, head, ids, version=version, revision=revision
        )
        _activate(settings, sessions, version)
        build = {
            "head_version": version,
            "head_heldout_recall_at_10": boot.heldout_recall_at_10,
            "reason": base,
        }
    lap("index")
    return vecs, build | {"index": name}


class _Laps:
    """Seconds per phase of an ingest, and in all."""

    def __init__(self) -> None:
        self._laps: dict[str, float] = {}
        self._started = self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        """The time since the last lap counts to `name` (added up if it was timed before)."""
        now = time.perf_counter()
        self._laps[name] = self._laps.get(name, 0.0) + now - self._last
        self._last = now

    def seconds(self) -> dict[str, float]:
        total = time.perf_counter() - self._started
        return {k: round(v, 2) for k, v in (self._laps | {"total": total}).items()}


def _activate(settings: Settings, sessions: sessionmaker[Session], version: str) -> None:
    """A new build starts a new generation of learned heads, from its bootstrap head."""
    with transaction(sessions) as s:
        register_bootstrap(s, settings.data_dir / "heads", version)
        set_active(session=s, version=version)


def catalog_columns(settings: Settings) -> CatalogColumns:
    return CatalogColumns(
        id=settings.catalog_id_column,
        title=settings.catalog_title_column,
        image=settings.catalog_image_column,
        text=settings.catalog_text_columns,
        attributes=settings.catalog_attribute_columns,
    )


# Catalog rows an update embeds at a time: only the changed ones' vectors are kept, so the
# catalog's vectors are never all held beside the loaded build's.
UPDATE_CHUNK = 65_536


def _embed(
    rows: list[ProductRecord],
    embedder: Embedder,
    *,
    progress: bool,
    lap: Callable[[str], None],
    built: CatalogIndex | None = None,
) -> Embedded:
    """The products' vectors; with `built` (an update), only of those it lacks or holds
    otherwise (builds.unchanged)."""
    if built is None:
        return _embed_rows(rows, embedder, progress=progress, lap=lap)
    parts = []
    for start in tqdm(
        range(0, len(rows), UPDATE_CHUNK), desc="embed changes", unit="chunk", disable=not progress
    ):
        chunk = rows[start : start + UPDATE_CHUNK]
        part = _embed_rows(chunk, embedder, progress=False, lap=lap)
        keep = np.flatnonzero(~unchanged(built, chunk, part.text, part.image, part.has_image))
        parts.append(
            replace(
                part,
                rows=start + keep,
                text=part.text[keep],
                image=part.image[keep],
                colour=part.colour[keep],
            )
        )
    return Embedded(
        rows=np.concatenate([p.rows for p in parts]),
        text=np.concatenate([p.text for p in parts]),
        image=np.concatenate([p.image for p in parts]),
        colour=np.concatenate([p.colour for p in parts]),
        image_hashes=[h for p in parts for h in p.image_hashes],
        has_image=np.concatenate([p.has_image for p in parts]),
        text_hits=sum(p.text_hits for p in parts),
        image_hits=sum(p.image_hits for p in parts),
    )


def _embed_rows(
    rows: list[ProductRecord], embedder: Embedder, *, progress: bool, lap: Callable[[str], None]
) -> Embedded:
    text, text_hits = embedder.texts(
        [product_text(r.title, r.attributes, r.description) for r in rows], progress=progress
    )
    lap("text")
    loaders = [(_file_loader(Path(r.image_path)) if r.image_path else None) for r in rows]
    image, colour, image_hashes, image_hits = embedder.images(loaders, progress=progress)
    has_image = np.array([h is not None for h in image_hashes], dtype=bool)
    lap("image")
    every = np.arange(len(rows))
    return Embedded(every, text, image, colour, image_hashes, has_image, text_hits, image_hits)


def _store_products(
    sessions: sessionmaker[Session], rows: list[ProductRecord], image_hashes: list[str | None]
) -> int:
    """Write the catalog to SQL, the source of truth; returns its revision."""
    with transaction(sessions) as s:
        upsert_products(
            session=s,
            products=[
                replace(r, image_path=r.image_path if h else None, image_sha256=h)
                for r, h in zip(rows, image_hashes, strict=True)
            ],
        )
        mark_deleted_except(session=s, keep_ids={r.id for r in rows})
        s.flush()
        # read in the same transaction (and, on PostgreSQL, under the same lock): a change
        # another process commits after it must not be counted in the build
        return next_revision(session=s) - 1


def _build_index(
    settings: Settings,
    backend: VectorBackend,
    rows: list[ProductRecord],
    vecs: Embedded,
    head: FusionHead,
    encoders: dict[str, str],
    *,
    version: str,
    revision: int,
) -> str:
    """Build and save a new index; returns its name."""
    ptext, pimage = project(head, vecs.text, vecs.image)
    index = CatalogIndex(
        text=vecs.text,
        image=vecs.image,
        colour=vecs.colour,
        has_image=vecs.has_image,
        ptext=ptext,
        pimage=pimage,
        metas=[
            replace(r, image_path=r.image_path if ok else None)
            for r, ok in zip(rows, vecs.has_image, strict=True)
        ],
        backend=backend,
        meta={
            "encoders": encoders,
            "vector_index": backend.config.kind,
            "head_version": version,
            "revision": revision,
            "attributes": sorted({a for r in rows for a in r.attributes}),
            "dims": {
                "text": vecs.text.shape[1],
                "image": vecs.image.shape[1],
                "colour": vecs.colour.shape[1],
                "shared": settings.head_dim,
            },
        },
    )
    return save_build(settings, index)


def _file_loader(path: Path):  # type: ignore[no-untyped-def]
    return path.read_bytes
