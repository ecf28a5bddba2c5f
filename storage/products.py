"""Product repository: the SQL catalog is the source of truth the index is reconciled against."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from storage.db import chunks
from storage.models import Product, utcnow


@dataclass(frozen=True, slots=True)
class ProductRecord:
    """One product, as a catalog file gives it, SQL stores it and the index serves it."""

    id: str
    title: str
    attributes: dict[str, Any]
    image_path: str | None
    image_sha256: str | None = None  # of the image's bytes, once they were read
    description: str = ""  # free text beside the title (a catalog's text columns)


# The PostgreSQL advisory lock every catalog write takes first ("frkc").
CATALOG_LOCK = 0x66726B63


def next_revision(*, session: Session) -> int:
    """The revision this transaction's changes get. On PostgreSQL the transaction first takes
    an advisory lock held to its commit, so writes from different replicas commit one at a time
    in revision order: a replica that has applied revision r has seen every change up to r.
    (SQLite has one writer at a time anyway.)"""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CATALOG_LOCK})
    return int(session.scalar(select(func.coalesce(func.max(Product.revision), 0))) or 0) + 1


def upsert_products(*, session: Session, products: list[ProductRecord]) -> int:
    """Insert or replace products; unchanged rows keep their revision. Returns how many changed.
    Written 5,000 at a time and let go of once flushed, so that a catalog of a million never
    has a million rows in the session at once."""
    revision = next_revision(session=session)
    changed = 0
    for chunk in chunks(products, 5000):
        stmt = select(Product).where(Product.id.in_([p.id for p in chunk]))
        existing = {p.id: p for p in session.scalars(stmt)}
        touched = list(existing.values())
        for item in chunk:
            row = existing.get(item.id)
            if row is None:
                row = Product(
                    id=item.id,
                    title=item.title,
                    description=item.description,
                    attributes=item.attributes,
                    image_path=item.image_path,
                    image_sha256=item.image_sha256,
                    revision=revision,
                    deleted=False,
                    updated_at=utcnow(),
                )
                session.add(row)
                touched.append(row)
                changed += 1
            elif (
                row.deleted
                or row.title != item.title
                or row.description != item.description
                or row.attributes != item.attributes
                or row.image_sha256 != item.image_sha256
                or row.image_path != item.image_path
            ):
                row.title, row.attributes = item.title, item.attributes
                row.description = item.description
                row.image_path, row.image_sha256 = item.image_path, item.image_sha256
                row.deleted, row.revision, row.updated_at = False, revision, utcnow()
                changed += 1
        session.flush()
        for row in touched:
            session.expunge(row)
    return changed


def delete_product(*, session: Session, product_id: str) -> bool:
    """Soft-delete (so replicas see the change by revision). False if it did not exist."""
    revision = next_revision(session=session)
    result = session.execute(
        update(Product)
        .where(Product.id == product_id, Product.deleted.is_(False))
        .values(deleted=True, revision=revision, updated_at=utcnow())
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def mark_deleted_except(*, session: Session, keep_ids: set[str]) -> int:
    """Soft-delete every live product not in keep_ids (a full re-ingest replaces the catalog)."""
    live = session.scalars(select(Product.id).where(Product.deleted.is_(False))).all()
    gone = [pid for pid in live if pid not in keep_ids]
    if gone:
        revision = next_revision(session=session)
        for chunk in chunks(gone, 5000):
            session.execute(
                update(Product)
                .where(Product.id.in_(chunk))
                .values(deleted=True, revision=revision, updated_at=utcnow())
            )
    return len(gone)


def get_product(*, session: Session, product_id: str) -> Product | None:
    row = session.get(Product, product_id)
    return None if row is None or row.deleted else row


def changed_since(*, session: Session, revision: int) -> list[Product]:
    """Products (deleted ones included) changed after `revision`, oldest first."""
    stmt = select(Product).where(Product.revision > revision).order_by(Product.revision)
    return list(session.scalars(stmt))
