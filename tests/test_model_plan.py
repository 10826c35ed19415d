"""model/plan.py: parameter and FLOP formulas, the memory estimate against a measured training
step, and the CLI."""

import ctypes
import json

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from common.errors import UserError
from model.config import from_preset
from model.plan import GPUS, flops_per_token, main, memory_estimate, parameter_counts, plan
from model.transformer import Transformer


def test_124m_matches_gpt2_small():
    """GPT-2 small: 124.4M parameters with its 1024x768 position table, ~85M without embeddings.
    Ours has RoPE (no position table) and the same MLP size (SwiGLU 3 x 768 x 2048 = 4x GELU)."""
    counts = parameter_counts(from_preset("124m"))
    gpt2_without_positions = 124_439_808 - 1024 * 768
    assert counts["total"] == pytest.approx(gpt2_without_positions, rel=0.001)
    assert counts["non_embedding"] == pytest.approx(85e6, rel=0.01)


def test_flops_formula_by_hand():
    c = from_preset("124m")
    n = 12 * (4 * 768 * 768 + 3 * 768 * 2048 + 2 * 768) + 768 + 50304 * 768
    flops = flops_per_token(c, 1024)
    assert flops["dense"] == 6 * n
    assert flops["attention"] == 12 * 12 * 1024 * 768
    assert flops["total"] == pytest.approx(854.8e6, rel=0.001)


def test_l4_uses_dense_bf16_peak_and_chinchilla_budget():
    result = plan(from_preset("170m"), GPUS["L4"], "bf16", hours=24, mfu=0.4)
    assert result["gpu"]["peak_flops"] == 121e12  # not the 242e12 sparse-FP16 figure
    n = result["parameters"]["total"]
    assert result["target_tokens"] == 20 * n
    assert result["target_compute_6ND"] == 6 * n * 20 * n
    tokens_per_s = 0.4 * 121e12 / result["flops_per_token"]["total"]
    assert result["tokens_per_s"] == pytest.approx(tokens_per_s)
    assert result["target_hours"] == pytest.approx(20 * n / tokens_per_s / 3600)
    # the README's claim: the 170m preset trains on ~20 tokens/parameter in a day on one L4
    assert 18 < result["budget_tokens_per_param"] < 23
    assert result["largest_micro_batch"]["without_checkpointing"] >= 8


def test_checkpointing_lowers_memory_and_raises_the_micro_batch():
    c = from_preset("124m")
    full = memory_estimate(c, 16, 1024, "bf16", checkpointing=False)
    ckpt = memory_estimate(c, 16, 1024, "bf16", checkpointing=True)
    assert ckpt["activations"] < full["activations"]
    assert ckpt["weights"] == full["weights"] == 4 * parameter_counts(c)["total"]
    assert full["adamw_state"] == 2 * full["weights"]
    fit = plan(c, GPUS["L4"], "bf16")["largest_micro_batch"]
    assert fit["with_checkpointing"] > fit["without_checkpointing"] > 0


# --- measured memory -------------------------------------------------------------------------


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _malloc_in_use():
    """Bytes currently allocated through glibc malloc (heap + mmap), or None off glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):
        return None
    info = libc.mallinfo2()
    return info.uordblks + info.hblkhd


class _PeakMemory(TorchDispatchMode):
    """Samples malloc's in-use bytes after every aten op (forward, backward and optimizer), so
    the peak is seen at op granularity. Robust where RSS is not: freed memory is not counted."""

    def __init__(self):
        super().__init__()
        self.peak = _malloc_in_use()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.peak = max(self.peak, _malloc_in_use())
        return out


def _train_step(model, optimizer, x, y):
    logits = model(x)
    loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1))
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


@pytest.mark.skipif(_malloc_in_use() is None, reason="needs glibc's mallinfo2")
@pytest.mark.parametrize("checkpointing", [False, True])
def test_memory_estimate_matches_a_measured_cpu_training_step(checkpointing):
    """fp32 on CPU. Measured = tensors alive before the step (weights + AdamW state) + the peak
    malloc growth during one step. 15% tolerance: the estimate models what autograd saves, not
    every short-lived temporary (optimizer scratch, allocator rounding)."""
    torch.manual_seed(0)
    config = from_preset("debug", vocab_size=512, block_size=256, n_layer=2)
    model = Transformer(config)
    model.gradient_checkpointing = checkpointing
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=False)
    B, T = 4, 256
    x = torch.randint(0, 512, (B, T))
    y = torch.randint(0, 512, (B, T))
    _train_step(model, optimizer, x, y)  # creates the AdamW state
    static = sum(p.numel() * 4 for p in model.parameters()) + sum(
        t.numel() * t.element_size()
        for state in optimizer.state.values()
        for t in state.values()
        if t.dim() > 0
    )
    before = _malloc_in_use()
    with _PeakMemory() as meter:
        _train_step(model, optimizer, x, y)
    measured = static + meter.peak - before
    estimate = memory_estimate(config, B, T, "fp32", checkpointing)["total"]
    assert estimate == pytest.approx(measured, rel=0.15), (estimate, measured)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("checkpointing", [False, True])
def test_memory_estimate_matches_cuda_max_memory_allocated(checkpointing):
    """bf16 autocast on a GPU, eager. Compared with torch.cuda.max_memory_allocated; 25%
    tolerance (kernel choice and the fused/unfused RMSNorm change what is saved)."""
    torch.manual_seed(0)
    config = from_preset("15m", vocab_size=32768, block_size=512)
    model = Transformer(config).cuda()
    model.gradient_checkpointing = checkpointing
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    B, T = 16, 512
    x = torch.randint(0, 32768, (B, T), device="cuda")
    y = torch.randint(0, 32768, (B, T), device="cuda")

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(x)
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    measured = torch.cuda.max_memory_allocated()
    estimate = memory_estimate(config, B, T, "bf16", checkpointing)["total"]
    print(json.dumps({"checkpointing": checkpointing, "measured": measured, "estimate": estimate}))
    assert estimate == pytest.approx(measured, rel=0.25), (estimate, measured)


# --- CLI ---------------------------------------------------------------------------------------


def test_cli_text_and_json(capsys):
    main(["--preset", "170m", "--gpu", "L4"])
    text = capsys.readouterr().out
    assert "121 TFLOP/s dense bf16" in text and "largest micro-batch" in text
    main(["--preset", "124m", "--gpu", "H100", "--micro-batch", "32", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert result["micro_batch"] == 32 and result["gpu"]["peak_flops"] == 989e12
    main(["--preset", "15m", "--n-layer", "8", "--n-embd", "384", "--n-head", "6", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert result["model"]["n_layer"] == 8 and result["model"]["n_kv_head"] == 6


def test_cli_with_a_tokenized_folder_prints_the_epochs_of_each_budget(tmp_path, capsys):
    from tokenizer.tokenized_data import SplitWriter

    writer = SplitWriter(tmp_path / "tokenized" / "train", "pre_training", 32768)
    writer.add_documents([[0] + [7] * 999] * 500)  # 500,000 tokens
    writer.finish("0" * 64)
    data_dir = str(tmp_path / "tokenized")
    main(["--preset", "15m", "--gpu", "L4", "--hours", "1", "--data-dir", data_dir, "--json"])
    result = json.loads(capsys.readouterr().out)
    assert result["data"]["train_tokens"] == 500_000
    assert result["data"]["epochs_target"] == pytest.approx(result["target_tokens"] / 500_000)
    assert result["data"]["epochs_budget"] == pytest.approx(result["budget_tokens"] / 500_000)
    main(["--preset", "15m", "--gpu", "L4", "--hours", "1", "--data-dir", data_dir])
    text = capsys.readouterr().out
    epochs = result["data"]["epochs_target"]
    assert f"{data_dir}: 500.00K train tokens;" in text and f"read it {epochs:.2f} times" in text
    assert "warning: more than 4 epochs" in text  # ~300M tokens on 0.5M
    with pytest.raises(UserError, match="meta.json is missing"):
        main(["--data-dir", str(tmp_path / "nothing")])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--gpu", "TPU"], "unknown GPU"),
        (["--preset", "huge"], "unknown model preset"),
        (["--n-embd", "1000", "--n-head", "16"], "not divisible by n_head"),
        (["--mfu", "1.5"], "--mfu must be in"),
        (["--micro-batch", "0"], "--micro-batch must be >= 1"),
    ],
)
def test_cli_bad_input(argv, message):
    with pytest.raises(UserError, match=message):
        main(argv)
