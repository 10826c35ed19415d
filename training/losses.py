"""Language-model losses, computed in float32 over the padded vocabulary.

`language_model_loss` is the loss of the pre-training and SFT stages; on validation batches
that carry each target's byte length it also returns what bits per byte needs, and
`language_model_scalars` turns an evaluation's means into val/loss, val/ppl and val/bpb.

Targets equal to IGNORE_INDEX (-100) are not trained on (SFT prompt tokens, padding). Losses are
SUMS, not means: the engine divides by the number of targets in the whole optimizer step, so
a step's gradient does not depend on how its tokens were split into micro-batches.
Padded vocabulary ids (>= vocab_size) are never targets; their logits simply learn to be small.

Speed: in eager mode `logits.float()` writes an fp32 copy of the [B, T, V] logits, log-softmax
writes another, and the backward pass two more (for GPT-2's vocabulary at 32 x 1024 tokens,
6.6 GB each). Inside `compiled_losses()` (the engine enters it with --compile on a GPU) the
same functions run through torch.compile: one fused kernel reads the bf16 logits and computes
the fp32 log-sum-exp in registers, and the backward writes the bf16 gradient directly. Same
numbers, a fraction of the memory traffic.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def _cross_entropy_sum(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(
        logits.float().flatten(0, 1),  # [B*T, V_pad], fp32 so log-softmax does not lose digits
        targets.flatten(),  # [B*T]
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )


def _token_log_probs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    mask = targets != IGNORE_INDEX
    safe_targets = targets.masked_fill(~mask, 0)  # any valid id; masked out below
    log_probs = torch.log_softmax(logits.float(), dim=-1)  # [B, T, V_pad]
    picked = log_probs.gather(-1, safe_targets.unsqueeze(-1)).squeeze(-1)  # [B, T]
    return picked * mask


_compile_losses = False  # set by compiled_losses()
_compiled: dict[Callable, Callable] = {}


@contextlib.contextmanager
def compiled_losses(enabled: bool = True) -> Iterator[None]:
    """Within this block, losses of CUDA tensors run as torch.compile'd kernels (see above)."""
    global _compile_losses
    previous, _compile_losses = _compile_losses, enabled
    try:
        yield
    finally:
        _compile_losses = previous


def _maybe_compiled(function: Callable, logits: torch.Tensor) -> Callable:
    if not (_compile_losses and logits.is_cuda):
        return function
    if function not in _compiled:
        # dynamic=None: static shapes first; a second shape (SFT's last validation batch...)
        # recompiles once with dynamic sizes instead of once per shape.
        _compiled[function] = torch.compile(function)
    return _compiled[function]


def cross_entropy_sum(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy. logits [B, T, V_pad] (any dtype), targets [B, T]."""
    return _maybe_compiled(_cross_entropy_sum, logits)(logits, targets)


def count_targets(targets: torch.Tensor) -> int:
    """Number of trained positions (targets that are not IGNORE_INDEX)."""
    return int((targets != IGNORE_INDEX).sum())


def token_log_probs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) per position [B, T] in fp32; 0 where the target is IGNORE_INDEX."""
    return _maybe_compiled(_token_log_probs, logits)(logits, targets)


def language_model_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    target_bytes: torch.Tensor | None = None,
    corpus: torch.Tensor | None = None,
    corpus_names: tuple[str, ...] = (),
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(summed cross-entropy, metrics) for logits [B, T, V_pad] and targets [B, T].

    With target_bytes [B, T] (the UTF-8 bytes each target token stands for: 0 for special
    tokens and ignored positions, see tokenizer/token_bytes.py) the metrics hold the sums bits
    per byte is made of: the loss on tokens that stand for text, and their bytes. Special
    tokens are left out of both, as nanochat's bpb does. With corpus [B] (which of
    `corpus_names` each row comes from; validation of a mixture) they also hold those sums and
    the trained-target count per corpus, as "corpus/<name>/<sum>".
    """
    if target_bytes is None:
        return cross_entropy_sum(logits, targets), {}
    nats = -token_log_probs(logits, targets)  # [B, T], 0 where ignored
    is_text = target_bytes > 0
    metrics = {"text_nats": (nats * is_text).sum(), "text_bytes": target_bytes.sum().float()}
    if corpus is not None:
        trained = (targets != IGNORE_INDEX).float()  # [B, T]
        for index, name in enumerate(corpus_names):
            rows = (corpus == index).float()[:, None]  # [B, 1]
            metrics[f"corpus/{name}/nats"] = (nats * rows).sum()
            metrics[f"corpus/{name}/count"] = (trained * rows).sum()
            metrics[f"corpus/{name}/text_nats"] = (nats * is_text * rows).sum()
            metrics[f"corpus/{name}/text_bytes"] = (target_bytes * rows).sum().float()
    return nats.sum(), metrics


def language_model_scalars(means: dict[str, float]) -> dict[str, float]:
    """An evaluation's scalars: loss, ppl = exp(loss), bpb (when the batches carried bytes),
    loss/<name> and bpb/<name> per corpus of a mixture, and any other metric as it is."""
    scalars = dict(means)
    text_nats, text_bytes = scalars.pop("text_nats", None), scalars.pop("text_bytes", None)
    scalars["ppl"] = math.exp(min(scalars["loss"], 50.0))
    if text_bytes:
        scalars["bpb"] = text_nats / (text_bytes * math.log(2))
    names = [key.split("/")[1] for key in scalars if key.startswith("corpus/")]
    for name in dict.fromkeys(names):  # means per count unit: their ratios are per corpus
        sums = {part: scalars.pop(f"corpus/{name}/{part}") for part in
                ("nats", "count", "text_nats", "text_bytes")}  # fmt: skip
        scalars[f"loss/{name}"] = sums["nats"] / max(sums["count"], 1e-30)
        if sums["text_bytes"]:
            scalars[f"bpb/{name}"] = sums["text_nats"] / (sums["text_bytes"] * math.log(2))
    return scalars
