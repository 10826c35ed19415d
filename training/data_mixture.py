"""Several tokenized corpora in one run, each drawn in proportion to its weight.

    --data_dir=data/fineweb/tokenized:0.8,data/pre_training/tokenized:0.2
    --data_dir=data/pre_training/tokenized          (one corpus: weight 1, as before)

Weights are positive numbers, scaled to sum to 1; a folder named twice, a missing weight among
several corpora, and corpora tokenized with different tokenizers are one-line errors.

Which corpus each training slot (a pre-training window, a packed SFT row) comes from: slot s
takes `pattern[s % PERIOD]`, where `pattern` holds each corpus round(weight x PERIOD) times
(largest remainders, at least once), each slot going to the corpus furthest behind its share.
So any run of consecutive slots, a micro-batch or a step, holds every corpus's share to within
one slot; the choice is a pure function of the slot; and the number of earlier slots of the
same corpus is arithmetic (`rank`): an SFT corpus reads its packed rows in order, each once per
epoch, whatever the other corpora do. A step's slots are numbered from (step, micro_index), so
resume needs no replay and DDP ranks (which own different micro_index values) read different
slots. (Where in its corpus a pre-training window starts is drawn from the run's seed.)

Each corpus is named after its folder ("fineweb" for data/fineweb/tokenized): validation reports
val/loss/<name> and val/bpb/<name> per corpus besides the overall val/loss.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import UserError
from tokenizer.tokenized_data import TokenizedSplit, open_dataset
from training.data_checks import check_split

PERIOD = 1000  # slots per repetition of the pattern: weights resolve to 1/1000
GENERIC_FOLDER_NAMES = ("tokenized", "tokens")


@dataclass(frozen=True)
class CorpusSpec:
    path: str
    weight: float  # scaled: the weights of a mixture sum to 1
    name: str  # for val/loss/<name>


@dataclass
class Corpus:
    spec: CorpusSpec
    splits: dict[str, TokenizedSplit]

    @property
    def name(self) -> str:
        return self.spec.name


def parse_data_dirs(text: str) -> list[CorpusSpec]:
    """`a:0.8,b:0.2` (or one folder `a`) -> corpus specs; UserError for anything else."""
    items = [item.strip() for item in text.split(",")]
    if not all(items):
        raise UserError(f"--data_dir={text!r} has an empty entry; use a:0.8,b:0.2")
    paths, weights = [], []
    for item in items:
        path, colon, weight = item.rpartition(":")
        if not colon:
            if len(items) > 1:
                raise UserError(
                    f"--data_dir: {item} has no weight; give every corpus of a mixture one, "
                    "e.g. --data_dir=a:0.8,b:0.2"
                )
            path, value = item, 1.0
        else:
            try:
                value = float(weight)
            except ValueError:
                value = math.nan
            if not (math.isfinite(value) and value > 0):
                raise UserError(
                    f"--data_dir: the weight {weight!r} of {path} is not a positive number"
                )
        paths.append(path)
        weights.append(value)
    seen: dict[str, str] = {}
    for path in paths:
        real = os.path.realpath(path)
        if real in seen:
            raise UserError(
                f"--data_dir names the same folder twice ({seen[real]} and {path}); give each "
                "corpus once, with its whole weight"
            )
        seen[real] = path
    total = sum(weights)
    names = corpus_names(paths)
    return [CorpusSpec(p, w / total, n) for p, w, n in zip(paths, weights, names)]


def corpus_names(paths: list[str]) -> list[str]:
    """Short, distinct names: the folder's, or its parent's for a folder named `tokenized`."""
    names = []
    for path in paths:
        folder = Path(path)
        name = folder.name
        if name in GENERIC_FOLDER_NAMES and folder.parent.name:
            name = folder.parent.name
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "corpus"
        candidate, number = name, 2
        while candidate in names:
            candidate, number = f"{name}_{number}", number + 1
        names.append(candidate)
    return names


def open_corpora(
    data_dir: str,
    stage: str,
    tokenizer_sha256: str,
    vocab_size: int,
    splits: tuple[str, ...] = ("train", "validation"),
) -> list[Corpus]:
    """Every corpus of --data_dir, its `splits` opened and checked: each made by one and the
    same tokenizer (the run's), holding `stage` data, with the splits the run needs."""
    corpora = []
    for spec in parse_data_dirs(data_dir):
        opened = open_dataset(spec.path, stage)
        for name in splits:
            if name not in opened:
                raise UserError(
                    f"{Path(spec.path) / name} is missing; the run needs the "
                    f"{', '.join(splits)} splits (re-run tokenizer.tokenize_dataset)"
                )
        corpora.append(Corpus(spec, {name: opened[name] for name in splits}))
    first = corpora[0]
    for other in corpora[1:]:
        a, b = (c.splits["train"].meta.get("tokenizer_sha256") for c in (first, other))
        if a != b:
            raise UserError(
                f"{first.spec.path} and {other.spec.path} were tokenized with different "
                f"tokenizers (sha256 {str(a)[:12]}... and {str(b)[:12]}...); tokenize both with "
                "the run's tokenizer.json"
            )
    for corpus in corpora:
        for split in corpus.splits.values():
            check_split(split, tokenizer_sha256, vocab_size)
    return corpora


class Interleave:
    """The corpus of each slot, and how many earlier slots it gave that corpus (see above)."""

    def __init__(self, weights: list[float]):
        self.counts = slot_counts(weights, PERIOD)  # [K]
        used = np.zeros(len(weights))
        pattern = np.empty(PERIOD, np.int64)
        for slot in range(PERIOD):  # each slot to the corpus furthest behind its share
            corpus = int(np.argmax((slot + 1) * self.counts / PERIOD - used))
            pattern[slot], used[corpus] = corpus, used[corpus] + 1
        self.pattern = pattern  # [PERIOD], holding corpus k counts[k] times
        hits = pattern[None, :] == np.arange(len(weights))[:, None]  # [K, PERIOD]
        self.before = np.concatenate(
            [np.zeros((len(weights), 1), np.int64), np.cumsum(hits, axis=1)], axis=1
        )  # [K, PERIOD + 1]: corpus k's slots among the pattern's first i

    def corpus(self, slots: np.ndarray) -> np.ndarray:
        return self.pattern[np.asarray(slots) % PERIOD]

    def rank(self, slots: np.ndarray) -> np.ndarray:
        """For each slot, the earlier slots (from 0) that went to the same corpus."""
        slots = np.asarray(slots, np.int64)
        corpus = self.corpus(slots)
        return (slots // PERIOD) * self.counts[corpus] + self.before[corpus, slots % PERIOD]


def slot_counts(weights: list[float], period: int) -> np.ndarray:
    """Integer slots per corpus summing to `period`, proportional to `weights` (largest
    remainders), each at least 1."""
    exact = np.asarray(weights, np.float64) / sum(weights) * period
    counts = np.maximum(np.floor(exact).astype(np.int64), 1)
    while counts.sum() < period:
        counts[np.argmax(exact - counts)] += 1
    while counts.sum() > period:
        counts[np.argmax(np.where(counts > 1, counts - exact, -np.inf))] -= 1
    return counts
