"""The query memory on a shop's traffic, through the real HTTP API: how far what shoppers of a
query did lifts that query, what exploration costs and finds, and no harm elsewhere.

A default-settings `fusionrank serve` (its own schedule refreshes) on a fresh copy of the
database takes text sessions: about half go to 200 popular queries drawn by Zipf (the most
popular about 17% of them), the rest to a long tail where most queries come once. Shoppers
(shoppers.simulator's position-biased clicks, carts and purchases, following true grades) each
send a user id of their own. Every --every sessions it measures, against true grades:

- the head queries' NDCG@10, plain and weighted by traffic, and their ceilings: their top 10,
  and their top 100, re-ordered by true grades;
- 100 held-out queries never searched in the run;
- the NDCG@10 of what the traffic was shown meanwhile (what exploration costs shoppers now);
- the median milliseconds of those searches beyond the encoders (Server-Timing), which the
  memory adds to as it fills (a trend only: the traffic and the learner share the cores).

The evaluator searches as one user of its own: the memory counts it once per query and product.
It runs once per exploration rate (--explore-deep, default 0.1 and 0), each on a fresh
database, so the cost now and the gain later are side by side. At the end, how many distinct
buyers, and how many seconds, a grade-3 product from deep in a popular query's results needs
to reach its top 3. Then what the memory costs a search, side by side, on the head and held-out
queries (benchmarks.memory_latency, --repeats passes). Queries and shoppers are synthetic.

Catalogs: `fashion` (titles, attributes, images) and `titles` (the same products' titles only;
the grades still come from their attributes). --products takes a seeded subset.

Usage: python -m benchmarks.query_memory [--catalog fashion|titles] [--products 8000]
       [--sessions 6000] [--every 1000] [--explore-deep 0.1,0] [--repeats 3]
       [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from tqdm import tqdm

from benchmarks.common import (
    CATALOG,
    DEFAULT_DATA_DIR,
    ensure_data,
    fresh_database,
    print_targets,
    require_shared,
    write_json,
)
from benchmarks.memory_latency import memory_cost
from benchmarks.server import server_timing, sqlite_server
from service.catalog.files import read_catalog
from shoppers.grades import Relevance, ndcg_at_10
from shoppers.intents import Intent, Shoppers
from shoppers.simulator import reactions

HEAD, HELD_OUT, TAIL = 200, 100, 20_000
EVALUATOR = "benchmark-evaluator"
TARGET_GAP = 0.70
TARGET_HELD_OUT = 0.99


@dataclass(frozen=True)
class Queries:
    head: list[Intent]
    weights: np.ndarray  # the head's traffic shares (Zipf)
    tail: list[Intent]
    held_out: list[Intent]


def make_queries(rows: list[Any], seed: int = 7) -> Queries:
    """Distinct text needs drawn as simulated shoppers word them; split into a head, a tail and
    queries that are never searched."""
    shoppers = Shoppers(rows, {"text": 1.0})
    rng = random.Random(seed)
    seen: dict[str, Intent] = {}
    for _ in range(200_000):
        intent = shoppers.draw(rng)
        if intent.text:
            seen.setdefault(intent.text, intent)
        if len(seen) >= HEAD + HELD_OUT + TAIL:
            break
    intents = list(seen.values())
    rng.shuffle(intents)
    head, held_out = intents[:HEAD], intents[HEAD : HEAD + HELD_OUT]
    zipf = 1.0 / np.arange(1, HEAD + 1)
    return Queries(head, zipf / zipf.sum(), intents[HEAD + HELD_OUT :], held_out)


class Shop:
    def __init__(self, url: str, relevance: Relevance, queries: Queries) -> None:
        self.url, self.relevance, self.q = url, relevance, queries
        self._clients: dict[int, httpx.Client] = {}
        self.timing = ""  # the last search's Server-Timing (measure() searches one at a time)

    def client(self) -> httpx.Client:
        import threading

        key = threading.get_ident()
        if key not in self._clients:
            self._clients[key] = httpx.Client(base_url=self.url, timeout=120)
        return self._clients[key]

    def grades_of(self, intent: Intent, ids: Sequence[str]) -> tuple[np.ndarray, list[int]]:
        grades = self.relevance.grades(intent.target)
        return grades, [int(grades[self.relevance.pos[p]]) for p in ids]

    def search(self, text: str, k: int, user: str) -> dict[str, Any]:
        r = self.client().post("/v1/search", json={"query": text, "k": k, "user_id": user})
        r.raise_for_status()
        self.timing = r.headers.get("server-timing", "")
        return r.json()  # type: ignore[no-any-return]

    def session(self, seed: int) -> float:
        """One shopper: a head query half of the time, else one from the tail; returns the
        NDCG@10 of what they were shown."""
        rng = random.Random(seed)
        if rng.random() < 0.5:
            intent = rng.choices(self.q.head, weights=self.q.weights.tolist())[0]
        else:
            intent = rng.choice(self.q.tail)
        assert intent.text
        res = self.search(intent.text, 20, f"shopper-{seed}")
        ids = [h["product_id"] for h in res["results"]]
        grades, shown = self.grades_of(intent, ids)
        events = [
            {"search_id": res["search_id"], "product_id": ids[pos - 1], "type": t}
            for pos, types in reactions(rng, shown, 1.0)
            for t in types
        ]
        if events:
            self.client().post("/v1/feedback", json={"events": events}).raise_for_status()
        return ndcg_at_10(shown, grades)

    def traffic(self, seeds: range) -> list[float]:
        with ThreadPoolExecutor(2) as pool:
            return list(tqdm(pool.map(self.session, seeds), total=len(seeds), desc="sessions"))

    def measure(self, intents: Sequence[Intent]) -> dict[str, np.ndarray]:
        """Per query: NDCG@10 of its top 10, and of its top 10 and top 100 by true grade."""
        out: dict[str, list[float]] = {"ndcg": [], "ceiling10": [], "ceiling100": [], "ms": []}
        for intent in intents:
            assert intent.text
            ids = [h["product_id"] for h in self.search(intent.text, 100, EVALUATOR)["results"]]
            out["ms"].append(_beyond_encoders(self.timing))
            grades, shown = self.grades_of(intent, ids)
            out["ndcg"].append(ndcg_at_10(shown, grades))
            out["ceiling10"].append(ndcg_at_10(sorted(shown[:10], reverse=True), grades))
            out["ceiling100"].append(ndcg_at_10(sorted(shown, reverse=True), grades))
        return {k: np.array(v) for k, v in out.items()}

    def checkpoint(self, sessions: int, shown: list[float]) -> dict[str, Any]:
        head, held = self.measure(self.q.head), self.measure(self.q.held_out)
        w = self.q.weights
        return {
            "sessions": sessions,
            "head": float(head["ndcg"].mean()),
            "head_weighted": float(head["ndcg"] @ w),
            "ceiling10_weighted": float(head["ceiling10"] @ w),
            "ceiling100_weighted": float(head["ceiling100"] @ w),
            "held_out": float(held["ndcg"].mean()),
            # the search without its encoders (which a repeated query skips): what the memory
            # adds to, as it fills
            "search_ms_p50": float(np.median(np.concatenate([head["ms"], held["ms"]]))),
            "traffic_shown": float(np.mean(shown)) if shown else None,
        }

    def time_to_top3(self, intents: Sequence[Intent], tries: int = 5) -> list[dict[str, Any]]:
        """For a few popular queries: a grade-3 product from ranks 20-100 bought by one new
        shopper after another until a plain search shows it in the top 3."""
        out: list[dict[str, Any]] = []
        for intent in intents:
            assert intent.text
            if len(out) == tries:
                break
            ids = [h["product_id"] for h in self.search(intent.text, 100, EVALUATOR)["results"]]
            _, shown = self.grades_of(intent, ids)
            deep = [p for p, g in zip(ids[20:], shown[20:], strict=False) if g == 3]
            if not deep:
                continue
            product, started, buyers = deep[0], time.monotonic(), 0
            while buyers < 10:
                buyers += 1
                res = self.search(intent.text, 100, f"buyer-{product}-{buyers}")
                if product in [h["product_id"] for h in res["results"]]:
                    self.client().post(
                        "/v1/feedback",
                        json={
                            "events": [
                                {"search_id": res["search_id"], "product_id": product, "type": t}
                                for t in ("click", "add_to_cart", "purchase")
                            ]
                        },
                    ).raise_for_status()
                risen = _wait_top3(self, intent.text, product, seconds=10)
                if risen is not None:
                    out.append(
                        {
                            "query": intent.text,
                            "buyers": buyers,
                            "seconds": round(time.monotonic() - started, 1),
                        }
                    )
                    break
            else:
                out.append({"query": intent.text, "buyers": None, "seconds": None})
        return out


def memory_weight(url: str, text: str) -> float:
    """The active version's mix weight of the memory term for text queries, from explain."""
    r = httpx.post(f"{url}/v1/search", json={"query": text, "k": 1, "explain": True}, timeout=60)
    r.raise_for_status()
    return float(r.json()["results"][0]["explanation"]["mix"]["memory"]["weight"])


def _beyond_encoders(header: str) -> float:
    """Milliseconds of a search beyond its encoders."""
    timing = server_timing(header)
    return timing["search"] - timing["encode"]


def _wait_top3(shop: Shop, text: str, product: str, seconds: float) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        top = [h["product_id"] for h in shop.search(text, 10, EVALUATOR)["results"][:3]]
        if product in top:
            return time.monotonic() - started
        time.sleep(0.5)
    return None


def run(
    data_dir: Path, csv_path: Path, explore_deep: float, args: argparse.Namespace
) -> dict[str, Any]:
    rows = read_catalog(CATALOG)
    in_catalog = {r["id"] for r in csv.DictReader(csv_path.open(encoding="utf-8"))}
    rows = [r for r in rows if r.id in in_catalog]
    relevance = Relevance([{"id": r.id, **r.attributes} for r in rows])
    queries = make_queries(rows)
    curve = []
    with tempfile.TemporaryDirectory(prefix="fr-memory-") as tmp:
        db = Path(tmp) / "fusionrank.db"
        fresh_database(data_dir, db)
        with sqlite_server(data_dir, db, explore_deep_rate=explore_deep) as url:
            shop = Shop(url, relevance, queries)
            shown: list[float] = []
            for done in range(0, args.sessions + 1, args.every):
                if done:
                    shown = shop.traffic(range(done - args.every, done))
                row = shop.checkpoint(done, shown)
                curve.append(row)
                print(f"explore_deep={explore_deep}", json.dumps(row), flush=True)
            top3 = shop.time_to_top3(queries.head[5:])
            runs = httpx.get(f"{url}/v1/models/runs", params={"limit": 100}).json()["runs"]
            weight = memory_weight(url, queries.head[0].text or "")
        texts = [q.text for q in queries.head + queries.held_out if q.text]
        latency = memory_cost(data_dir, db, texts, args.repeats, user=EVALUATOR)
        print(f"explore_deep={explore_deep} latency", json.dumps(latency), flush=True)
    return {
        "explore_deep": explore_deep,
        "curve": curve,
        "time_to_top3": top3,
        "latency": latency,
        "memory_weight": weight,  # the active version's, for text: learned from its start, 1
        "refreshes": [
            {
                "trigger": r["trigger"],
                "status": r["status"],
                "promoted": r.get("promoted"),
                "paired": (r.get("detail") or {}).get("paired"),
            }
            for r in runs[::-1]
        ],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--catalog", choices=("fashion", "titles"), default="fashion")
    ap.add_argument("--products", type=int, default=8000)
    ap.add_argument("--sessions", type=int, default=6000)
    ap.add_argument("--every", type=int, default=1000)
    ap.add_argument("--explore-deep", default="0.1,0")
    ap.add_argument("--repeats", type=int, default=3, help="passes of the latency comparison")
    ap.add_argument("--data-dir", type=Path, default=None)
    args = ap.parse_args()
    require_shared()
    data_dir = args.data_dir or DEFAULT_DATA_DIR / f"memory-{args.catalog}-{args.products}"
    csv_path = ensure_data(data_dir, args.catalog, args.products)
    results = [run(data_dir, csv_path, float(rate), args) for rate in args.explore_deep.split(",")]
    print(f"\n{args.catalog}, {args.products} products, {args.sessions} sessions")
    print(
        f"{'explore':>8} {'sessions':>8} {'head':>6} {'weighted':>8} {'ceil10':>6} "
        f"{'ceil100':>7} {'held-out':>8} {'shown':>6} {'ms':>5}"
    )
    targets: dict[str, bool] = {}
    for res in results:
        for row in res["curve"]:
            shown = row["traffic_shown"]
            print(
                f"{res['explore_deep']:>8} {row['sessions']:>8} {row['head']:6.3f} "
                f"{row['head_weighted']:8.3f} {row['ceiling10_weighted']:6.3f} "
                f"{row['ceiling100_weighted']:7.3f} {row['held_out']:8.3f} "
                f"{'' if shown is None else f'{shown:6.3f}':>6} "
                f"{row.get('search_ms_p50', float('nan')):5.2f}"
            )
        start, end = res["curve"][0], res["curve"][-1]
        gap = start["ceiling100_weighted"] - start["head_weighted"]
        closed = (end["head_weighted"] - start["head_weighted"]) / gap if gap > 0 else 1.0
        held = end["held_out"] / start["held_out"]
        res["gap_closed"], res["held_out_ratio"] = closed, held
        print(f"  gap to the top-100 ceiling closed: {closed:.0%}; held-out {held:.3f}x")
        print(f"  a deep grade-3 product to the top 3: {res['time_to_top3']}")
        print(f"  the active version's memory weight for text: {res['memory_weight']:.3f}")
        lat = res["latency"]
        print(
            f"  search ms p50 with the memory {lat['memory']['search_ms']:.2f}, without "
            f"{lat['none']['search_ms']:.2f} (+{lat['added_ms']:.2f}); round trip "
            f"{lat['memory']['round_trip_ms']:.2f} vs {lat['none']['round_trip_ms']:.2f}"
        )
        targets[f"explore {res['explore_deep']}: the memory adds <= 1 ms p50"] = (
            lat["added_ms"] <= 1.0
        )
        targets[f"explore {res['explore_deep']}: gap closed >= {TARGET_GAP:.0%}"] = (
            closed >= TARGET_GAP
        )
        targets[f"explore {res['explore_deep']}: held-out >= {TARGET_HELD_OUT}x"] = (
            held >= TARGET_HELD_OUT
        )
    print_targets(targets)
    path = write_json(
        f"query_memory_{args.catalog}",
        {"catalog": args.catalog, "products": args.products, "runs": results},
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
