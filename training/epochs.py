"""How many times a run reads each of its corpora: printed at the start, logged as train/epoch.

    epochs of corpus k after `step` steps = step x units_per_step x weight_k / units_k

in the unit the stage counts (pre-training: tokens; SFT: packed rows; DPO: pairs). Above
MANY_EPOCHS (model/plan.py, which reports the same for a tokenized folder) the start-of-run
report warns: repeated data is worth about as much as new data up to ~4 epochs and quickly
less after (Muennighoff et al. 2023, "Scaling Data-Constrained Language Models").
"""

from __future__ import annotations

from dataclasses import dataclass

from model.plan import MANY_EPOCHS


@dataclass
class EpochCounter:
    names: list[str]  # one per corpus: its folder, for the report
    weights: list[float]  # sum to 1
    sizes: list[int]  # units in each corpus's train split (one epoch)
    units_per_step: int  # units one optimizer step reads (all corpora together)
    unit: str  # "tokens", "packed rows", "pairs"
    tags: list[str] | None = None  # TensorBoard names of a mixture's corpora

    def epochs(self, step: int) -> list[float]:
        return [
            step * self.units_per_step * weight / max(size, 1)
            for weight, size in zip(self.weights, self.sizes)
        ]

    def scalars(self, step: int) -> dict[str, float]:
        """train/epoch (the most-read corpus's epochs) and, for a mixture, train/epoch/<name>."""
        epochs = self.epochs(step)
        values = {"train/epoch": max(epochs)}
        if len(epochs) > 1:
            values |= {f"train/epoch/{tag}": value for tag, value in zip(self.tags, epochs)}
        return values

    def report(self, max_steps: int) -> list[str]:
        """The start-of-run lines: what the run reads of each corpus, and a warning per corpus
        read more than MANY_EPOCHS times."""
        total = max_steps * self.units_per_step
        lines = [f"data: {max_steps:,} steps x {self.units_per_step:,} {self.unit} = {total:,}"]
        epochs = self.epochs(max_steps)
        for name, weight, size, value in zip(self.names, self.weights, self.sizes, epochs):
            share = f"weight {weight:.2f}, " if len(self.names) > 1 else ""
            lines.append(f"  {name}: {share}{size:,} {self.unit} -> read {value:.2f} times")
        for name, value in zip(self.names, epochs):
            if value > MANY_EPOCHS:
                lines.append(
                    f"warning: the run reads {name} {value:.1f} times (more than "
                    f"{MANY_EPOCHS:g} epochs, where repeated data stops being worth new data); "
                    "add data (a larger download, or a mixture: --data_dir=a:0.8,b:0.2) or "
                    "train fewer steps"
                )
        return lines
