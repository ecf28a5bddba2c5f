"""Catalog CSV format and the text a product is embedded by.

Format (UTF-8, header row): an `id` column, a title column (`title` or `productDisplayName`), an
image column (`image_path` or `image`, a path relative to the CSV's folder, or absolute; may be
empty) and any number of attribute columns. Every other column is a filterable attribute. The
shared fashion catalog (`../shared/data/fashion/catalog.csv`) is in this format as it is.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from service.errors import BadRequest
from storage.products import ProductRecord

TITLE_COLUMNS = ("title", "productDisplayName", "name")
IMAGE_COLUMNS = ("image_path", "image")
# Provenance columns: kept as attributes but not embedded (they say nothing about the product).
NOT_EMBEDDED = ("gender_source",)


def product_text(title: str, attributes: dict[str, Any]) -> str:
    """Title plus attribute values: what a shopper's words are matched against."""
    values = [
        str(v) for k, v in attributes.items() if k not in NOT_EMBEDDED and v not in (None, "")
    ]
    return f"{title}. {', '.join(values)}" if values else title


def read_catalog(path: Path, limit: int | None = None) -> list[ProductRecord]:
    if not path.is_file():
        raise BadRequest(f"catalog {path} does not exist")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        id_col = "id" if "id" in header else None
        title_col = next((c for c in TITLE_COLUMNS if c in header), None)
        image_col = next((c for c in IMAGE_COLUMNS if c in header), None)
        if id_col is None or title_col is None:
            raise BadRequest(
                f"{path}: the header needs an 'id' and a title column ({', '.join(TITLE_COLUMNS)});"
                f" it has {header}"
            )
        attr_cols = [c for c in header if c not in (id_col, title_col, image_col)]
        rows: list[ProductRecord] = []
        seen: set[str] = set()
        for n, rec in enumerate(reader, start=2):
            pid = (rec.get(id_col) or "").strip()
            title = (rec.get(title_col) or "").strip()
            if not pid or not title:
                raise BadRequest(f"{path}:{n}: empty id or title")
            if pid in seen:
                raise BadRequest(f"{path}:{n}: duplicate id {pid!r}")
            seen.add(pid)
            raw_image = (rec.get(image_col) or "").strip() if image_col else ""
            image = str((path.parent / raw_image).resolve()) if raw_image else None
            attrs = {c: (rec.get(c) or "").strip() for c in attr_cols}
            rows.append(ProductRecord(pid, title, {k: v for k, v in attrs.items() if v}, image))
            if limit is not None and len(rows) >= limit:
                break
    return rows
