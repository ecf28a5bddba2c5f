"""Recall@10 of a served build's vector channels against exact search, for
benchmarks.million_http: the build loaded as the server loads it (CatalogIndex, the server's
vector settings and exact-filter limit) and searched with each (space, query vector) pair a
search walks (model.head: a text query's raw text vector in `text` and its projection in
`pimage`; a photo's projection in `pimage` and `ptext`)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.checkpoint import load_head
from service.catalog.index import CatalogIndex
from service.catalog.vectors import FaissBackend, VectorConfig
from service.config import Settings
from service.encoding.embedder import make_embedder
from storage.artifacts import current

K = 10
BLOCK = 131_072  # rows scored at a time by the exact search


def measure_channels(
    settings: Settings,
    texts: list[str],
    photos: list[Path],
    filters: Mapping[str, Mapping[str, str]],
) -> dict[str, Any]:
    """Per channel and filter (and none): recall@10, p50/p99 ms of one search in process, and
    how many rows the filter allows."""
    build = current(settings.index_dir)
    assert build is not None
    backend = FaissBackend(VectorConfig.of(settings))
    index = CatalogIndex.load(build, backend=backend, exact_limit=settings.exact_filter_limit)
    channels = query_vectors(settings, index, texts, photos)
    masks: dict[str, np.ndarray | None] = {"none": None}
    masks |= {
        name: index.filter_mask({k: [v] for k, v in f.items()}) for name, f in filters.items()
    }
    out: dict[str, Any] = {
        "rows": {n: int(len(index) if m is None else m.sum()) for n, m in masks.items()}
    }
    for channel, (space, queries) in channels.items():
        for name, mask in masks.items():
            allowed = index.alive_rows() if mask is None else np.flatnonzero(mask)
            tenth = exact_kth(index, space, queries, allowed)
            times, recalls = [], []
            for q, want in zip(queries, tenth, strict=True):
                t0 = time.perf_counter()
                rows, _ = index.search(space, q, K, mask)
                times.append((time.perf_counter() - t0) * 1000)
                sims = index.vectors(space, rows) @ q
                recalls.append(float(np.sum(sims >= want - 1e-5)) / K)
            out.setdefault(channel, {})[name] = {
                "recall@10": round(float(np.mean(recalls)), 4),
                "p50_ms": round(float(np.median(times)), 3),
                "p99_ms": round(float(np.percentile(times, 99)), 3),
            }
            print(f"{channel} {name}: {out[channel][name]}", flush=True)
    return out


def query_vectors(
    settings: Settings, index: CatalogIndex, texts: list[str], photos: list[Path]
) -> dict[str, tuple[str, np.ndarray]]:
    """Channel name -> (space, query vectors), as the server makes them: the configured
    encoders and the build's head."""
    head, _ = load_head(settings.data_dir / "heads" / str(index.meta["head_version"]))
    embedder = make_embedder(settings)
    qt = embedder.text_encoder.encode(texts)
    qv = embedder.image_encoder.encode([embedder.decode(p.read_bytes()) for p in photos])
    with torch.no_grad():
        pt = head.project_text(torch.from_numpy(qt)).numpy()
        pv = head.project_image(torch.from_numpy(qv)).numpy()
    return {
        "text->text": ("text", qt),
        "text->pimage": ("pimage", pt),
        "photo->pimage": ("pimage", pv),
        "photo->ptext": ("ptext", pv),
    }


def exact_kth(index: CatalogIndex, space: str, queries: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Per query, the exact K-th best similarity among `rows`, scored a block at a time."""
    best = np.full((K, len(queries)), -np.inf, np.float32)
    for start in range(0, len(rows), BLOCK):
        sims = index.vectors(space, rows[start : start + BLOCK]) @ queries.T
        both = np.concatenate([best, sims])
        best = -np.partition(-both, K - 1, axis=0)[:K]
    return best.min(axis=0)
