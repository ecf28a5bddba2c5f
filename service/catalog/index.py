"""The in-memory catalog snapshot: frozen vectors, their projections, their nearest-neighbour
indexes (service.catalog.vectors), metadata and the lexical index.

Rows are append-only: an updated product gets a new row and its old row is marked dead, so the
vector indexes only ever grow between rebuilds. Filters and dead rows are applied exactly: small
allowed sets are searched by brute force, large ones by the vector store skipping the rows they
exclude, with an exact fallback, so a filtered search returns k results whenever k products
match.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.head import FusionHead
from service.catalog.attribute_columns import AttributeColumns
from service.catalog.files import product_text
from service.catalog.lexical import Doc, LexicalIndex, OutdatedIndex
from service.catalog.rows import Rows
from service.catalog.tokens import terms, words
from service.catalog.vectors import (
    SPACES,
    FaissBackend,
    FilterMask,
    VectorBackend,
    VectorStore,
    exact_top,
)
from storage.artifacts import read_manifest, write_artifact
from storage.errors import ArtifactError
from storage.products import ProductRecord


@torch.no_grad()
def project(head: FusionHead, text: np.ndarray, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Projected (ptext, pimage) rows for frozen features, in batches."""
    pt, pv = [], []
    for i in range(0, len(text), 4096):
        pt.append(head.project_text(torch.from_numpy(text[i : i + 4096])).numpy())
        pv.append(head.project_image(torch.from_numpy(image[i : i + 4096])).numpy())
    dim = head.config.dim
    return (
        np.concatenate(pt) if pt else np.zeros((0, dim), np.float32),
        np.concatenate(pv) if pv else np.zeros((0, dim), np.float32),
    )


class CatalogIndex:
    def __init__(
        self,
        *,
        text: np.ndarray,
        image: np.ndarray | Rows,
        has_image: np.ndarray,
        ptext: np.ndarray,
        pimage: np.ndarray,
        metas: list[ProductRecord],
        colour: np.ndarray | Rows | None = None,
        alive: np.ndarray | None = None,
        store: VectorStore | None = None,
        backend: VectorBackend | None = None,
        exact_limit: int = 20000,
        meta: dict[str, Any] | None = None,
        lexical: LexicalIndex | None = None,
    ) -> None:
        """`image`, `colour`: arrays, or Rows (a loaded build's, mapped from its files);
        `store`: the rows' vector indexes, built here by `backend` (default: FAISS HNSW) if
        not given;
        `lexical`: the products' BM25 index, likewise built from their text."""
        n = len(metas)
        if colour is None:  # a build from before colour descriptors, or none configured
            colour = np.zeros((n, 0), np.float32)
        image_rows = image if isinstance(image, Rows) else Rows(image)
        colour_rows = colour if isinstance(colour, Rows) else Rows(colour)
        assert len(image_rows) == len(colour_rows) == n
        arrays = (text, ptext, pimage)
        assert all(a.shape[0] == n and a.dtype == np.float32 for a in arrays)
        self._lock = threading.RLock()
        self.meta: dict[str, Any] = dict(meta or {})
        self.exact_limit = exact_limit
        self._n = n
        # searched (FAISS's exact path needs one array in memory), so held in growable arrays
        self._vecs = {
            "text": _grow(text, n),
            "ptext": _grow(ptext, n),
            "pimage": _grow(pimage, n),
        }
        # only read a few hundred rows at a time (photo features, colour descriptors): a loaded
        # build's stay mapped from its files, most of a million products' memory (issue 38)
        self._rows = {"image": image_rows, "colour": colour_rows}
        self._has_image = _grow(has_image.astype(bool), n)
        self._alive = _grow(np.ones(n, bool) if alive is None else alive.astype(bool), n)
        self.metas: list[ProductRecord] = list(metas)
        self.row_of: dict[str, int] = {m.id: i for i, m in enumerate(metas) if self._alive[i]}
        self._columns = AttributeColumns(self.metas)  # for filters and facets
        self.code_cache: dict[Any, np.ndarray] = {}  # model.attributes: codes per vocabulary
        if store is None:
            alive_metas = [m if self._alive[r] else None for r, m in enumerate(metas)]
            store = (backend or FaissBackend()).build(
                {s: self._vecs[s][:n] for s in SPACES}, alive_metas
            )
        assert store.rows == n, "index rows != vector rows"
        self._store = store
        if lexical is None:
            rows = np.flatnonzero(self._alive[:n])
            lexical = LexicalIndex.build((_terms(metas[r]) for r in rows), rows)
        self.lexical = lexical

    # ---- read side -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.row_of)

    @property
    def n_rows(self) -> int:
        return self._n

    def alive_rows(self) -> np.ndarray:
        """The rows of the products in the catalog now (a consistent snapshot)."""
        with self._lock:
            return np.flatnonzero(self._alive[: self._n])

    def dim(self, space: str) -> int:
        if space in self._rows:
            return self._rows[space].dim
        return int(self._vecs[space].shape[1])

    def vectors(self, space: str, rows: np.ndarray) -> np.ndarray:
        if space in self._rows:
            return self._rows[space].take(rows)
        return self._vecs[space][rows]

    def has_image(self, rows: np.ndarray) -> np.ndarray:
        return self._has_image[rows]

    def any_image(self) -> bool:
        """Whether any product in the catalog now has an image (a photo query needs one)."""
        with self._lock:
            return bool((self._has_image[: self._n] & self._alive[: self._n]).any())

    def attribute_names(self) -> set[str]:
        return set(self.meta.get("attributes", []))

    def filter_mask(self, filters: Mapping[str, list[str]]) -> FilterMask:
        """Alive rows whose attributes match every filter (values within one filter are OR-ed)."""
        with self._lock:
            mask = self._alive[: self._n].copy()
            for attr, values in filters.items():
                mask &= self._columns.matching(attr, values)
            return FilterMask(mask, filters)

    def facet_counts(
        self, rows: np.ndarray, attrs: Sequence[str], limit: int = 100
    ) -> dict[str, list[tuple[str, int]]]:
        """Per attribute, how many of `rows` have each value, stringified as filters match it
        (model.filters), so a value sent back as a filter selects exactly those products. Most
        frequent first (ties by value), at most `limit` values; rows without it are not counted."""
        with self._lock:
            columns = {attr: self._columns.values(attr)[rows] for attr in attrs}
        out: dict[str, list[tuple[str, int]]] = {}
        for attr, values in columns.items():
            counts = Counter(str(v) for v in values.tolist() if v is not None)
            ranked = sorted(counts.items(), key=lambda vc: (-vc[1], vc[0]))
            out[attr] = ranked[:limit]
        return out

    def warm_filters(self) -> None:
        """Build every attribute's codes now, not at the first search filtering on it."""
        with self._lock:
            for attr in self.attribute_names():
                self._columns.codes(attr)

    def search(self, space: str, query: np.ndarray, n: int, allowed: np.ndarray | None = None):
        """Top-n rows by inner product in `space` among alive (and allowed) rows: (rows, sims).
        Off the exact path the sims are the vector store's (an HNSW's half-precision copy: within
        ~1e-3)."""
        assert query.ndim == 1 and query.dtype == np.float32
        with self._lock:
            total = self._n
            if allowed is None and len(self.row_of) == total:
                return self._approximate(space, query, n, None)
            mask = self._alive[:total] if allowed is None else allowed
            count = _count(mask)
            if count == 0:
                return np.zeros(0, np.int64), np.zeros(0, np.float32)
            if count <= self.exact_limit:
                return self._exact(space, query, n, _rows(mask))
            rows, sims = self._approximate(space, query, n, mask)
            if len(rows) < min(n, count):
                return self._exact(space, query, n, _rows(mask))
            return rows, sims

    def search_lexical(
        self, text: str, n: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-n rows by BM25 of the text among alive (and allowed) rows: (rows, scores). A
        filter is applied to a deeper list, so a narrow one may return fewer than n."""
        rows, scores = self.lexical.search(text, n if allowed is None else 4 * n)
        with self._lock:  # a row replaced a moment ago may still be in the lexical index
            keep = (self._alive if allowed is None else allowed)[rows]
        return rows[keep][:n], scores[keep][:n]

    def search_many(
        self,
        space: str,
        queries: np.ndarray,
        n: int,
        *,
        allowed: np.ndarray | None = None,
        threads: int = 1,
    ) -> list[np.ndarray]:
        """search() for many queries among the alive (and allowed) rows: the rows each one finds,
        best first. For the learner, which asks once per logged search: the store searches a
        chunk of queries on `threads` cores per call, and the lock is released between chunks
        so that searches served meanwhile wait for one chunk at most."""
        assert queries.ndim == 2 and queries.dtype == np.float32
        out: list[np.ndarray] = []
        for start in range(0, len(queries), 64):
            chunk = queries[start : start + 64]
            with self._lock:
                total = self._n
                if allowed is not None:
                    mask: np.ndarray | None = allowed
                else:
                    mask = None if len(self.row_of) == total else self._alive[:total]
                count = total if mask is None else _count(mask)
                if count == 0:
                    out += [np.zeros(0, np.int64)] * len(chunk)
                    continue
                if mask is not None and count <= self.exact_limit:  # few rows: exact
                    out += self._exact_many(space, chunk, n, _rows(mask))
                    continue
                # deleted, replaced or filtered out rows are skipped by the store
                rows, _ = self._store.search(space, chunk, n, mask, threads)
                for q, r in zip(chunk, rows, strict=True):
                    found = r[r >= 0]  # a filtered walk can run short: the exact path then
                    out.append(
                        found
                        if len(found) >= min(n, count)
                        else self.search(space, q, n, allowed)[0]
                    )
        return out

    def _approximate(self, space: str, q: np.ndarray, n: int, mask: np.ndarray | None):
        rows, sims = self._store.search(space, q[None, :], n, mask, 1)
        keep = rows[0] >= 0
        return rows[0][keep], sims[0][keep]

    def _exact(self, space: str, q: np.ndarray, n: int, rows: np.ndarray):
        return exact_top(self._vecs[space], q, rows, n)

    def _exact_many(
        self, space: str, queries: np.ndarray, n: int, rows: np.ndarray
    ) -> list[np.ndarray]:
        """_exact for a chunk of queries: for more than one, the rows' vectors are gathered once
        and multiplied together."""
        if not len(rows):
            return [rows] * len(queries)
        if len(queries) == 1:
            return [self._exact(space, queries[0], n, rows)[0]]
        sims = queries @ self._vecs[space][rows].T
        top = np.argpartition(-sims, n - 1, axis=1)[:, :n] if len(rows) > n else None
        if top is not None:
            sims = np.take_along_axis(sims, top, axis=1)
        order = np.argsort(-sims, axis=1, kind="stable")
        picked = order if top is None else np.take_along_axis(top, order, axis=1)
        return list(rows[picked])

    # ---- write side ------------------------------------------------------------------------
    def upsert(self, meta: ProductRecord, vecs: Mapping[str, np.ndarray], has_image: bool) -> None:
        """Append a row for the product (its previous row, if any, dies). Searchable at once."""
        one = {name: v[None] for name, v in vecs.items()}
        self.upsert_many([meta], one, np.array([has_image]))

    def upsert_many(
        self,
        metas: Sequence[ProductRecord],
        vecs: Mapping[str, np.ndarray],
        has_image: np.ndarray,
    ) -> None:
        """Append a row per product, each with its (len(metas), dim) vectors per space; a
        product's previous row, if any, dies. One write to the vector store and the lexical
        index for them all; searchable at once."""
        if not metas:
            return
        with self._lock:
            first, end = self._n, self._n + len(metas)
            for name, arr in self._vecs.items():
                if end > len(arr):
                    self._vecs[name] = arr = _grow(arr, end)
                arr[first:end] = vecs[name]
            for name, stored in self._rows.items():
                stored.append(np.asarray(vecs[name], np.float32).reshape(len(metas), stored.dim))
            if end > len(self._alive):
                self._alive = _grow(self._alive, end)
                self._has_image = _grow(self._has_image, end)
            self._alive[first:end], self._has_image[first:end] = True, has_image
            # rows are positions in the store: a store out of step would name wrong products
            assert self._store.rows == first, "vector store rows != index rows"
            self._store.add({s: self._vecs[s][first:end] for s in SPACES}, metas)
            replaced: list[int | None] = []
            for row, meta in enumerate(metas, start=first):
                old = self.row_of.get(meta.id)
                if old is not None:
                    self._alive[old] = False
                self.row_of[meta.id] = row
                replaced.append(old)
            self.metas.extend(metas)
            self._n = end
            self._columns.extend(metas)
            known = self.meta.setdefault("attributes", [])
            known += sorted({a for m in metas for a in m.attributes} - set(known))
        # outside the lock: its commit takes milliseconds that searches need not wait for
        rows = range(first, end)
        docs = [(r, _terms(m), old) for r, m, old in zip(rows, metas, replaced, strict=True)]
        self.lexical.upsert_many(docs)

    def delete(self, product_id: str) -> bool:
        return self.delete_many([product_id]) == 1

    def delete_many(self, product_ids: Sequence[str]) -> int:
        """Remove the products from search; returns how many were in it."""
        with self._lock:
            known = [p for p in product_ids if p in self.row_of]
            self._store.delete(known)
            rows = [self.row_of.pop(p) for p in known]
            self._alive[rows] = False
        if rows:
            self.lexical.delete_many(rows)
        return len(rows)

    def compacted(self) -> CatalogIndex:
        """A copy without dead rows (its vector and lexical indexes built anew): rows renumber,
        products, vectors and meta stay."""
        with self._lock:
            rows = np.flatnonzero(self._alive[: self._n])
            metas = [self.metas[r] for r in rows.tolist()]
            return CatalogIndex(
                text=self._vecs["text"][rows],
                image=self._rows["image"].take(rows),
                colour=self._rows["colour"].take(rows),
                ptext=self._vecs["ptext"][rows],
                pimage=self._vecs["pimage"][rows],
                has_image=self._has_image[rows],
                metas=metas,
                store=self._store.compacted({s: self._vecs[s][rows] for s in SPACES}, metas),
                exact_limit=self.exact_limit,
                meta=dict(self.meta),
            )

    # ---- persistence -----------------------------------------------------------------------
    def save(self, root: Path, name: str) -> Path:
        """Write an immutable, checksummed build and make it CURRENT atomically."""
        with self._lock:
            n = self._n

            def write(tmp: Path) -> None:
                for space, arr in self._vecs.items():
                    np.save(tmp / f"{space}.npy", arr[:n])
                for space, stored in self._rows.items():  # appends wait for the lock: len is n
                    stored.save(tmp / f"{space}.npy")
                np.save(tmp / "has_image.npy", self._has_image[:n])
                np.save(tmp / "alive.npy", self._alive[:n])
                metas = [
                    [m.id, m.title, m.attributes, m.image_path, m.description] for m in self.metas
                ]
                (tmp / "products.json").write_text(json.dumps(metas))
                self._store.save(tmp)
                self.lexical.save(tmp / "lexical")

            meta = {**self.meta, "count": len(self.row_of), "rows": n, "metric": "inner_product"}
            return write_artifact(root, name, write, meta)

    @classmethod
    def load(
        cls,
        path: Path,
        *,
        backend: VectorBackend | None = None,
        exact_limit: int = 20000,
    ) -> CatalogIndex:
        """The build at `path`, verified; its vector store opened through `backend` (default:
        FAISS in process)."""
        manifest = read_manifest(path)
        try:
            # mapped; the searched ones then copied once into arrays with room to grow (_grow):
            # a first update appends to them instead of holding the old rows and a copy twice
            # their size. Photo features and colour descriptors stay mapped (Rows).
            arrays = {
                name: np.load(path / f"{name}.npy", allow_pickle=False, mmap_mode="r")
                for name in ("text", "ptext", "pimage", "has_image", "alive")
            }
            image = Rows.mapped(path / "image.npy")
            colour = None
            if "colour.npy" in manifest.get("files", {}):  # verified above
                colour = Rows.mapped(path / "colour.npy")
            metas = [  # builds from before descriptions have four fields
                ProductRecord(m[0], m[1], m[2], m[3], description=m[4] if len(m) > 4 else "")
                for m in json.loads((path / "products.json").read_text())
            ]
            alive = arrays["alive"].astype(bool)
            products = [m if alive[r] else None for r, m in enumerate(metas)]
            store = (backend or FaissBackend()).load(path, products)
            lexical = _load_lexical(path / "lexical")
        except (OSError, ValueError, RuntimeError) as e:
            raise ArtifactError(f"index {path.name} cannot be loaded: {e}; re-run ingest") from e
        meta = {k: v for k, v in manifest.items() if k != "files"}
        return cls(
            text=arrays["text"],
            image=image,
            colour=colour,
            has_image=arrays["has_image"],
            ptext=arrays["ptext"],
            pimage=arrays["pimage"],
            alive=arrays["alive"],
            metas=metas,
            store=store,
            exact_limit=exact_limit,
            meta=meta,
            lexical=lexical,
        )


def _load_lexical(path: Path) -> LexicalIndex | None:
    """The saved lexical index, or None (built again from the products) for a build from
    before it or with an older layout of it."""
    if not path.is_dir():
        return None
    try:
        return LexicalIndex.load(path)
    except OutdatedIndex:
        return None


def _terms(meta: ProductRecord) -> Doc:
    """What the lexical channel reads of a product: its title, and its attribute text and
    description."""
    other = product_text("", meta.attributes, meta.description)
    return Doc(terms(meta.title), terms(other), words(meta.title))


def _count(mask: np.ndarray) -> int:
    return mask.count if isinstance(mask, FilterMask) else int(np.count_nonzero(mask))


def _rows(mask: np.ndarray) -> np.ndarray:
    return mask.rows if isinstance(mask, FilterMask) else np.flatnonzero(mask)


def _grow(arr: np.ndarray, need: int) -> np.ndarray:
    """A copy with capacity for at least `need` rows (doubling), so appends are amortised O(1)."""
    cap = max(need, 16)
    if len(arr) >= cap and arr.flags.writeable and arr.flags.c_contiguous:
        return arr
    cap = max(cap, 2 * len(arr))
    out = np.zeros((cap, *arr.shape[1:]), dtype=arr.dtype)
    out[: len(arr)] = arr
    return out
