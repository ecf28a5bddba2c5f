"""How titles and queries become lexical terms: what shoppers type survives.

A sentence encoder smooths away "m8", "t20", "3/8" and "65 in."; the lexical channel must not.
So the terms keep part and model numbers whole ("xr-500") and also as their parts ("xr", "500")
and run together ("xr500"), keep fractions and decimals ("3/8", "2.5"), join a number to the unit
after it under one spelling ("65 in.", "65-inch" and '65"' are all "65in"), fold case and accents
("Café" is "cafe"), and stem plain words with Snowball ("shoes" is "shoe"). The same function
reads the catalog and the query, so whatever a title says a query can say the same way.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import Stemmer

# compounds of letters and digits joined by - . / (part numbers, fractions, decimals, t-shirt)
_RAW = re.compile(r"[a-z0-9]+(?:[-./][a-z0-9]+)*")
_ALNUM_RUNS = re.compile(r"[a-z]+|[0-9]+")
_LETTERS = re.compile(r"[a-z]+")
_NUMBER = re.compile(r"[0-9]+(?:[./][0-9]+)?")
_NUMBER_UNIT = re.compile(r"([0-9]+(?:[./][0-9]+)?)([a-z]+)")
# inch and foot marks after a number: 65" and 6' are units, not quotes
_MARKS = re.compile(r"(?<=[0-9])\s*(?:\"|''|”|″)")
_FEET = re.compile(r"(?<=[0-9])\s*(?:'|’|′)")
_APOSTROPHE = re.compile(r"(?<=[a-z])['’](?=[a-z])")  # women's -> womens

UNITS = {
    "in": "in", "inch": "in", "inches": "in",
    "ft": "ft", "foot": "ft", "feet": "ft",
    "mm": "mm", "cm": "cm", "m": "m", "meter": "m", "meters": "m", "metre": "m", "metres": "m",
    "km": "km",
    "g": "g", "gram": "g", "grams": "g", "kg": "kg", "kilo": "kg", "kilos": "kg",
    "lb": "lb", "lbs": "lb", "pound": "lb", "pounds": "lb", "oz": "oz", "ounce": "oz",
    "ounces": "oz",
    "ml": "ml", "l": "l", "liter": "l", "liters": "l", "litre": "l", "litres": "l",
    "v": "v", "volt": "v", "volts": "v", "w": "w", "watt": "w", "watts": "w", "kw": "kw",
    "a": "a", "amp": "a", "amps": "a", "mah": "mah",
    "hz": "hz", "khz": "khz", "mhz": "mhz", "ghz": "ghz",
    "mb": "mb", "gb": "gb", "tb": "tb",
    "pc": "pc", "pcs": "pc", "piece": "pc", "pieces": "pc", "pk": "pk", "pack": "pk",
}  # fmt: skip


@lru_cache(maxsize=1)
def _stemmer() -> Stemmer.Stemmer:
    return Stemmer.Stemmer("english")


def fold(text: str) -> str:
    """Lower case without accents, inch and foot marks spelled as units."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).casefold()
    return _APOSTROPHE.sub("", _FEET.sub(" ft ", _MARKS.sub(" in ", text)))


def _word(token: str) -> str:
    """A plain word stemmed, a unit in its one spelling, anything with digits as it is."""
    if token in UNITS:
        return UNITS[token]
    return _stemmer().stemWord(token) if token.isalpha() else token


def terms(text: str) -> list[str]:
    """The lexical terms of a title or a query, in order, repeats kept (they count in BM25)."""
    out: list[str] = []
    pieces: list[str] = []  # the text's atoms in order: numbers whole, letters and digits apart
    for token in _RAW.findall(fold(text)):
        parts = [token] if _NUMBER.fullmatch(token) else re.split(r"[-./]", token)
        if len(parts) > 1:  # xr-500: also xr, 500 and xr500; t-shirts: t-shirt, t, shirt, tshirt
            out.append(re.sub(r"[a-z]{2,}", lambda m: _word(m.group()), token))
            out += [_word(p) for p in parts]
            out.append(_word("".join(parts)))
        else:
            out.append(_word(token))
        for part in parts:
            runs = [part] if _NUMBER.fullmatch(part) else _ALNUM_RUNS.findall(part)
            if len(runs) > 1:  # t20, 12v: also t and 20, 12 and v
                out += [_word(r) for r in runs]
            pieces += runs
    for number, unit in zip(pieces, pieces[1:], strict=False):  # 65 in., 65-inch, 12volt
        if unit in UNITS and _NUMBER.fullmatch(number):
            joined = number + UNITS[unit]
            if joined not in out:
                out.append(joined)
    return out


def words(text: str) -> list[str]:
    """A text's words of letters as typed, folded but not stemmed, once each: what a misspelt
    query word is compared with (a stem of a typo is no longer one edit from the right stem:
    prnited -> prnite, printed -> print)."""
    return list(dict.fromkeys(_LETTERS.findall(fold(text))))


def query_terms(text: str) -> list[str]:
    """A query's distinct terms: saying a word twice does not make it count twice."""
    return list(dict.fromkeys(terms(text)))
