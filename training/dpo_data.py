"""DPO batches: chosen and rejected replies of B pairs as one batch of 2B padded rows.

Row i < B is pair i's prompt + chosen reply, row B + i the same prompt + rejected reply, so one
forward pass scores both (TRL's "concatenated forward"). Rows are padded on the right with
`<|pad|>` to the longest in the batch (at most block_size); causal attention means padding
after a sequence never changes its logits. Targets are -100 on prompt positions and padding, so
summing target log-probs gives the log-probability of the reply alone (content + `<|end|>`).

Guards applied when a split is opened (tokenize_dataset already drops most of these and
counts them; a run may use a shorter block than the data was tokenized for):
- a prompt of block_size tokens or more leaves no room for a reply: the pair is skipped;
- a prompt + reply longer than block_size + 1 tokens: the reply's tail is cut (counted);
- chosen identical to rejected (before or after that cut): nothing to learn, skipped.
Every skip is counted in `stats` and printed by the stage; a split with no usable pair left is
a UserError.

Which pairs a micro-batch holds is a pure function of (seed, global micro-batch index): each
epoch visits every pair once in an order seeded by (seed, epoch).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from common.errors import UserError
from tokenizer.encoding import PAD_ID
from tokenizer.tokenized_data import TokenizedSplit
from training.losses import IGNORE_INDEX


@dataclass
class PreferencePairs:
    """The usable pairs of one dpo split, with reply lengths cut to the block.

    `pair_index[k]` is the k-th usable pair's row in pair_offsets.bin (the key into
    precomputed reference log-probs).
    """

    split: TokenizedSplit
    block_size: int
    pair_index: np.ndarray  # [K] int64
    prompt_start: np.ndarray  # [K]
    prompt_length: np.ndarray  # [K]
    chosen_start: np.ndarray  # [K]
    chosen_length: np.ndarray  # [K] after the cut to block_size + 1
    rejected_start: np.ndarray  # [K]
    rejected_length: np.ndarray  # [K]
    stats: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.pair_index)


def _same_tokens(tokens: np.ndarray, a: int, b: int, length: int) -> bool:
    return bool(np.array_equal(tokens[a : a + length], tokens[b : b + length]))


def load_pairs(split: TokenizedSplit, block_size: int) -> PreferencePairs:
    """Validate a split's pair offsets and keep the pairs a block_size model can train on."""
    if split.pair_offsets is None:
        raise UserError(
            f"{split.directory} holds {split.stage} data, not dpo data (no preference pairs); "
            "make it with `python3 -m tokenizer.tokenize_dataset --stage dpo`"
        )
    rows = np.asarray(split.pair_offsets, np.int64).reshape(-1, 4)  # [N, 4]
    p, c, r, e = rows.T
    ordered = (p <= c) & (c <= r) & (r <= e) & (e <= len(split.tokens))
    if not ordered.all():
        bad = int(np.flatnonzero(~ordered)[0])
        raise UserError(
            f"{split.directory}/pair_offsets.bin row {bad} = {rows[bad].tolist()} is not "
            "[prompt_start <= chosen_start <= rejected_start <= end]; re-tokenize this dataset"
        )
    prompt_length, chosen_length, rejected_length = c - p, r - c, e - r
    room = block_size + 1 - prompt_length  # reply tokens that fit after the prompt
    prompt_too_long = prompt_length >= block_size
    empty = (chosen_length == 0) | (rejected_length == 0) | (prompt_length == 0)
    cut_chosen = np.minimum(chosen_length, np.maximum(room, 0))
    cut_rejected = np.minimum(rejected_length, np.maximum(room, 0))
    truncated = ~prompt_too_long & ((cut_chosen < chosen_length) | (cut_rejected < rejected_length))

    identical = np.zeros(len(rows), bool)
    candidates = np.flatnonzero(~prompt_too_long & ~empty & (cut_chosen == cut_rejected))
    for k in candidates.tolist():
        identical[k] = _same_tokens(split.tokens, int(c[k]), int(r[k]), int(cut_chosen[k]))

    keep = ~prompt_too_long & ~empty & ~identical
    stats = {
        "pairs": int(len(rows)),
        "skipped_prompt_fills_context": int(prompt_too_long.sum()),
        "skipped_empty": int((empty & ~prompt_too_long).sum()),
        "skipped_identical": int(identical.sum()),
        "replies_truncated": int((truncated & keep).sum()),
        "usable": int(keep.sum()),
    }
    if not keep.any():
        raise UserError(
            f"{split.directory}: no usable preference pair at block_size {block_size} ({stats}); "
            "use a larger block_size or shorter prompts"
        )
    index = np.flatnonzero(keep)
    return PreferencePairs(
        split=split,
        block_size=block_size,
        pair_index=index,
        prompt_start=p[index],
        prompt_length=prompt_length[index],
        chosen_start=c[index],
        chosen_length=cut_chosen[index],
        rejected_start=r[index],
        rejected_length=cut_rejected[index],
        stats=stats,
    )


def epoch_order(count: int, seed: int, epoch: int) -> np.ndarray:
    """The order in which one epoch visits `count` items (seeded by (seed, epoch))."""
    return np.random.default_rng([seed, epoch]).permutation(count)


def sample_positions(
    count: int, seed: int, first: int, size: int, shuffle: bool = True
) -> np.ndarray:
    """Item indices for run positions first .. first+size-1 (epoch = position // count)."""
    positions = np.arange(first, first + size, dtype=np.int64)
    if not shuffle:
        return positions % count
    out = np.empty(size, np.int64)
    for epoch in np.unique(positions // count).tolist():
        where = positions // count == epoch
        out[where] = epoch_order(count, seed, epoch)[positions[where] % count]
    return out


def build_batch(pairs: PreferencePairs, ks: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets [2B, T] for the usable pairs ks (chosen rows first, then rejected).

    T is the longest prompt + reply in the batch minus one (inputs are the sequence without
    its last token, targets the sequence shifted left), so T <= block_size.
    """
    tokens = pairs.split.tokens
    sequences, prompt_lengths = [], []
    for reply in ("chosen", "rejected"):
        reply_start = getattr(pairs, f"{reply}_start")
        reply_length = getattr(pairs, f"{reply}_length")
        for k in ks.tolist():
            ps, pl = int(pairs.prompt_start[k]), int(pairs.prompt_length[k])
            rs, rl = int(reply_start[k]), int(reply_length[k])
            sequences.append(np.concatenate([tokens[ps : ps + pl], tokens[rs : rs + rl]]))
            prompt_lengths.append(pl)
    T = max(len(s) for s in sequences) - 1
    inputs = torch.full((len(sequences), T), PAD_ID, dtype=torch.long)  # [2B, T]
    targets = torch.full((len(sequences), T), IGNORE_INDEX, dtype=torch.long)  # [2B, T]
    for row, (sequence, pl) in enumerate(zip(sequences, prompt_lengths)):
        sequence = torch.from_numpy(sequence.astype(np.int64))
        n = len(sequence) - 1
        inputs[row, :n] = sequence[:-1]
        # Position t predicts sequence[t + 1]; it is a reply token once t + 1 >= prompt length.
        targets[row, pl - 1 : n] = sequence[pl:]
    return inputs, targets
