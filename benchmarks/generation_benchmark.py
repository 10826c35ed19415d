"""Generation speed: tokens/s with the KV cache against full recomputation of the context.

    python3 benchmarks/generation_benchmark.py                       # debug preset, CPU (+ CUDA)
    python3 benchmarks/generation_benchmark.py --preset 15m --new-tokens 256 --device cuda

Prints one JSON line per (device, mode, new tokens). A random-initialised model is enough: speed
does not depend on the weights. Decoding is greedy with no stop tokens, so every run produces
exactly --new-tokens tokens. The block size is raised to prompt + new tokens so neither mode
ever slides its context window (the comparison is pure: one position per step vs the whole
prefix per step).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

from common.errors import run_cli  # noqa: E402
from model.config import PRESETS, from_preset  # noqa: E402
from model.generate import generate  # noqa: E402
from model.transformer import Transformer  # noqa: E402


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_generation(model, prompt: list[int], new_tokens: int, use_cache: bool, device: str):
    synchronize(device)
    start = time.perf_counter()
    tokens = list(
        generate(model, prompt, new_tokens, temperature=0.0, stop_ids=(), use_cache=use_cache)
    )
    synchronize(device)
    return tokens, time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="debug", choices=sorted(PRESETS), help="model size")
    parser.add_argument(
        "--new-tokens", type=int, nargs="+", default=[256, 1024], help="tokens to generate"
    )
    parser.add_argument("--prompt-tokens", type=int, default=16, help="prompt length")
    parser.add_argument(
        "--device", nargs="+", default=None, help="devices (default: cpu, and cuda when present)"
    )
    parser.add_argument(
        "--dtype", default="float32", choices=["float32", "bfloat16"], help="weights on CUDA"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads (default: torch's choice)"
    )
    parser.add_argument(
        "--repeats", type=int, default=2, help="runs per configuration; the fastest is reported"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    block_size = args.prompt_tokens + max(args.new_tokens)
    config = from_preset(args.preset, block_size=block_size)
    torch.manual_seed(0)
    prompt = torch.randint(6, config.vocab_size, (args.prompt_tokens,)).tolist()
    for device in devices:
        dtype = getattr(torch, args.dtype) if device.startswith("cuda") else torch.float32
        model = Transformer(config).to(device=device, dtype=dtype).eval()
        time_generation(model, prompt, 8, True, device)  # warm-up (allocator, kernels)
        for new_tokens in args.new_tokens:
            outputs = {}
            for use_cache in (True, False):
                runs = [
                    time_generation(model, prompt, new_tokens, use_cache, device)
                    for _ in range(max(1, args.repeats))
                ]
                tokens, seconds = min(runs, key=lambda run: run[1])
                outputs[use_cache] = tokens
                record = {
                    "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
                    "threads": torch.get_num_threads(),
                    "preset": args.preset,
                    "params": model.num_parameters(),
                    "dtype": str(dtype).removeprefix("torch."),
                    "prompt_tokens": args.prompt_tokens,
                    "new_tokens": new_tokens,
                    "mode": "kv_cache" if use_cache else "recompute",
                    "seconds": round(seconds, 3),  # fastest of --repeats
                    "tokens_per_s": round(new_tokens / seconds, 1),
                }
                print(json.dumps(record), flush=True)
            if dtype == torch.float32 and outputs[True] != outputs[False]:
                print(json.dumps({"warning": "cached and recomputed tokens differ"}), flush=True)


if __name__ == "__main__":
    run_cli(main)
