"""Ingest of real catalog rows: counts, unreadable images, the embedding cache, SQL rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import ingest_into, make_settings, start_test_runtime, write_catalog
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from service.catalog.files import read_catalog
from service.catalog.index import CatalogIndex
from service.encoding.embedder import Embedder
from service.errors import BadRequest
from service.search.searcher import SearchQuery
from storage.artifacts import current
from storage.db import make_engine, session_factory
from storage.models import Product

pytestmark = pytest.mark.slow


@pytest.fixture
def broken_catalog(tmp_path, catalog_rows, source_rows) -> tuple[Path, list[dict], dict]:
    """The 150 products plus one whose image file does not exist and one whose image is corrupt."""
    used = {r["id"] for r in catalog_rows}
    titles = {r["productDisplayName"] for r in catalog_rows}
    extra = [
        r
        for r in source_rows
        if r["id"] not in used
        and r["productDisplayName"] not in titles
        and r["articleType"] in ("Kurtas", "Sports Shoes")
    ]
    missing = {**extra[0], "image_path": str(tmp_path / "no-such-image.jpg")}
    corrupt_file = tmp_path / "corrupt.jpg"
    corrupt_file.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg" * 20)
    corrupt = {**next(r for r in extra[1:] if r["articleType"] != extra[0]["articleType"])}
    corrupt["image_path"] = str(corrupt_file)
    rows = [*catalog_rows, missing, corrupt]
    return (
        write_catalog(rows, tmp_path / "catalog.csv"),
        rows,
        {"missing": missing, "corrupt": corrupt},
    )


def _fresh_embedder(shared, directory: Path) -> Embedder:
    """The loaded encoders with an empty cache of their own (so the first ingest embeds)."""
    return Embedder(
        shared.text_encoder,
        shared.image_encoder,
        directory / "cache",
        colour_encoder=shared.colour_encoder,
    )


def test_ingest_counts_caches_and_stores(tmp_path, database_url, embedder, broken_catalog):
    csv_path, rows, special = broken_catalog
    n = len(rows)
    settings = make_settings(tmp_path / "data", database_url)
    fresh = _fresh_embedder(embedder, tmp_path)

    first = ingest_into(settings, csv_path, fresh)
    assert first.products == n
    assert first.without_image == 2
    assert first.text_cache_hits == 0 and first.image_cache_hits == 0
    assert 0.0 <= first.head_heldout_recall_at_10 <= 1.0
    assert current(settings.index_dir) == settings.index_dir / first.index

    engine = make_engine(database_url)
    sessions = session_factory(engine)
    try:
        rev1 = _assert_stored(sessions, rows, special)

        # Unchanged CSV again, with a new embedder on the same cache dir (as a new process would)
        again = _fresh_embedder(embedder, tmp_path)
        second = ingest_into(settings, csv_path, again)
        assert second.products == n and second.without_image == 2
        assert second.text_cache_hits == n
        assert second.image_cache_hits == n - 2  # the two bad images have nothing to cache
        # Embedding is what the cache saves: it all but disappears. The unchanged catalog updates
        # the build in place (no head is fitted), so the rest of the run is compared without the
        # first one's head fit, whose wall time swings with machine load.
        embed = lambda r: r.seconds["text"] + r.seconds["image"]  # noqa: E731
        rest = lambda r: r.seconds["total"] - r.seconds.get("head", 0.0)  # noqa: E731
        assert embed(second) < 0.25 * embed(first), (first.seconds, second.seconds)
        assert rest(second) < rest(first), (first.seconds, second.seconds)
        assert second.mode == "updated" and second.changes["unchanged"] == n
        assert second.head_version == first.head_version
        assert second.index != first.index
        assert current(settings.index_dir) == settings.index_dir / second.index
        with sessions() as s:
            assert s.scalar(select(func.max(Product.revision))) == rev1, "nothing changed"
            assert s.scalar(select(func.count()).select_from(Product)) == n
    finally:
        engine.dispose()

    _assert_found_without_image(settings, embedder, special, n)


def _assert_stored(sessions: sessionmaker[Session], rows: list[dict], special: dict) -> int:
    """Every row is a live product as the CSV has it, the two without a readable image have
    no image; returns the catalog's revision."""
    with sessions() as s:
        stored = {p.id: p for p in s.scalars(select(Product))}
        revision = s.scalar(select(func.max(Product.revision)))
    assert set(stored) == {r["id"] for r in rows}
    assert not any(p.deleted for p in stored.values())
    for r in rows[:5]:
        p = stored[r["id"]]
        assert p.title == r["productDisplayName"]
        assert p.attributes["articleType"] == r["articleType"]
        assert p.image_path == r["image_path"] and len(p.image_sha256) == 64
    for key in ("missing", "corrupt"):
        p = stored[special[key]["id"]]
        assert p.image_path is None and p.image_sha256 is None
    return revision


def _assert_found_without_image(settings, embedder, special: dict, n: int) -> None:
    """The products without a readable image are still found by their exact title."""
    rt = start_test_runtime(settings, embedder)
    try:
        assert len(rt.searcher.index) == n
        for key in ("missing", "corrupt"):
            row = special[key]
            res = rt.searcher.search(SearchQuery(text=row["productDisplayName"], k=5))
            assert row["id"] in [h.product.id for h in res.hits], key
            hit = next(h for h in res.hits if h.product.id == row["id"])
            assert hit.product.image_path is None and np.isfinite(hit.score)
    finally:
        rt.close()


def test_reingest_of_a_smaller_catalog_deletes_the_rest(tmp_path, embedder, catalog_rows):
    settings = make_settings(tmp_path / "data")
    ingest_into(settings, write_catalog(catalog_rows, tmp_path / "all.csv"), embedder)
    kept, dropped = catalog_rows[:-10], catalog_rows[-10:]
    report = ingest_into(settings, write_catalog(kept, tmp_path / "kept.csv"), embedder)
    assert report.products == len(kept)
    index = CatalogIndex.load(current(settings.index_dir))
    assert len(index) == len(kept)
    assert not ({r["id"] for r in dropped} & set(index.row_of))
    engine = make_engine(settings.database_url)
    try:
        with session_factory(engine)() as s:
            deleted = set(s.scalars(select(Product.id).where(Product.deleted.is_(True))))
        assert deleted == {r["id"] for r in dropped}
    finally:
        engine.dispose()


def test_a_reingest_updates_the_index_in_place_and_keeps_the_head(tmp_path, embedder, catalog_rows):
    """Only new and changed products are embedded and indexed; the head, and so what it learned,
    stays in service. A rebuild, when asked for, starts over."""
    settings = make_settings(tmp_path / "data")
    before, extra = catalog_rows[:-20], catalog_rows[-20:-10]
    first = ingest_into(settings, write_catalog(before, tmp_path / "a.csv"), embedder)
    assert first.mode == "built" and first.reason == "no index yet"
    # serving the first build throughout; its follower is driven by hand below
    running = start_test_runtime(settings, embedder, background=False)
    renamed = dict(before[0], productDisplayName="Limited Edition Teal Windcheater")
    after = [renamed, *before[1:-10], *extra]  # 1 changed, 10 removed, 10 added
    second = ingest_into(settings, write_catalog(after, tmp_path / "b.csv"), embedder)
    assert second.mode == "updated"
    unchanged = len(before) - 11
    assert second.changes == {"added": 10, "changed": 1, "removed": 10, "unchanged": unchanged}
    assert second.head_version == first.head_version
    assert second.text_cache_hits >= unchanged  # none of the unchanged was embedded again
    index = CatalogIndex.load(current(settings.index_dir))
    assert len(index) == len(after)
    assert index.n_rows == len(before) + 11  # appended to the build: nothing indexed again
    assert index.meta["head_version"] == first.head_version
    fresh = start_test_runtime(settings, embedder)  # a process started after the ingest
    try:
        assert running.writer is not None
        assert running.writer.reconcile() == 21  # what its catalog follower does: in batches
        for rt in (running, fresh):
            res = rt.searcher.search(SearchQuery(text="limited edition teal windcheater", k=5))
            assert res.hits[0].product.id == renamed["id"]
            assert res.model_version == first.head_version
            for row in extra[:3]:
                res = rt.searcher.search(SearchQuery(text=row["productDisplayName"], k=10))
                assert row["id"] in [h.product.id for h in res.hits]
            gone = {r["id"] for r in before[-10:]}
            res = rt.searcher.search(SearchQuery(text=before[-1]["productDisplayName"], k=50))
            assert not gone & {h.product.id for h in res.hits}
    finally:
        running.close()
        fresh.close()
    third = ingest_into(settings, write_catalog(after, tmp_path / "b.csv"), embedder, rebuild=True)
    assert third.mode == "built" and third.reason == "a rebuild was asked for"
    assert CatalogIndex.load(current(settings.index_dir)).n_rows == len(after)


def test_ingest_of_a_small_catalog(tmp_path, embedder, catalog_rows):
    """A shop with a handful of products (fewer than the candidates per channel) ingests too."""
    rows = catalog_rows[::5]  # 30 products, 6 article types
    settings = make_settings(tmp_path / "data")
    report = ingest_into(settings, write_catalog(rows, tmp_path / "small.csv"), embedder)
    assert report.products == len(rows) == 30
    index = CatalogIndex.load(current(settings.index_dir))
    assert len(index) == 30
    rt = start_test_runtime(settings, embedder)
    try:
        res = rt.searcher.search(SearchQuery(text=rows[4]["productDisplayName"], k=50))
        assert len(res.hits) == 30
        assert rows[4]["id"] in [h.product.id for h in res.hits[:3]]
    finally:
        rt.close()


def test_read_catalog_limit(catalog_csv):
    rows = read_catalog(catalog_csv, limit=40)
    assert len(rows) == 40
    assert all(r.image_path is not None and Path(r.image_path).is_file() for r in rows)


# ---- the CSV format --------------------------------------------------------------------------
def test_read_catalog_resolves_relative_image_paths(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "c.csv").write_text(
        "id,title,colour,image_path\n1,Red Shirt,Red,images/1.jpg\n2,Blue Cap,,\n",
        encoding="utf-8",
    )
    rows = read_catalog(tmp_path / "c.csv")
    assert [r.id for r in rows] == ["1", "2"]
    assert rows[0].image_path == str((tmp_path / "images" / "1.jpg").resolve())
    assert rows[0].attributes == {"colour": "Red"}
    assert rows[1].image_path is None and rows[1].attributes == {}


@pytest.mark.parametrize(
    "content, message",
    [
        ("code,label\n1,x\n", "needs an id column"),
        ("id,title\n1,x\n1,y\n", "duplicate id"),
        ("id,title\n1,\n", "empty 'id' or 'title'"),
    ],
)
def test_read_catalog_rejects_bad_files(tmp_path, content, message):
    (tmp_path / "c.csv").write_text(content, encoding="utf-8")
    with pytest.raises(BadRequest, match=message):
        read_catalog(tmp_path / "c.csv")


def test_missing_catalog_is_a_bad_request(tmp_path):
    with pytest.raises(BadRequest, match="does not exist"):
        read_catalog(tmp_path / "nope.csv")
