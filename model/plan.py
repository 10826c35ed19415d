"""Orders of magnitude: what a model size costs in FLOPs, memory and time on one GPU.

    python3 -m model.plan --preset 170m --gpu L4 --hours 24
    python3 -m model.plan --preset 124m --gpu H100 --micro-batch 32 --block-size 1024
    python3 -m model.plan --preset 15m --n-layer 8 --gpu A100-40GB --json   # overrides, JSON
    python3 -m model.plan --preset 170m --data-dir data/pre_training/tokenized   # + epochs
    python3 -m model.plan --checkpoint checkpoints/smollm2 --block-size 2048   # a checkpoint's

Prints parameters (total, non-embedding), training FLOPs per token, memory (weights, gradients,
AdamW state, activations per micro-batch, with and without activation checkpointing), the
largest micro-batch that fits, tokens per hour at an assumed MFU, and the time to train on a
tokens-per-parameter budget. Nothing is allocated: it is arithmetic on the config. Given a
tokenized folder (`--data-dir`), also how many times each budget reads its train split, with
a warning above MANY_EPOCHS (the training stages print the same at the start of a run).

Formulas (per token, d = n_embd, L = n_layer, T = block_size, V = padded vocab, m = mlp_hidden):
- FLOPs = 6 * N_matmul + 12 * L * T * d (forward + backward = 3x the forward's 2 FLOPs per
  multiply-add). N_matmul = non-embedding parameters + V * d (the LM head is a matmul, the
  embedding lookup is not). The attention term counts QK^T and AV for all T keys, as PaLM's and
  nanoGPT's MFU do (a causal kernel skips half of it, so MFU is conservative).
- Training compute C = FLOPs per token * D, close to the textbook C ~ 6 * N * D with N the
  parameter count and D the number of training tokens.
- Memory: fp32 weights (4 B/param), fp32 gradients (4), AdamW's two fp32 moments (8); under
  bf16/fp16 autocast, bf16 copies of the matmul weights (2). Activations saved for the backward
  pass, per token and layer, counted on this codebase's eager forward: fp32: 40d + 16m bytes
  (tests/test_model_plan.py checks it against a measured CPU step); bf16/fp16 autocast:
  34d + 8m bytes (the same count with 2-byte matmul inputs; a GPU test checks it on CUDA).
  The residual stream stays fp32; RMSNorm keeps its input and normalised input, attention
  keeps q, k, v (k, v repeated to all heads) and its output, SwiGLU keeps its 4 hidden-width
  tensors. (With grouped-query heads in bf16/fp16 on an Ampere+ GPU, SDPA groups the heads
  itself and keeps k, v unrepeated: the estimate errs a few percent high there.) The head
  keeps 12d bytes/token and at the start of the backward pass holds logits, fp32
  log-probabilities and their gradients: (a + 12) * V bytes/token (a = 2 in bf16, 4 in fp32;
  training/stage.py's compiled loss, used with --compile on a GPU, holds far less).
  With activation checkpointing each layer keeps only its fp32 input (4d) and one layer's
  activations are rebuilt at a time during the backward pass (while the logits, a * V, are
  still held).
- "Fits" means the total stays under 90% of the card's memory (CUDA context, allocator
  fragmentation and the loss's temporaries take the rest). torch.compile usually needs less.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

from common.errors import ArgumentParser, UserError, run_cli
from model.config import PRESETS, ModelConfig, from_preset

GB = 1e9
# Repeated data is worth about as much as new data up to ~4 epochs and quickly less after
# (Muennighoff et al. 2023, "Scaling Data-Constrained Language Models"); training/data.py too.
MANY_EPOCHS = 4.0


@dataclass(frozen=True)
class GPU:
    name: str
    memory_gb: float
    peak_flops: dict[str, float]  # dense (no 2:4 sparsity) tensor-core FLOP/s per precision


# Dense peaks from the vendors' datasheets. The L4's often-quoted 242 TFLOP/s is FP16 *with
# sparsity*; dense bf16 is 121. fp32 means TF32 tensor cores (PyTorch's "high" precision).
GPUS = {
    "L4": GPU("NVIDIA L4", 24, {"bf16": 121e12, "fp16": 121e12, "fp32": 60e12}),
    "A100-40GB": GPU("NVIDIA A100 40GB", 40, {"bf16": 312e12, "fp16": 312e12, "fp32": 156e12}),
    "A100-80GB": GPU("NVIDIA A100 80GB", 80, {"bf16": 312e12, "fp16": 312e12, "fp32": 156e12}),
    "H100": GPU("NVIDIA H100 SXM", 80, {"bf16": 989e12, "fp16": 989e12, "fp32": 494e12}),
    "H200": GPU("NVIDIA H200 SXM", 141, {"bf16": 989e12, "fp16": 989e12, "fp32": 494e12}),
}
GPU_ALIASES = {"A100": "A100-80GB", "H100-SXM": "H100", "H200-SXM": "H200"}
PRECISIONS = ("bf16", "fp16", "fp32")
USABLE_MEMORY_FRACTION = 0.9


def parameter_counts(c: ModelConfig) -> dict[str, int]:
    """Hand formula for the parameters of model.transformer.Transformer (tests compare)."""
    d, kv_dim = c.n_embd, c.n_kv_head * c.head_dim
    attention = d * (c.n_head * c.head_dim) * 2 + d * kv_dim * 2  # q, o + k, v
    mlp = 3 * d * c.mlp_hidden  # gate, up, down
    norms = 2 * d
    non_embedding = c.n_layer * (attention + mlp + norms) + d  # + final norm
    embedding = c.padded_vocab_size * d
    lm_head = 0 if c.tie_embeddings else c.padded_vocab_size * d
    return {
        "total": non_embedding + embedding + lm_head,
        "non_embedding": non_embedding,
        "matmul": non_embedding + c.padded_vocab_size * d,  # what 6N counts
    }


def flops_per_token(c: ModelConfig, block_size: int) -> dict[str, float]:
    """Training FLOPs per token: 6 * N_matmul + 12 * L * T * (n_head * head_dim)."""
    dense = 6 * parameter_counts(c)["matmul"]
    attention = 12 * c.n_layer * block_size * c.n_head * c.head_dim
    return {"dense": dense, "attention": attention, "total": dense + attention}


def activation_bytes_per_token(c: ModelConfig, precision: str) -> dict[str, float]:
    """Bytes kept for the backward pass per token (see the module docstring)."""
    a = 4 if precision == "fp32" else 2
    d, m, V = c.n_embd, c.mlp_hidden, c.padded_vocab_size
    if precision == "fp32":
        layer = 40 * d + 16 * m
    else:  # autocast: fp32 residual and norm internals, low-precision matmul inputs
        layer = 34 * d + 8 * m
    return {
        "layer": layer,
        "layer_checkpointed": 4 * d,  # only the block's fp32 input
        "head": 12 * d + 8,  # final norm + LM-head input + the token ids
        "logits": (a + 12) * V,  # logits, fp32 log-probs and their gradients
        "logits_held": a * V,  # the logits tensor alone
    }


def memory_estimate(
    c: ModelConfig, micro_batch: int, block_size: int, precision: str, checkpointing: bool
) -> dict[str, float]:
    """Peak training memory in bytes, by component."""
    n = parameter_counts(c)
    per_token = activation_bytes_per_token(c, precision)
    tokens = micro_batch * block_size
    if checkpointing:
        # every layer's input, plus the larger of: the head's backward, or one layer rebuilt
        # while the caller still holds the logits
        layers = c.n_layer * per_token["layer_checkpointed"]
        peak_extra = max(per_token["logits"], per_token["logits_held"] + per_token["layer"])
    else:
        layers = c.n_layer * per_token["layer"]
        peak_extra = per_token["logits"]
    weights = 4 * n["total"]
    result = {
        "weights": weights,
        "gradients": 4 * n["total"],
        "adamw_state": 8 * n["total"],
        "autocast_weight_copies": 0 if precision == "fp32" else 2 * n["matmul"],
        "activations": tokens * (layers + per_token["head"] + peak_extra),
    }
    result["total"] = sum(result.values())
    return result


def largest_micro_batch(
    c: ModelConfig, block_size: int, precision: str, checkpointing: bool, memory_gb: float
) -> int:
    """Largest micro-batch whose estimate fits in USABLE_MEMORY_FRACTION of the card (0 = none)."""
    fixed = memory_estimate(c, 0, block_size, precision, checkpointing)["total"]
    per_sequence = memory_estimate(c, 1, block_size, precision, checkpointing)["total"] - fixed
    budget = USABLE_MEMORY_FRACTION * memory_gb * GB - fixed
    return max(0, math.floor(budget / per_sequence))


def plan(
    config: ModelConfig,
    gpu: GPU,
    precision: str = "bf16",
    micro_batch: int | None = None,
    block_size: int | None = None,
    hours: float = 24.0,
    mfu: float = 0.4,
    tokens_per_param: float = 20.0,
    checkpointing: bool = False,
) -> dict:
    """Every figure the CLI prints, as a dict (numbers in base units: bytes, FLOPs, seconds)."""
    T = block_size or config.block_size
    fit = {
        "without_checkpointing": largest_micro_batch(config, T, precision, False, gpu.memory_gb),
        "with_checkpointing": largest_micro_batch(config, T, precision, True, gpu.memory_gb),
    }
    if micro_batch is None:
        key = "with_checkpointing" if checkpointing else "without_checkpointing"
        micro_batch = max(1, fit[key])
    params = parameter_counts(config)
    flops = flops_per_token(config, T)
    peak = gpu.peak_flops[precision]
    tokens_per_s = mfu * peak / flops["total"]
    target_tokens = tokens_per_param * params["total"]
    budget_tokens = tokens_per_s * hours * 3600
    memory = {
        name: memory_estimate(config, micro_batch, T, precision, ckpt)
        for name, ckpt in (("without_checkpointing", False), ("with_checkpointing", True))
    }
    return {
        "model": {
            **config.to_dict(),
            "head_dim": config.head_dim,
            "padded_vocab_size": config.padded_vocab_size,
        },
        "gpu": {"name": gpu.name, "memory_gb": gpu.memory_gb, "peak_flops": peak},
        "precision": precision,
        "micro_batch": micro_batch,
        "block_size": T,
        "activation_checkpointing": checkpointing,
        "parameters": params,
        "flops_per_token": flops,
        "memory_bytes": memory,
        "largest_micro_batch": fit,
        "fits": memory["with_checkpointing" if checkpointing else "without_checkpointing"]["total"]
        <= USABLE_MEMORY_FRACTION * gpu.memory_gb * GB,
        "mfu": mfu,
        "tokens_per_s": tokens_per_s,
        "tokens_per_hour": tokens_per_s * 3600,
        "tokens_per_param": tokens_per_param,
        "target_tokens": target_tokens,
        "target_compute_flops": flops["total"] * target_tokens,
        "target_compute_6ND": 6 * params["total"] * target_tokens,
        "target_hours": target_tokens / tokens_per_s / 3600,
        "hours": hours,
        "budget_tokens": budget_tokens,
        "budget_tokens_per_param": budget_tokens / params["total"],
    }


def human(value: float, unit: str = "") -> str:
    """3.46B (a count) or 1.19 GFLOP (a quantity with a unit)."""
    giga = "G" if unit else "B"
    for factor, suffix in ((1e12, "T"), (1e9, giga), (1e6, "M"), (1e3, "K")):
        if abs(value) >= factor:
            return f"{value / factor:.2f}{' ' if unit else ''}{suffix}{unit}"
    return f"{value:.0f}{' ' if unit else ''}{unit}"


def report(p: dict) -> str:
    m, params, flops = p["model"], p["parameters"], p["flops_per_token"]
    T, B = p["block_size"], p["micro_batch"]
    lines = [
        f"model       {m['n_layer']} layers x {m['n_embd']} wide, {m['n_head']} heads "
        f"({m['n_kv_head']} kv) of {m['head_dim']}, mlp {m['mlp_hidden']}, block {T}, vocab "
        f"{m['vocab_size']} (padded {m['padded_vocab_size']}), tied={m['tie_embeddings']}",
        f"parameters  N = {human(params['total'])} total, {human(params['non_embedding'])} "
        f"non-embedding ({human(params['matmul'])} in matmuls, LM head included)",
        f"FLOPs/token 6 x {human(params['matmul'])} + 12 x L x T x d = "
        f"{human(flops['dense'], 'FLOP')} + {human(flops['attention'], 'FLOP')} (attention) = "
        f"{human(flops['total'], 'FLOP')} per training token",
        f"GPU         {p['gpu']['name']}: {p['gpu']['memory_gb']:.0f} GB, "
        f"{p['gpu']['peak_flops'] / 1e12:.0f} TFLOP/s dense {p['precision']}",
        f"memory      micro-batch {B} x {T} tokens, {p['precision']}:",
    ]
    for name in ("without_checkpointing", "with_checkpointing"):
        mem = p["memory_bytes"][name]
        label = name.replace("_", " ")
        lines.append(
            f"  {label:23s} weights {mem['weights'] / GB:.2f} + grads {mem['gradients'] / GB:.2f}"
            f" + AdamW {mem['adamw_state'] / GB:.2f} + autocast copies "
            f"{mem['autocast_weight_copies'] / GB:.2f} + activations "
            f"{mem['activations'] / GB:.2f} = {mem['total'] / GB:.2f} GB"
        )
    fit = p["largest_micro_batch"]
    lines += [
        f"largest micro-batch that fits ({USABLE_MEMORY_FRACTION:.0%} of memory): "
        f"{fit['without_checkpointing']} without, {fit['with_checkpointing']} with "
        "activation checkpointing" + ("" if p["fits"] else f"  (micro-batch {B} does NOT fit)"),
        f"throughput  at {p['mfu']:.0%} MFU: {human(p['tokens_per_s'])} tokens/s = "
        f"{human(p['tokens_per_hour'])} tokens/hour",
        f"budget      {p['tokens_per_param']:g} tokens/parameter: D = {human(p['target_tokens'])} "
        f"tokens, C = 6ND = {p['target_compute_6ND']:.2e} FLOP "
        f"({p['target_compute_flops']:.2e} with attention) -> {p['target_hours']:.1f} h",
        f"in {p['hours']:g} h     {human(p['budget_tokens'])} tokens = "
        f"{p['budget_tokens_per_param']:.1f} tokens/parameter",
    ]
    return "\n".join(lines)


def data_epochs(data_dir: str, p: dict) -> dict:
    """The train tokens of a tokenized folder and the epochs each budget of `p` reads."""
    from tokenizer.tokenized_data import read_meta

    tokens = read_meta(Path(data_dir) / "train")["num_tokens"]
    return {
        "dir": data_dir,
        "train_tokens": tokens,
        "epochs_target": p["target_tokens"] / max(tokens, 1),
        "epochs_budget": p["budget_tokens"] / max(tokens, 1),
    }


def data_report(data: dict, p: dict) -> list[str]:
    lines = [
        f"data        {data['dir']}: {human(data['train_tokens'])} train tokens; "
        f"{p['tokens_per_param']:g} tokens/parameter ({human(p['target_tokens'])}) read it "
        f"{data['epochs_target']:.2f} times, {p['hours']:g} h ({human(p['budget_tokens'])}) "
        f"{data['epochs_budget']:.2f} times"
    ]
    if max(data["epochs_target"], data["epochs_budget"]) > MANY_EPOCHS:
        lines.append(
            f"warning: more than {MANY_EPOCHS:g} epochs, where repeated data stops being worth "
            "new data; add data (a larger download, or a mixture of corpora) or train less"
        )
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python3 -m model.plan",
        description="Parameters, FLOPs, memory and training time for a model size on one GPU.",
    )
    parser.add_argument(
        "--preset",
        default="170m",
        help=f"starting shape: {', '.join(PRESETS)} (default: %(default)s)",
    )
    sizes = parser.add_argument_group("explicit sizes (override the preset)")
    for flag, help_text in (
        ("--vocab-size", "tokenizer vocabulary size"),
        ("--n-layer", "number of Transformer blocks"),
        ("--n-embd", "model width d"),
        ("--n-head", "query heads"),
        ("--n-kv-head", "key/value heads (grouped-query attention)"),
        ("--mlp-hidden", "SwiGLU hidden width (default 8/3 d rounded to 64)"),
    ):
        sizes.add_argument(flag, type=int, default=None, help=help_text)
    sizes.add_argument(
        "--tie-embeddings",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="share the embedding and LM-head matrix",
    )
    parser.add_argument(
        "--checkpoint",
        help="plan a checkpoint's model instead (ours or one from model.import_hf); --block-size "
        "still applies, the other sizes do not",
    )
    parser.add_argument(
        "--block-size", type=int, default=None, help="training sequence length (default: preset's)"
    )
    add_training_options(parser)
    return parser


def add_training_options(parser: argparse.ArgumentParser) -> None:
    """The GPU, precision, batch and time budget the plan is for."""
    parser.add_argument(
        "--gpu",
        default="L4",
        help=f"one of {', '.join(GPUS)}; A100 = A100-80GB (default: %(default)s)",
    )
    parser.add_argument(
        "--precision",
        default="bf16",
        choices=PRECISIONS,
        help="bf16/fp16: autocast, fp32 master weights; fp32: TF32 matmuls (default: %(default)s)",
    )
    parser.add_argument(
        "--micro-batch",
        type=int,
        default=None,
        help="sequences per forward pass (default: the largest that fits)",
    )
    parser.add_argument(
        "--activation-checkpointing",
        action="store_true",
        help="plan with activation checkpointing (less memory, ~1/3 more compute)",
    )
    parser.add_argument(
        "--hours", type=float, default=24.0, help="time budget in hours (default: %(default)s)"
    )
    parser.add_argument(
        "--mfu",
        type=float,
        default=0.4,
        help="assumed model FLOPs utilisation, 0-1 (default: %(default)s; 0.3-0.5 is typical)",
    )
    parser.add_argument(
        "--tokens-per-param",
        type=float,
        default=20.0,
        help="training tokens per parameter (default: %(default)s, Chinchilla's optimum)",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="a tokenized folder (tokenizer.tokenize_dataset): also print how many times each "
        "budget reads its train split",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")


def config_from_args(args: argparse.Namespace) -> ModelConfig:
    if args.checkpoint:  # torch is imported only here
        from model.checkpoint import read_checkpoint_config, resolve_checkpoint

        saved = read_checkpoint_config(resolve_checkpoint(args.checkpoint))["model"]
        return ModelConfig.from_dict(
            {**saved, "block_size": args.block_size or saved["block_size"]}
        )
    overrides = {
        name: getattr(args, name)
        for name in (
            "vocab_size",
            "n_layer",
            "n_embd",
            "n_head",
            "n_kv_head",
            "mlp_hidden",
            "tie_embeddings",
            "block_size",
        )
        if getattr(args, name) is not None
    }
    if "n_head" in overrides and "n_kv_head" not in overrides:
        overrides["n_kv_head"] = 0  # plain multi-head attention unless asked otherwise
    return from_preset(args.preset, **overrides)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    gpu_name = GPU_ALIASES.get(args.gpu, args.gpu)
    if gpu_name not in GPUS:
        raise UserError(f"--gpu {args.gpu}: unknown GPU; choose one of {', '.join(GPUS)}")
    for flag, value, low, high in (
        ("--mfu", args.mfu, 0, 1),
        ("--hours", args.hours, 0, math.inf),
        ("--tokens-per-param", args.tokens_per_param, 0, math.inf),
    ):
        if not low < value <= high:
            raise UserError(f"{flag} must be in ({low}, {high}], got {value}")
    if args.micro_batch is not None and args.micro_batch < 1:
        raise UserError(f"--micro-batch must be >= 1, got {args.micro_batch}")
    config = config_from_args(args)
    result = plan(
        config,
        GPUS[gpu_name],
        args.precision,
        args.micro_batch,
        None,
        args.hours,
        args.mfu,
        args.tokens_per_param,
        args.activation_checkpointing,
    )
    lines = [report(result)]
    if args.data_dir is not None:
        result["data"] = data_epochs(args.data_dir, result)
        lines += data_report(result["data"], result)
    print(json.dumps(result, indent=2) if args.json else "\n".join(lines))


if __name__ == "__main__":
    run_cli(main)
