"""Search filters in the one form the index matches and the learner replays: lists of strings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def filter_values(filters: Mapping[str, Any]) -> dict[str, list[str]]:
    """A search's filters as logged (a value or a list per attribute) in the form the index
    matches: lists of strings."""
    return {a: [str(x) for x in (v if isinstance(v, list) else [v])] for a, v in filters.items()}
