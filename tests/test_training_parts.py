"""The engine's small parts: schedules, optimizer groups, losses, FLOPs, checkpoint retention."""

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F

from model.config import from_preset
from model.plan import flops_per_token
from model.transformer import Transformer
from pre_training import CONFIG
from training.checkpoint import prune, resume_candidates, step_dir_name
from training.config import TrainConfig
from training.device import peak_flops
from training.optimizer import build_optimizer, lr_multiplier
from training.stage import IGNORE_INDEX, cross_entropy_sum, token_log_probs


def schedule_config(**overrides) -> TrainConfig:
    base = dict(learning_rate=1.0, min_lr=0.1, warmup_steps=10, schedule="cosine")
    return dataclasses.replace(CONFIG, **{**base, **overrides})


def learning_rate_at(step: int, config: TrainConfig, max_steps: int) -> float:
    return config.learning_rate * lr_multiplier(step, config, max_steps)


def test_cosine_warms_up_peaks_and_ends_at_min_lr():
    config = schedule_config()
    rates = [learning_rate_at(step, config, 100) for step in range(100)]
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(rates[:10], rates[1:10])), "warmup must rise"
    assert all(a >= b for a, b in zip(rates[10:], rates[11:])), "decay must not rise"
    assert rates[-1] == pytest.approx(0.1)


def test_wsd_is_flat_then_decays_linearly_in_the_last_fraction():
    config = schedule_config(schedule="wsd", decay_fraction=0.2)
    rates = [learning_rate_at(step, config, 100) for step in range(100)]
    assert rates[10:80] == [1.0] * 70
    assert rates[80] == pytest.approx(1.0) and rates[-1] == pytest.approx(0.1)
    assert rates[90] == pytest.approx(1.0 - 0.9 * 10 / 19)


@pytest.mark.parametrize("tied", [False, True])
def test_no_weight_decay_on_norms_and_embeddings(tied):
    model = Transformer(from_preset("debug", tie_embeddings=tied))
    config = dataclasses.replace(CONFIG, optimizer="adamw", weight_decay=0.1)
    groups = build_optimizer(model, config, torch.device("cpu")).param_groups
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    names = {id(p): n for n, p in model.named_parameters()}
    assert id(model.embed_tokens.weight) not in decayed
    assert all("norm" not in names[i] for i in decayed)
    assert (id(model.lm_head.weight) in decayed) == (not tied)
    assert id(model.layers[0].attention.q_proj.weight) in decayed
    every = [p for g in groups for p in g["params"]]
    assert len(every) == len(list(model.parameters())), "each parameter in exactly one group"


def test_cross_entropy_sum_ignores_masked_targets_and_upcasts():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 64, dtype=torch.bfloat16)
    targets = torch.randint(0, 60, (2, 5))
    targets[0, :2] = IGNORE_INDEX
    loss = cross_entropy_sum(logits, targets)
    assert loss.dtype == torch.float32
    keep = targets != IGNORE_INDEX
    expected = F.cross_entropy(logits.float()[keep], targets[keep], reduction="sum")
    assert torch.allclose(loss, expected)
    per_token = token_log_probs(logits, targets)
    assert per_token[0, :2].eq(0).all()
    assert torch.allclose(-per_token.sum(), expected, atol=1e-5)


def test_flops_per_token_matches_the_palm_formula_for_gpt2_small():
    config = from_preset("124m")
    layer = 4 * 768 * 768 + 3 * 768 * 2048 + 2 * 768  # q k v o, gate up down, two norms
    expected = 6 * (12 * layer + config.n_embd + 50304 * 768) + 12 * 12 * 768 * 1024
    assert flops_per_token(config, 1024)["total"] == expected
    assert 0.7e9 < flops_per_token(config, 1024)["total"] < 0.9e9  # nanoGPT: ~0.85 GFLOP/token
    assert peak_flops(torch.device("cpu")) is None, "no MFU on CPU"


def write_step(run_dir, step, val_loss):
    path = run_dir / step_dir_name(step)
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"metrics": {"val_loss": val_loss}}))
    return path


def test_prune_keeps_last_n_and_the_best(tmp_path):
    for step, loss in [(10, 3.0), (20, 1.0), (30, 2.0), (40, 2.5), (50, 2.4)]:
        write_step(tmp_path, step, loss)
    (tmp_path / "latest").write_text(step_dir_name(50))
    prune(tmp_path, keep_last=2)
    kept = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("step_"))
    assert kept == [step_dir_name(20), step_dir_name(40), step_dir_name(50)]
    assert (tmp_path / "best").read_text().strip() == step_dir_name(20)
    assert not [p for p in tmp_path.iterdir() if "deleting" in p.name]


def test_resume_candidates_start_at_latest_and_skip_temp_folders(tmp_path):
    for step in (10, 20, 30):
        write_step(tmp_path, step, math.nan)
    (tmp_path / (step_dir_name(40) + ".tmp-123")).mkdir()  # a save killed half-way
    (tmp_path / "latest").write_text(step_dir_name(20) + "\n")
    names = [p.name for p in resume_candidates(tmp_path)]
    assert names == [step_dir_name(20), step_dir_name(10)]
    (tmp_path / "latest").write_text("garbage")
    names = [p.name for p in resume_candidates(tmp_path)]
    assert names == [step_dir_name(30), step_dir_name(20), step_dir_name(10)]


def test_rng_state_touches_only_the_training_gpu(monkeypatch):
    """Bug guarded: capturing torch.cuda.get_rng_state_all() made rank 0 of a torchrun job
    create a CUDA context (hundreds of MB) on every visible GPU at its first checkpoint."""
    from training import checkpoint as ckpt

    def every_gpu(*args):
        raise AssertionError("touches every GPU")

    asked = []
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", every_gpu)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", every_gpu)
    monkeypatch.setattr(
        torch.cuda,
        "get_rng_state",
        lambda device: asked.append(device) or torch.zeros(8, dtype=torch.uint8),
    )
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: asked.append(device))
    device = torch.device("cuda", 1)
    state = ckpt.capture_rng_state(device)
    ckpt.restore_rng_state(state, device)
    assert asked == [device, device]
    cpu_state = ckpt.capture_rng_state(torch.device("cpu"))
    assert "cuda" not in cpu_state, "a CPU run never initialises CUDA"
    ckpt.restore_rng_state(cpu_state, torch.device("cpu"))


def fake_context(compile: bool, device: str):
    from types import SimpleNamespace

    return SimpleNamespace(config=SimpleNamespace(compile=compile), device=torch.device(device))


def test_losses_are_compiled_only_with_compile_on_a_gpu(monkeypatch, tmp_path):
    """--compile on a CPU run must not try to compile the loss (no compiler needed there); on
    a GPU the loss is compiled (one fused kernel, no fp32 copy of the logits)."""
    from training_fixtures import make_inputs, tiny_config

    from training.device import Distributed
    from training.pretraining_stage import PretrainingStage
    from training.stage import RunContext
    from training.trainer import run_context

    compiled = []
    monkeypatch.setattr(torch, "compile", lambda function: compiled.append(function) or function)
    assert RunContext.compiled(fake_context(True, "cuda"), token_log_probs) is token_log_probs
    assert compiled == [token_log_probs]
    RunContext.compiled(fake_context(False, "cuda"), token_log_probs)
    assert len(compiled) == 1, "no --compile: eager"

    def no_compile(*args, **kwargs):
        raise AssertionError("compiled on CPU")

    monkeypatch.setattr(torch, "compile", no_compile)
    config = tiny_config(tmp_path, *make_inputs(tmp_path), compile=True)
    one_process = Distributed(rank=0, world_size=1, device=torch.device("cpu"))
    stage = PretrainingStage(run_context(config, one_process)[0])
    model = Transformer(stage.context.model_config)
    for batch in (stage.train_micro_batch(0, 0), stage.validation_batches()[0]):
        assert torch.isfinite(stage.loss(model, batch)[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_compiled_cross_entropy_matches_eager_and_saves_memory():
    """The fused (torch.compile) loss gives eager's value and gradient without the fp32 copies
    of the [B, T, V] logits that eager makes."""
    from training.stage import RunContext

    fused = RunContext.compiled(fake_context(True, "cuda"), cross_entropy_sum)
    torch.manual_seed(0)
    B, T, V = 8, 512, 32768
    targets = torch.randint(0, V, (B, T), device="cuda")
    targets[:, :7] = IGNORE_INDEX
    base = torch.randn(B, T, V, device="cuda", dtype=torch.bfloat16)

    def run(compiled: bool):
        logits = base.clone().requires_grad_()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        loss = (fused if compiled else cross_entropy_sum)(logits, targets)
        loss.backward()
        torch.cuda.synchronize()
        return loss.detach(), logits.grad.float(), torch.cuda.max_memory_allocated() - start

    run(True)  # compile outside the measurement
    eager_loss, eager_grad, eager_peak = run(False)
    fused_loss, fused_grad, fused_peak = run(True)
    torch.testing.assert_close(fused_loss, eager_loss, rtol=1e-4, atol=1e-2)
    torch.testing.assert_close(fused_grad, eager_grad, rtol=2e-2, atol=1e-3)
    logits_bytes = B * T * V * 2
    print(f"peak above inputs: eager {eager_peak / 1e9:.2f} GB, fused {fused_peak / 1e9:.2f} GB")
    assert fused_peak < eager_peak - 2 * logits_bytes, (eager_peak, fused_peak)


@pytest.mark.parametrize("major, expected", [(7, "fp16"), (8, "bf16"), (9, "bf16")])
def test_auto_precision_picks_fp16_on_gpus_without_bf16_tensor_cores(monkeypatch, major, expected):
    """Bug guarded: torch.cuda.is_bf16_supported() is True on a T4/V100 (bf16 emulation), so
    `auto` chose slow emulated bf16 there instead of fp16 + GradScaler."""
    from types import SimpleNamespace

    from common.errors import UserError
    from training.device import resolve_precision

    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    monkeypatch.setattr(
        torch.cuda, "get_device_properties", lambda device: SimpleNamespace(major=major)
    )
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: f"GPU sm{major}0")
    cuda = torch.device("cuda", 0)
    assert resolve_precision("auto", cuda) == expected
    if expected == "fp16":
        with pytest.raises(UserError, match="no bf16 support; use --precision=fp16"):
            resolve_precision("bf16", cuda)
