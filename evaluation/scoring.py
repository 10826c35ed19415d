"""Batched log-likelihoods: for each (context ids, continuation ids), the continuation's summed
log-probability and whether greedy decoding would have produced it (lm-eval's `is_greedy`).

Two ways through the model, both giving lm-eval's numbers:
- rows: each request is one row, context + continuation without its last token, the last
  `max_length + 1` tokens when too long (lm-eval's left truncation); the rows of many examples
  are right-padded into one forward pass, longest first (an out-of-memory shows at once);
- shared context (our checkpoints): when all choices of an example have the same context ids,
  the context minus its last token is run once into a KV cache, then every choice continues from
  that cache in one row: [last context token, continuation without its last token]. Causal
  attention makes this the same computation as the rows (up to rounding), with the context done
  once instead of once per choice.

Log-probabilities are taken over the model's whole output (a checkpoint's padded vocabulary,
like its exported Llama folder) in float32.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from evaluation.models import PAD, ScoredModel

Pair = tuple[list[int], list[int]]


@dataclass(frozen=True)
class Score:
    loglikelihood: float
    greedy: bool


def score_pairs(
    model: ScoredModel,
    examples: list[list[Pair]],
    batch_size: int,
    on_example_done: Callable[[int], None] = lambda count: None,
) -> list[list[Score]]:
    """Scores per example and request; `on_example_done(n)` as examples finish (progress)."""
    results: list[list[Score | None]] = [[None] * len(pairs) for pairs in examples]
    remaining = [len(pairs) for pairs in examples]

    def done(example: int, request: int, score: Score) -> None:
        results[example][request] = score
        remaining[example] -= 1
        if remaining[example] == 0:
            on_example_done(1)

    shared = [i for i, pairs in enumerate(examples) if _shares_context(model, pairs)]
    shared_set = set(shared)
    rows = [
        (i, j) for i in range(len(examples)) if i not in shared_set for j in range(len(examples[i]))
    ]
    _score_rows(model, examples, rows, batch_size, done)
    _score_shared(model, examples, shared, batch_size, done)
    return results  # type: ignore[return-value]


def _shares_context(model: ScoredModel, pairs: list[Pair]) -> bool:
    if not model.prefix_cache or len(pairs) < 2:
        return False
    context = pairs[0][0]
    longest = max(len(continuation) for _, continuation in pairs)
    fits = len(context) - 1 + longest <= model.max_length
    return fits and all(other == context for other, _ in pairs[1:])


def _score(logits: torch.Tensor, targets: list[int]) -> Score:
    """logits [n, V] predicting targets (n tokens)."""
    log_probs = F.log_softmax(logits.float(), dim=-1)  # [n, V]
    target = torch.tensor(targets, device=logits.device)
    picked = log_probs.gather(-1, target[:, None])[:, 0]  # [n]
    greedy = bool((log_probs.argmax(dim=-1) == target).all())
    return Score(float(picked.sum()), greedy)


def _score_rows(model, examples, rows, batch_size, done) -> None:
    limit = model.max_length
    inputs = {}
    for i, j in rows:
        context, continuation = examples[i][j]
        inputs[i, j] = (context + continuation)[-(limit + 1) :][:-1]
    order = sorted(rows, key=lambda key: (-len(inputs[key]), key))
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        width = len(inputs[batch[0]])
        idx = torch.full((len(batch), width), PAD, dtype=torch.long)
        for row, key in enumerate(batch):
            idx[row, : len(inputs[key])] = torch.tensor(inputs[key])
        logits = model.logits(idx)  # [B, width, V]
        for row, (i, j) in enumerate(batch):
            # a continuation longer than the model's context (lm-eval stops on an assertion):
            # its last max_length tokens, the ones the window predicts
            targets = examples[i][j][1][-limit:]
            end = len(inputs[i, j])
            done(i, j, _score(logits[row, end - len(targets) : end], targets))


def _score_shared(model, examples, shared, batch_size, done) -> None:
    def span(i):  # positions a shared example needs: its context (less one) + longest choice
        return len(examples[i][0][0]) - 1 + max(len(c) for _, c in examples[i])

    def fits(batch: list[int], i: int) -> bool:
        """Another example in the batch: within batch_size rows, and the longest context plus
        the longest choice of the batch within the model's positions."""
        joined = [*batch, i]
        rows = sum(len(examples[k]) for k in joined)
        prefix = max(len(examples[k][0][0]) - 1 for k in joined)
        longest = max(len(c) for k in joined for _, c in examples[k])
        return rows <= batch_size and prefix + longest <= model.max_length

    batch: list[int] = []
    for i in sorted(shared, key=lambda i: (-span(i), i)):
        if batch and not fits(batch, i):
            _score_shared_batch(model, examples, batch, done)
            batch = []
        batch.append(i)
    if batch:
        _score_shared_batch(model, examples, batch, done)


def _score_shared_batch(model, examples, batch, done) -> None:
    contexts = [examples[i][0][0] for i in batch]
    prefix = max(len(context) - 1 for context in contexts)
    cache = None
    if prefix > 0:
        idx = torch.full((len(batch), prefix), PAD, dtype=torch.long)
        for row, context in enumerate(contexts):
            idx[row, : len(context) - 1] = torch.tensor(context[:-1])
        cache = model.prefill(idx)  # [E rows, prefix positions]
    sources, lengths, inputs, keys = [], [], [], []
    for row, i in enumerate(batch):
        context = contexts[row]
        for j, (_, continuation) in enumerate(examples[i]):
            sources.append(row)
            lengths.append(len(context) - 1)
            inputs.append([context[-1]] + continuation[:-1])
            keys.append((i, j))
    width = max(len(tokens) for tokens in inputs)
    idx = torch.full((len(inputs), width), PAD, dtype=torch.long)
    for row, tokens in enumerate(inputs):
        idx[row, : len(tokens)] = torch.tensor(tokens)
    logits = model.continue_from(cache, torch.tensor(sources), lengths, idx)  # [R, width, V]
    for row, (i, j) in enumerate(keys):
        continuation = examples[i][j][1]
        done(i, j, _score(logits[row, : len(continuation)], continuation))
