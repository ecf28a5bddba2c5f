"""Graded synthetic queries for offline benchmarks: text, photo and photo-plus-colour needs.

Needs are attribute combinations that exist in the catalog; image needs are shopper photos of
catalog products (not the catalog's own images). No real shopper queries exist for the catalog.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from shoppers.phrasings import PHRASINGS, Phrasings

MIN_COMBO = 5  # products an attribute combination needs to be asked for


@dataclass
class GradedQuery:
    kind: str  # text | image | composed
    text: str | None
    photo: Path | None
    target: dict[str, str]  # attributes the shopper asked for
    source_id: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


def make_queries(
    rows: list[dict[str, str]],
    photos: Mapping[str, Path],
    n_per_kind: int,
    seed: int = 7,
    phrasings: str = "dev",
) -> list[GradedQuery]:
    """`n_per_kind` text, image and (at most) composed queries; `photos` maps a product id to a
    shopper's photo of it. The same arguments give the same queries."""
    rng = random.Random(seed)
    words = PHRASINGS[phrasings]
    by_id = {r["id"]: r for r in rows}
    photo_ids = [pid for pid in photos if pid in by_id]
    queries = _text_queries(rows, n_per_kind, words, rng)
    rng.shuffle(photo_ids)
    img_ids, comp_ids = photo_ids[:n_per_kind], photo_ids[n_per_kind:]
    for pid in img_ids:
        r = by_id[pid]
        target = {k: r[k] for k in ("articleType", "baseColour", "gender")}
        queries.append(GradedQuery("image", None, photos[pid], target, pid))
    anchors = [(by_id[pid], photos[pid]) for pid in comp_ids]
    return queries + _composed_queries(rows, anchors, n_per_kind, words, rng)


def _text_queries(
    rows: list[dict[str, str]], n: int, words: Phrasings, rng: random.Random
) -> list[GradedQuery]:
    """Needs drawn from the attribute combinations that at least MIN_COMBO products have."""
    combos: dict[tuple[str, str, str, str], int] = {}
    for r in rows:
        key = (r["articleType"], r["baseColour"], r["gender"], r["usage"])
        combos[key] = combos.get(key, 0) + 1
    pool = [k for k, c in combos.items() if c >= MIN_COMBO and k[2] in words.gender and all(k)]
    queries: list[GradedQuery] = []
    for _ in range(n):
        t, c, g, u = rng.choice(pool)
        tpl = rng.choice(words.text)
        target = {"articleType": t}
        if "{colour}" in tpl:
            target["baseColour"] = c
        if "{gender}" in tpl:
            target["gender"] = g
        if "{usage}" in tpl:
            target["usage"] = u
        text = tpl.format(colour=c.lower(), type=t.lower(), gender=words.gender[g], usage=u.lower())
        queries.append(GradedQuery("text", text, None, target))
    return queries


def _composed_queries(
    rows: list[dict[str, str]],
    anchors: list[tuple[dict[str, str], Path]],
    n: int,
    words: Phrasings,
    rng: random.Random,
) -> list[GradedQuery]:
    """Up to `n` needs: an anchor's photo plus another colour that at least MIN_COMBO products of
    its type and gender have; anchors with no such colour are skipped."""
    colours_for: dict[tuple[str, str], dict[str, int]] = {}
    for r in rows:
        d = colours_for.setdefault((r["articleType"], r["gender"]), {})
        d[r["baseColour"]] = d.get(r["baseColour"], 0) + 1
    queries: list[GradedQuery] = []
    for r, photo in anchors:
        if len(queries) >= n:
            break
        options = [
            c
            for c, n in colours_for[(r["articleType"], r["gender"])].items()
            if n >= MIN_COMBO and c and c != r["baseColour"]
        ]
        if not options:
            continue
        colour = rng.choice(sorted(options))
        text = rng.choice(words.composed).format(colour=colour.lower())
        target = {"articleType": r["articleType"], "baseColour": colour, "gender": r["gender"]}
        queries.append(GradedQuery("composed", text, photo, target, r["id"]))
    return queries
