"""Rows: a mapped (or in-memory) base and appended rows read as one matrix, written as np.save
writes it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.catalog.rows import Rows


def matrix(n: int, d: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


@pytest.fixture
def mapped(tmp_path) -> tuple[Rows, np.ndarray]:
    """Rows over a mapped 30x5 file with 25 rows appended in three batches."""
    base, added = matrix(30, 5), matrix(25, 5, seed=1)
    np.save(tmp_path / "base.npy", base)
    rows = Rows.mapped(tmp_path / "base.npy")
    for part in (added[:1], added[1:20], added[20:]):  # the tail grows more than once
        rows.append(part)
    return rows, np.concatenate([base, added])


def test_take_reads_base_and_tail_rows_in_the_order_asked(mapped):
    rows, expected = mapped
    assert rows.is_mapped and len(rows) == 55 and rows.dim == 5
    for asked in ([3, 0, 29], [54, 2, 30, 30, 41], [], list(range(55))[::-1]):
        got = rows.take(np.array(asked, dtype=np.int64))
        np.testing.assert_array_equal(got, expected[asked])
        assert type(got) is np.ndarray and got.flags.writeable and got.flags.c_contiguous


def test_saved_rows_are_the_bytes_np_save_writes(mapped, tmp_path: Path):
    rows, expected = mapped
    rows.save(tmp_path / "rows.npy")
    np.save(tmp_path / "reference.npy", expected)
    assert (tmp_path / "rows.npy").read_bytes() == (tmp_path / "reference.npy").read_bytes()


def test_zero_width_rows_append_and_save(tmp_path: Path):
    rows = Rows(np.zeros((4, 0), np.float32))
    rows.append(np.zeros((2, 0), np.float32))
    assert len(rows) == 6 and rows.take(np.array([5, 0])).shape == (2, 0)
    rows.save(tmp_path / "empty.npy")
    assert np.load(tmp_path / "empty.npy").shape == (6, 0)
