r"""Training throughput: tokens/s, MFU and peak memory, one JSON line per configuration.

    # the README's reference shapes on a GPU (with and without torch.compile)
    python3 -m benchmarks.training_benchmark --preset 124m --micro-batch 32 --block-size 1024
    python3 -m benchmarks.training_benchmark --preset 170m --micro-batch 8 16 --compile on

Tiny CPU example (tokens/s only; a CPU has no MFU):
    python3 -m benchmarks.training_benchmark --preset debug --micro-batch 8 --block-size 128 \
        --device cpu --steps 10 --warmup 3 --compile off

Each timed step is what the engine's optimizer step does (training/trainer.py), on random
tokens: forward under autocast, fp32 cross-entropy over the padded vocabulary (with --compile on
a GPU, compiled as the engine's is: training/stage.py), backward, gradient clipping, fused
AdamW (or Muon + AdamW with --optimizer muon), and the one host sync per step the engine also
does (reading the loss). Warm-up steps (which include compilation) are not timed. MFU =
tokens/s x training FLOPs per token (model/plan.py) / the device's dense bf16 peak
(training/device.py). Peak memory is
torch.cuda.max_memory_allocated; `planned_memory_gb` is model/plan.py's estimate for the same
shape (it models the eager model: compile usually needs less).
A configuration that fails (out of memory, a compiler error) prints a line with "error".
"""

import argparse
import dataclasses
import json
import platform
import time

import torch

import pre_training
from common.errors import ArgumentParser, UserError, run_cli
from model.config import PRESETS, from_preset
from model.plan import flops_per_token, memory_estimate
from model.transformer import Transformer
from training.config import OPTIMIZERS
from training.device import (
    autocast,
    enable_fast_fp32_matmuls,
    grad_scaler,
    peak_flops,
    resolve_precision,
    training_device,
)
from training.optimizer import build_optimizer
from training.stage import cross_entropy_sum


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python3 -m benchmarks.training_benchmark",
        description="Measure training tokens/s, MFU and peak memory; prints one JSON line each.",
    )
    parser.add_argument("--preset", default="124m", choices=sorted(PRESETS), help="model size")
    parser.add_argument(
        "--micro-batch", type=int, nargs="+", default=[32], help="sequences per forward pass"
    )
    parser.add_argument("--block-size", type=int, default=1024, help="tokens per sequence")
    parser.add_argument(
        "--compile",
        choices=("off", "on", "both"),
        default="both",
        help="torch.compile the model: off, on, or both (two lines per micro-batch)",
    )
    parser.add_argument(
        "--accumulation",
        type=int,
        default=1,
        help="micro-batches per optimizer step (pre_training.py accumulates 64 of 8 x 1024)",
    )
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (and compile)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    parser.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "bf16", "fp16", "fp32"),
        help="auto = bf16 on a GPU that has it, fp32 on CPU",
    )
    parser.add_argument(
        "--optimizer",
        default="adamw",
        choices=OPTIMIZERS,
        help="adamw (fused), or muon (Newton-Schulz on the block matrices + AdamW)",
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="STEPS",
        help="on a GPU: also time the step's phases and list its top kernels over STEPS steps",
    )
    parser.add_argument(
        "--activation-checkpointing",
        action="store_true",
        help="recompute activations (less memory)",
    )
    parser.add_argument(
        "--fp8",
        choices=["auto", "all"],
        default=None,
        help="an experiment: the blocks' matmuls in FP8 (torchao's Float8Linear, tensorwise "
        "dynamic scaling; needs torchao and a GPU of compute capability 8.9 or newer). auto: "
        "only the layers torchao's own size rule expects to gain; all: every one",
    )
    return parser


def measure(args, micro_batch: int, compiled: bool, device: torch.device, precision: str) -> dict:
    config = from_preset(args.preset, block_size=args.block_size)
    torch.manual_seed(0)
    model = Transformer(config).to(device).train()
    model.gradient_checkpointing = args.activation_checkpointing
    fp8_layers = convert_blocks_to_float8(model, args.fp8) if args.fp8 else 0
    optimizer_config = dataclasses.replace(
        pre_training.CONFIG, optimizer=args.optimizer, learning_rate=1e-4, min_lr=1e-5
    )
    optimizer = build_optimizer(model, optimizer_config, device)
    scaler = grad_scaler(precision, device)
    train_model = torch.compile(model) if compiled else model
    fused_loss = compiled and device.type == "cuda"  # as the engine decides
    loss_function = torch.compile(cross_entropy_sum) if fused_loss else cross_entropy_sum
    shape = (micro_batch, args.block_size)
    inputs = torch.randint(0, config.vocab_size, shape, device=device)
    targets = torch.randint(0, config.vocab_size, shape, device=device)

    def step(phases: PhaseTimer | None = None) -> float:
        phases = phases or PhaseTimer(enabled=False)
        for _ in range(args.accumulation):
            phases.mark("forward + loss")
            with autocast(precision, device):
                loss = loss_function(train_model(inputs), targets) / targets.numel()
            phases.mark("backward")
            scaler.scale(loss / args.accumulation).backward()
        phases.mark("unscale + clip")
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        phases.mark("optimizer")
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        phases.mark("gap to the next step")  # loss.item() and the host, until it launches again
        return loss.item()  # the engine's per-step host sync

    seconds = seconds_per_step(step, args.warmup, args.steps, device)
    tokens_per_s = args.accumulation * micro_batch * args.block_size / seconds
    flops = flops_per_token(config, args.block_size)["total"]
    result = {
        **describe(args, micro_batch, compiled, device),
        "parameters_m": round(model.num_parameters() / 1e6, 2),
        "precision": precision,
        "fused_loss": fused_loss,
        "fp8_layers": fp8_layers,  # of the blocks' linear layers
        "step_ms": round(seconds * 1000, 2),
        "tokens_per_s": round(tokens_per_s),
        "model_tflops": round(tokens_per_s * flops / 1e12, 1),  # achieved, by the MFU formula
    }
    if args.profile and device.type == "cuda":
        try:  # the timing above is the figure: a profiler failure must not lose it
            result["profile"] = profile_step(step, args.profile)
        except Exception as error:
            result["profile_error"] = f"{type(error).__name__}: {str(error)[:200]}"
    peak = peak_flops(device)
    if peak:
        result["mfu"] = round(tokens_per_s * flops / peak, 4)
    if device.type == "cuda":
        result.update(memory_figures(args, config, micro_batch, precision, device))
    else:
        result["threads"] = torch.get_num_threads()
    return result


def float8_converter():
    """torchao's convert_to_float8_training, or a one-line error when torchao is missing."""
    try:
        from torchao.float8 import convert_to_float8_training
    except ImportError as error:
        raise UserError("--fp8 needs torchao (pip install torchao)") from error
    return convert_to_float8_training


def convert_blocks_to_float8(model: Transformer, layers: str = "all") -> int:
    """Swap the blocks' nn.Linear layers for torchao's Float8Linear (same weight parameters, so
    the optimizer's groups do not change); returns how many. The LM head stays bf16: it shares
    the embedding. layers="auto": only those torchao's size rule for tensorwise scaling expects
    to gain (measured on H100s: at 124m and 170m, gate and up)."""
    convert = float8_converter()
    rule = None
    if layers == "auto":
        from torchao.float8 import _auto_filter_for_recipe

        rule = _auto_filter_for_recipe("tensorwise", filter_fqns=[])
    for layer in model.layers:
        convert(layer, module_filter_fn=rule)
    return sum(type(m).__name__ == "Float8Linear" for m in model.layers.modules())


def memory_figures(args, config, micro_batch: int, precision: str, device) -> dict:
    """Measured peak GPU memory, and model/plan.py's estimate for the same shape."""
    planned = memory_estimate(
        config, micro_batch, args.block_size, precision, args.activation_checkpointing
    )
    return {
        "peak_memory_gb": round(torch.cuda.max_memory_allocated(device) / 1e9, 2),
        "planned_memory_gb": round(planned["total"] / 1e9, 2),
    }


def seconds_per_step(step, warmup: int, steps: int, device: torch.device) -> float:
    """Mean wall seconds of `steps` calls of step() after `warmup` untimed ones (compilation)."""
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - started) / steps


class PhaseTimer:
    """CUDA events between the phases of a step: where its GPU time goes (ms per phase)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.marks: list[tuple[str, torch.cuda.Event]] = []

    def mark(self, name: str) -> None:
        if self.enabled:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append((name, event))

    def milliseconds(self) -> dict[str, float]:
        torch.cuda.synchronize()
        times: dict[str, float] = {}
        for (name, start), (_, end) in zip(self.marks, self.marks[1:]):
            times[name] = times.get(name, 0.0) + start.elapsed_time(end)
        return times


def profile_step(step, steps: int) -> dict:
    """Per-phase GPU milliseconds of a step (mean of `steps`), and the top kernels under
    torch.profiler (printed as a table; the 12 largest returned with their share)."""
    phases = PhaseTimer()
    for _ in range(steps):
        step(phases)
    per_phase = {name: round(ms / steps, 2) for name, ms in phases.milliseconds().items()}
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as profiler:
        for _ in range(steps):
            step()
    events = profiler.key_averages()
    print(events.table(sort_by="self_device_time_total", row_limit=60), flush=True)
    kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
    kernels.sort(key=lambda e: e.self_device_time_total, reverse=True)
    total = sum(e.self_device_time_total for e in kernels) or 1.0
    top = [
        {
            "name": e.key[:90],
            "ms_per_step": round(e.self_device_time_total / 1e3 / steps, 3),
            "share": round(e.self_device_time_total / total, 3),
        }
        for e in kernels[:12]
    ]
    return {"phase_ms": per_phase, "top_kernels": top}


def describe(args, micro_batch: int, compiled: bool, device: torch.device) -> dict:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    return {
        "preset": args.preset,
        "device": name or "cpu",
        "torch": torch.__version__,
        "compile": compiled,
        "activation_checkpointing": args.activation_checkpointing,
        "fp8": args.fp8,
        "optimizer": args.optimizer,
        "micro_batch": micro_batch,
        "accumulation": args.accumulation,
        "block_size": args.block_size,
    }


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if (
        min(args.steps, args.block_size, args.accumulation, *args.micro_batch) < 1
        or args.warmup < 0
    ):
        raise UserError(
            "--steps, --block-size, --accumulation and --micro-batch must be >= 1, --warmup >= 0"
        )
    if args.fp8:
        float8_converter()  # missing torchao: say so once, before any configuration runs
    device = training_device(args.device)
    precision = resolve_precision(args.precision, device)
    if device.type == "cuda":
        enable_fast_fp32_matmuls()
    compile_modes = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
    for micro_batch in args.micro_batch:
        for compiled in compile_modes:
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            try:
                result = measure(args, micro_batch, compiled, device, precision)
            except torch.cuda.OutOfMemoryError:
                result = {**describe(args, micro_batch, compiled, device), "error": "out of memory"}
            except Exception as error:  # e.g. no C compiler / Triton for torch.compile
                first_line = (str(error).strip().splitlines() or [repr(error)])[0][:300]
                result = {
                    **describe(args, micro_batch, compiled, device),
                    "error": f"{type(error).__name__}: {first_line}",
                }
            if compiled:
                torch.compiler.reset()  # drop this model's compiled graphs before the next one
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    run_cli(main)
