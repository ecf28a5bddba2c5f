"""Rows of a float32 matrix that is read a few rows at a time, never searched: a base, which for
a loaded build is a read-only map of the build's .npy file, and the rows appended after it.

A mapped base costs a process only the pages it reads, and those pages sit in the kernel's page
cache, shared by every process serving the build (docs/design.md, "A million products").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

_CHUNK_BYTES = 64 << 20


class Rows:
    def __init__(self, base: np.ndarray) -> None:
        """`base`: (n, dim) float32 rows, in memory or mapped; they are not copied."""
        assert base.ndim == 2 and base.dtype == np.float32
        self._base = base
        self._tail = np.zeros((0, base.shape[1]), np.float32)  # capacity; _size rows hold data
        self._size = 0

    @classmethod
    def mapped(cls, path: Path) -> Rows:
        """The rows of a .npy file, mapped read-only (the file must not change while mapped)."""
        return cls(np.load(path, mmap_mode="r", allow_pickle=False))

    def __len__(self) -> int:
        return len(self._base) + self._size

    @property
    def dim(self) -> int:
        return int(self._base.shape[1])

    @property
    def is_mapped(self) -> bool:
        return isinstance(self._base, np.memmap)

    def take(self, rows: np.ndarray) -> np.ndarray:
        """A new (len(rows), dim) array of the rows, in the order given."""
        rows = np.asarray(rows, dtype=np.int64)
        assert rows.ndim == 1
        base, tail = self._base, self._tail  # appends swap _tail; these stay valid
        split = len(base)
        if not len(rows) or int(rows.max()) < split:
            return np.asarray(base[rows])
        assert int(rows.max()) < len(self) and int(rows.min()) >= 0, "row out of range"
        out = np.empty((len(rows), self.dim), np.float32)
        old = rows < split
        out[old] = base[rows[old]]
        out[~old] = tail[rows[~old] - split]
        return out

    def append(self, values: np.ndarray) -> None:
        """Add rows after the last; the caller serialises appends (readers need no lock)."""
        assert values.ndim == 2 and values.shape[1] == self.dim
        end = self._size + len(values)
        if end > len(self._tail):  # doubling, so appends are amortised O(1)
            grown = np.zeros((max(end, 2 * len(self._tail), 16), self.dim), np.float32)
            grown[: self._size] = self._tail[: self._size]
            grown[self._size : end] = values
            self._tail = grown
        else:
            self._tail[self._size : end] = values
        self._size = end

    def save(self, path: Path) -> None:
        """Write every row as one .npy file, as np.save would, a chunk at a time.

        Plain writes rather than stores into a mapped output file: on a full disk a write
        raises ENOSPC (storage.artifacts turns it into DiskFull) where a store through a map
        kills the process with SIGBUS."""
        header = {
            "descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
            "fortran_order": False,
            "shape": (len(self), self.dim),
        }
        step = max(1, _CHUNK_BYTES // max(1, 4 * self.dim))
        with path.open("wb") as f:
            np.lib.format.write_array_header_1_0(f, header)
            for part in (self._base, self._tail[: self._size]):
                for start in range(0, len(part), step):
                    np.ascontiguousarray(part[start : start + step]).tofile(f)
