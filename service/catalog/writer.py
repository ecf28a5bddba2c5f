"""Incremental catalog changes: one product in or out, searchable at once, no rebuild.

SQL is the source of truth; the in-memory index follows it by revision. A write commits, then
applies every change since the index's revision, its own and any another replica committed
first. `reconcile` does the same on start-up (changes newer than the index build survive
restarts) and every `catalog_poll_seconds` after (changes made through other replicas).
"""

from __future__ import annotations

import functools
import os
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from model.head import FusionHead
from service.catalog.files import product_text
from service.catalog.index import CatalogIndex, project
from service.encoding.cache import content_key
from service.encoding.embedder import Embedder
from service.errors import NotFound, VectorsUnavailable
from service.threads import one_torch_thread
from storage.artifacts import disk_space
from storage.db import transaction
from storage.models import Product
from storage.products import (
    ProductRecord,
    changed_since,
    delete_product,
    get_product,
    upsert_products,
)

CATCH_UP_BATCH = 1024  # changes embedded and indexed at once


class CatalogWriter:
    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        embedder: Callable[[], Embedder],
        index: CatalogIndex,
        head: FusionHead,
        images_dir: Path,
    ) -> None:
        """`head`: whose frozen projections place new products in the index's spaces (every
        version trained on this build shares them); `embedder` gives the encoders when a change
        needs them: a learner process that follows the catalog loads them only once a product
        changes."""
        self.sessions, self.index = sessions, index
        self._embedder = functools.cache(embedder)
        self.head, self.images_dir = head, images_dir
        self._lock = threading.Lock()  # one writer: revisions and index rows stay in step

    def put(
        self,
        product_id: str,
        title: str,
        attributes: dict[str, Any],
        image: bytes | None,
        description: str = "",
    ) -> Product:
        if image is not None:
            self._embedder().decode(image)  # reject a bad image before anything is written
        with self._lock:
            with self.sessions() as s:
                old = get_product(session=s, product_id=product_id)
            image_path, image_sha = (old.image_path, old.image_sha256) if old else (None, None)
            if image is not None:
                image_sha = content_key(image)
                image_path = str(self._store_image(image, image_sha))
            attrs = {k: str(v) for k, v in attributes.items()}
            with transaction(self.sessions) as s:
                upsert_products(
                    session=s,
                    products=[
                        ProductRecord(product_id, title, attrs, image_path, image_sha, description)
                    ],
                )
                s.flush()
                row = s.get(Product, product_id)
                assert row is not None
            self._catch_up_after(product_id)
            return row

    def delete(self, product_id: str) -> None:
        with self._lock:
            with transaction(self.sessions) as s:
                if not delete_product(session=s, product_id=product_id):
                    raise NotFound(f"product {product_id!r} does not exist")
            self._catch_up_after(product_id)

    def reconcile(self) -> int:
        """Apply SQL changes newer than the index's revision; returns how many."""
        with self._lock:
            return self._catch_up()

    def _catch_up_after(self, product_id: str) -> None:
        try:
            self._catch_up()
        except VectorsUnavailable as e:
            raise VectorsUnavailable(
                f"the change of {product_id!r} is saved and reaches search once the vector "
                f"store answers (sending it again is safe): {e.message}"
            ) from e

    def _catch_up(self) -> int:
        """Apply the changes since the index's revision, in batches: an ingest that updated
        the catalog in place reaches every running process as thousands of changes."""
        with self.sessions() as s:
            rows = changed_since(session=s, revision=int(self.index.meta.get("revision", 0)))
        for start in range(0, len(rows), CATCH_UP_BATCH):
            # one row per product, at its latest revision: a batch's changes commute
            batch = rows[start : start + CATCH_UP_BATCH]
            self.index.delete_many([r.id for r in batch if r.deleted])
            self._apply([r for r in batch if not r.deleted])
            newest = max(r.revision for r in batch)
            self.index.meta["revision"] = max(int(self.index.meta.get("revision", 0)), newest)
        return len(rows)

    def _apply(self, rows: list[Product]) -> None:
        if not rows:
            return
        one_torch_thread()
        embedder = self._embedder()
        text, _ = embedder.texts([product_text(r.title, r.attributes, r.description) for r in rows])
        loaders = [
            (lambda p=r.image_path: Path(p).read_bytes()) if r.image_path else None for r in rows
        ]
        image, colour, hashes, _ = embedder.images(loaders)
        has_image = np.array([h is not None for h in hashes], dtype=bool)
        ptext, pimage = project(self.head, text, image)
        if colour.shape[1] != self.index.dim("colour"):  # a build from before colour: none
            colour = np.zeros((len(rows), self.index.dim("colour")), np.float32)
        metas = [
            ProductRecord(
                r.id,
                r.title,
                dict(r.attributes),
                r.image_path if ok else None,
                description=r.description,
            )
            for r, ok in zip(rows, has_image, strict=True)
        ]
        vecs = {"text": text, "image": image, "colour": colour, "ptext": ptext, "pimage": pimage}
        self.index.upsert_many(metas, vecs, has_image)

    def _store_image(self, data: bytes, sha: str) -> Path:
        self.images_dir.mkdir(parents=True, exist_ok=True)
        path = self.images_dir / f"{sha}.img"
        if not path.exists():
            tmp = path.with_name(f".{uuid.uuid4().hex}.tmp")
            try:
                with disk_space("an uploaded image", self.images_dir), tmp.open("wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
        return path
