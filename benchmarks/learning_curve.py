"""The learning curve of a service left to its own schedule, through the real HTTP API on the
full catalog.

A real `fusionrank serve` with default settings (its learner in process, or with --learner
process a `fusionrank learner` beside an API whose learner is off) runs on a fresh copy of the
database and takes steady simulated traffic: shoppers (shoppers.simulator: position-biased
clicks, add-to-carts and purchases) search in a fixed mix of text, photo and photo+words queries
and send feedback. The scheduler alone decides when to refresh: the benchmark never asks.

Every --every sessions, a fixed set of evaluation shoppers (the same seeds each time, an even mix
of query types, no feedback sent) measures NDCG@10 of what the service shows against the true
grades. Their searches are logged like any other: about one search in six without feedback.

Mixes: `default` (the simulator's: text 50%, image 25%, composed 25%) and `skewed` (text 92%,
image 5%, composed 3%). At the end the scheduler's decisions, from GET /v1/models/runs:
refreshes by trigger and outcome, and per query type the promotions and the refusals by reason.
Queries and shoppers are synthetic.
--products N runs on a seeded N-product subset (benchmarks.common.subset_catalog), ingested
into its own data dir on first use, shared with benchmarks.query_memory's.
Usage: python -m benchmarks.learning_curve [--data-dir DIR] [--products N] [--sessions 20000]
       [--every 2500]
       [--mixes default,skewed] [--learner in-process|process] [--seed 0] [--name NAME]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.common import (
    CATALOG,
    DEFAULT_DATA_DIR,
    RESULTS,
    ensure_data,
    ensure_index,
    fresh_database,
    plot_curves,
    print_targets,
    require_shared,
    shopper_photos,
    write_json,
)
from benchmarks.server import start_server
from model.head import QUERY_TYPES
from shoppers.intents import DEFAULT_MIX
from shoppers.simulator import Simulator

MIXES = {
    "default": DEFAULT_MIX,
    "skewed": {"text": 0.92, "image": 0.05, "composed": 0.03},
}
EVAL_SEED = 990
EVAL_MIX = dict.fromkeys(QUERY_TYPES, 1 / 3)
DROP_TOLERANCE = 0.01  # an unchanged head scores within about 0.005 of itself (exploration)
TARGET_GAIN = 1.10


def evaluate(
    url: str, catalog: Path, sessions: int, photos: Mapping[str, Path]
) -> dict[str, float]:
    sim = Simulator(url, catalog, photos=photos, mix=EVAL_MIX, send_feedback=False)
    report = sim.run(sessions, seed=EVAL_SEED, concurrency=2, progress=False)
    out = {k: v["ndcg@10"] for k, v in report.by_kind.items()}
    out["all"] = float(np.mean([out[t] for t in QUERY_TYPES]))
    return out


@contextlib.contextmanager
def service(data_dir: Path, learner: str) -> Iterator[str]:
    """A server with default settings on a fresh copy of `data_dir`'s database (and a learner
    process beside it with `learner` = "process"); yields its URL."""
    with tempfile.TemporaryDirectory(prefix="fr-curve-") as tmp:
        fresh_database(data_dir, Path(tmp) / "fusionrank.db")
        env = {"FUSIONRANK_DATABASE_URL": f"sqlite:///{tmp}/fusionrank.db"}
        side = None
        if learner == "process":
            env["FUSIONRANK_LEARNER_IN_PROCESS"] = "false"
            side = subprocess.Popen(
                [sys.executable, "-m", "service.cli", "learner", "--log-level", "warning"],
                env={**os.environ, **env, "FUSIONRANK_DATA_DIR": str(data_dir)},
            )
        proc, url = start_server(data_dir, env=env)
        try:
            yield url
        finally:
            for p in (proc, side):
                if p is not None:
                    p.terminate()
                    p.wait(60)


def run_mix(
    name: str, catalog: Path, args: argparse.Namespace, photos: Mapping[str, Path]
) -> dict[str, Any]:
    """The curve of one traffic mix, and the scheduler's runs."""
    rows: list[dict[str, Any]] = []
    with (
        service(args.data_dir, args.learner) as url,
        httpx.Client(base_url=url, timeout=60) as api,
    ):
        trainer = Simulator(url, catalog, photos=photos, mix=MIXES[name])
        started = time.monotonic()
        for done in range(0, args.sessions + 1, args.every):
            row: dict[str, Any] = {"mix": name, "sessions": done}
            if done:
                seed = 100 + 1000 * args.seed + done // args.every
                report = trainer.run(args.every, seed=seed, concurrency=2)
                row |= {"events": report.events, "failed": report.failed}
            row["minutes"] = round((time.monotonic() - started) / 60, 1)
            row["ndcg@10"] = evaluate(url, catalog, args.eval_sessions, photos)
            row["active"] = api.get("/v1/models").json()["active"]
            rows.append(row)
            print(name, json.dumps(row), flush=True)
        time.sleep(2)  # a run the last traffic started is recorded
        runs = api.get("/v1/models/runs", params={"limit": 1000}).json()["runs"][::-1]
    return {"rows": rows, "runs": [compact(r) for r in runs]}


def compact(run: dict[str, Any]) -> dict[str, Any]:
    """What the decision log keeps of a run."""
    d = run.get("detail") or {}
    return {
        "run_id": run["run_id"],
        "trigger": run["trigger"],
        "status": run["status"],
        "promoted": run.get("promoted"),
        "seconds": d.get("seconds"),
        "window_searches": d.get("window_searches"),
        "holdout_searches": d.get("holdout_searches"),
        "accepted_types": d.get("accepted_types"),
        "type_reasons": d.get("type_reasons"),
        "reason": d.get("reason") or run.get("error"),
        "holdout": {
            head: {t: (m.get(t) or {}).get("ips_ndcg@10") for t in QUERY_TYPES}
            for head, m in (d.get("holdout") or {}).items()
        },
    }


REFUSALS = {
    "engaged holdout searches": "too few engaged holdout searches",
    "ips_ndcg@10": "no gain on the holdout",
    "log-loss": "worse click log-loss",
    "of its top 10": "coverage guard",
    "active version changed": "operator switched versions",
}


def decisions(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Refreshes by trigger and outcome; per query type, promotions and refusals by reason."""
    per_type: dict[str, Counter[str]] = {t: Counter() for t in QUERY_TYPES}
    for r in runs:
        for t, why in (r["type_reasons"] or {}).items():
            if why.startswith("better on the holdout"):
                per_type[t]["promoted" if r["promoted"] else "accepted, not promoted"] += 1
            else:
                per_type[t][next((v for k, v in REFUSALS.items() if k in why), why)] += 1
    return {
        "refreshes": dict(Counter(f"{r['trigger']}: {r['status']}" for r in runs)),
        "promotions": sum(bool(r["promoted"]) for r in runs),
        "skipped": dict(Counter(r["reason"] for r in runs if r["status"] == "skipped")),
        "per_type": {t: dict(c) for t, c in per_type.items()},
    }


def main() -> None:
    args = parser().parse_args()
    require_shared()
    catalog = CATALOG
    if args.products:
        args.data_dir = args.data_dir or DEFAULT_DATA_DIR / f"memory-fashion-{args.products}"
        catalog = ensure_data(args.data_dir, "fashion", args.products)
    else:
        args.data_dir = args.data_dir or DEFAULT_DATA_DIR
        ensure_index(args.data_dir)
    photos = shopper_photos()
    results = {name: run_mix(name, catalog, args, photos) for name in args.mixes.split(",")}
    for name, res in results.items():
        print(
            f"\n{name} mix {MIXES[name]}: NDCG@10 against true grades "
            f"({args.eval_sessions} evaluation shoppers, even mix)"
        )
        print_curve(res["rows"])
        res["decisions"] = decisions(res["runs"])
        print_decisions(res["runs"], res["decisions"])
    targets = check_targets(results, hand_stepped())
    payload = {"args": {k: str(v) for k, v in vars(args).items()}, "mixes": MIXES}
    print(f"wrote {write_json(args.name, {**payload, 'results': results, 'targets': targets})}")
    print(f"wrote {plot(results, Path(__file__).with_name(f'{args.name}.png'))}")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument(
        "--products", type=int, default=0, help="a seeded subset of the catalog (0: all of it)"
    )
    ap.add_argument("--sessions", type=int, default=20_000, help="training sessions per mix")
    ap.add_argument("--every", type=int, default=2_500, help="sessions between two samples")
    ap.add_argument("--eval-sessions", type=int, default=450)
    ap.add_argument("--mixes", default=",".join(MIXES))
    ap.add_argument("--learner", choices=("in-process", "process"), default="in-process")
    ap.add_argument(
        "--seed", type=int, default=0, help="of the training shoppers (the evaluation's is fixed)"
    )
    ap.add_argument(
        "--name", default="learning_curve", help="results/NAME.json and NAME.png in benchmarks/"
    )
    return ap


def print_curve(rows: list[dict[str, Any]]) -> None:
    print(f"{'sessions':>8} {'minutes':>7} " + " ".join(f"{k:>9}" for k in (*QUERY_TYPES, "all")))
    for r in rows:
        cells = " ".join(f"{r['ndcg@10'][k]:9.4f}" for k in (*QUERY_TYPES, "all"))
        print(f"{r['sessions']:8d} {r['minutes']:7.1f} {cells}  {r['active']}")


def print_decisions(runs: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    print("refreshes:", summary["refreshes"], "| promotions:", summary["promotions"])
    for reason, n in summary["skipped"].items():
        print(f"  skipped x{n}: {reason}")
    for t, counts in summary["per_type"].items():
        print(f"  {t:9}", ", ".join(f"{k} x{n}" for k, n in sorted(counts.items())) or "-")
    for r in runs:
        held = {t: h["engaged"] for t, h in (r["holdout_searches"] or {}).items()}
        print(
            f"  run {r['run_id']:3d} {r['trigger']:8} {r['status']:9} {r['seconds'] or 0:6.1f} s"
            f"  window {r['window_searches'] or 0:6d}  engaged holdout {held}"
            f"  {'promoted ' + ','.join(r['accepted_types']) if r['promoted'] else ''}"
        )


def hand_stepped() -> float | None:
    """Mean NDCG@10 over the three query types that benchmarks.ablations' learner reached after
    its last step, from its committed results (None if absent)."""
    path = RESULTS / "ablations.json"
    if not path.exists():
        return None
    rows = [r for r in json.loads(path.read_text())["rows"] if r["variant"] == "learner"]
    last = max(rows, key=lambda r: r["sessions"])
    return float(np.mean([last["ndcg@10"][t] for t in QUERY_TYPES]))


def check_targets(results: dict[str, dict[str, Any]], reference: float | None) -> dict[str, bool]:
    targets: dict[str, bool] = {}
    for name, res in results.items():
        first, last = res["rows"][0], res["rows"][-1]
        for t in QUERY_TYPES:
            gain = last["ndcg@10"][t] / first["ndcg@10"][t]
            targets[f"{name}: {t} >= {TARGET_GAIN}x its start ({gain:.3f}x)"] = gain >= TARGET_GAIN
        drops = promoted_drops(res["rows"])
        for d in drops:
            print(f"  promoted drop ({name}):", d)
        targets[f"{name}: no promoted drop (> {DROP_TOLERANCE} in any type)"] = not drops
        if reference is not None:
            mean = last["ndcg@10"]["all"]
            targets[f"{name}: mean of types {mean:.4f} >= hand-stepped {reference:.4f}"] = (
                mean >= reference
            )
    print_targets(targets)
    return targets


def promoted_drops(rows: list[dict[str, Any]]) -> list[str]:
    """Samples after which a newly active version serves some query type worse, against the
    true grades, than the sample before it."""
    return [
        f"{b['sessions']} sessions ({b['active']}): {t} {b['ndcg@10'][t] - a['ndcg@10'][t]:+.4f}"
        for a, b in zip(rows, rows[1:], strict=False)
        if b["active"] != a["active"]
        for t in QUERY_TYPES
        if b["ndcg@10"][t] - a["ndcg@10"][t] < -DROP_TOLERANCE
    ]


def plot(results: dict[str, dict[str, Any]], path: Path) -> Path:
    curves = {
        f"{name} mix": [(r["sessions"], r["ndcg@10"]) for r in res["rows"]]
        for name, res in results.items()
    }
    return plot_curves(curves, (*QUERY_TYPES, "all"), "sessions of steady traffic", path)


if __name__ == "__main__":
    main()
