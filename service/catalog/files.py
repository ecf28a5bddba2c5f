"""Catalog files, and the text a product is embedded and matched by.

A catalog is a CSV file (UTF-8, header row) or a JSON Lines file (.jsonl / .ndjson: one object
per line). Only an id and a title are required. Columns are found by name unless mapped
(CatalogColumns, from `fusionrank ingest --id-column ...` or FUSIONRANK_CATALOG_* settings):

- id: `id`, `product_id`, `sku` or `item_id`;
- title: `title`, `productDisplayName`, `name`, `product_name` or `product_title`;
- image (optional, may be empty for some products): `image_path` or `image`, a path relative to
  the file's folder, or absolute;
- text (optional): `description`, `details`, `summary`, `bullet_points`, `features`: searched
  and embedded with the title, never filtered on;
- attributes: every other column, filterable and searched (a JSON Lines object may also hold
  them in an `attributes` object).

The shared fashion catalog (`../shared/data/fashion/catalog.csv`) is in this format as it is.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.errors import BadRequest
from storage.products import ProductRecord

ID_COLUMNS = ("id", "product_id", "sku", "item_id")
TITLE_COLUMNS = ("title", "productDisplayName", "name", "product_name", "product_title")
IMAGE_COLUMNS = ("image_path", "image")
TEXT_COLUMNS = ("description", "details", "summary", "bullet_points", "features")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
# Provenance columns: kept as attributes but not embedded (they say nothing about the product).
NOT_EMBEDDED = ("gender_source",)


@dataclass(frozen=True)
class CatalogColumns:
    """Which column is what; None: found by name (see the module's docstring)."""

    id: str | None = None
    title: str | None = None
    image: str | None = None
    text: Sequence[str] | None = None
    attributes: Sequence[str] | None = None  # None: every column that is nothing else


def product_text(title: str, attributes: dict[str, Any], description: str = "") -> str:
    """Title, attribute values and free text: what a shopper's words are matched against."""
    values = [
        str(v) for k, v in attributes.items() if k not in NOT_EMBEDDED and v not in (None, "")
    ]
    parts = [title, ", ".join(values), description]
    return ". ".join(p for p in parts if p)


def read_catalog(
    path: Path, columns: CatalogColumns | None = None, limit: int | None = None
) -> list[ProductRecord]:
    """The products of a CSV or JSON Lines catalog file, in file order."""
    if not path.is_file():
        raise BadRequest(f"catalog {path} does not exist")
    jsonl = path.suffix.lower() in JSONL_SUFFIXES
    records = list(_jsonl_records(path, limit) if jsonl else _csv_records(path, limit))
    header = list(dict.fromkeys(k for _, rec in records for k in rec))
    id_col, title_col, image_col, text_cols, attr_cols = _resolve(
        path, header, columns or CatalogColumns()
    )
    rows: list[ProductRecord] = []
    seen: set[str] = set()
    for line, rec in records:
        pid = rec.get(id_col, "").strip()
        title = rec.get(title_col, "").strip()
        if not pid or not title:
            raise BadRequest(f"{path}:{line}: empty {id_col!r} or {title_col!r}")
        if pid in seen:
            raise BadRequest(f"{path}:{line}: duplicate id {pid!r}")
        seen.add(pid)
        raw_image = rec.get(image_col, "").strip() if image_col else ""
        image = str((path.parent / raw_image).resolve()) if raw_image else None
        # one string per distinct value: a million products repeat a few hundred values
        attrs = {c: sys.intern(rec.get(c, "").strip()) for c in attr_cols}
        text = ". ".join(t for t in (rec.get(c, "").strip() for c in text_cols) if t)
        rows.append(
            ProductRecord(pid, title, {k: v for k, v in attrs.items() if v}, image, None, text)
        )
    return rows


def _resolve(
    path: Path, header: list[str], columns: CatalogColumns
) -> tuple[str, str, str | None, list[str], list[str]]:
    """(id, title, image, text columns, attribute columns) of a file with these columns."""
    named = [c for c in (columns.id, columns.title, columns.image) if c]
    named += list(columns.text or []) + list(columns.attributes or [])
    missing = [c for c in named if c not in header]
    if missing:
        raise BadRequest(f"{path}: no column {', '.join(map(repr, missing))}; it has {header}")
    id_col = columns.id or next((c for c in ID_COLUMNS if c in header), None)
    title_col = columns.title or next((c for c in TITLE_COLUMNS if c in header), None)
    if id_col is None or title_col is None:
        raise BadRequest(
            f"{path}: needs an id column ({', '.join(ID_COLUMNS)}) and a title column "
            f"({', '.join(TITLE_COLUMNS)}), or --id-column and --title-column; it has {header}"
        )
    image_col = columns.image or next((c for c in IMAGE_COLUMNS if c in header), None)
    text_cols = (
        list(columns.text) if columns.text is not None else [c for c in TEXT_COLUMNS if c in header]
    )
    taken = {id_col, title_col, image_col, *text_cols}
    attr_cols = (
        list(columns.attributes)
        if columns.attributes is not None
        else [c for c in header if c not in taken]
    )
    return id_col, title_col, image_col, text_cols, attr_cols


def _csv_records(path: Path, limit: int | None) -> Iterator[tuple[int, dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as f:
        for n, rec in enumerate(csv.DictReader(f), start=2):
            yield n, {k: v or "" for k, v in rec.items() if k is not None}
            if limit is not None and n - 1 >= limit:
                return


def _jsonl_records(path: Path, limit: int | None) -> Iterator[tuple[int, dict[str, str]]]:
    """Each line's object with values as text: lists joined by commas, an `attributes` object's
    keys as columns of their own."""
    count = 0
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as e:
                raise BadRequest(f"{path}:{n}: not a JSON object ({e})") from e
            if not isinstance(obj, dict):
                raise BadRequest(f"{path}:{n}: each line must be a JSON object")
            nested = obj.pop("attributes", None)
            if isinstance(nested, dict):
                obj = {**nested, **obj}
            yield n, {str(k): _text(v) for k, v in obj.items()}
            count += 1
            if limit is not None and count >= limit:
                return


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(_text(v) for v in value if v is not None)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)
