"""CatalogIndex: exact filtered search, deletes, upserts, and crash-safe checksummed builds.

Synthetic vectors (seeded, normalised float32, small dims) are enough here: the index only sees
numbers. Real embeddings go through it in the ingest and API tests.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np
import pytest
from helpers import qdrant_in_memory

from service.catalog.index import SPACES, CatalogIndex
from service.catalog.vectors import FaissBackend, VectorBackend, VectorConfig
from storage.artifacts import CURRENT, current, read_manifest, remove_stale_temps
from storage.errors import ArtifactError
from storage.products import ProductRecord

N = 2000
DIMS = {"text": 16, "image": 24, "colour": 6, "ptext": 8, "pimage": 8}
COLOURS = ["Red", "Blue", "Green", "Black", "White"]


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def attrs(i: int) -> dict[str, str]:
    return {
        "colour": COLOURS[i % 5],
        "size": str(i % 3),
        "rare": "yes" if i % 200 == 0 else "no",  # 10 of 2000
    }


def make_index(
    n: int = N, seed: int = 0, exact_limit: int = 20000, backend: VectorBackend | None = None
) -> CatalogIndex:
    rng = np.random.default_rng(seed)
    vecs = {s: unit(rng, n, d) for s, d in DIMS.items()}
    return CatalogIndex(
        text=vecs["text"],
        image=vecs["image"],
        colour=vecs["colour"],
        has_image=np.ones(n, bool),
        ptext=vecs["ptext"],
        pimage=vecs["pimage"],
        metas=[ProductRecord(f"p{i}", f"title {i}", attrs(i), None) for i in range(n)],
        exact_limit=exact_limit,
        backend=backend,
        meta={"attributes": ["colour", "size", "rare"], "revision": 7},
    )


@pytest.fixture(scope="module")
def base_build(tmp_path_factory) -> Path:
    """The 2000-row index built once (HNSW construction is the slow part) and saved."""
    return make_index().save(tmp_path_factory.mktemp("base"), "base")


@pytest.fixture
def backend(request) -> Iterator[VectorBackend]:
    """FAISS in process, or (parametrized indirectly with "qdrant") a Qdrant collection in
    Qdrant's local mode: the same tests pass on both."""
    if getattr(request, "param", "faiss") == "faiss":
        yield FaissBackend()
    else:
        with qdrant_in_memory() as qdrant:
            yield qdrant


both_backends = pytest.mark.parametrize("backend", ["faiss", "qdrant"], indirect=True)


@pytest.fixture
def fresh(base_build, backend):
    """A fresh, private copy of the 2000-row index (loaded from its build, or built in the
    test's Qdrant)."""

    def load(exact_limit: int = 20000) -> CatalogIndex:
        if isinstance(backend, FaissBackend):
            return CatalogIndex.load(base_build, exact_limit=exact_limit)
        return make_index(exact_limit=exact_limit, backend=backend)

    return load


def queries(seed: int, space: str, count: int = 20) -> np.ndarray:
    return unit(np.random.default_rng(seed), count, DIMS[space])


def brute(index: CatalogIndex, space: str, q: np.ndarray, k: int, mask: np.ndarray):
    rows = np.flatnonzero(mask)
    sims = index.vectors(space, rows) @ q
    order = np.argsort(-sims, kind="stable")[:k]
    return rows[order], sims[order]


def ids(index: CatalogIndex, rows: np.ndarray) -> list[str]:
    return [index.metas[r].id for r in rows]


def snapshot(index: CatalogIndex) -> list[tuple[list[int], list[float]]]:
    out = []
    for space in SPACES:
        for q in queries(99, space, 5):
            rows, sims = index.search(space, q, 10)
            out.append((rows.tolist(), np.round(sims, 6).tolist()))
    return out


# ---- search ----------------------------------------------------------------------------------
@both_backends
def test_unfiltered_search_finds_a_row_by_its_own_vector(fresh):
    index = fresh()
    for space in SPACES:
        for row in (0, 123, 1999):
            q = index.vectors(space, np.array([row]))[0]
            rows, sims = index.search(space, q, 5)
            assert rows[0] == row
            assert sims[0] == pytest.approx(1.0, abs=1e-3)  # HNSW stores half precision
            assert np.all(np.diff(sims) <= 1e-6)


def test_a_flat_store_searches_exactly_and_loads_as_flat(tmp_path):
    """exact_limit 0: even filtered searches go to the store, which skips excluded rows."""
    index = make_index(exact_limit=0, backend=FaissBackend(VectorConfig(kind="flat")))
    index.delete("p7")
    build = index.save(tmp_path, "flat")
    for built in (index, CatalogIndex.load(build, exact_limit=0)):  # the saved kind, as saved
        for space in SPACES:
            for filters in (None, {"colour": ["Red"]}):
                mask = built.filter_mask(filters or {})
                for q in queries(5, space, 5):
                    rows, sims = built.search(space, q, 10, None if filters is None else mask)
                    want_rows, want_sims = brute(built, space, q, 10, mask)
                    assert rows.tolist() == want_rows.tolist()
                    np.testing.assert_allclose(sims, want_sims, atol=1e-5)


FILTERS = [
    {"colour": ["Red"]},  # 400 rows
    {"rare": ["yes"]},  # 10 rows
    {"colour": ["Red", "Blue"], "size": ["1"]},  # OR within, AND across
    {"colour": ["Green"], "rare": ["yes"]},  # rows 0, 1000... only those with i%5==2: none
]


@both_backends
@pytest.mark.parametrize("exact_limit", [20000, 0], ids=["exact", "store"])
@pytest.mark.parametrize("filters", FILTERS, ids=["one-value", "rare", "or-and", "empty"])
@pytest.mark.parametrize("k", [5, 10, 50])
def test_filtered_search_returns_k_whenever_k_match(fresh, exact_limit, filters, k):
    index = fresh(exact_limit)
    mask = index.filter_mask(filters)
    expected_mask = np.array(
        [all(attrs(i)[a] in v for a, v in filters.items()) for i in range(N)], bool
    )
    np.testing.assert_array_equal(mask, expected_mask)
    count = int(mask.sum())
    for space in SPACES:
        for q in queries(k, space, 10):
            rows, sims = index.search(space, q, k, mask)
            assert len(rows) == min(k, count), (space, filters, k, len(rows), count)
            assert len(set(rows.tolist())) == len(rows)
            assert mask[rows].all(), "a result outside the filter"
            ref_rows, ref_sims = brute(index, space, q, k, mask)
            if exact_limit:
                np.testing.assert_array_equal(rows, ref_rows)
                np.testing.assert_allclose(sims, ref_sims, rtol=1e-5, atol=1e-6)
            elif len(rows):
                # HNSW is approximate, but must not be far off the exact answer
                overlap = len(set(rows.tolist()) & set(ref_rows.tolist())) / len(rows)
                assert overlap >= 0.8


@both_backends
def test_filter_with_fewer_matches_than_k_returns_all_matches(fresh):
    for exact_limit in (20000, 0):
        index = fresh(exact_limit)
        mask = index.filter_mask({"rare": ["yes"]})
        rows, _ = index.search("ptext", queries(1, "ptext", 1)[0], 50, mask)
        assert sorted(rows.tolist()) == list(range(0, N, 200))


@both_backends
@pytest.mark.parametrize("exact_limit", [20000, 0], ids=["exact", "store"])
def test_deleted_rows_never_come_back(fresh, exact_limit):
    index = fresh(exact_limit)
    rng = np.random.default_rng(5)
    gone = {f"p{i}" for i in rng.choice(N, 300, replace=False)}
    # delete rows the queries will point straight at, too
    gone |= {"p0", "p200", "p7"}
    for pid in gone:
        assert index.delete(pid)
    assert not index.delete("p0"), "deleting twice reports False"
    assert len(index) == N - len(gone)
    alive = N - len(gone)
    for space in SPACES:
        qs = list(queries(3, space, 20)) + [index.vectors(space, np.array([0]))[0]]
        for q in qs:
            for filters in (None, {"colour": ["Red"]}, {"rare": ["yes"]}):
                mask = None if filters is None else index.filter_mask(filters)
                rows, _ = index.search(space, q, 30, mask)
                assert not (set(ids(index, rows)) & gone)
                allowed = alive if mask is None else int(mask.sum())
                assert len(rows) == min(30, allowed)


@both_backends
@pytest.mark.parametrize("exact_limit", [20000, 0], ids=["exact", "store"])
def test_many_searches_at_once_find_what_each_search_finds(fresh, backend, exact_limit):
    """The learner's batched searches: the same rows as one search per query, before and after
    products are deleted, on one thread or two, with and without filters."""
    index = fresh(exact_limit)
    # more than one chunk (Qdrant's local mode filters in Python: fewer there)
    qs = queries(8, "pimage", 150 if isinstance(backend, FaissBackend) else 70)

    def each() -> list[np.ndarray]:
        return [index.search("pimage", q, 25)[0] for q in qs]

    for threads in (1, 2):
        got = index.search_many("pimage", qs, 25, threads=threads)
        assert all(np.array_equal(a, b) for a, b in zip(got, each(), strict=True))
    gone = {f"p{i}" for i in range(0, N, 7)}
    for pid in gone:
        index.delete(pid)
    got = index.search_many("pimage", qs, 25, threads=2)
    assert all(np.array_equal(a, b) for a, b in zip(got, each(), strict=True))
    assert all(len(r) == 25 and not set(ids(index, r)) & gone for r in got)
    for filters in FILTERS:  # the coverage guard's pools of filtered searches
        mask = index.filter_mask(filters)
        got = index.search_many("pimage", qs, 25, allowed=mask, threads=2)
        want = [index.search("pimage", q, 25, mask)[0] for q in qs]
        assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True)), filters
        assert all(len(r) == min(25, int(mask.sum())) for r in got)


@both_backends
def test_upsert_replaces_an_existing_id(fresh):
    index = fresh()
    assert not index.filter_mask({"colour": ["Purple"]}).any()  # the columns kept from here on
    old_row = index.row_of["p5"]
    old_q = {s: index.vectors(s, np.array([old_row]))[0].copy() for s in SPACES}
    rng = np.random.default_rng(11)
    new = {s: unit(rng, 1, d)[0] for s, d in DIMS.items()}
    index.upsert(ProductRecord("p5", "new title", {"colour": "Purple"}, None), new, True)
    assert len(index) == N and index.n_rows == N + 1
    new_row = index.row_of["p5"]
    assert new_row != old_row
    for space in SPACES:
        rows, _ = index.search(space, old_q[space], 20)  # the old vector must not find the old row
        assert old_row not in rows.tolist()
        assert ids(index, rows).count("p5") <= 1
        rows, sims = index.search(space, new[space], 3)
        assert rows[0] == new_row and sims[0] == pytest.approx(1.0, abs=1e-3)
        assert index.metas[rows[0]].title == "new title"
    # filters see the new attributes (and the new attribute value) at once
    rows, _ = index.search("text", new["text"], 5, index.filter_mask({"colour": ["Purple"]}))
    assert rows.tolist() == [new_row]
    p5_colour = index.filter_mask({"colour": [COLOURS[0]]})
    assert not p5_colour[old_row] and not p5_colour[new_row]


@both_backends
def test_a_batch_of_upserts_and_deletes_then_compaction(fresh):
    """What an ingest that updates a build does: many products at once (one repeated, the later
    one wins), then the dead rows dropped while the products and their vectors stay."""
    index = fresh()
    rng = np.random.default_rng(12)
    metas = [ProductRecord(f"p{i}", f"changed {i}", attrs(i), None) for i in range(100)]
    metas += [ProductRecord(f"n{i}", f"new {i}", {"brand": "Acme"}, None) for i in range(50)]
    metas.append(ProductRecord("n0", "new 0 again", {"brand": "Acme"}, None))
    vecs = {s: unit(rng, len(metas), d) for s, d in DIMS.items()}
    index.upsert_many(metas, vecs, np.ones(len(metas), bool))
    assert index.delete_many(["p100", "p101", "missing"]) == 2
    assert len(index) == N + 50 - 2 and index.n_rows == N + len(metas)
    assert index.metas[index.row_of["n0"]].title == "new 0 again"
    assert index.filter_mask({"brand": ["Acme"]}).sum() == 50
    for i in (0, 99, len(metas) - 1):
        rows, _ = index.search("text", vecs["text"][i], 1)
        assert index.metas[rows[0]].id == metas[i].id
    compact = index.compacted()
    assert compact.n_rows == len(compact) == len(index)
    for pid in ("p0", "p5", "n0", "n49", "p1999"):
        q = index.vectors("ptext", np.array([index.row_of[pid]]))[0]
        rows, _ = compact.search("ptext", q, 1)
        assert compact.metas[rows[0]].id == pid
        assert compact.search_lexical(compact.metas[rows[0]].title, 1)[0][0] == rows[0]
    assert "p100" not in compact.row_of and compact.meta["revision"] == index.meta["revision"]


@both_backends
def test_upsert_of_a_new_id_and_new_attribute_is_searchable(backend):
    index = make_index(n=20, backend=backend)  # also exercises growth past the initial capacity
    rng = np.random.default_rng(3)
    for i in range(40):
        vecs = {s: unit(rng, 1, d)[0] for s, d in DIMS.items()}
        index.upsert(ProductRecord(f"new{i}", f"new {i}", {"brand": "Acme"}, None), vecs, False)
        rows, _ = index.search("ptext", vecs["ptext"], 1)
        assert index.metas[rows[0]].id == f"new{i}"
    assert "brand" in index.attribute_names()
    assert index.filter_mask({"brand": ["Acme"]}).sum() == 40
    assert not index.has_image(np.array([index.row_of["new0"]]))[0]


# ---- persistence -----------------------------------------------------------------------------
@both_backends
def test_save_and_load_round_trip_keeps_deletes_and_upserts(fresh, backend, tmp_path):
    index = fresh()
    index.delete("p1")
    rng = np.random.default_rng(4)
    index.upsert(
        ProductRecord("p2", "replaced", {"colour": "Red"}, "/x.jpg"),
        {s: unit(rng, 1, d)[0] for s, d in DIMS.items()},
        True,
    )
    path = index.save(tmp_path, "b1")
    assert current(tmp_path) == path == tmp_path / "b1"
    manifest = read_manifest(path)
    assert {f"{s}.npy" for s in DIMS} <= set(manifest["files"])
    if isinstance(backend, FaissBackend):
        assert {f"{s}.faiss" for s in SPACES} <= set(manifest["files"])
    else:  # the build names its collection, which holds the products by id
        assert "qdrant.json" in manifest["files"]
    assert manifest["count"] == N - 1 and manifest["rows"] == N + 1
    loaded = CatalogIndex.load(path, backend=backend)
    assert len(loaded) == N - 1 and loaded.n_rows == N + 1
    assert "p1" not in loaded.row_of
    assert loaded.metas[loaded.row_of["p2"]].title == "replaced"
    assert loaded.meta["revision"] == 7
    assert snapshot(loaded) == snapshot(index)
    rows = np.arange(N + 1)
    for space in DIMS:
        np.testing.assert_array_equal(loaded.vectors(space, rows), index.vectors(space, rows))


def mapped_files(path: Path) -> dict[str, str]:
    """The files under `path` this process maps, with the permissions of their mapping."""
    out = {}
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].startswith(str(path)):
            out[Path(fields[5]).name] = fields[1]
    return out


def test_a_loaded_build_maps_photo_features_and_colour_and_copies_the_searched_rows(tmp_path):
    """Photo features and colour descriptors are read a few rows at a time, so a loaded build
    keeps them mapped read-only from its files (shared by every process serving it); the
    searched spaces are copied into memory."""
    path = make_index(n=300).save(tmp_path, "b1")
    loaded = CatalogIndex.load(path)
    maps = mapped_files(path)
    assert maps.keys() == {"image.npy", "colour.npy"} and set(maps.values()) == {"r--s"}
    got = loaded.vectors("image", np.array([7, 3]))
    assert type(got) is np.ndarray and got.flags.writeable  # torch.from_numpy warns otherwise
    np.testing.assert_array_equal(got, np.load(path / "image.npy")[[7, 3]])
    assert loaded.dim("image") == DIMS["image"] and loaded.dim("colour") == DIMS["colour"]


def test_a_build_deleted_while_loaded_still_serves_its_mapped_rows(tmp_path):
    """Linux keeps a deleted file's pages while it is mapped, so an old build removed from disk
    under a process serving it does not break that process's reads."""
    path = make_index(n=300).save(tmp_path, "b1")
    expected = np.load(path / "image.npy")
    loaded = CatalogIndex.load(path)
    shutil.rmtree(path)
    rows = np.arange(299, -1, -3)
    np.testing.assert_array_equal(loaded.vectors("image", rows), expected[rows])
    assert loaded.vectors("colour", rows).shape == (len(rows), DIMS["colour"])
    loaded.save(tmp_path, "b2")
    np.testing.assert_array_equal(np.load(tmp_path / "b2" / "image.npy"), expected)


def test_upserts_after_load_are_read_saved_and_compacted_with_the_mapped_rows(tmp_path):
    """Rows appended to a loaded build sit after its mapped ones: read together, saved as one
    file per space (as before, so older code loads the build), and gathered by compaction."""
    index = make_index(n=300)
    before = snapshot(index)
    loaded = CatalogIndex.load(index.save(tmp_path, "b1"))
    assert snapshot(loaded) == before
    rng = np.random.default_rng(13)
    metas = [ProductRecord(f"p{i}", f"changed {i}", attrs(i), None) for i in range(0, 60, 2)]
    metas += [ProductRecord(f"n{i}", f"new {i}", attrs(i), None) for i in range(20)]
    added = {s: unit(rng, len(metas), d) for s, d in DIMS.items()}
    for part in (slice(0, 1), slice(1, 30), slice(30, None)):  # the appended rows grow twice
        part_vecs = {s: v[part] for s, v in added.items()}
        loaded.upsert_many(metas[part], part_vecs, np.ones(len(metas[part]), bool))
    loaded.delete("p1")
    expected = {s: np.concatenate([np.load(tmp_path / "b1" / f"{s}.npy"), added[s]]) for s in DIMS}
    mixed = np.array([320, 5, 349, 0, 299, 300, 5])
    for space in DIMS:
        np.testing.assert_array_equal(loaded.vectors(space, mixed), expected[space][mixed])

    path = loaded.save(tmp_path, "b2")
    for space in DIMS:  # byte for byte what np.save writes
        np.save(tmp_path / "reference.npy", expected[space])
        assert (path / f"{space}.npy").read_bytes() == (tmp_path / "reference.npy").read_bytes()
    reloaded = CatalogIndex.load(path)
    assert reloaded.n_rows == 350 and len(reloaded) == len(loaded) == 319
    assert snapshot(reloaded) == snapshot(loaded)
    reloaded.upsert_many(metas[:1], {s: v[:1] for s, v in added.items()}, np.ones(1, bool))

    compact = loaded.compacted()
    alive = loaded.alive_rows()
    assert compact.n_rows == len(alive) == 319
    for space in DIMS:
        np.testing.assert_array_equal(
            compact.vectors(space, np.arange(len(alive))), expected[space][alive]
        )
    assert compact.metas[compact.row_of["n19"]].title == "new 19"


def test_a_build_from_before_colour_descriptors_loads_without_them(tmp_path):
    """Builds written before colour descriptors existed have no colour.npy: they load, with
    zero-width colour rows (heads then fit their attribute maps without colour)."""
    path = make_index(n=50).save(tmp_path, "b1")
    manifest = json.loads((path / "manifest.json").read_text())
    del manifest["files"]["colour.npy"]
    (path / "colour.npy").unlink()
    (path / "manifest.json").write_text(json.dumps(manifest))
    loaded = CatalogIndex.load(path)
    assert loaded.dim("colour") == 0 and loaded.vectors("colour", np.arange(50)).shape == (50, 0)
    loaded.upsert(
        ProductRecord("new", "new", {}, None),
        {s: np.zeros(d if s != "colour" else 0, np.float32) for s, d in DIMS.items()},
        False,
    )


def test_artifacts_are_immutable(tmp_path):
    index = make_index(n=50)
    index.save(tmp_path, "b1")
    with pytest.raises(ArtifactError):
        index.save(tmp_path, "b1")


def test_crash_while_writing_a_build_keeps_the_previous_one(fresh, tmp_path, monkeypatch):
    index = fresh()
    index.save(tmp_path, "b1")
    before = snapshot(CatalogIndex.load(tmp_path / "b1"))
    real_write = faiss.write_index
    calls = []

    def write_then_fail(idx, path):
        calls.append(path)
        if len(calls) > 1:
            raise RuntimeError("disk full")
        real_write(idx, path)

    monkeypatch.setattr(faiss, "write_index", write_then_fail)
    index.delete("p3")
    with pytest.raises(RuntimeError, match="disk full"):
        index.save(tmp_path, "b2")
    monkeypatch.undo()
    assert len(calls) == 2
    assert current(tmp_path) == tmp_path / "b1"
    assert not (tmp_path / "b2").exists()
    assert not list(tmp_path.glob(".tmp-*")), "a failed write cleans up after itself"
    assert snapshot(CatalogIndex.load(current(tmp_path))) == before
    # and the failed name is free for a retry
    index.save(tmp_path, "b2")
    assert current(tmp_path) == tmp_path / "b2"
    assert "p3" not in CatalogIndex.load(tmp_path / "b2").row_of


CRASHER = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    import faiss
    import storage.artifacts
    from service.catalog.index import CatalogIndex

    root, mode = Path(sys.argv[1]), sys.argv[2]
    index = CatalogIndex.load(root / "b1")
    index.delete("p4")
    if mode == "payload":  # the process dies after writing some of the build's files
        real = faiss.write_index
        def write_then_die(idx, path):
            real(idx, path)
            os._exit(17)
        faiss.write_index = write_then_die
    else:  # the process dies while switching CURRENT (the build itself is complete)
        def die(*args):
            os._exit(17)
        storage.artifacts.os.replace = die
    index.save(root, "b2")
    """
)


@pytest.mark.parametrize("mode", ["payload", "current"])
def test_killed_process_mid_write_keeps_the_previous_build(fresh, tmp_path, mode):
    fresh().save(tmp_path, "b1")
    before = snapshot(CatalogIndex.load(tmp_path / "b1"))
    proc = subprocess.run(
        [sys.executable, "-c", CRASHER, str(tmp_path), mode],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 17, proc.stderr
    assert (tmp_path / CURRENT).read_text().strip() == "b1"
    assert current(tmp_path) == tmp_path / "b1"
    loaded = CatalogIndex.load(current(tmp_path))
    assert "p4" in loaded.row_of
    assert snapshot(loaded) == before
    temps = list(tmp_path.glob(".tmp-*"))
    if mode == "payload":
        assert len(temps) == 1 and any(temps[0].iterdir()), "the half-written build is left"
        assert not (tmp_path / "b2").exists()
        remove_stale_temps(tmp_path)
        assert not list(tmp_path.glob(".tmp-*"))
        assert (tmp_path / "b1").is_dir()
        assert snapshot(CatalogIndex.load(current(tmp_path))) == before
    else:
        assert temps == []
        # b2 was complete (renamed into place) but never made current; it verifies and loads
        assert "p4" not in CatalogIndex.load(tmp_path / "b2").row_of


def test_remove_stale_temps_on_a_missing_root_is_a_no_op(tmp_path):
    remove_stale_temps(tmp_path / "nope")
    assert not (tmp_path / "nope").exists()


# ---- corruption ------------------------------------------------------------------------------
def _flip_byte(path: Path, offset: int = -1) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("fname", ["text.npy", "pimage.faiss", "products.json", "alive.npy"])
def test_a_corrupted_file_is_refused(tmp_path, fname):
    path = make_index(n=100).save(tmp_path, "b1")
    _flip_byte(path / fname, len((path / fname).read_bytes()) // 2)
    with pytest.raises(ArtifactError, match=fname):
        CatalogIndex.load(path)


def test_a_missing_file_or_manifest_is_refused(tmp_path):
    path = make_index(n=100).save(tmp_path, "b1")
    (path / "ptext.faiss").unlink()
    with pytest.raises(ArtifactError):
        CatalogIndex.load(path)
    (path / "manifest.json").unlink()
    with pytest.raises(ArtifactError):
        CatalogIndex.load(path)
