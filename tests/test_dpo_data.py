"""DPO batches: reply-only targets, concatenated chosen/rejected rows, guards on bad pairs."""

import numpy as np
import pytest
import torch

from common.errors import UserError
from tokenizer.tokenized_data import SplitWriter, open_dataset, open_split
from training.dpo_stage import build_batch, load_pairs, sample_positions, sequence_logps
from training.stage import IGNORE_INDEX

PAD_ID = 1  # our tokenizer's <|pad|>: fills a row's end
# (prompt, chosen, rejected) token lists as tokenize_dataset writes them.
PAIRS = [
    ([0, 3, 10, 11, 5, 4], [20, 21, 5], [30, 5]),
    ([0, 3, 12, 5, 4], [22, 5], [31, 32, 33, 5]),
    ([0, 3, 13, 14, 15, 16, 5, 4], [23, 24, 25, 5], [34, 35, 5]),
]


def write_pairs(directory, pairs, stage="dpo"):
    writer = SplitWriter(directory, stage, 300)
    if stage == "dpo":
        writer.add_pairs(pairs)
    else:
        writer.add_documents([[0, 10, 11]])
    writer.finish("abc")
    return open_split(directory)


def test_targets_cover_exactly_the_reply_tokens(tmp_path):
    pairs = load_pairs(write_pairs(tmp_path / "train", PAIRS), 32, PAD_ID)
    batch = build_batch(pairs, np.array([0, 1, 2]))
    inputs, targets = batch["inputs"], batch["targets"]
    longest = max(len(p) + max(len(c), len(r)) for p, c, r in PAIRS)
    assert inputs.shape == targets.shape == (6, longest - 1)
    for row in range(6):
        prompt, chosen, rejected = PAIRS[row % 3]
        reply = chosen if row < 3 else rejected
        sequence = prompt + reply
        # Inputs: the sequence without its last token, then padding.
        assert inputs[row, : len(sequence) - 1].tolist() == sequence[:-1]
        assert (inputs[row, len(sequence) - 1 :] == PAD_ID).all()
        # Targets: only the reply, aligned so that position t predicts token t + 1.
        trained = targets[row] != IGNORE_INDEX
        assert targets[row][trained].tolist() == reply
        assert trained.nonzero()[0].item() == len(prompt) - 1


def test_summed_logps_cover_only_reply_tokens(tmp_path):
    pairs = load_pairs(write_pairs(tmp_path / "train", PAIRS), 32, PAD_ID)
    batch = build_batch(pairs, np.array([0, 1, 2]))
    inputs, targets = batch["inputs"], batch["targets"]
    logits = torch.randn(*inputs.shape, 300)
    sums, counts = sequence_logps(logits, targets)
    assert counts.tolist() == [len(c) for _, c, _ in PAIRS] + [len(r) for _, _, r in PAIRS]
    # Changing the logits anywhere in the prompt or the padding changes nothing.
    changed = logits.clone()
    changed[targets == IGNORE_INDEX] = torch.randn_like(changed[targets == IGNORE_INDEX])
    torch.testing.assert_close(sequence_logps(changed, targets)[0], sums)


def test_bad_pairs_are_skipped_and_counted(tmp_path):
    bad = PAIRS + [
        ([0, 3, 12, 5, 4], [22, 5], [22, 5]),  # identical replies
        ([0, 3] + [9] * 40 + [5, 4], [22, 5], [23, 5]),  # prompt alone fills a 16-token context
        ([0, 3, 12, 5, 4], [40] * 30 + [5], [40] * 30 + [41, 5]),  # identical once cut to 16
    ]
    pairs = load_pairs(write_pairs(tmp_path / "train", bad), 16, PAD_ID)
    assert pairs.stats["skipped_identical"] == 2
    assert pairs.stats["skipped_prompt_fills_context"] == 1
    assert pairs.pair_index.tolist() == [0, 1, 2]
    assert build_batch(pairs, np.arange(len(pairs)))["inputs"].shape[1] <= 16


def test_long_replies_are_cut_to_the_block(tmp_path):
    pairs = load_pairs(
        write_pairs(tmp_path / "train", [([0, 3, 12, 5, 4], [40] * 30 + [5], [41] * 3 + [5])]),
        16,
        PAD_ID,
    )
    assert pairs.stats["replies_truncated"] == 1
    batch = build_batch(pairs, np.array([0]))
    inputs, targets = batch["inputs"], batch["targets"]
    assert inputs.shape == (2, 16)
    assert int((targets[0] != IGNORE_INDEX).sum()) == 16 + 1 - 5


def test_nothing_usable_wrong_stage_and_damaged_offsets_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="no usable preference pair"):
        load_pairs(write_pairs(tmp_path / "same", [([0, 3, 4], [7, 5], [7, 5])]), 16, PAD_ID)
    write_pairs(tmp_path / "sft" / "train", None, stage="pre_training")
    with pytest.raises(UserError, match="holds pre_training data but this step needs dpo data"):
        open_dataset(tmp_path / "sft", "dpo")
    split = write_pairs(tmp_path / "bad", PAIRS)
    split.pair_offsets = np.array([[5, 2, 8, 9]], np.uint64)
    with pytest.raises(UserError, match="row 0"):
        load_pairs(split, 16, PAD_ID)


def test_sampling_visits_every_pair_once_per_epoch_in_a_seeded_order():
    first = sample_positions(10, seed=1, first=0, size=10)
    assert sorted(first.tolist()) == list(range(10))
    both = sample_positions(10, seed=1, first=0, size=20)
    assert sorted(both[10:].tolist()) == list(range(10))
    assert not np.array_equal(both[:10], both[10:])
    # Pure function of the position: a window starting mid-run gives the same items.
    np.testing.assert_array_equal(sample_positions(10, seed=1, first=7, size=6), both[7:13])
    assert not np.array_equal(sample_positions(10, seed=2, first=0, size=10), first)
