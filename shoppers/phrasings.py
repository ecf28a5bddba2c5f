"""The one table of how synthetic shoppers and queries word a need."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

GENDER_WORDS = {"Men": "men", "Women": "women", "Boys": "boys", "Girls": "girls"}


@dataclass(frozen=True)
class Phrasings:
    """How shoppers word a need: text templates ({colour}, {type}, {gender}, {usage}), composed
    templates ({colour}) and the word for each catalog gender."""

    text: tuple[str, ...]
    composed: tuple[str, ...]
    gender: Mapping[str, str]


# "train": what simulated shoppers say by default, so what the learner is trained on. "dev": the
# benchmark queries' wordings, which every result in the README was tuned and measured on.
# "heldout": wordings no simulated shopper and no benchmark query uses otherwise (other gender
# words too), to check that what was learned or tuned carries over to other phrasings.
PHRASINGS = {
    "train": Phrasings(
        (
            "{colour} {type}",
            "{colour} {type} for {gender}",
            "{gender} {type} in {colour}",
            "{usage} {type}",
            "{type} for {gender}",
            "looking for a {colour} {type}",
            "{gender}'s {usage} {type}",
            "{type} {colour} {gender}",
            "{type}",
        ),
        ("in {colour}", "this but {colour}", "{colour} version", "same in {colour}"),
        GENDER_WORDS,
    ),
    "dev": Phrasings(
        (
            "{colour} {type} for {gender}",
            "{gender}'s {colour} {type}",
            "{type} in {colour}",
            "{colour} {type}",
            "{usage} {type} for {gender}",
            "{type} for {gender}",
            "{gender} {colour} {usage} {type}",
        ),
        ("in {colour}", "like this but {colour}", "{colour}", "same style, {colour}"),
        GENDER_WORDS,
    ),
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
