"""Shared benchmark plumbing: the full catalog's data dir, synthetic graded queries, metrics.

The queries are SYNTHETIC: generated from catalog attributes (articleType, baseColour, gender,
usage). No real shopper queries exist for this catalog; grades come from attribute agreement.
"""

from __future__ import annotations

import csv
import json
import platform
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from service.simulator import PHRASINGS as SIMULATOR_PHRASINGS
from service.simulator import Phrasings
from service.simulator import Relevance as Grader

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
CATALOG = SHARED / "fashion" / "catalog.csv"
PHOTOS = SHARED / "fashion224"
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_DATA_DIR = ROOT / ".bench-data"


def require_shared() -> None:
    if not CATALOG.exists():
        sys.exit(f"benchmarks need the shared catalog at {CATALOG} (see ../shared/data/README.md)")


def ensure_index(data_dir: Path) -> None:
    """Ingest the full 44k catalog into data_dir unless an index is already there."""
    from service.cli import ingest
    from storage.artifacts import current

    if current(data_dir / "index") is None:
        ingest(CATALOG, data_dir=data_dir)


def load_rows() -> list[dict[str, str]]:
    with CATALOG.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# ---- synthetic queries ---------------------------------------------------------------------
TEXT_TEMPLATES = (
    "{colour} {type} for {gender}",
    "{gender}'s {colour} {type}",
    "{type} in {colour}",
    "{colour} {type}",
    "{usage} {type} for {gender}",
    "{type} for {gender}",
    "{gender} {colour} {usage} {type}",
)
GENDER_WORDS = {"Men": "men", "Women": "women", "Boys": "boys", "Girls": "girls"}
COMPOSED_TEMPLATES = ("in {colour}", "like this but {colour}", "{colour}", "same style, {colour}")


# "dev": the phrasings every result in the README was tuned and measured on; "heldout": the
# simulator's held-out wordings, which neither these generators nor simulated shoppers use
# otherwise, to check that nothing was tuned to the dev wordings.
PHRASINGS = {
    "dev": Phrasings(TEXT_TEMPLATES, COMPOSED_TEMPLATES, GENDER_WORDS),
    "heldout": SIMULATOR_PHRASINGS["heldout"],
}


@dataclass
class GradedQuery:
    kind: str  # text | image | composed
    text: str | None
    photo: Path | None
    target: dict[str, str]  # attributes the shopper asked for
    source_id: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


def _type_word(t: str) -> str:
    return t.lower()


def make_queries(
    rows: list[dict[str, str]], n_per_kind: int, seed: int = 7, phrasings: str = "dev"
) -> list[GradedQuery]:
    rng = random.Random(seed)
    words = PHRASINGS[phrasings]
    queries: list[GradedQuery] = []
    # text: attribute combinations that exist in the catalog (at least 5 products)
    combos: dict[tuple[str, str, str, str], int] = {}
    for r in rows:
        key = (r["articleType"], r["baseColour"], r["gender"], r["usage"])
        combos[key] = combos.get(key, 0) + 1
    pool = [k for k, c in combos.items() if c >= 5 and k[2] in GENDER_WORDS and all(k)]
    for _ in range(n_per_kind):
        t, c, g, u = rng.choice(pool)
        tpl = rng.choice(words.text)
        target = {"articleType": t}
        if "{colour}" in tpl:
            target["baseColour"] = c
        if "{gender}" in tpl:
            target["gender"] = g
        if "{usage}" in tpl:
            target["usage"] = u
        text = tpl.format(
            colour=c.lower(), type=_type_word(t), gender=words.gender[g], usage=u.lower()
        )
        queries.append(GradedQuery("text", text, None, target))
    # image / composed: a 224 px shopper photo of a catalog product
    by_id = {r["id"]: r for r in rows}
    with (PHOTOS / "catalog_224.csv").open(newline="", encoding="utf-8") as f:
        photo_ids = [r["id"] for r in csv.DictReader(f) if r["id"] in by_id]
    rng.shuffle(photo_ids)
    colours_for: dict[tuple[str, str], dict[str, int]] = {}
    for r in rows:
        d = colours_for.setdefault((r["articleType"], r["gender"]), {})
        d[r["baseColour"]] = d.get(r["baseColour"], 0) + 1
    img_ids, comp_ids = photo_ids[:n_per_kind], photo_ids[n_per_kind:]
    for pid in img_ids:
        r = by_id[pid]
        target = {
            "articleType": r["articleType"],
            "baseColour": r["baseColour"],
            "gender": r["gender"],
        }
        queries.append(GradedQuery("image", None, PHOTOS / "images" / f"{pid}.jpg", target, pid))
    made = 0
    for pid in comp_ids:
        if made >= n_per_kind:
            break
        r = by_id[pid]
        options = [
            c
            for c, n in colours_for[(r["articleType"], r["gender"])].items()
            if n >= 5 and c and c != r["baseColour"]
        ]
        if not options:
            continue
        colour = rng.choice(sorted(options))
        text = rng.choice(words.composed).format(colour=colour.lower())
        target = {"articleType": r["articleType"], "baseColour": colour, "gender": r["gender"]}
        queries.append(GradedQuery("composed", text, PHOTOS / "images" / f"{pid}.jpg", target, pid))
        made += 1
    return queries


def metrics(ranked_ids: list[str], grades: np.ndarray, grader: Grader) -> dict[str, float]:
    """NDCG@10, Recall@50 (capped), MRR (first grade-3 item), P/R/F1 of grade-3 items in top 10."""
    g = np.array([grades[grader.pos[p]] for p in ranked_ids], dtype=np.float64)
    gains = 2.0**g - 1
    disc = 1 / np.log2(np.arange(2, 12))
    ideal = np.sort(grades)[::-1][:10].astype(np.float64)
    idcg = float(((2.0**ideal - 1) * disc[: len(ideal)]).sum())
    dcg = float((gains[:10] * disc[: len(gains[:10])]).sum())
    n_rel = int((grades == 3).sum())
    rel = g == 3
    first = np.flatnonzero(rel)
    p10 = float(rel[:10].sum() / 10)
    r10 = float(rel[:10].sum() / max(1, min(n_rel, 10)))
    return {
        "ndcg@10": dcg / idcg if idcg > 0 else 0.0,
        "recall@50": float(rel[:50].sum() / max(1, min(n_rel, 50))),
        "mrr": float(1 / (first[0] + 1)) if len(first) else 0.0,
        "p@10": p10,
        "r@10": r10,
        "f1@10": 2 * p10 * r10 / (p10 + r10) if p10 + r10 else 0.0,
    }


def print_targets(targets: dict[str, bool]) -> None:
    for name, ok in targets.items():
        print(f"  {'PASS' if ok else 'FAIL'} {name}")


def write_json(name: str, payload: dict[str, object]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"machine": {"python": platform.python_version(), "cpus": 2}, **payload}
    path.write_text(json.dumps(payload, indent=2))
    return path
