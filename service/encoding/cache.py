"""On-disk embedding cache keyed by content hash, so re-ingesting an unchanged catalog is fast.

One folder per encoder id; each write adds an immutable `.npz` shard (keys + float32 rows) written
atomically. Only the keys are held in memory, read on first use; rows are read from the shards
when asked for (memory-mapped, so a million cached rows cost no RAM of their own: see
docs/benchmarks.md, "A million products through HTTP"). Nothing is unpickled.
"""

from __future__ import annotations

import os
import re
import struct
import uuid
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from storage.keys import content_key

__all__ = ["EmbeddingCache", "content_key"]

_ROW_BITS = 32  # a key's place: shard number << _ROW_BITS | row in the shard
_CHUNK = 65_536  # rows copied out of a shard at a time, so a big read needs no second copy


@dataclass(frozen=True)
class _Shard:
    """Where a shard's vectors lie in its file (np.savez stores members uncompressed)."""

    path: Path
    offset: int
    shape: tuple[int, ...]
    dtype: np.dtype

    def vectors(self) -> np.ndarray:
        return np.memmap(self.path, self.dtype, mode="r", offset=self.offset, shape=self.shape)


class EmbeddingCache:
    def __init__(self, root: Path, encoder_id: str, dim: int) -> None:
        self.dir = root / re.sub(r"[^A-Za-z0-9_.@-]", "_", encoder_id)
        self.dim = dim
        self._shards: list[_Shard] = []
        self._where: dict[str, int] | None = None  # read on first use: a server may never ask

    def __len__(self) -> int:
        return len(self._index())

    def get(self, key: str) -> np.ndarray | None:
        vectors, found = self.get_many([key])
        return vectors[0] if found[0] else None

    def get_many(self, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(len(keys), dim) rows, zeros where a key is not cached, and which keys were."""
        where = self._index()
        place = np.array([where.get(k, -1) for k in keys], dtype=np.int64)
        found = place >= 0
        out = np.zeros((len(keys), self.dim), np.float32)
        shard_of = place >> _ROW_BITS
        for number in np.unique(shard_of[found]).tolist():
            mine = np.flatnonzero(shard_of == number)
            rows = place[mine] & ((1 << _ROW_BITS) - 1)
            vectors = self._shards[number].vectors()
            for start in range(0, len(mine), _CHUNK):
                out[mine[start : start + _CHUNK]] = vectors[rows[start : start + _CHUNK]]
            del vectors  # unmapped: its pages leave this process's memory
        return out, found

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
        if self._where is not None:
            self._add(self.dir / name, keys)

    def _index(self) -> dict[str, int]:
        if self._where is None:
            self._where = {}
            if self.dir.exists():
                for path in sorted(self.dir.glob("shard-*.npz")):
                    with np.load(path, allow_pickle=False) as z:
                        keys = z["keys"].tolist()
                    self._add(path, keys)
        return self._where

    def _add(self, path: Path, keys: list[str]) -> None:
        shard = _locate(path)
        if shard.shape[1:] != (self.dim,) or shard.shape[0] != len(keys):
            return  # another dimension: a different model under the same name
        assert self._where is not None
        base = len(self._shards) << _ROW_BITS
        self._shards.append(shard)
        self._where.update(zip(keys, range(base, base + len(keys)), strict=True))


def _locate(path: Path) -> _Shard:
    """The vectors member of an np.savez file: its data's offset, shape and dtype."""
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("vectors.npy")
    assert info.compress_type == zipfile.ZIP_STORED, "np.savez shards are uncompressed"
    with path.open("rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)  # the member's local header: its name and extra field follow
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        f.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        assert not fortran and dtype == np.float32
        return _Shard(path, f.tell(), shape, dtype)
