"""A learnable retrieval task for fine-tuning tests: made-up people and their facts.

A query names a person ("Who was Kamira Tosolvin?"); its document states that person's facts
in a long template shared by every document (birthplace, year, trade, travels), so the one thing
that tells documents apart is the name, a few tokens among ~50. A lexical matcher solves it
(held-out people have new names made of the same syllables); a model that pools everything into
one point does not. Held-out queries name people never seen in training.
"""

from __future__ import annotations

import random

import numpy as np

from diffembed.formats.pairs import Pair, write_pairs

__all__ = ["PeopleTask", "top1", "write_pairs"]

SYLLABLES = [
    "ka", "to", "mi", "ra", "ne", "sol", "vin", "dar", "lo", "pe",
    "gu", "zan", "tri", "mo", "bel", "fa", "ki", "nor", "ul", "xe",
]  # fmt: skip
CITIES = ["Kelmar", "Ostrava", "Bruges", "Lima", "Tarsus", "Oslo", "Quito", "Perth", "Dakar"]
TRADES = ["baker", "sailor", "painter", "judge", "miner", "teacher", "weaver", "doctor", "poet"]
INSTRUCTION = "Given a name, retrieve the biography of the person"
TEXT_CORPUS = [
    f"{' '.join(SYLLABLES)} {' '.join(CITIES)} {' '.join(TRADES)}",
    "was born in and worked as a for years before moving to where they died at the age of",
    "Who was Tell me about biography of the person life and work",
] * 20


class PeopleTask:
    """``n_train`` training pairs and ``n_test`` held-out (query, document) pairs."""

    def __init__(self, seed: int = 0, n_train: int = 300, n_test: int = 100) -> None:
        self.rng = random.Random(seed)
        names: set[str] = set()
        while len(names) < n_train + n_test:
            first = "".join(self.rng.choice(SYLLABLES) for _ in range(2)).title()
            last = "".join(self.rng.choice(SYLLABLES) for _ in range(3)).title()
            names.add(f"{first} {last}")
        ordered = sorted(names)
        self.rng.shuffle(ordered)
        self.train_names, self.test_names = ordered[:n_train], ordered[n_train:]

    def document(self, name: str) -> str:
        r = self.rng
        return (
            f"{name} was born in {r.choice(CITIES)} in {r.randint(1700, 1990)} and worked as a "
            f"{r.choice(TRADES)} for {r.randint(2, 40)} years before moving to "
            f"{r.choice(CITIES)}, where {name.split()[0]} lived as a {r.choice(TRADES)} and "
            f"died at the age of {r.randint(40, 99)}."
        )

    def query(self, name: str) -> str:
        return self.rng.choice([f"Who was {name}?", f"Tell me about {name}", f"{name} biography"])

    def pairs(self) -> list[Pair]:
        out = []
        for name in self.train_names:
            other = self.rng.choice([n for n in self.train_names if n != name])
            out.append(
                Pair(
                    query=self.query(name),
                    positive=self.document(name),
                    negatives=(self.document(other),),
                    instruction=INSTRUCTION,
                    task="people",
                )
            )
        return out

    def held_out(self) -> tuple[list[str], list[str]]:
        """Queries and documents of unseen people; query i is relevant to document i only."""
        return [self.query(n) for n in self.test_names], [self.document(n) for n in self.test_names]


def top1(queries: np.ndarray, docs: np.ndarray) -> float:
    """Fraction of queries whose own document (same row) scores highest."""
    return float(((queries @ docs.T).argmax(axis=1) == np.arange(len(queries))).mean())
