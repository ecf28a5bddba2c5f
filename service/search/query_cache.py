"""Frozen query vectors by content, so that a repeated query skips its encoders.

Shoppers repeat themselves: the head of a shop's query log is a few hundred phrases ("black
dress", "running shoes men"), and a photo that went round a social network arrives thousands of
times. The encoders are frozen, so a query's vectors never change: encoding the same text or the
same image bytes twice is pure waste, most of a search's time. Bounded by entries
(least recently used goes first); keyed by the encoder's id as well, so that vectors of two
checkpoints are never mixed.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, TypeVar

V = TypeVar("V")


class QueryCache(Generic[V]):
    """A thread-safe LRU map; `size` 0 keeps nothing. Searches run on the event loop and on a
    pool of search threads at once, hence the lock (held for a dictionary operation only)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[tuple[str, str], V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, encoder_id: str, key: str) -> V | None:
        if self.size == 0:
            return None
        with self._lock:
            value = self._items.get((encoder_id, key))
            if value is None:
                self.misses += 1
                return None
            self._items.move_to_end((encoder_id, key))
            self.hits += 1
            return value

    def put(self, encoder_id: str, key: str, value: V) -> None:
        if self.size == 0:
            return
        with self._lock:
            self._items[(encoder_id, key)] = value
            self._items.move_to_end((encoder_id, key))
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "capacity": self.size,
                "entries": len(self._items),
                "hits": self.hits,
                "misses": self.misses,
            }

    def __len__(self) -> int:
        return len(self._items)
