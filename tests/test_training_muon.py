"""Muon and the optimizer groups around it (training/optimizer.py).

Newton-Schulz on the presets' shapes, the groups, the schedule of its momentum, and Muon in the
engine: it learns, resumes bitwise, accumulates exactly, trains the same under DDP (2 gloo
processes) as in one process, survives fp16's skipped steps, starts fresh from --init_from and
leaves a model that still exports to Hugging Face Llama with the same logits.
"""

import dataclasses
import signal

import pytest
import torch
from training_fixtures import (
    FixedPoolStage,
    logged_scalars,
    make_inputs,
    overfit_one_batch,
    signal_at,
    tiny_config,
    torchrun,
)

from common.errors import UserError
from model.config import PRESETS, from_preset
from model.transformer import Transformer
from pre_training import CONFIG
from training.config import parse_config
from training.optimizer import (
    MuonWithAdamW,
    build_optimizer,
    lr_multiplier,
    muon_momentum_at,
    named_parameter_groups,
    newton_schulz,
    orthogonalise_shared,
    parameter_groups,
    set_hyperparameters,
)
from training.pretraining_stage import PretrainingStage
from training.trainer import train

MUON = dict(optimizer="muon", muon_lr=0.02, embedding_lr=3e-3, head_lr=3e-3)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("inputs"))


def preset_matrix_shapes() -> list[tuple[int, int]]:
    """Every distinct shape Muon meets in the 15m, 124m and 170m presets."""
    shapes = set()
    for name in ("15m", "124m", "170m"):
        with torch.device("meta"):  # shapes only, no memory
            model = Transformer(from_preset(name))
        shapes |= {tuple(p.shape) for p in named_parameter_groups(model)["matrices"]}
    return sorted(shapes)


def close_to_the_polar_factor(gradient: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """newton_schulz(gradient) in dtype, checked against U V^T of gradient = U S V^T."""
    u, _, vh = torch.linalg.svd(gradient.float(), full_matrices=False)
    polar = u @ vh
    result = newton_schulz(gradient, 5, dtype).float()
    assert result.shape == gradient.shape
    singular = torch.linalg.svdvals(result)
    assert singular.max() < 1.25, "the spectral norm stays bounded"
    # (a square Gaussian matrix has a few near-zero singular values; 5 steps leave those)
    assert ((singular > 0.6) & (singular < 1.25)).float().mean() > 0.95
    assert (result - polar).norm() / polar.norm() < 0.25
    return result


@pytest.mark.parametrize("shape", preset_matrix_shapes(), ids=lambda s: f"{s[0]}x{s[1]}")
def test_newton_schulz_is_close_to_the_polar_factor(shape):
    """The update Muon applies is ~U V^T of the momentum U S V^T: singular values near 1, in
    fp32 and in bf16 (what a GPU runs). A CPU has no fast bf16 products (1024x2752 took 37 s
    there, 1 s in fp32), so without CUDA the larger shapes are halved on each side (the same
    aspect ratio) until they cost what the smallest preset shape, 768x288, does."""
    torch.manual_seed(0)
    gradient = torch.randn(shape) * 1e-3  # the scale must not matter
    close_to_the_polar_factor(gradient, torch.float32)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows, cols = shape
    while device == "cpu" and rows * cols * min(rows, cols) > 768 * 288 * 288:
        rows, cols = rows // 2, cols // 2
    gradient = gradient[:rows, :cols].contiguous().to(device)
    fp32 = close_to_the_polar_factor(gradient, torch.float32)
    bf16 = close_to_the_polar_factor(gradient, torch.bfloat16)
    assert (bf16 - fp32).norm() / fp32.norm() < 0.03, "bf16 Newton-Schulz is safe"


def test_newton_schulz_orthogonalises_a_stack_matrix_by_matrix():
    torch.manual_seed(0)
    stack = torch.randn(3, 64, 160)
    together = newton_schulz(stack, 5, torch.float32)
    for matrix, result in zip(stack, together):
        torch.testing.assert_close(result, newton_schulz(matrix, 5, torch.float32))


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("optimizer", ["muon", "adamw"])
def test_parameter_groups_cover_every_parameter_exactly_once(tied, optimizer):
    model = Transformer(from_preset("debug", tie_embeddings=tied))
    built = build_optimizer(
        model, dataclasses.replace(CONFIG, optimizer=optimizer), torch.device("cpu")
    )
    grouped = [id(p) for group in built.param_groups for p in group["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())
    if optimizer == "adamw":
        return
    groups = {group["name"]: group for group in built.param_groups}
    names = {id(p): n for n, p in model.named_parameters()}
    muon = [names[id(p)] for p in groups["matrices"]["params"]]
    assert groups["matrices"]["use_muon"] and len(muon) == 7 * model.config.n_layer
    assert all(name.startswith("layers.") and "norm" not in name for name in muon)
    assert groups["embedding"]["params"] == [model.embed_tokens.weight]
    assert ("head" in groups) == (not tied)
    assert all(p.dim() == 1 for p in groups["norms"]["params"])
    assert not any(group["use_muon"] for name, group in groups.items() if name != "matrices")
    assert groups["embedding"]["weight_decay"] == 0.0 and groups["norms"]["weight_decay"] == 0.0


def test_learning_rates_follow_the_width_rule_and_the_schedule():
    config = dataclasses.replace(CONFIG, **MUON, learning_rate=1e-3, min_lr=1e-4, warmup_steps=10)
    lrs = {}
    for width in (128, 512):
        model = Transformer(from_preset("debug", n_embd=width, n_head=4))
        optimizer = build_optimizer(model, config, torch.device("cpu"))
        set_hyperparameters(optimizer, config, step=9, max_steps=100)  # end of warmup
        lrs[width] = {group["name"]: group["lr"] for group in optimizer.param_groups}
    assert lrs[128]["matrices"] == lrs[512]["matrices"] == pytest.approx(0.02)
    assert lrs[128]["embedding"] == pytest.approx(3e-3 * (768 / 128) ** 0.5)
    assert lrs[128]["head"] / lrs[512]["head"] == pytest.approx(2.0)
    assert lrs[128]["norms"] == lrs[512]["norms"] == pytest.approx(1e-3)
    assert lr_multiplier(99, config, 100) == pytest.approx(0.1), "every group ends at min/peak"


def test_muon_momentum_warms_up_linearly():
    config = dataclasses.replace(
        CONFIG, muon_momentum_start=0.85, muon_momentum=0.95, muon_momentum_warmup=10
    )
    assert muon_momentum_at(0, config) == pytest.approx(0.85)
    assert muon_momentum_at(5, config) == pytest.approx(0.90)
    assert muon_momentum_at(10, config) == muon_momentum_at(1000, config) == 0.95
    assert muon_momentum_at(0, dataclasses.replace(config, muon_momentum_warmup=0)) == 0.95


@pytest.mark.parametrize(
    "flag",
    [
        "--optimizer=sgd",
        "--muon_lr=0",
        "--muon_momentum=1.0",
        "--muon_ns_steps=0",
        "--muon_weight_decay=-1",
        "--embedding_lr=-1",
    ],
)
def test_bad_muon_options_are_user_errors(flag):
    with pytest.raises(UserError):
        parse_config(CONFIG, [flag])


def test_a_tiny_model_with_muon_overfits_one_batch(tmp_path, inputs):
    losses = overfit_one_batch(tmp_path, inputs, **MUON, muon_momentum_warmup=5)
    assert losses[0] > 5.0  # ~ln(300): the untrained model guesses uniformly
    assert losses[-1] < 0.05, "a 0.5M-parameter model must memorize 128 tokens"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_bf16_compiled_muon_overfits_one_batch(tmp_path, inputs):
    """On a GPU: bf16 autocast, torch.compile, Newton-Schulz in bf16, the fused AdamW kernel."""
    losses = overfit_one_batch(
        tmp_path,
        inputs,
        **MUON,
        muon_momentum_warmup=5,
        device="cuda",
        precision="bf16",
        compile=True,
    )
    assert losses[-1] < 0.05, losses[-5:]
    gradient = torch.randn(768, 3072, device="cuda")
    fp32 = newton_schulz(gradient, 5, torch.float32)
    bf16 = newton_schulz(gradient, 5, torch.bfloat16).float()
    assert (bf16 - fp32).norm() / fp32.norm() < 0.03, "bf16 Newton-Schulz is safe on the GPU"


def test_muon_with_activation_checkpointing_trains_as_without(tmp_path, inputs):
    """Recomputing activations in the backward pass must not change Muon's gradients."""
    runs = [
        train(
            tiny_config(
                tmp_path / str(flag), *inputs, **MUON, max_steps=4, activation_checkpointing=flag
            ),
            PretrainingStage,
        )
        for flag in (False, True)
    ]
    assert runs[0].losses == pytest.approx(runs[1].losses, rel=1e-5)
    for a, b in zip(runs[0].model.parameters(), runs[1].model.parameters()):
        assert torch.allclose(a, b, atol=1e-5)


def test_muon_stopped_and_resumed_is_bitwise_identical_to_a_straight_run(tmp_path, inputs):
    muon = dict(MUON, muon_momentum_warmup=5)  # the stop falls inside the momentum warm-up
    straight = train(tiny_config(tmp_path, *inputs, run_name="straight", **muon), PretrainingStage)
    first = train(
        tiny_config(tmp_path, *inputs, run_name="stopped", **muon), signal_at(2, signal.SIGTERM)
    )
    assert first.step == 3
    state = torch.load(first.last_checkpoint / "training_state.pt", weights_only=True)
    assert any("momentum_buffer" in s for s in state["optimizer"]["state"].values())
    second = train(
        tiny_config(tmp_path, *inputs, run_name="stopped", resume=True, **muon), PretrainingStage
    )
    assert first.losses + second.losses == straight.losses  # exact float equality
    a, b = straight.model.state_dict(), second.model.state_dict()
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_muon_k_micro_batches_equal_one_big_batch(tmp_path, inputs):
    common = dict(MUON, max_steps=3, eval_interval=1000, checkpoint_interval=1000)
    one = tiny_config(tmp_path / "one", *inputs, micro_batch_size=8, tokens_per_step=256, **common)
    two = tiny_config(tmp_path / "two", *inputs, micro_batch_size=4, tokens_per_step=256, **common)
    result_one, result_two = train(one, FixedPoolStage), train(two, FixedPoolStage)
    assert result_one.losses == pytest.approx(result_two.losses, rel=1e-5)
    for (name, a), b in zip(
        result_one.model.state_dict().items(), result_two.model.state_dict().values()
    ):
        assert torch.allclose(a, b, atol=1e-5), name


# pre_training.py that also saves each rank's final weights
DDP_SCRIPT = """
import os, sys
import torch
import pre_training
from training.config import parse_config
from training.pretraining_stage import PretrainingStage
from training.trainer import train
result = train(parse_config(pre_training.CONFIG, sys.argv[1:]), PretrainingStage)
torch.save(result.model.state_dict(), result.run_dir / f"rank{os.environ['RANK']}.pt")
"""


def test_muon_under_ddp_matches_one_process_and_every_rank_ends_identical(tmp_path):
    """2 gloo processes (each orthogonalises part of every stack of same-shaped matrices, then
    they all-gather) against 1 process accumulating both micro-batches. Bug guarded: a wrong
    interleave after the all-gather gives a matrix another's update, on every rank alike."""
    tokenizer, data = make_inputs(tmp_path)
    # n_layer=3: 3 q_proj, a stack that 2 ranks split 2 + 1
    common = dict(
        MUON,
        max_steps=4,
        tokens_per_step=256,
        eval_interval=2,
        checkpoint_interval=2,
        model_overrides={"n_layer": 3},
    )
    reference = train(
        tiny_config(tmp_path, tokenizer, data, run_name="single", **common), PretrainingStage
    )
    script = tmp_path / "ddp_script.py"
    script.write_text(DDP_SCRIPT)
    config = tiny_config(tmp_path, tokenizer, data, run_name="ddp", **common)
    completed = torchrun(str(script), config)
    assert completed.returncode == 0, completed.stderr[-3000:]
    run_dir = tmp_path / "checkpoints" / "ddp"
    assert "2 process(es)" in completed.stdout and "'n_layer': 3" in completed.stdout
    assert logged_scalars(run_dir) == pytest.approx(reference.losses, rel=1e-5)
    rank0, rank1 = (torch.load(run_dir / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for name, tensor in reference.model.state_dict().items():
        assert torch.equal(rank0[name], rank1[name]), f"ranks differ in {name}"
        assert torch.allclose(rank0[name], tensor, atol=1e-5), name


@pytest.mark.parametrize("optimizer", ["muon", "adamw"])
def test_a_resumed_optimizer_takes_the_command_lines_hyperparameters(optimizer):
    """load_state_dict restores the checkpoint's groups; the run's config must win over them."""
    saved_config = dataclasses.replace(CONFIG, **(MUON | {"optimizer": optimizer}))
    model = Transformer(from_preset("debug"))
    saved = build_optimizer(model, saved_config, torch.device("cpu"))
    config = dataclasses.replace(
        saved_config, weight_decay=0.3, beta2=0.99, muon_weight_decay=0.05, muon_ns_steps=3
    )
    resumed = build_optimizer(model, config, torch.device("cpu"))
    resumed.load_state_dict(saved.state_dict())
    set_hyperparameters(resumed, config, step=1, max_steps=10)
    for group in resumed.param_groups:
        if group.get("use_muon"):
            assert (group["weight_decay"], group["ns_steps"]) == (0.05, 3)
        else:
            assert group["betas"] == (0.9, 0.99)
            decayed = group["name"] in ("decay", "head")
            assert group["weight_decay"] == (0.3 if decayed else 0.0), group["name"]


def test_a_loaded_fused_optimizer_keeps_adamw_step_counts_on_the_parameters_device():
    """The fused AdamW kernel needs its step counts beside the parameters; a resumed state is
    loaded on the CPU. (A "meta" model stands in for a GPU one on machines without a GPU.)"""
    config = dataclasses.replace(CONFIG, **MUON)
    saved = Transformer(from_preset("debug"))
    optimizer = MuonWithAdamW(parameter_groups(saved, config), fused=True)
    set_hyperparameters(optimizer, config, step=0, max_steps=1)
    for p in saved.parameters():
        p.grad = torch.randn_like(p)
    optimizer.step()
    with torch.device("meta"):
        model = Transformer(from_preset("debug"))
    resumed = MuonWithAdamW(parameter_groups(model, config), fused=True)
    resumed.load_state_dict(optimizer.state_dict())
    steps = [resumed.state[p]["step"] for p in named_parameter_groups(model)["embedding"]]
    assert steps and all(step.device.type == "meta" for step in steps)


def test_muon_step_launches_do_not_grow_with_the_number_of_matrices():
    """On a GPU the step is launch-bound: per-matrix work must be multi-tensor (foreach) ops,
    so a 6-layer model's step runs as many operations as a 2-layer one's (same shapes)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class CountOps(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.count += not func.is_view  # views launch nothing
            return func(*args, **(kwargs or {}))

    counts = []
    for n_layer in (2, 6):
        model = Transformer(from_preset("debug", n_layer=n_layer))
        matrices = named_parameter_groups(model)["matrices"]
        optimizer = MuonWithAdamW(
            [
                dict(
                    params=matrices,
                    use_muon=True,
                    lr=0.02,
                    momentum=0.9,
                    weight_decay=0.1,
                    ns_steps=5,
                )
            ]
        )
        for p in matrices:
            p.grad = torch.randn_like(p)
        optimizer.step()  # the first step creates the momentum buffers
        with CountOps() as counter:
            optimizer.step()
        counts.append(counter.count)
    assert counts[0] == counts[1], counts


def test_orthogonalise_shared_without_a_process_group_is_newton_schulz():
    stack = torch.randn(3, 16, 32)
    torch.testing.assert_close(
        orthogonalise_shared(stack, 5, torch.float32), newton_schulz(stack, 5, torch.float32)
    )


def test_a_step_that_fp16_skips_leaves_muon_untouched():
    """GradScaler unscales before Muon orthogonalises (which would hide the scale) and skips
    steps with inf gradients: weights and momentum must not move then."""
    torch.manual_seed(0)
    model = Transformer(from_preset("debug"))
    optimizer = build_optimizer(model, dataclasses.replace(CONFIG, **MUON), torch.device("cpu"))
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    tokens = torch.randint(0, 512, (2, 17))

    def step(poison: bool) -> None:
        loss = torch.nn.functional.cross_entropy(
            model(tokens[:, :-1]).flatten(0, 1), tokens[:, 1:].flatten()
        )
        scaler.scale(loss).backward()
        if poison:
            model.layers[0].mlp.up_proj.weight.grad[0, 0] = float("inf")
        scaler.unscale_(optimizer)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    step(poison=False)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    buffer = optimizer.state[model.layers[0].attention.q_proj.weight]["momentum_buffer"].clone()
    step(poison=True)
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())
    assert torch.equal(
        optimizer.state[model.layers[0].attention.q_proj.weight]["momentum_buffer"], buffer
    )
    assert scaler.get_scale() == 512.0, "the scaler saw the inf and backed off"


def test_init_from_starts_muon_afresh(tmp_path, inputs):
    base = train(
        tiny_config(tmp_path, *inputs, run_name="base", max_steps=4, **MUON), FixedPoolStage
    )
    tuned = train(
        tiny_config(
            tmp_path, *inputs, run_name="tuned", init_from=str(base.run_dir), max_steps=1, **MUON
        ),
        FixedPoolStage,
    )
    state = torch.load(tuned.last_checkpoint / "training_state.pt", weights_only=True)
    optimizer = state["optimizer"]
    adamw_steps = [s["step"].item() for s in optimizer["state"].values() if "step" in s]
    assert adamw_steps and set(adamw_steps) == {1.0}, "AdamW's state starts at step 0 again"


def test_muon_groups_reject_non_matrices():
    with pytest.raises(ValueError, match="2-D"):
        MuonWithAdamW([{"params": [torch.nn.Parameter(torch.ones(3))], "use_muon": True}])


def test_a_muon_trained_model_exports_with_identical_logits(tmp_path, inputs):
    transformers = pytest.importorskip("transformers")
    from model.export.hf import export

    result = train(tiny_config(tmp_path, *inputs, max_steps=6, **MUON), PretrainingStage)
    out = export(result.run_dir, tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    tokens = torch.randint(0, result.model.config.vocab_size, (2, 24))
    with torch.no_grad():
        ours = result.model(tokens)[..., : hf.config.vocab_size]
        theirs = hf(tokens).logits
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_every_preset_trains_with_muon_groups():
    for name in PRESETS:
        with torch.device("meta"):
            model = Transformer(from_preset(name))
        groups = parameter_groups(model, dataclasses.replace(CONFIG, **MUON))
        assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
