"""Synthetic known-item queries: a shopper who knows the product types a few of its title words.

The query is the brand (the title's first word) plus one or two of the title's most distinctive
other words (rarest in the catalog), sometimes reordered and sometimes with a typo in one word.
The product itself is grade 3; another product is graded by how many of the query's intended
words its own title has: all of them 2, at least half 1. Words are compared lower-cased and
whole, never through the service's tokenizer, so the grades do not favour its lexical channel.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_WORD = re.compile(r"[a-z0-9]+")
# words that name who it is for or are too common to be a shopper's pick
_PLAIN = {"men", "mens", "women", "womens", "boys", "girls", "kids", "unisex", "and", "with", "the"}


@dataclass(frozen=True)
class KnownItemQuery:
    text: str
    product_id: str
    words: tuple[str, ...]  # the intended words, before any typo


def words_of(title: str) -> list[str]:
    return _WORD.findall(title.lower())


def make_known_item_queries(
    ids: Sequence[str], titles: Sequence[str], n: int, seed: int = 11
) -> list[KnownItemQuery]:
    """`n` queries for products drawn at random among those with at least two other words."""
    rng = random.Random(seed)
    df = document_frequencies(titles)
    order = list(range(len(ids)))
    rng.shuffle(order)
    out: list[KnownItemQuery] = []
    for i in order:
        q = known_item_query(ids[i], titles[i], df, rng)
        if q is not None:
            out.append(q)
        if len(out) >= n:
            break
    return out


def document_frequencies(titles: Sequence[str]) -> Counter[str]:
    return Counter(w for t in titles for w in set(words_of(t)))


def known_item_query(
    pid: str, title: str, df: Counter[str], rng: random.Random
) -> KnownItemQuery | None:
    """A shopper's query for this product, or None when its title has too few words to pick."""
    words = words_of(title)
    if not words:
        return None
    brand, rest = words[0], [w for w in dict.fromkeys(words[1:]) if _pickable(w)]
    if len(rest) < 2:
        return None
    rest.sort(key=lambda w: df[w])  # rarest first
    intended = [brand, *rng.sample(rest[:3], rng.choice((1, 2)))]
    typed = list(intended)
    if rng.random() < 0.3:
        rng.shuffle(typed)
    if rng.random() < 0.2:
        j = max(range(len(typed)), key=lambda k: len(typed[k]))
        typed[j] = _typo(typed[j], rng)
    return KnownItemQuery(" ".join(typed), pid, tuple(intended))


def _pickable(word: str) -> bool:
    """A word a shopper would pick: not a who-for word, and not a stray letter (t of t-shirt)
    unless it holds a digit (t20, m8)."""
    return word not in _PLAIN and (len(word) >= 3 or any(c.isdigit() for c in word))


def _typo(word: str, rng: random.Random) -> str:
    """One slip of the finger in a word of five letters or more: two letters swapped, one
    dropped or one doubled."""
    if len(word) < 5:
        return word
    k = rng.randrange(1, len(word) - 1)
    kind = rng.choice(("swap", "drop", "double"))
    if kind == "swap":
        return word[:k] + word[k + 1] + word[k] + word[k + 2 :]
    if kind == "drop":
        return word[:k] + word[k + 1 :]
    return word[:k] + word[k] + word[k:]


class KnownItemGrades:
    """Grades of every product for a known-item query."""

    def __init__(self, ids: Sequence[str], titles: Sequence[str]) -> None:
        self.pos = {pid: i for i, pid in enumerate(ids)}
        self.words = [set(words_of(t)) for t in titles]
        self.index: dict[str, list[int]] = {}
        for i, ws in enumerate(self.words):
            for w in ws:
                self.index.setdefault(w, []).append(i)

    def grades(self, q: KnownItemQuery) -> np.ndarray:
        shared = np.zeros(len(self.words), np.int16)
        for w in set(q.words):
            shared[self.index.get(w, [])] += 1
        need = len(set(q.words))
        g = np.where(shared >= need, 2, np.where(shared >= math.ceil(need / 2), 1, 0))
        g[self.pos[q.product_id]] = 3
        return g.astype(np.int8)
