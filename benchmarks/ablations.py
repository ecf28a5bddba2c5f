"""Ablations: variants of the learner compared at equal data, through the real HTTP API on the
full catalog. It answers "which design choice helps, and how does the learner compare with
LambdaMART", not "how does a service learn under its own schedule" (benchmarks.learning_curve):
every variant gets the same sessions and a refresh by hand after each step, over everything
logged since the previous one.

For each variant a real `fusionrank serve` runs on its own copy of the database (same index):
simulated shoppers (`shoppers`, position-based clicks with eta=1 or --eta, purchases that
depend on relevance) search and send feedback; after each step a refresh is started through
POST /v1/models/train; then a fixed set of evaluation shoppers (the same seeds for every variant,
no feedback sent) measures NDCG@10 of what the service shows against the true grades.

Variants: frozen (no refreshes), learner, learner without class weights, learner without
position-bias correction, learner with inverse propensities clipped at 5 or 100 instead of 20,
learner without the examination loss, and LightGBM LambdaMART trained offline on the frozen
head's logs with the same features (`benchmarks.lambdamart`). Also reports each refresh's wall
time and peak RSS of the server.
Queries and shoppers are synthetic.
Usage: python -m benchmarks.ablations [--data-dir DIR] [--steps 0,1000,5000,20000]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.common import (
    CATALOG,
    DEFAULT_DATA_DIR,
    PHOTOS,
    REFRESH_ON_REQUEST,
    ensure_index,
    fresh_database,
    plot_curves,
    print_targets,
    require_shared,
    write_json,
)
from benchmarks.lambdamart import LambdaMart
from benchmarks.server import rss_mb
from benchmarks.variant_server import VARIANTS, start
from service.config import Settings
from service.encoding.embedder import make_embedder
from shoppers.intents import read_photos
from shoppers.phrasings import PHRASINGS
from shoppers.simulator import Simulator

EVAL_SEED = 990
DROP_TOLERANCE = 0.01


def refresh(url: str, timeout: float = 1800) -> dict[str, Any]:
    with httpx.Client(base_url=url, timeout=60) as c:
        run_id = c.post("/v1/models/train").json()["run_id"]
        deadline = time.monotonic() + timeout
        while True:
            run = c.get(f"/v1/models/runs/{run_id}").json()
            if run["status"] not in ("queued", "running"):
                return run  # type: ignore[no-any-return]
            if time.monotonic() > deadline:
                raise SystemExit(f"refresh {run_id} did not finish in {timeout} s")
            time.sleep(1)


def evaluate(
    url: str, sessions: int, photos: Mapping[str, Path] | None, phrasings: str = "train"
) -> dict[str, float]:
    sim = Simulator(
        url, CATALOG, photos=photos, send_feedback=False, phrasings=PHRASINGS[phrasings]
    )
    report = sim.run(sessions, seed=EVAL_SEED, concurrency=2, progress=False)
    out = {k: v["ndcg@10"] for k, v in report.by_kind.items()}
    out["all"] = float(np.mean(list(out.values())))
    return out


def run_variant(
    name: str,
    data_dir: Path,
    steps: list[int],
    eval_sessions: int,
    photos: Mapping[str, Path] | None,
    heldout: bool = False,
    eta: float = 1.0,
    keep: Path | None = None,
) -> list[dict[str, Any]]:
    """`heldout`: the evaluation shoppers also ask in wordings the training shoppers never use
    (row key "ndcg@10_heldout"); LambdaMART is evaluated offline on the training wordings only.
    `keep`: a directory the variant's database is moved to at the end, so that a promotion can be
    replayed (its heads stay in `data_dir`)."""
    tmp = Path(tempfile.mkdtemp(prefix=f"fr-curve-{name}-"))
    fresh_database(data_dir, tmp / "fusionrank.db")
    env = {"FUSIONRANK_DATABASE_URL": f"sqlite:///{tmp / 'fusionrank.db'}", **REFRESH_ON_REQUEST}
    proc, url = start(data_dir, name, env)
    rows: list[dict[str, Any]] = []
    ltr = None
    if name == "lambdamart":
        ltr = LambdaMart(data_dir, make_embedder(Settings(data_dir=data_dir)))
    try:
        done = 0
        trainer = Simulator(url, CATALOG, photos=photos, eta=eta)
        for step in steps:
            row: dict[str, Any] = {"variant": name, "sessions": step}
            trains = step > done and name != "frozen"
            if trains:
                trainer.run(step - done, seed=1000 + step, concurrency=4, progress=True)
                done = step
            if trains and ltr is not None:
                row |= lambdamart_row(ltr, tmp / "fusionrank.db", eval_sessions, photos)
            else:
                if trains:
                    row |= refresh_row(url, proc.pid)
                row |= served_ndcg(url, eval_sessions, photos, heldout)
            rows.append(row)
            print(name, row, flush=True)
            if name == "frozen":  # nothing changes without refreshes
                rows += [{**row, "sessions": s} for s in steps[1:]]
                break
    finally:
        proc.terminate()
        proc.wait(30)
        _keep_database(name, tmp, keep)
    return rows


def lambdamart_row(
    ltr: LambdaMart, database: Path, eval_sessions: int, photos: Mapping[str, Path] | None
) -> dict[str, Any]:
    """LambdaMART trained offline on everything logged so far, and evaluated in process."""
    time.sleep(2)  # the impression writer flushes every 200 ms
    started = time.perf_counter()
    row: dict[str, Any] = dict(ltr.train(database))
    row["train_seconds"] = round(time.perf_counter() - started, 2)
    row["ndcg@10"] = ltr.evaluate(CATALOG, eval_sessions, EVAL_SEED, photos)
    return row


def served_ndcg(
    url: str, eval_sessions: int, photos: Mapping[str, Path] | None, heldout: bool
) -> dict[str, Any]:
    """NDCG@10 of what the server shows the evaluation shoppers (also in held-out wordings)."""
    row = {"ndcg@10": evaluate(url, eval_sessions, photos)}
    if heldout:
        row["ndcg@10_heldout"] = evaluate(url, eval_sessions, photos, "heldout")
    return row


def refresh_row(url: str, pid: int) -> dict[str, Any]:
    """One refresh through the API, and what the row reports of it."""
    rss_before = rss_mb(pid)
    run = refresh(url)
    detail = run.get("detail") or {}
    return {
        "refresh_status": run["status"],
        "promoted": run.get("promoted"),
        "refresh_seconds": detail.get("seconds"),
        "window_searches": detail.get("window_searches"),
        "server_rss_mb": max(rss_before, rss_mb(pid)),
        "reason": detail.get("reason"),
        # what the gate saw, per query type: a promoted drop can be looked into
        "type_reasons": detail.get("type_reasons"),
        # what share of each type's served top 10 the holdout had shown
        "coverage": detail.get("coverage"),
        # early stopping's view: a best epoch of 0 keeps the parent's weights
        "train": {
            k: (detail.get("train") or {}).get(k)
            for k in ("train_searches", "val_searches", "best_epoch", "val_ips_ndcg@10")
        },
        "holdout_ips_ndcg@10": {
            head: {t: m.get("ips_ndcg@10") for t, m in metrics.items()}
            for head, metrics in (detail.get("holdout") or {}).items()
        },
    }


def _keep_database(name: str, tmp: Path, keep: Path | None) -> None:
    """Move the variant's database to `keep` as NAME.db (if given); remove its directory."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        for stale in keep.glob(f"{name}.db*"):  # an earlier run's WAL would be replayed
            stale.unlink()
        for part in tmp.glob("fusionrank.db*"):  # with any WAL the server left behind
            shutil.move(part, keep / part.name.replace("fusionrank", name))
    shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    args = parser().parse_args()
    require_shared()
    ensure_index(args.data_dir)
    steps = [int(s) for s in args.steps.split(",")]
    photos = read_photos(PHOTOS / "catalog_224.csv") if args.photos == "fashion224" else None
    rows = [
        r
        for name in args.variants.split(",")
        for r in run_variant(
            name,
            args.data_dir,
            steps,
            args.eval_sessions,
            photos,
            args.heldout_phrasings,
            args.eta,
            args.keep_databases,
        )
    ]
    kinds = ("text", "image", "composed", "all")
    if args.heldout_phrasings:
        print(f"\nNDCG@10, evaluation shoppers with held-out wordings ({args.eval_sessions})")
        print_table([r for r in rows if "ndcg@10_heldout" in r], kinds, "ndcg@10_heldout")
    print(f"\nNDCG@10 against true grades ({args.eval_sessions} evaluation shoppers)")
    print_table(rows, kinds, "ndcg@10", refresh=True)
    targets = check_targets(rows, steps[-1])
    payload = {"photos": args.photos, "eta": args.eta, "data_dir": str(args.data_dir), "rows": rows}
    print(f"wrote {write_json(args.name, {**payload, 'targets': targets})}")
    png = Path(__file__).with_name(f"{args.name}.png")
    print(f"wrote {plot(with_heldout_curves(rows), kinds, png)}")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    ap.add_argument("--steps", default="0,1000,5000,20000", help="cumulative training sessions")
    ap.add_argument("--eval-sessions", type=int, default=400)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument(
        "--photos",
        default="fashion224",
        choices=("fashion224", "catalog"),
        help="what photo shoppers send: 224 px photos of catalog products (fashion224), or the "
        "catalog's own thumbnails (exact duplicates of indexed images)",
    )
    ap.add_argument(
        "--eta",
        type=float,
        default=1.0,
        help="position bias of the training shoppers: position k is examined w.p. k^-eta",
    )
    ap.add_argument(
        "--heldout-phrasings",
        action="store_true",
        help="also evaluate with shoppers who word their queries in ways no training shopper "
        "does (shoppers.phrasings.PHRASINGS)",
    )
    ap.add_argument(
        "--keep-databases",
        type=Path,
        metavar="DIR",
        help="keep each variant's SQLite database as DIR/VARIANT.db (its heads stay in "
        "--data-dir), to replay a promotion",
    )
    ap.add_argument(
        "--name", default="ablations", help="results/NAME.json and NAME.png in benchmarks/"
    )
    return ap


def check_targets(rows: list[dict[str, Any]], last: int) -> dict[str, bool]:
    """The learning curve's targets after `last` sessions, printed; promoted drops listed."""
    frozen = {r["sessions"]: r["ndcg@10"]["all"] for r in rows if r["variant"] == "frozen"}
    learner = next((r for r in rows if r["variant"] == "learner" and r["sessions"] == last), None)
    ltr = next((r for r in rows if r["variant"] == "lambdamart" and r["sessions"] == last), None)
    targets = {}
    if learner and last in frozen:
        targets[f"learner >= 1.25x frozen NDCG@10 after {last} sessions"] = (
            learner["ndcg@10"]["all"] >= 1.25 * frozen[last]
        )
    if learner and ltr:
        targets[f"learner on par with LambdaMART (within 0.005) after {last} sessions"] = (
            learner["ndcg@10"]["all"] >= ltr["ndcg@10"]["all"] - 0.005
        )
    drops = promoted_drops(rows)
    targets[
        f"never a promoted drop (no query type down by more than {DROP_TOLERANCE} true NDCG@10)"
    ] = not drops
    for d in drops:
        print("  promoted drop:", d)
    print_targets(targets)
    return targets


def promoted_drops(rows: list[dict[str, Any]]) -> list[str]:
    """Each promoted refresh whose head serves some query type worse, against the true grades,
    than the step before it did. The evaluation repeats the same shoppers, so an unchanged head
    scores within about 0.002 of itself (exploration swaps are random)."""
    drops: list[str] = []
    previous: dict[str, dict[str, Any]] = {}
    for r in rows:
        before = previous.get(r["variant"])
        previous[r["variant"]] = r
        if before is None or not r.get("promoted"):
            continue
        for kind in ("text", "image", "composed"):
            delta = r["ndcg@10"][kind] - before["ndcg@10"][kind]
            if delta < -DROP_TOLERANCE:
                drops.append(f"{r['variant']} at {r['sessions']} sessions: {kind} {delta:+.4f}")
    return drops


def print_table(
    rows: list[dict[str, Any]], kinds: tuple[str, ...], key: str, *, refresh: bool = False
) -> None:
    """One line per row: its `key` NDCG@10 per query type, and its refresh if `refresh`."""
    head = f"{'variant':18} {'sessions':>8} " + " ".join(f"{k:>9}" for k in kinds)
    print(head + ("  refresh" if refresh else ""))
    for r in rows:
        cells = " ".join(f"{r[key].get(k, float('nan')):9.4f}" for k in kinds)
        line = f"{r['variant']:18} {r['sessions']:8d} {cells}"
        if refresh:
            line += "  " + (
                f"{r['refresh_status']}, promoted={r['promoted']}, {r['refresh_seconds']} s, "
                f"{r['server_rss_mb']:.0f} MB"
                if "refresh_status" in r
                else ""
            )
        print(line)


def with_heldout_curves(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`rows` plus one curve per variant for its held-out-wording evaluation, to plot."""
    extra = [
        {**r, "variant": f"{r['variant']} (held-out wordings)", "ndcg@10": r["ndcg@10_heldout"]}
        for r in rows
        if "ndcg@10_heldout" in r
    ]
    return rows + extra


def plot(rows: list[dict[str, Any]], kinds: tuple[str, ...], path: Path) -> Path:
    curves: dict[str, list[tuple[int, dict[str, float]]]] = {}
    for r in rows:
        curves.setdefault(r["variant"], []).append((r["sessions"], r["ndcg@10"]))
    return plot_curves(curves, kinds, "simulated training sessions", path)


if __name__ == "__main__":
    main()
