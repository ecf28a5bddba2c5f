"""The embedding cache: rows read back from memory-mapped shards, as a new process would."""

from __future__ import annotations

import numpy as np

from service.encoding.cache import EmbeddingCache


def _rows(n: int, dim: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n, dim), dtype=np.float32)


def test_rows_come_back_from_every_shard_and_misses_are_zero(tmp_path) -> None:
    cache = EmbeddingCache(tmp_path, "model/v1", 8)
    first, second = _rows(5, 8, 0), _rows(3, 8, 1)
    cache.put_many(list("abcde"), first)
    cache.put_many(list("wxy"), second)
    again = EmbeddingCache(tmp_path, "model/v1", 8)
    vectors, found = again.get_many(["a", "zz", "c", "y"])
    assert found.tolist() == [True, False, True, True]
    np.testing.assert_array_equal(vectors[0], first[0])
    np.testing.assert_array_equal(vectors[1], np.zeros(8, np.float32))
    np.testing.assert_array_equal(vectors[2], first[2])
    np.testing.assert_array_equal(vectors[3], second[2])
    assert len(again) == 8 and again.get("zz") is None


def test_a_put_is_readable_at_once_and_other_dimensions_are_ignored(tmp_path) -> None:
    EmbeddingCache(tmp_path, "m", 4).put_many(["old"], _rows(1, 4, 2))
    cache = EmbeddingCache(tmp_path, "m", 8)  # the same name, another model
    assert len(cache) == 0
    rows = _rows(2, 8, 3)
    cache.put_many(["p", "q"], rows)
    got = cache.get("q")
    assert got is not None
    np.testing.assert_array_equal(got, rows[1])
