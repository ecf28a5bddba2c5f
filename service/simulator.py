"""A shopper simulator that drives the real HTTP API: search, look, click, buy, send feedback.

Each simulated shopper wants something described by catalog attributes (an article type, maybe a
colour, gender and usage), asks for it in words, with a photo, or with a photo plus a colour, and
reacts to what the service shows:

- position-based examination: position k is looked at with probability k^-eta;
- an examined product is clicked with a probability that grows with its true relevance grade;
- a clicked product goes to the cart, and a cart to a purchase, more often the more relevant it is.

True grades (0..3) come from attribute agreement (`Relevance`), never from the service. The
simulator reports the NDCG@10 of what the service showed against those grades, which is what the
learning loop should raise. Queries are synthetic; phrasings vary but are not real shoppers'.
"""

from __future__ import annotations

import base64
import contextlib
import random
import threading
from collections import defaultdict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx
import numpy as np
from tqdm import tqdm

from service.catalog import read_catalog
from storage.products import ProductRecord

GRADED_ATTRS = ("articleType", "baseColour", "gender", "usage")
GENDER_WORDS = {"Men": "men", "Women": "women", "Boys": "boys", "Girls": "girls"}
TEXT_TEMPLATES = (
    "{colour} {type}",
    "{colour} {type} for {gender}",
    "{gender} {type} in {colour}",
    "{usage} {type}",
    "{type} for {gender}",
    "looking for a {colour} {type}",
    "{gender}'s {usage} {type}",
    "{type} {colour} {gender}",
    "{type}",
)
COMPOSED_TEMPLATES = ("in {colour}", "this but {colour}", "{colour} version", "same in {colour}")


@dataclass(frozen=True)
class Phrasings:
    """How shoppers word a need: text templates ({colour}, {type}, {gender}, {usage}), composed
    templates ({colour}) and the word for each catalog gender."""

    text: tuple[str, ...]
    composed: tuple[str, ...]
    gender: Mapping[str, str]


# "train": what simulated shoppers say by default, so what the learner is trained on. "heldout":
# wordings no simulated shopper and no benchmark query generator uses (other gender words too),
# for evaluating whether what was learned carries over to shoppers who phrase things their own way.
PHRASINGS = {
    "train": Phrasings(TEXT_TEMPLATES, COMPOSED_TEMPLATES, GENDER_WORDS),
    "heldout": Phrasings(
        (
            "show me {colour} {type}",
            "{gender} {type} {colour} colour",
            "buy {colour} {type} for {gender} online",
            "{usage} wear: {type} for {gender}",
            "a {colour} {type} please",
            "need {type} for {gender} in {colour}",
            "{colour} coloured {usage} {type}",
        ),
        (
            "can I get this in {colour}?",
            "{colour} one like this",
            "similar but {colour} colour",
            "want it in {colour}",
            "this style in {colour} please",
        ),
        {"Men": "mens", "Women": "ladies", "Boys": "boys", "Girls": "girls"},
    ),
}

CLICK = (0.03, 0.15, 0.45, 0.85)  # P(click | examined, grade)
CART = (0.0, 0.05, 0.2, 0.45)  # P(add_to_cart | click, grade)
BUY = (0.0, 0.1, 0.3, 0.6)  # P(purchase | add_to_cart, grade)
DEFAULT_MIX = {"text": 0.5, "image": 0.25, "composed": 0.25}


class Relevance:
    """Grade 0..3 of every catalog product for a shopper's target attributes.

    3: the articleType and every other requested attribute match; 1: only the articleType
    matches; 2: in between; 0: another articleType. Unisex counts as matching Men and Women.
    """

    def __init__(self, rows: Sequence[dict[str, str]]) -> None:
        self.ids = np.array([r["id"] for r in rows])
        self.cols = {a: np.array([r.get(a, "") for r in rows], dtype=object) for a in GRADED_ATTRS}
        self.pos = {pid: i for i, pid in enumerate(self.ids.tolist())}

    def grades(self, target: dict[str, str]) -> np.ndarray:
        type_ok = self.cols["articleType"] == target["articleType"]
        others = [a for a in target if a != "articleType"]
        if not others:
            return type_ok.astype(np.int8) * 3
        hits = np.zeros(len(self.ids), np.float32)
        for a in others:
            ok = self.cols[a] == target[a]
            if a == "gender" and target[a] in ("Men", "Women"):
                ok |= self.cols[a] == "Unisex"
            hits += ok
        frac = hits / len(others)
        g = np.where(frac >= 1, 3, np.where(frac > 0, 2, 1))
        return (g * type_ok).astype(np.int8)


def ndcg_at_10(shown_grades: Sequence[int], all_grades: np.ndarray) -> float:
    disc = 1 / np.log2(np.arange(2, 12))
    g = np.asarray(shown_grades[:10], dtype=np.float64)
    ideal = np.sort(all_grades)[::-1][:10].astype(np.float64)
    idcg = float(((2.0**ideal - 1) * disc[: len(ideal)]).sum())
    return float(((2.0**g - 1) * disc[: len(g)]).sum()) / idcg if idcg > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Intent:
    kind: str  # text | image | composed
    target: dict[str, str]
    text: str | None
    photo: Path | None


@dataclass
class SimulationReport:
    sessions: int = 0
    failed: int = 0
    events: int = 0
    by_kind: dict[str, dict[str, float]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "sessions": self.sessions,
            "failed": self.failed,
            "events": self.events,
            "by_kind": self.by_kind,
        }


def read_photos(csv_path: Path) -> dict[str, Path]:
    """Product id -> a shopper's photo of it, from a catalog-format CSV (image paths relative to
    its folder), such as fashion224/catalog_224.csv: 224 px photos of catalog products."""
    return {r.id: r.image_path for r in read_catalog(csv_path) if r.image_path}


class Shoppers:
    """Draws intents from the catalog: what exists is what shoppers ask for.

    A photo shopper photographs a catalog product: with `photos` (id -> photo), one of those
    photos, which is not the catalog's own image; without, the product's catalog image itself,
    an exact duplicate the service finds by near-duplicate lookup."""

    def __init__(
        self,
        rows: Sequence[ProductRecord],
        mix: dict[str, float],
        photos: Mapping[str, Path] | None = None,
        phrasings: Phrasings = PHRASINGS["train"],
    ) -> None:
        self.rows = [r for r in rows if r.attributes.get("articleType")]
        self.words = phrasings
        if photos is not None:
            self.rows = [replace(r, image_path=photos.get(r.id)) for r in self.rows]
        self.with_photo = [r for r in self.rows if r.image_path and Path(r.image_path).is_file()]
        self.mix = mix
        colours: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for r in self.rows:
            a = r.attributes
            colours[(a["articleType"], a.get("gender", ""))][a.get("baseColour", "")] += 1
        self.colours = colours

    def draw(self, rng: random.Random) -> Intent:
        kind = rng.choices(list(self.mix), weights=list(self.mix.values()))[0]
        if kind != "text" and not self.with_photo:
            kind = "text"
        if kind == "text":
            return self._text(rng)
        anchor = rng.choice(self.with_photo)
        a = anchor.attributes
        target = {k: a[k] for k in ("articleType", "baseColour", "gender") if a.get(k)}
        if kind == "image":
            return Intent("image", target, None, Path(anchor.image_path))
        options = sorted(
            c
            for c, n in self.colours[(a["articleType"], a.get("gender", ""))].items()
            if n >= 3 and c and c != a.get("baseColour")
        )
        if not options:
            return Intent("image", target, None, Path(anchor.image_path))
        colour = rng.choice(options)
        text = rng.choice(self.words.composed).format(colour=colour.lower())
        return Intent("composed", {**target, "baseColour": colour}, text, Path(anchor.image_path))

    def _text(self, rng: random.Random) -> Intent:
        while True:
            a = rng.choice(self.rows).attributes
            tpl = rng.choice(self.words.text)
            needs = {"colour": "baseColour", "gender": "gender", "usage": "usage"}
            if all(a.get(attr) for word, attr in needs.items() if f"{{{word}}}" in tpl) and (
                "{gender}" not in tpl or a.get("gender") in self.words.gender
            ):
                break
        target = {"articleType": a["articleType"]}
        for word, attr in needs.items():
            if f"{{{word}}}" in tpl:
                target[attr] = a[attr]
        text = tpl.format(
            colour=a.get("baseColour", "").lower(),
            type=a["articleType"].lower(),
            gender=self.words.gender.get(a.get("gender", ""), ""),
            usage=a.get("usage", "").lower(),
        )
        return Intent("text", target, text, None)


class Simulator:
    def __init__(
        self,
        url: str,
        catalog: Path,
        *,
        eta: float = 1.0,
        k: int = 20,
        mix: dict[str, float] | None = None,
        photos: Mapping[str, Path] | None = None,
        timeout: float = 60.0,
        send_feedback: bool = True,
        phrasings: Phrasings = PHRASINGS["train"],
    ) -> None:
        self.url = url.rstrip("/")
        rows = read_catalog(catalog)
        self.relevance = Relevance([{"id": r.id, **r.attributes} for r in rows])
        self.shoppers = Shoppers(rows, mix or DEFAULT_MIX, photos, phrasings)
        self.eta, self.k, self.timeout = eta, k, timeout
        self.send_feedback = send_feedback
        self._local = threading.local()
        self._clients: list[httpx.Client] = []  # one per worker thread, closed after a run
        self._clients_lock = threading.Lock()

    def _client(self) -> httpx.Client:
        if not hasattr(self._local, "client"):
            self._local.client = httpx.Client(base_url=self.url, timeout=self.timeout)
            with self._clients_lock:
                self._clients.append(self._local.client)
        return self._local.client  # type: ignore[no-any-return]

    def close(self) -> None:
        with self._clients_lock:
            for c in self._clients:
                c.close()
            self._clients.clear()
        self._local = threading.local()

    def session(self, seed: int) -> tuple[str, float, int] | None:
        """One shopper: returns (kind, NDCG@10 of what was shown, events), None on failure.
        With `send_feedback` off the shopper only looks (evaluation traffic)."""
        rng = random.Random(seed)
        intent = self.shoppers.draw(rng)
        body: dict[str, object] = {"k": self.k, "user_id": f"sim-{seed % 5000}"}
        if intent.text:
            body["query"] = intent.text
        if intent.photo:
            body["image"] = base64.b64encode(intent.photo.read_bytes()).decode()
        client = self._client()
        r = client.post("/v1/search", json=body)
        if r.status_code != 200:
            return None
        res = r.json()
        grades = self.relevance.grades(intent.target)
        shown = [int(grades[self.relevance.pos[h["product_id"]]]) for h in res["results"]]
        events = []
        for pos, (hit, g) in enumerate(zip(res["results"], shown, strict=True), start=1):
            if rng.random() >= pos**-self.eta or rng.random() >= CLICK[g]:
                continue
            types = ["click"]
            if rng.random() < CART[g]:
                types.append("add_to_cart")
                if rng.random() < BUY[g]:
                    types.append("purchase")
            for t in types:
                events.append(
                    {
                        "event_id": f"{res['search_id']}-{pos}-{t}",
                        "search_id": res["search_id"],
                        "product_id": hit["product_id"],
                        "type": t,
                    }
                )
        if events and self.send_feedback:
            fb = client.post("/v1/feedback", json={"events": events})
            if fb.status_code != 202:
                return None
        return intent.kind, ndcg_at_10(shown, grades), len(events)

    def run(
        self, sessions: int, *, seed: int = 0, concurrency: int = 4, progress: bool = True
    ) -> SimulationReport:
        report = SimulationReport()
        ndcg: dict[str, list[float]] = defaultdict(list)
        clicked: dict[str, int] = defaultdict(int)
        with (
            contextlib.closing(self),
            ThreadPoolExecutor(concurrency) as pool,
            tqdm(total=sessions, desc="simulate", unit="session", disable=not progress) as bar,
        ):
            seeds = range(seed * 10_000_000, seed * 10_000_000 + sessions)
            for out in pool.map(self.session, seeds):
                bar.update()
                report.sessions += 1
                if out is None:
                    report.failed += 1
                    continue
                kind, score, n_events = out
                ndcg[kind].append(score)
                clicked[kind] += n_events > 0
                report.events += n_events
        report.by_kind = {
            kind: {
                "sessions": len(v),
                "ndcg@10": float(np.mean(v)),
                "sessions_with_events": clicked[kind] / len(v),
            }
            for kind, v in sorted(ndcg.items())
        }
        return report
