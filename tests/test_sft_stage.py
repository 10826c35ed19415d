"""The SFT stage and script: assistant-only loss, exact resume, text samples, bad inputs."""

import os
import signal

import pytest
import torch
from post_training_fixtures import (
    run_context,
    tiny_inputs,
    tiny_sft_config,
    train_tiny_tokenizer,
    write_sft_folder,
)
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import post_training_sft
from common.atomic import sha256_file
from common.errors import UserError
from model.checkpoint import load_model
from training.sft_stage import SFTStage
from training.stage import IGNORE_INDEX
from training.trainer import train


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("sft")
    tiny_inputs(root)
    return root


class FixedLogits(torch.nn.Module):
    """Stands in for the model: returns the given logits whatever the input."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, idx):
        return self.logits


def test_loss_ignores_prompt_tokens(root):
    stage = SFTStage(run_context(tiny_sft_config(root)))
    batch = stage.train_micro_batch(0, 0)
    targets = batch["targets"]
    prompt = targets == IGNORE_INDEX
    assert prompt.any() and (~prompt).any()
    V = stage.context.model_config.padded_vocab_size
    logits = torch.randn(*targets.shape, V, requires_grad=True)
    loss, _ = stage.loss(FixedLogits(logits), batch)
    loss.backward()
    # Not a single prompt (or padding) position influences the loss ...
    assert (logits.grad[prompt] == 0).all()
    assert (logits.grad[~prompt].abs().sum(-1) > 0).all()
    # ... so changing what the model predicts there, or the target there, changes nothing.
    changed = logits.detach().clone()
    changed[prompt] = torch.randn_like(changed[prompt])
    other_targets = batch["targets"].clone()
    other_targets[prompt] = 7  # as if the prompt tokens were trained on
    same, _ = stage.loss(FixedLogits(changed), batch)
    assert same.item() == pytest.approx(loss.item(), abs=1e-4)
    trained_on_prompt, _ = stage.loss(FixedLogits(changed), {**batch, "targets": other_targets})
    assert trained_on_prompt.item() > loss.item() + 1
    assert stage.count(batch) == int((~prompt).sum())


def stop_at(step_to_stop: int):
    class StopAt(SFTStage):
        def train_micro_batch(self, step, micro_index):
            if step == step_to_stop and micro_index == 0:
                os.kill(os.getpid(), signal.SIGTERM)
            return super().train_micro_batch(step, micro_index)

    return StopAt


def test_resume_is_exact(root):
    init = train(tiny_sft_config(root, run_name="init", max_steps=1), SFTStage).run_dir
    config = dict(init_from=str(init), tokens_per_step=2 * 2 * 48, max_steps=6)  # 2 micro-batches
    straight = train(tiny_sft_config(root, run_name="straight", **config), SFTStage)
    first = train(tiny_sft_config(root, run_name="stopped", **config), stop_at(2))
    assert first.stopped_by_signal == signal.SIGTERM and first.step == 3
    second = train(tiny_sft_config(root, run_name="stopped", resume=True, **config), SFTStage)
    assert first.losses + second.losses == straight.losses  # bitwise on CPU
    a, b = load_model(straight.run_dir)[0].state_dict(), load_model(second.run_dir)[0].state_dict()
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_cli_trains_from_a_checkpoint_and_logs_answers(root, capsys):
    init = train(tiny_sft_config(root, run_name="init_cli", max_steps=1), SFTStage).run_dir
    config = tiny_sft_config(root, run_name="cli")
    argv = [f"--{k}={v}" for k, v in config.to_dict().items() if k not in ("init_from",)]
    argv = [a for a in argv if not a.startswith("--model_overrides")]
    assert post_training_sft.main([*argv, f"--init_from={init}"]) == 0
    out = capsys.readouterr().out
    assert "assistant:" in out and "sft data: train" in out
    events = EventAccumulator(str(root / "checkpoints" / "cli" / "tensorboard")).Reload()
    assert {"train/loss", "val/loss", "val/ppl"} <= set(events.Tags()["scalars"])
    assert any(tag.startswith("samples/answer_0") for tag in events.Tags()["tensors"])
    model, saved, _ = load_model(root / "checkpoints" / "cli")
    assert saved["stage"] == "sft"
    assert saved["tokenizer"] == {"sha256": sha256_file(config.tokenizer_path)}
    # the shape came from --init_from: no preset name is recorded (the model section has it)
    assert saved["train"]["model_preset"] is None and saved["model"]["n_layer"] == 2


def test_wrong_stage_folder_is_a_user_error(root):
    tokenizer_path, _, dpo_dir = tiny_inputs(root)
    with pytest.raises(UserError, match="holds dpo data but this step needs sft data.*--stage sft"):
        train(tiny_sft_config(root, run_name="bad", data_dir=str(dpo_dir)), SFTStage)


def test_init_from_a_checkpoint_with_another_vocabulary_is_a_user_error(root, tmp_path):
    other_tokenizer = tmp_path / "other.json"
    train_tiny_tokenizer(other_tokenizer, vocab_size=280)
    other_data = write_sft_folder(tmp_path / "other_sft", other_tokenizer)
    other = tiny_sft_config(
        root,
        run_name="other",
        tokenizer_path=str(other_tokenizer),
        data_dir=str(other_data),
        max_steps=1,
        checkpoint_dir=str(tmp_path / "ck"),
    )
    other_run = train(other, SFTStage).run_dir
    with pytest.raises(UserError, match="vocabulary has 280 tokens"):
        post_training_sft.main(
            [
                f"--tokenizer_path={root / 'tokenizer.json'}",
                f"--data_dir={root / 'sft'}",
                f"--init_from={other_run}",
                f"--checkpoint_dir={tmp_path / 'ck'}",
                "--device=cpu",
                "--block_size=48",
                "--micro_batch_size=2",
                "--tokens_per_step=0",
            ]
        )


def test_data_of_another_tokenizer_is_a_user_error(root, tmp_path):
    other_tokenizer = tmp_path / "other.json"
    train_tiny_tokenizer(other_tokenizer, vocab_size=280)
    other_data = write_sft_folder(tmp_path / "other_sft", other_tokenizer)
    with pytest.raises(UserError, match="different tokenizer"):
        train(tiny_sft_config(root, run_name="bad2", data_dir=str(other_data)), SFTStage)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_bf16_compiled_sft_matches_the_cpu_loss(root):
    """Same weights, same first batch: the compiled bf16 masked loss on the GPU equals the fp32
    CPU one up to bf16 rounding (a mask lost on the compiled path would be far off)."""
    init = train(tiny_sft_config(root, run_name="gpu_init", max_steps=1), SFTStage).run_dir
    options = dict(init_from=str(init), max_steps=6, eval_interval=6, checkpoint_interval=6)
    cpu = train(tiny_sft_config(root, run_name="gpu_cpu", **options), SFTStage)
    gpu = train(
        tiny_sft_config(
            root, run_name="gpu_cuda", device="cuda", precision="bf16", compile=True, **options
        ),
        SFTStage,
    )
    assert gpu.losses[0] == pytest.approx(cpu.losses[0], rel=2e-2)
    assert gpu.losses[-1] < gpu.losses[0]
