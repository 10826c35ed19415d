"""Each bad input to a training run is a one-line UserError that says what to do."""

import pytest
from training_fixtures import (
    make_inputs,
    make_pretraining_data,
    make_tokenizer,
    tiny_config,
)

from common.atomic import sha256_file
from common.errors import UserError
from tokenizer.tokenized_data import SplitWriter
from training.pretraining_stage import PretrainingStage
from training.trainer import train


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("inputs"))


def expect_error(config, pattern):
    with pytest.raises(UserError, match=pattern) as error:
        train(config, PretrainingStage)
    assert "\n" not in str(error.value), "one line"
    return str(error.value)


def test_missing_tokenized_folder(tmp_path, inputs):
    tokenizer, _ = inputs
    expect_error(tiny_config(tmp_path, tokenizer, tmp_path / "nowhere"), "not found")


def test_tokenized_folder_of_another_stage(tmp_path, inputs):
    tokenizer, _ = inputs
    data = make_pretraining_data(tmp_path / "sft", tokenizer, stage="sft")
    expect_error(
        tiny_config(tmp_path, tokenizer, data), "holds sft data but this step needs pre_training"
    )


def test_data_vocabulary_larger_than_the_model(tmp_path, inputs):
    tokenizer, _ = inputs
    data = make_pretraining_data(tmp_path / "big", tokenizer, vocab_size=70000)
    expect_error(tiny_config(tmp_path, tokenizer, data), "vocabulary size 70000, larger")


def test_tokenizer_sha256_differs_from_the_shards(tmp_path, inputs):
    tokenizer, _ = inputs
    data = make_pretraining_data(tmp_path / "other", tokenizer, sha256="0" * 64)
    expect_error(tiny_config(tmp_path, tokenizer, data), "different tokenizer")


def test_missing_validation_split(tmp_path, inputs):
    tokenizer, _ = inputs
    data = make_pretraining_data(tmp_path / "train_only", tokenizer, documents={"train": 50})
    expect_error(tiny_config(tmp_path, tokenizer, data), "validation")


def test_split_shorter_than_one_window(tmp_path, inputs):
    tokenizer, _ = inputs
    data = make_pretraining_data(
        tmp_path / "tiny", tokenizer, documents={"train": 50, "validation": 1}
    )
    expect_error(tiny_config(tmp_path, tokenizer, data), "fewer than one window")


def test_token_id_outside_the_vocabulary_in_a_batch(tmp_path, inputs):
    tokenizer, _ = inputs
    bad = tmp_path / "bad"
    for split in ("train", "validation"):
        writer = SplitWriter(bad / split, "pre_training", 300)  # meta says 300, one id is not
        writer.add_documents([[0] + [299] * 50 + [4000] + [7] * 50])
        writer.finish(sha256_file(tokenizer))
    expect_error(tiny_config(tmp_path, tokenizer, bad), "token id 4000.*outside")


def test_tokens_per_step_not_a_multiple_of_the_micro_batch(tmp_path, inputs):
    message = expect_error(tiny_config(tmp_path, *inputs, tokens_per_step=1000), "not a multiple")
    assert "--tokens_per_step=1024" in message


def test_model_overrides_may_not_set_the_vocabulary(tmp_path, inputs):
    config = tiny_config(tmp_path, *inputs, model_overrides={"vocab_size": 1000})
    expect_error(config, "comes from the tokenizer")


def test_init_from_a_checkpoint_with_another_vocabulary(tmp_path, inputs):
    other_tokenizer = make_tokenizer(tmp_path / "other" / "tokenizer.json", vocab_size=280)
    other_data = make_pretraining_data(tmp_path / "other" / "tokenized", other_tokenizer)
    train(
        tiny_config(tmp_path, other_tokenizer, other_data, run_name="base", max_steps=1),
        PretrainingStage,
    )
    base = str(tmp_path / "checkpoints" / "base")
    message = expect_error(tiny_config(tmp_path, *inputs, init_from=base), "vocabulary")
    assert "280" in message and "300" in message


def test_init_from_with_a_longer_block_than_the_model(tmp_path, inputs):
    train(tiny_config(tmp_path, *inputs, run_name="base", max_steps=1), PretrainingStage)
    base = str(tmp_path / "checkpoints" / "base")
    expect_error(tiny_config(tmp_path, *inputs, init_from=base, block_size=64), "exceeds")


@pytest.mark.parametrize("device", ["mps", "gpu", "cuda:x", "CPU"])
def test_a_device_other_than_auto_cpu_or_cuda_is_refused(tmp_path, inputs, device):
    expect_error(tiny_config(tmp_path, *inputs, device=device), f"--device[= ]{device}")


def test_fp16_on_cpu_and_a_missing_tokenizer(tmp_path, inputs):
    expect_error(tiny_config(tmp_path, *inputs, precision="fp16"), "needs a CUDA GPU")
    _, data = inputs
    expect_error(tiny_config(tmp_path, tmp_path / "missing.json", data), "not found")


def test_init_from_inside_the_runs_own_folder(tmp_path, inputs):
    train(tiny_config(tmp_path, *inputs, max_steps=1), PretrainingStage)
    own = str(tmp_path / "checkpoints" / "run")
    expect_error(tiny_config(tmp_path, *inputs, init_from=own, overwrite=True), "own folder")
    assert (tmp_path / "checkpoints" / "run" / "latest").is_file(), "nothing was deleted"


def test_a_dpo_step_that_does_not_divide_names_pairs_per_step():
    """DPO sizes its step in pairs: the advice must be a --pairs_per_step that works (advice to
    change --tokens_per_step would then fail the pairs/tokens agreement check)."""
    import dataclasses

    import post_training_dpo

    config = dataclasses.replace(post_training_dpo.CONFIG, pairs_per_step=64, micro_batch_size=8)
    assert config.micro_batches_per_step(world_size=2) == 8  # 4 per process
    with pytest.raises(UserError) as error:
        config.micro_batches_per_step(world_size=3)
    assert "--pairs_per_step=64 is not a multiple" in str(error.value)
    assert "use e.g. --pairs_per_step=72" in str(error.value)
