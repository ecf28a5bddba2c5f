"""Any catalog as it is: titles only, JSON Lines, mapped columns, no images; the service ingests
it, serves it through the lexical and text channels, and refuses photo queries it cannot answer."""

from __future__ import annotations

import base64
import json
from dataclasses import asdict
from pathlib import Path

import pytest
from helpers import BACKENDS, app_client, database_for, ingest_into, make_settings

from service.catalog.files import CatalogColumns, read_catalog
from service.errors import BadRequest

pytestmark = pytest.mark.slow


def write_jsonl(rows: list[dict], path: Path) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def titles_only(rows: list[dict[str, str]], path: Path) -> Path:
    """A titles-only CSV of real catalog rows, under other column names."""
    lines = ["sku,name"] + [f'{r["id"]},"{r["productDisplayName"]}"' for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_titles_only_csv_is_read_by_its_column_names(tmp_path, source_rows):
    rows = read_catalog(titles_only(source_rows[:20], tmp_path / "c.csv"))
    assert [r.id for r in rows] == [r["id"] for r in source_rows[:20]]
    assert rows[0].title == source_rows[0]["productDisplayName"]
    assert rows[0].attributes == {} and rows[0].image_path is None and rows[0].description == ""


def test_json_lines_with_nested_attributes_lists_and_mapped_columns(tmp_path):
    path = write_jsonl(
        [
            {
                "code": "A-1",
                "label": "Hex bolt M8 x 40",
                "blurb": "Zinc plated",
                "attributes": {"material": "steel", "pack": 50},
                "tags": ["bolt", "m8"],
            },
            {"code": "A-2", "label": "Hex nut M8", "blurb": None, "tags": []},
        ],
        tmp_path / "c.jsonl",
    )
    cols = CatalogColumns(id="code", title="label", text=["blurb"], attributes=["material", "tags"])
    a, b = read_catalog(path, cols)
    assert (a.id, a.title, a.description) == ("A-1", "Hex bolt M8 x 40", "Zinc plated")
    assert a.attributes == {"material": "steel", "tags": "bolt, m8"}  # pack: not mapped
    assert b.attributes == {} and b.description == ""
    with pytest.raises(BadRequest, match="no column 'colour'"):
        read_catalog(path, CatalogColumns(id="code", title="label", attributes=["colour"]))
    with pytest.raises(BadRequest, match="needs an id column"):
        read_catalog(path)


def test_a_broken_json_line_is_a_clear_error(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"id": "1", "title": "ok"}\n{"id": "2", "title": \n', encoding="utf-8")
    with pytest.raises(BadRequest, match=r"c.jsonl:2: not a JSON object"):
        read_catalog(path)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_titles_only_catalog_ingests_serves_and_learns_nothing_it_cannot(
    backend, tmp_path, source_rows, embedder, jpeg
):
    """Ingest reports no NaN (valid JSON), the head steps aside from image alignment, text
    search ranks through the lexical channel (a part number added later is found at once and
    explained), and a photo query is refused with a 422 that says why."""
    rows = source_rows[:300]
    csv = titles_only(rows, tmp_path / "titles.csv")
    with database_for(backend, tmp_path / "db") as url:
        settings = make_settings(tmp_path / "data", url)
        report = ingest_into(settings, csv, embedder)
        json.dumps(asdict(report), allow_nan=False)
        assert report.products == 300 and report.without_image == 300
        assert report.head_heldout_recall_at_10 is None
        with app_client(settings, embedder) as client:
            title = rows[7]["productDisplayName"]
            r = client.post("/v1/search", json={"query": title, "k": 10})
            assert r.status_code == 200, r.text
            assert rows[7]["id"] in [h["product_id"] for h in r.json()["results"]][:3]
            put = client.put(
                "/v1/products/part-1",
                json={"title": "Spare strap XR-500", "description": "fits model XR500 watches"},
            )
            assert put.status_code == 200, put.text
            assert put.json()["description"] == "fits model XR500 watches"
            r = client.post("/v1/search", json={"query": "xr500", "k": 10, "explain": True})
            hits = r.json()["results"]
            assert hits[0]["product_id"] == "part-1"
            why = hits[0]["explanation"]
            assert why["channels"]["lexical"]["rank"] == 1 and why["mix"]["lexical_rrf"]["weight"]
            photo = client.post("/v1/search", json={"image": base64.b64encode(jpeg).decode()})
            assert photo.status_code == 422, photo.text
            assert "no product images" in photo.json()["detail"]
