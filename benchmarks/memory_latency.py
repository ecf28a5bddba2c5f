"""What the query memory costs a search, side by side (benchmarks.query_memory runs it): two
servers with their learners off, one on a database whose memory a run filled and one on a copy
of it with the memory emptied (the same active version), take the same searches in alternating
blocks of 20, query vectors cached on both sides; medians of `repeats` passes, of the search's
own time (Server-Timing) and of the round trip."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.common import without_memory
from benchmarks.server import server_timing, sqlite_server

BLOCK = 20


def memory_cost(
    data_dir: Path, filled: Path, texts: list[str], repeats: int, *, user: str
) -> dict[str, Any]:
    """Per side ("memory", "none"): the medians over passes of each pass's median search time
    and round trip (ms); and what the memory adds to each."""
    empty = filled.with_name("empty.db")
    without_memory(filled, empty)  # the same active version: only the memory differs
    medians: dict[str, dict[str, list[float]]] = {
        side: {"search_ms": [], "round_trip_ms": []} for side in ("memory", "none")
    }
    with (
        sqlite_server(data_dir, filled, learner_in_process="false") as with_memory,
        sqlite_server(data_dir, empty, learner_in_process="false") as without,
        httpx.Client(base_url=with_memory, timeout=60) as a,
        httpx.Client(base_url=without, timeout=60) as b,
    ):
        clients = {"memory": a, "none": b}
        for c in clients.values():  # warm: the query cache holds every query's vector in both
            for text in texts:
                c.post("/v1/search", json={"query": text, "k": 20}).raise_for_status()
        for _ in range(repeats):
            one: dict[str, dict[str, list[float]]] = {
                side: {"search_ms": [], "round_trip_ms": []} for side in clients
            }
            for block in range(0, len(texts), BLOCK):
                for side, c in clients.items():
                    for text in texts[block : block + BLOCK]:
                        started = time.perf_counter()
                        r = c.post("/v1/search", json={"query": text, "k": 20, "user_id": user})
                        r.raise_for_status()
                        one[side]["round_trip_ms"].append(1e3 * (time.perf_counter() - started))
                        one[side]["search_ms"].append(
                            server_timing(r.headers["server-timing"])["search"]
                        )
            for side, values in one.items():
                for key, v in values.items():
                    medians[side][key].append(float(np.median(v)))
    out = {side: {k: float(np.median(v)) for k, v in d.items()} for side, d in medians.items()}
    return {
        "searches_per_pass": len(texts),
        "repeats": repeats,
        **out,
        "added_ms": out["memory"]["search_ms"] - out["none"]["search_ms"],
        "added_round_trip_ms": out["memory"]["round_trip_ms"] - out["none"]["round_trip_ms"],
    }
