"""What the model and the learner need of the catalog index, as protocols:
service.catalog.index's CatalogIndex has it, and neither package imports service."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np


class CatalogView(Protocol):
    """What a search's features need of the catalog index (service.catalog.index.CatalogIndex
    has it)."""

    code_cache: dict[Any, np.ndarray]  # see AttributeAgreement.row_codes

    @property
    def metas(self) -> Sequence[Any]: ...

    def search(
        self, space: str, query: np.ndarray, n: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def search_many(
        self,
        space: str,
        queries: np.ndarray,
        n: int,
        *,
        allowed: np.ndarray | None = None,
        threads: int = 1,
    ) -> list[np.ndarray]: ...

    def vectors(self, space: str, rows: np.ndarray) -> np.ndarray: ...

    def search_lexical(
        self, text: str, n: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]: ...


class HasAttributes(Protocol):
    @property
    def attributes(self) -> Mapping[str, Any]: ...


class ProductVectors(CatalogView, Protocol):
    """What candidate gathering and training need of the catalog index."""

    row_of: dict[str, int]

    @property
    def metas(self) -> Sequence[HasAttributes]: ...

    def alive_rows(self) -> np.ndarray: ...

    def has_image(self, rows: np.ndarray) -> np.ndarray: ...

    def dim(self, space: str) -> int: ...

    def filter_mask(self, filters: Mapping[str, list[str]]) -> np.ndarray: ...
