"""On-disk embedding cache keyed by content hash, so re-ingesting an unchanged catalog is fast.

One folder per encoder id; each write adds an immutable `.npz` shard (keys + float32 rows) written
atomically. Loading reads every shard without pickle.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import numpy as np

from storage.keys import content_key

__all__ = ["EmbeddingCache", "content_key"]


class EmbeddingCache:
    def __init__(self, root: Path, encoder_id: str, dim: int) -> None:
        self.dir = root / re.sub(r"[^A-Za-z0-9_.@-]", "_", encoder_id)
        self.dim = dim
        self._rows: dict[str, np.ndarray] = {}
        if self.dir.exists():
            for shard in sorted(self.dir.glob("shard-*.npz")):
                with np.load(shard, allow_pickle=False) as z:
                    keys, vecs = z["keys"], z["vectors"]
                if vecs.shape[1:] != (dim,):
                    continue  # another dimension: a different model under the same name
                self._rows.update(zip(keys.tolist(), vecs, strict=True))

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, key: str) -> np.ndarray | None:
        return self._rows.get(key)

    def put_many(self, keys: list[str], vectors: np.ndarray) -> None:
        if not keys:
            return
        assert vectors.shape == (len(keys), self.dim) and vectors.dtype == np.float32
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"shard-{uuid.uuid4().hex}.npz"
        tmp = self.dir / f".{name}.tmp"
        with tmp.open("wb") as f:
            np.savez(f, keys=np.array(keys), vectors=vectors)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.dir / name)
        self._rows.update(zip(keys, vectors, strict=True))
