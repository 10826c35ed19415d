"""What the two next-token-prediction stages share (pre-training and SFT).

Batches are {"inputs": [B, T], "targets": [B, T]} with IGNORE_INDEX where a position is not
trained (SFT prompts and padding). The count unit is a trained target token; the loss is the
summed cross-entropy. Validation batches also carry each target's byte length, so an
evaluation reports bits per byte (val/bpb) besides val/loss and val/ppl; with a mixture of
corpora they carry each row's corpus [B] too, for val/loss/<name> and val/bpb/<name>.
"""

from __future__ import annotations

import torch

from tokenizer.token_bytes import token_byte_lengths
from training.losses import (
    IGNORE_INDEX,
    count_targets,
    language_model_loss,
    language_model_scalars,
)
from training.stage import Batch, RunContext, Stage


class LanguageModelStage(Stage):
    """A stage whose loss is next-token cross-entropy; subclasses supply the batches."""

    corpus_tags: tuple[str, ...] = ()  # a mixture's corpora, in the order of batch["corpus"]

    def __init__(self, context: RunContext):
        self.context = context
        self.token_bytes = torch.from_numpy(token_byte_lengths(context.tokenizer))  # [V]

    def with_target_bytes(self, batch: Batch) -> Batch:
        """The batch plus "target_bytes" [B, T] (0 at ignored positions), for validation."""
        targets = batch["targets"]
        trained = targets != IGNORE_INDEX
        target_bytes = self.token_bytes[targets.masked_fill(~trained, 0)] * trained  # [B, T]
        return {**batch, "target_bytes": target_bytes}

    def count(self, batch: Batch) -> int:
        return count_targets(batch["targets"])

    def tokens(self, batch: Batch) -> int:
        return batch["inputs"].numel()

    def loss(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, dict]:
        logits = model(batch["inputs"])  # [B, T, V_pad]
        return language_model_loss(
            logits, batch["targets"], batch.get("target_bytes"), batch.get("corpus"),
            self.corpus_tags,
        )  # fmt: skip

    def evaluation_scalars(self, means: dict[str, float]) -> dict[str, float]:
        return language_model_scalars(means)
