"""The live query memory (model.query_memory): keyed like the lexical channel, folded from the
logs by one process (service.search.memory_fold), followed by every process.

Every process, replicas included, reads the rows of newer folds every `memory_poll_seconds`: a
product distinct shoppers keep buying for a query rises within seconds, through SQL alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from model.query_memory import QueryMemory
from service.catalog.tokens import fold as fold_text
from service.catalog.tokens import query_terms
from storage.keys import content_key
from storage.memory import changed_pairs, changed_queries, last_fold


@dataclass(frozen=True, slots=True)
class MemoryKey:
    key: str  # sha256 of `normal`
    kind: str  # text | image | composed
    normal: str  # the normal form: lexical terms, sorted; photo:<sha256> for a photo


@lru_cache(maxsize=10_000)
def memory_key(text: str | None, image_sha256: str | None) -> MemoryKey:
    """A query's memory key: its lexical terms (case, accents, plurals and units folded, as the
    lexical channel reads them), in any order, and for a photo its content. Cached: popular
    queries repeat, and stemming them costs a search a tenth of a millisecond."""
    words = ""
    if text:
        words = " ".join(sorted(query_terms(text))) or " ".join(fold_text(text).split())
    if image_sha256:
        normal = f"photo:{image_sha256}" + (f" {words}" if words else "")
        kind = "composed" if words else "image"
    else:
        normal, kind = words, "text"
    return MemoryKey(content_key(normal), kind, normal)


class MemoryFollower:
    """Keeps one process's QueryMemory up to date with the folds any process commits, reading
    the vectors of the encoders this process serves. It loads everything afresh every
    `reload_hours`, so what retention dropped leaves this process too."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        memory: QueryMemory,
        encoders: Sequence[str],
        *,
        reload_hours: float = 6.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sessions, self.memory, self._clock = sessions, memory, clock
        self.encoders = set(encoders)
        self.reload_s = reload_hours * 3600
        self.fold = 0
        self._loaded = clock()

    def poll(self) -> int:
        """Apply the rows of folds newer than the last one seen; returns how many pairs."""
        if self.fold and self._clock() - self._loaded > self.reload_s:
            fresh = MemoryFollower(
                self.sessions, QueryMemory(self.memory.config, self._clock), list(self.encoders)
            )
            n = fresh.poll()
            self.memory.adopt(fresh.memory)
            self.fold, self._loaded = fresh.fold, self._clock()
            return n
        n = 0
        with self.sessions() as s:
            target = last_fold(session=s)
            if target <= self.fold:
                return 0
            for key, kind, text, encoder, vector in changed_queries(
                session=s, after_fold=self.fold, to_fold=target
            ):
                vec = None
                if vector is not None and encoder in self.encoders:
                    vec = np.frombuffer(vector, dtype=np.float32)
                self.memory.put_query(key, kind, text, vec)
            for key, pid, gain, exam, at, _ in changed_pairs(
                session=s, after_fold=self.fold, to_fold=target
            ):
                self.memory.put_pair(key, pid, gain, exam, at)
                n += 1
        self.fold = target  # only once every row up to it was read
        return n
