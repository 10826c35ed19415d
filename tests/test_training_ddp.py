"""DDP: 2 gloo processes under torchrun train like 1 process with 2x gradient accumulation."""

import pytest
import torch
from training_fixtures import logged_scalars, make_inputs, tiny_config, torchrun

from model.checkpoint import load_model
from training.pretraining_stage import PretrainingStage
from training.trainer import train


def test_two_gloo_processes_match_one_process_with_double_accumulation(tmp_path):
    tokenizer, data = make_inputs(tmp_path)
    # tokens_per_step = 2 micro-batches of 4 x 32: one process accumulates 2, two run 1 each.
    common = dict(max_steps=4, tokens_per_step=256, eval_interval=2, checkpoint_interval=2)
    single = tiny_config(tmp_path, tokenizer, data, run_name="single", **common)
    reference = train(single, PretrainingStage)

    ddp = tiny_config(tmp_path, tokenizer, data, run_name="ddp", **common)
    completed = torchrun("pre_training.py", ddp)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.count("sample: ") == 1, "only rank 0 prints"
    assert "2 process(es), 1 micro-batch(es)" in completed.stdout

    run_dir = tmp_path / "checkpoints" / "ddp"
    assert logged_scalars(run_dir) == pytest.approx(reference.losses, rel=1e-5)
    # validation is split across the ranks and summed back: the same figures as one process
    for tag in ("val/loss", "val/bpb"):
        single_values = logged_scalars(reference.run_dir, tag)
        assert len(single_values) == 2 and logged_scalars(run_dir, tag) == pytest.approx(
            single_values, rel=1e-5
        ), tag
    ddp_model, saved, _ = load_model(run_dir)
    assert saved["run"]["world_size"] == 2
    for name, tensor in reference.model.state_dict().items():
        assert torch.allclose(ddp_model.state_dict()[name], tensor, atol=1e-5), name
