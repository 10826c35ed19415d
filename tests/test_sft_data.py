"""SFT packing: assistant-only targets, whole conversations per row, seeded pure-function order."""

import numpy as np
import pytest
import torch
from post_training_fixtures import CONVERSATIONS, train_tiny_tokenizer, write_sft_folder

from common.errors import UserError
from tokenizer.tokenized_data import SplitWriter, open_dataset, open_split
from training.sft_stage import PackedSFTData, next_fit_rows
from training.stage import IGNORE_INDEX

PAD_ID = 1  # our tokenizer's <|pad|>: fills a row's end


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    train_tiny_tokenizer(path)
    return path


def test_mask_covers_exactly_the_assistant_tokens(tokenizer_path):
    """Decoding the trained positions of a rendered conversation gives the assistant turns."""
    from tokenizer.encoding import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_path)
    for messages in CONVERSATIONS:
        ids, mask = tokenizer.conversation(messages)
        assert len(ids) == len(mask)
        # Split the trained tokens into runs; each run is one assistant turn + <|end|> (id 5).
        runs, current = [], []
        for token, m in zip(ids, mask):
            if m:
                current.append(token)
            elif current:
                runs.append(current)
                current = []
        if current:
            runs.append(current)
        replies = [m["content"] for m in messages if m["role"] == "assistant"]
        assert len(runs) == len(replies)
        for run, reply in zip(runs, replies):
            assert run[-1] == 5
            assert tokenizer.decode(run[:-1]) == reply
            assert 4 not in run and 3 not in run  # role markers are never trained


def test_targets_are_the_masked_tokens_of_whole_conversations(tokenizer_path, tmp_path):
    folder = write_sft_folder(tmp_path / "sft", tokenizer_path)
    split = open_dataset(folder, "sft")["train"]
    block = 64
    data = PackedSFTData(split, block_size=block, seed=0, pad_id=PAD_ID, shuffle=False)
    batch = data.batch(0, data.rows_in_epoch(0))
    inputs, targets = batch["inputs"], batch["targets"]
    assert inputs.shape == targets.shape == (data.rows_in_epoch(0), block)
    expected_trained = sum(
        int(np.asarray(split.loss_mask[int(s) + 1 : int(e)]).sum())
        for s, e in zip(split.doc_offsets[:-1], split.doc_offsets[1:])
    )
    assert int((targets != IGNORE_INDEX).sum()) == expected_trained
    # Each trained target equals the input token one position later (shifted language modelling).
    trained = targets != IGNORE_INDEX
    assert torch.equal(targets[:, :-1][trained[:, :-1]], inputs[:, 1:][trained[:, :-1]])
    # Every row starts with <|endoftext|>: conversations are never split across rows.
    assert (inputs[:, 0] == 0).all()
    # Padding is never a target.
    padded = inputs == PAD_ID
    assert not trained[padded].any()


def test_rows_are_a_pure_function_of_seed_and_position(tokenizer_path, tmp_path):
    folder = write_sft_folder(tmp_path / "sft", tokenizer_path, CONVERSATIONS * 7)
    split = open_split(folder / "train", "sft")
    a = PackedSFTData(split, block_size=48, seed=3, pad_id=PAD_ID)
    b = PackedSFTData(split, block_size=48, seed=3, pad_id=PAD_ID)
    late = a.rows_in_epoch(0) + a.rows_in_epoch(1) + 2  # a row in epoch 2
    # b jumps straight there (a resumed run) and still gets the same rows as a.
    assert torch.equal(b.batch(late, 3)["inputs"], a.batch(late, 3)["inputs"])
    first_epoch = a.batch(0, a.rows_in_epoch(0))["inputs"]
    second_epoch = a.batch(a.rows_in_epoch(0), a.rows_in_epoch(1))["inputs"]
    assert not torch.equal(first_epoch[: len(second_epoch)], second_epoch[: len(first_epoch)])
    # Each epoch holds every conversation exactly once.
    assert int((first_epoch == 0).sum()) == len(CONVERSATIONS) * 7
    other_seed = PackedSFTData(split, block_size=48, seed=4, pad_id=PAD_ID)
    assert not torch.equal(other_seed.batch(0, 4)["inputs"], a.batch(0, 4)["inputs"])


def test_next_fit_packing():
    assert next_fit_rows(np.array([5, 5, 3, 9, 1, 10]), 10).tolist() == [0, 2, 3, 5, 6]


def test_over_long_conversation_is_cut_to_the_block_and_counted(tmp_path):
    writer = SplitWriter(tmp_path / "train", "sft", 300)
    long_ids = [0, 3, 7, 5, 4] + [9] * 40 + [5]
    writer.add_documents(
        [long_ids, [0, 3, 7, 5, 4, 8, 5], [0, 3, 7, 7, 7, 7, 7, 5, 4, 8, 5]],
        [[0] * 5 + [1] * 41, [0, 0, 0, 0, 0, 1, 1], [0] * 9 + [1, 1]],
    )
    writer.finish("abc")
    data = PackedSFTData(open_split(tmp_path / "train"), block_size=8, seed=0, pad_id=PAD_ID)
    assert data.stats["truncated_to_block"] == 2
    assert data.stats["skipped_no_trained_tokens"] == 1  # the third: its reply is past token 9
    assert int(data.lengths.max()) == 9


def test_wrong_stage_and_untrainable_data_are_user_errors(tmp_path):
    writer = SplitWriter(tmp_path / "pre" / "train", "pre_training", 300)
    writer.add_documents([[0, 10, 11]])
    writer.finish("abc")
    with pytest.raises(UserError, match="holds pre_training data but this step needs sft data"):
        open_dataset(tmp_path / "pre", "sft")

    writer = SplitWriter(tmp_path / "none" / "train", "sft", 300)
    writer.add_documents([[0, 3, 7, 5]], [[0, 0, 0, 0]])
    writer.finish("abc")
    with pytest.raises(UserError, match="no conversation"):
        PackedSFTData(open_split(tmp_path / "none" / "train"), block_size=8, seed=0, pad_id=PAD_ID)
