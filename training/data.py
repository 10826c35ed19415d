"""A run's tokenized data: open and check it, weighted mixtures of corpora, epochs read.

A mixture (--data_dir=a:0.8,b:0.2, pre-training and SFT) gives training slot s (a window, a
packed row) to corpus `pattern[s % PERIOD]`, the pattern holding each corpus in proportion to
its weight and spread evenly: every step holds each share to within a slot, a slot's corpus is
a pure function of s (exact resume), and an SFT corpus reads its rows in order (`rank`).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.errors import UserError
from model.plan import MANY_EPOCHS
from tokenizer.tokenized_data import TokenizedSplit, open_dataset

PERIOD = 1000  # slots per repetition of the pattern: weights resolve to 1/1000


@dataclass
class Corpus:
    path: str
    weight: float  # the weights of a mixture sum to 1
    name: str
    splits: dict[str, TokenizedSplit] = field(default_factory=dict)  # opened by open_corpora


def parse_data_dirs(text: str) -> list[Corpus]:
    """`a:0.8,b:0.2` (or one folder `a`) -> corpora; UserError for anything else."""
    items = [item.strip() for item in text.split(",")]
    if not all(items):
        raise UserError(f"--data_dir={text!r} has an empty entry; use a:0.8,b:0.2")
    paths, weights = [], []
    for item in items:
        path, colon, weight = item.rpartition(":")
        if not colon and len(items) > 1:
            raise UserError(
                f"--data_dir: {item} has no weight; give every corpus of a mixture "
                "one, e.g. --data_dir=a:0.8,b:0.2"
            )
        try:
            value = float(weight) if colon else 1.0
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise UserError(f"--data_dir: the weight {weight!r} of {path} is not a positive number")
        paths.append(path if colon else item)
        weights.append(value)
    seen: dict[str, str] = {}
    for path in paths:
        if (real := os.path.realpath(path)) in seen:
            raise UserError(
                f"--data_dir names the same folder twice ({seen[real]} and {path}); "
                "give each corpus once, with its whole weight"
            )
        seen[real] = path
    names = corpus_names(paths)
    return [Corpus(p, w / sum(weights), n) for p, w, n in zip(paths, weights, names)]


def corpus_names(paths: list[str]) -> list[str]:
    """Short, distinct names: the folder's, or its parent's for a folder named `tokenized`."""
    names = []
    for path in paths:
        folder = Path(path)
        name = folder.parent.name if folder.name in ("tokenized", "tokens") else folder.name
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name or folder.name) or "corpus"
        candidate, number = name, 2
        while candidate in names:
            candidate, number = f"{name}_{number}", number + 1
        names.append(candidate)
    return names


def open_corpora(context, stage: str, splits: tuple[str, ...]) -> list[Corpus]:
    """Every corpus of --data_dir with its `splits` opened and checked: `stage` data, made by
    the run's tokenizer, its vocabulary within the model's (every token id, past pre-training)."""
    tokenizer_sha256, vocab_size = context.tokenizer_sha256, context.model_config.vocab_size
    corpora = parse_data_dirs(context.config.data_dir)
    for corpus in corpora:
        opened = open_dataset(corpus.path, stage)
        for name in splits:
            if name not in opened:
                raise UserError(
                    f"{Path(corpus.path) / name} is missing; the run needs the "
                    f"{', '.join(splits)} splits (re-run tokenizer.tokenize_dataset)"
                )
        corpus.splits = {name: opened[name] for name in splits}
    for split in (split for corpus in corpora for split in corpus.splits.values()):
        data_sha = split.meta.get("tokenizer_sha256")
        if data_sha != tokenizer_sha256:
            raise UserError(
                f"{split.directory} was tokenized with a different tokenizer (sha256 "
                f"{str(data_sha)[:12]}..., the run's is {tokenizer_sha256[:12]}...); re-tokenize "
                "with this --tokenizer_path or point --tokenizer_path at the one the data used"
            )
        if split.meta["vocab_size"] > vocab_size:
            raise UserError(
                f"{split.directory} has vocabulary size {split.meta['vocab_size']}, larger "
                f"than the model's {vocab_size}; re-tokenize with the run's tokenizer"
            )
        if stage != "pre_training":
            split.check_token_ids(vocab_size)
    return corpora


class Interleave:
    """The corpus of each slot, and how many earlier slots went to that corpus (see above)."""

    def __init__(self, weights: list[float]):
        self.counts = slot_counts(weights, PERIOD)  # [K]
        used = np.zeros(len(weights))
        self.pattern = np.empty(PERIOD, np.int64)  # holds corpus k counts[k] times
        for slot in range(PERIOD):
            corpus = int(np.argmax((slot + 1) * self.counts / PERIOD - used))
            self.pattern[slot], used[corpus] = corpus, used[corpus] + 1
        hits = self.pattern[None, :] == np.arange(len(weights))[:, None]  # [K, PERIOD]
        self.before = np.concatenate(
            [np.zeros((len(weights), 1), np.int64), np.cumsum(hits, axis=1)], axis=1
        )
        # [K, PERIOD + 1]: corpus k's slots among the pattern's first i

    def corpus(self, slots: np.ndarray) -> np.ndarray:
        return self.pattern[np.asarray(slots) % PERIOD]

    def rank(self, slots: np.ndarray) -> np.ndarray:
        """For each slot, the earlier slots (from 0) that went to the same corpus."""
        slots = np.asarray(slots, np.int64)
        corpus = self.corpus(slots)
        return (slots // PERIOD) * self.counts[corpus] + self.before[corpus, slots % PERIOD]


def slot_counts(weights: list[float], period: int) -> np.ndarray:
    """Whole slots per corpus summing to `period`, by weight (largest remainders), each >= 1."""
    exact = np.asarray(weights, np.float64) / sum(weights) * period
    counts = np.maximum(np.floor(exact).astype(np.int64), 1)
    while counts.sum() < period:
        counts[np.argmax(exact - counts)] += 1
    while counts.sum() > period:
        counts[np.argmax(np.where(counts > 1, counts - exact, -np.inf))] -= 1
    return counts


@dataclass
class EpochCounter:
    """Epochs of corpus k after `step` steps = step x units_per_step x weight_k / size_k, in the
    stage's unit (tokens, packed rows, pairs): printed at the start, logged as train/epoch."""

    corpora: list[Corpus]
    sizes: list[int]  # units in each corpus's train split (one epoch)
    units_per_step: int  # units one optimizer step reads (all corpora together)
    unit: str

    def epochs(self, step: int) -> list[float]:
        return [
            step * self.units_per_step * corpus.weight / max(size, 1)
            for corpus, size in zip(self.corpora, self.sizes)
        ]

    def scalars(self, step: int) -> dict[str, float]:
        """train/epoch (the most-read corpus's) and, for a mixture, train/epoch/<name>."""
        epochs = self.epochs(step)
        values = {"train/epoch": max(epochs)}
        if len(epochs) > 1:
            values |= {f"train/epoch/{c.name}": e for c, e in zip(self.corpora, epochs)}
        return values

    def report(self, max_steps: int) -> str:
        """What the run reads of each corpus, warning above MANY_EPOCHS (repeated data is worth
        about as much as new data up to ~4 epochs, Muennighoff et al. 2023)."""
        total = max_steps * self.units_per_step
        lines = [f"data: {max_steps:,} steps x {self.units_per_step:,} {self.unit} = {total:,}"]
        epochs = self.epochs(max_steps)
        for corpus, size, value in zip(self.corpora, self.sizes, epochs):
            share = f"weight {corpus.weight:.2f}, " if len(self.corpora) > 1 else ""
            lines.append(f"  {corpus.path}: {share}{size:,} {self.unit} -> read {value:.2f} times")
            if value > MANY_EPOCHS:
                lines.append(
                    f"warning: the run reads {corpus.path} {value:.1f} times (more than "
                    f"{MANY_EPOCHS:g} epochs, where repeated data stops being worth new "
                    "data); add data (a larger download, or a mixture: --data_dir=a:0.8,"
                    "b:0.2) or train fewer steps"
                )
        return "\n".join(lines)
