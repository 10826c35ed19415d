"""The real sample pipeline end to end: sample corpus -> tokenizer -> shards -> pre-training.

Guards the contracts between the steps (the shards' tokenizer sha256 matches the run's, the
format the engine reads is the one tokenize_dataset writes) and that the loss falls on real
sample text, not only on the patterned test fixture.
"""

from training_fixtures import tiny_config

from dataset.pre_training import download_dataset
from tokenizer import tokenize_dataset
from tokenizer import train as train_tokenizer
from training.pretraining_stage import PretrainingStage
from training.trainer import train


def test_loss_falls_on_the_sample_corpus(tmp_path):
    raw, tokenizer, tokens = tmp_path / "raw", tmp_path / "tok.json", tmp_path / "tokens"
    download_dataset.main([f"--output-dir={raw}", "--source=sample", "--sample-size-mb=0.5"])
    train_tokenizer.main([f"--dataset-dir={raw}", f"--output-path={tokenizer}", "--vocab-size=512"])
    tokenize_dataset.main(
        [
            f"--dataset-dir={raw}",
            f"--tokenizer-path={tokenizer}",
            f"--output-dir={tokens}",
            "--num-proc=1",
        ]
    )
    config = tiny_config(
        tmp_path,
        tokenizer,
        tokens,
        block_size=64,
        micro_batch_size=8,
        max_steps=60,
        learning_rate=3e-3,
        warmup_steps=6,
        eval_interval=60,
        eval_batches=4,
        checkpoint_interval=60,
    )
    result = train(config, PretrainingStage)
    start, end = result.losses[0], sum(result.losses[-5:]) / 5
    assert start > 5.5  # ~ln(512) before training
    assert end < 0.6 * start, (start, end)
    assert result.val_loss < 0.65 * start
