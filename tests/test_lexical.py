"""The lexical channel: what shoppers type survives tokenizing, BM25 stays current on every
change, and its index is saved and verified with the build it belongs to."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import tantivy

from service.catalog.index import CatalogIndex, _load_lexical
from service.catalog.lexical import LexicalIndex, OutdatedIndex
from service.catalog.tokens import query_terms, terms, words
from storage.errors import ArtifactError
from storage.products import ProductRecord
from tests.test_index import DIMS, make_index, unit


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("65 in. TV", {"65in", "tv"}),
        ('65" TV', {"65in", "tv"}),
        ("65-inch tv", {"65in", "tv"}),
        ("M8 x 40 hex bolt", {"m8", "40", "hex", "bolt"}),
        ("XR-500 drill", {"xr-500", "xr500", "xr", "500"}),
        ("3/8 inch socket", {"3/8", "3/8in", "socket"}),
        ("12V battery", {"12v", "12", "batteri"}),
        ("12 volt battery", {"12v"}),
        ("Nike T20 jersey", {"nike", "t20", "jersey"}),
        ("Café CRÈME", {"cafe", "creme"}),
        ("Women's running shoes", {"women", "run", "shoe"}),
        ("2.5 l bottle", {"2.5", "2.5l"}),
    ],
)
def test_terms_keep_what_shoppers_type(text, expected):
    assert expected <= set(terms(text))


def test_the_same_thing_written_differently_shares_its_terms():
    for a, b in [("XR500", "xr-500"), ("65 inch", '65"'), ("T-Shirts", "tshirt"), ("12V", "12 v")]:
        assert set(query_terms(a)) & set(query_terms(b)) - {"in", "v"}, (a, b)


def test_query_terms_count_a_word_once():
    assert query_terms("red red dress") == ["red", "dress"]


def test_symbols_and_empty_queries_find_nothing_and_do_not_fail():
    index = LexicalIndex.build([(terms("red dress"), [])])
    for text in ["", "   ", "!!!", '"', "AND OR NOT", "title:*", "\\", "(("]:
        rows, scores = index.search(text, 10)
        assert len(rows) == len(scores)
    assert index.search("AND", 5)[0].tolist() == []
    index.close()


def test_bm25_ranks_the_part_number_first_and_changes_are_visible_at_once():
    titles = ["Bosch GSR 120 drill", "Makita drill 18V", "Bosch GSR-12V-15 drill", "drill bits"]
    index = LexicalIndex.build([(terms(t), terms("tools")) for t in titles])
    assert index.search("gsr 12v 15", 4)[0][0] == 2
    assert index.search("18 volt", 4)[0][0] == 1
    started = time.perf_counter()
    index.upsert(4, (terms("Makita XR-600 drill"), []), replaces=1)
    assert time.perf_counter() - started < 1.0
    assert index.search("xr600", 5)[0].tolist() == [4]
    assert 1 not in index.search("18v", 5)[0]  # the replaced row is gone
    index.delete(4)
    assert index.search("xr600", 5)[0].tolist() == [] and len(index) == 3
    index.close()


def test_a_misspelt_word_is_matched_one_edit_away_and_a_real_word_is_not():
    titles = ["Adidas running shoes", "Nike running shoes", "Addis bag", "Printed top", "Plain top"]
    index = LexicalIndex.build([(terms(t), [], words(t)) for t in titles])
    assert index.search("adiddas shoes", 3)[0][0] == 0  # unknown word: near matches count
    assert index.search("adiads shoes", 3)[0][0] == 0  # two letters swapped is one edit
    assert index.search("prnited top", 5)[0][0] == 3  # compared as typed, not as stems
    assert index.search("addis", 3)[0].tolist() == [2]  # a known word is matched exactly
    index.close()


def test_a_misspelt_rare_word_counts_as_much_as_the_word_itself():
    titles = [f"Formal shoes {c}" for c in ("black", "brown", "tan", "grey")] + [
        "Clarks formal shoes black"
    ]
    index = LexicalIndex.build([(terms(t), [], words(t)) for t in titles])
    assert index.search("clarks formal shoes", 5)[0][0] == 4
    assert index.search("clars formal shoes", 5)[0][0] == 4
    index.close()


def test_a_lexical_index_of_an_older_layout_is_built_again(tmp_path):
    builder = tantivy.SchemaBuilder()
    builder.add_integer_field("row", indexed=True, fast=True)
    for field in ("title", "other"):
        builder.add_text_field(field, tokenizer_name="whitespace", index_option="freq")
    old = tantivy.Index(builder.build(), path=str(tmp_path))
    writer = old.writer(15_000_000, 1)
    writer.commit()
    with pytest.raises(OutdatedIndex):
        LexicalIndex.load(tmp_path)
    assert _load_lexical(tmp_path) is None  # CatalogIndex.load then builds it from the products


def catalog(n: int = 40) -> CatalogIndex:
    index = make_index(n=n)
    rng = np.random.default_rng(1)
    index.upsert(
        ProductRecord("bolt", "Hex bolt M8 x 40 zinc", {"colour": "Grey"}, None),
        {s: unit(rng, 1, d)[0] for s, d in DIMS.items()},
        False,
    )
    return index


def test_the_catalog_index_keeps_its_lexical_channel_current(tmp_path):
    index = catalog()
    row = index.row_of["bolt"]
    assert index.search_lexical("m8 bolt", 5)[0][0] == row
    assert index.search_lexical("grey bolt", 5)[0].tolist() == [row]  # attribute text too
    allowed = index.filter_mask({"colour": ["Red"]})
    found = index.search_lexical("m8 bolt", 5, allowed)[0]
    assert row not in found and allowed[found].all()
    index.delete("bolt")
    assert row not in index.search_lexical("m8 bolt", 5)[0]


def test_the_lexical_index_is_saved_with_the_build_and_verified_on_load(tmp_path):
    path = catalog().save(tmp_path, "b1")
    files = json.loads((path / "manifest.json").read_text())["files"]
    lexical = [f for f in files if f.startswith("lexical/")]
    assert "lexical/meta.json" in lexical
    loaded = CatalogIndex.load(path)
    assert loaded.search_lexical("m8 bolt", 5)[0][0] == loaded.row_of["bolt"]
    loaded.upsert(  # changes go to a working copy, never into the build
        ProductRecord("nut", "Hex nut M8", {}, None),
        {s: np.zeros(d, np.float32) for s, d in DIMS.items()},
        False,
    )
    CatalogIndex.load(path)  # still passes its checksums
    victim = path / next(f for f in lexical if not f.endswith(".json"))
    victim.write_bytes(victim.read_bytes()[::-1])
    with pytest.raises(ArtifactError, match="sha256"):
        CatalogIndex.load(path)


def test_a_build_from_before_the_lexical_channel_gets_one_at_load(tmp_path):
    path = catalog().save(tmp_path, "b1")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"] = {k: v for k, v in manifest["files"].items() if not k.startswith("lexical/")}
    (path / "manifest.json").write_text(json.dumps(manifest))
    for f in (path / "lexical").iterdir():
        f.unlink()
    (path / "lexical").rmdir()
    loaded = CatalogIndex.load(path)
    assert loaded.search_lexical("zinc bolt", 5)[0].tolist() == [loaded.row_of["bolt"]]
