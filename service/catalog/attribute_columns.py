"""The catalog's attribute values as columns, one entry per index row, for filters and facets."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from storage.products import ProductRecord


class AttributeColumns:
    """Per attribute, every row's value (None where it has none) and the value as an integer
    code: a filter compares codes, not a million strings (40 ms an attribute at 1M products:
    docs/benchmarks.md, "A million products through HTTP"). Built at first use and extended as
    rows are appended: building them again over a million rows takes about a second, which the
    next filtered search would wait for after every catalog change. Not locked: the catalog
    index calls it under its own lock."""

    def __init__(self, metas: list[ProductRecord]) -> None:
        """`metas`: the index's products, row by row; the index appends to this same list."""
        self._metas = metas
        self._values: dict[str, np.ndarray] = {}
        self._codes: dict[str, tuple[np.ndarray, dict[Any, int]]] = {}

    def values(self, attr: str) -> np.ndarray:
        """Every row's value of the attribute, as an object array."""
        col = self._values.get(attr)
        if col is None or len(col) != len(self._metas):
            col = np.array([m.attributes.get(attr) for m in self._metas], dtype=object)
            self._values[attr] = col
        return col

    def codes(self, attr: str) -> tuple[np.ndarray, dict[Any, int]]:
        """Every row's code for the attribute, and the code of each value."""
        found = self._codes.get(attr)
        if found is None or len(found[0]) != len(self._metas):
            vocabulary: dict[Any, int] = {}
            found = self._codes[attr] = (_encode(self.values(attr), vocabulary), vocabulary)
        return found

    def matching(self, attr: str, values: Sequence[Any]) -> np.ndarray:
        """Which rows have one of these values of the attribute."""
        codes, vocabulary = self.codes(attr)
        wanted = [vocabulary[v] for v in values if v in vocabulary]
        return np.isin(codes, np.array(wanted, dtype=codes.dtype))

    def extend(self, metas: Sequence[ProductRecord]) -> None:
        """Append the rows of these products (already appended to the index's list)."""
        for attr, col in self._values.items():
            new = np.array([m.attributes.get(attr) for m in metas], dtype=object)
            self._values[attr] = np.concatenate([col, new])
        for attr, (codes, vocabulary) in self._codes.items():
            added = _encode((m.attributes.get(attr) for m in metas), vocabulary, len(metas))
            self._codes[attr] = (np.concatenate([codes, added]), vocabulary)


def _encode(values: Iterable[Any], vocabulary: dict[Any, int], count: int = -1) -> np.ndarray:
    """The values' codes, numbering a value first seen next."""
    return np.fromiter((vocabulary.setdefault(v, len(vocabulary)) for v in values), np.int32, count)
