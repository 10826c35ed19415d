"""Generation speed: our decoder against Hugging Face transformers' `generate` and llama.cpp,
same weights.

    python3 benchmarks/generation_benchmark.py --threads 1                    # debug preset, CPU
    python3 benchmarks/generation_benchmark.py --threads 1 --preset 15m --new-tokens 256
    python3 benchmarks/generation_benchmark.py --threads 1 all --preset 15m --new-tokens 256 \
        --modes eager compiled llama_cpp_f32 llama_cpp_f16 llama_cpp_q8_0     # one thread, all
    python3 benchmarks/generation_benchmark.py --preset 124m --device cuda --dtype bfloat16 \\
        --modes eager cuda_graphs batched transformers --streams 8

Prints one JSON line per (device, mode, new tokens), then ours / transformers. Modes:
  eager         model.generate's path: KV cache, one stream, eager PyTorch
  compiled      Generator(compile=True): the decode step compiled over the whole cache (on CUDA
                mode="reduce-overhead": CUDA graphs); the compile is in the warm-up, not timed
  cuda_graphs   compiled, on CUDA only (the name the 2026-11 GPU sessions ran)
  batched       --streams streams decoded together (compiled on CUDA): total tokens/s
  transformers  LlamaForCausalLM.generate on our weights (model/export/hf.py's mapping)
  recompute     no cache: the whole context again for every token (the reference)
  llama_cpp_f32, llama_cpp_f16, llama_cpp_q8_0
                llama.cpp (llama-cpp-python's `generate`, greedy, CPU) on the file that
                python3 -m model.export.gguf writes at that --dtype (norms stay f32)
--threads takes several counts (`all` = every core): each runs every mode, in one run.
--profile prints torch.profiler's table of 20 tokens of each of our modes.
The 15m and 124m goal (ours at least 1.0x transformers, one thread, CPU):
    OMP_NUM_THREADS=1 python3 benchmarks/generation_benchmark.py --threads 1 --preset 15m \
        --new-tokens 256 1024 --modes eager compiled transformers --repeats 3
    OMP_NUM_THREADS=1 python3 benchmarks/generation_benchmark.py --threads 1 --preset 124m \
        --new-tokens 256 1024 --modes eager compiled transformers --repeats 1
A random-initialised model is enough: speed does not depend on the weights (nor on the tokens:
the GGUF export gets a made-up vocabulary of the preset's size). Decoding is greedy with no stop
token, so every run makes exactly --new-tokens tokens; greedy tokens of every fp32 mode must
equal the eager ones, and a line says so when they do not (random weights have near-ties that
another summation order can flip, so llama_cpp_f32 may differ after a while; f16 and q8_0 are
not compared). The block size is
raised to prompt + new tokens, so no mode ever slides its context window.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

from common.errors import ArgumentParser, UserError, run_cli  # noqa: E402
from model.checkpoint import save_model_files  # noqa: E402
from model.config import PRESETS, from_preset  # noqa: E402
from model.generate import Generator, Sampling, Stream  # noqa: E402
from model.transformer import Transformer  # noqa: E402
from tokenizer.encoding import SPECIAL_TOKENS  # noqa: E402

LLAMA_CPP_MODES = {"llama_cpp_f32": "f32", "llama_cpp_f16": "f16", "llama_cpp_q8_0": "q8_0"}
MODES = (
    "eager",
    "compiled",
    "cuda_graphs",
    "batched",
    "transformers",
    "recompute",
    *LLAMA_CPP_MODES,
)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def transformers_model(model: Transformer, dtype: torch.dtype):
    """LlamaForCausalLM with our weights (what model.export.hf writes, without the files)."""
    import transformers

    from model.export.hf import hf_state_dict, llama_config

    config = transformers.LlamaConfig(**llama_config(model, str(dtype).removeprefix("torch.")))
    hf = transformers.LlamaForCausalLM(config).to(dtype)
    missing, unexpected = hf.load_state_dict(hf_state_dict(model, dtype), strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:  # a tied head comes from the embedding
        raise RuntimeError(f"weights do not map: missing {missing}, unexpected {unexpected}")
    return hf.to(next(model.parameters()).device).eval()


def made_up_tokenizer(path: Path, vocab_size: int) -> Path:
    """A tokenizer.train-format tokenizer of exactly vocab_size tokens: the special tokens, the
    256 byte symbols, then pairs of them (the exporter needs a tokenizer, the speed only its
    size)."""
    from tokenizers import models, pre_tokenizers

    from tokenizer.train import build_tokenizer

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + alphabet)}
    merges = list(itertools.islice(itertools.product(alphabet, alphabet), vocab_size - len(vocab)))
    vocab.update({left + right: len(vocab) + i for i, (left, right) in enumerate(merges)})
    tokenizer = build_tokenizer()
    tokenizer.model = models.BPE(vocab, merges)
    tokenizer.add_special_tokens(SPECIAL_TOKENS)
    tokenizer.save(str(path))
    return path


def llama_cpp_runner(model: Transformer, prompts: list[list[int]], dtype: str, threads: int):
    """Generate with llama.cpp from `model` exported by model.export.gguf at `dtype`."""
    import llama_cpp

    from model.export.gguf import export

    folder = tempfile.TemporaryDirectory()  # kept as long as the runner (llama.cpp maps it)
    root = Path(folder.name)
    tokenizer = made_up_tokenizer(root / "tokenizer.json", model.config.vocab_size)
    save_model_files(model, root / "run" / "step_0000001", {}, tokenizer)
    path = export(root / "run" / "step_0000001", root / "gguf", dtype)
    llm = llama_cpp.Llama(
        str(path),
        n_ctx=model.config.block_size,
        n_threads=threads,
        n_threads_batch=threads,
        verbose=False,
    )

    def run_llama(new_tokens):
        llm.reset()  # no prompt prefix kept from the last run: every run encodes its prompt
        tokens = llm.generate(prompts[0], temp=0.0, repeat_penalty=1.0)  # greedy
        return [[int(token) for token in itertools.islice(tokens, new_tokens)]]

    run_llama.folder = folder
    return run_llama


def decode_streams(generator: Generator, prompts: list[list[int]], new_tokens: int) -> list:
    streams = [Stream(prompt, new_tokens, Sampling(temperature=0.0), ()) for prompt in prompts]
    for _ in generator.run(streams):
        pass
    return [stream.generated for stream in streams]


@torch.no_grad()
def recompute(model: Transformer, prompt: list[int], new_tokens: int) -> list[int]:
    """Greedy tokens without a cache: the whole context through the model for every token."""
    tokens = list(prompt)
    for _ in range(new_tokens):
        logits = model(torch.tensor([tokens], device=next(model.parameters()).device))
        tokens.append(int(logits[0, -1, : model.config.vocab_size].argmax()))
    return tokens[len(prompt) :]


def runner(mode: str, model, prompts: list[list[int]], args, device: str):
    """A function that generates --new-tokens for each prompt (one for all but batched)."""
    if mode in LLAMA_CPP_MODES:
        return llama_cpp_runner(model, prompts, LLAMA_CPP_MODES[mode], torch.get_num_threads())
    if mode == "transformers":
        hf = transformers_model(model, next(model.parameters()).dtype)

        @torch.no_grad()
        def run(new_tokens):
            ids = torch.tensor(prompts[:1], device=device)
            out = hf.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                eos_token_id=None,
                pad_token_id=1,
            )
            return [out[0, ids.shape[1] :].tolist()]

        return run
    if mode == "recompute":
        return lambda n: [recompute(model, prompts[0], n)]
    streams = args.streams if mode == "batched" else 1
    compiled = mode in ("compiled", "cuda_graphs") or (mode == "batched" and "cuda" in device)
    rows = max(streams, args.rows or 0)  # more rows than streams: idle rows (as in a server)
    generator = Generator(model, batch_size=rows, compile=compiled)  # kept: compiled once

    def run(n):
        return decode_streams(generator, prompts[:streams], n)

    run.ours = True
    return run


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
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
        "--modes",
        nargs="+",
        default=["eager", "transformers"],
        choices=MODES,
        help="what to time (default: %(default)s)",
    )
    parser.add_argument("--streams", type=int, default=8, help="streams in the batched mode")
    parser.add_argument(
        "--rows",
        type=int,
        default=None,
        help="rows of the generator's KV cache (default: one per stream); more leaves rows "
        "idle, as in a server with fewer requests than --batch-size",
    )
    parser.add_argument(
        "--threads",
        nargs="+",
        default=None,
        help="CPU thread counts, each timed in turn; `all` = every core (default: torch's choice)",
    )
    parser.add_argument(
        "--repeats", type=int, default=2, help="runs per configuration; the fastest is reported"
    )
    parser.add_argument(
        "--profile", action="store_true", help="print torch.profiler's table for our modes"
    )
    return parser


def time_mode(run, new_tokens: int, repeats: int, device: str) -> tuple[float, list[list]]:
    """(seconds, tokens) of the fastest of `repeats` runs making new_tokens per stream."""
    timed = []
    for _ in range(max(1, repeats)):
        synchronize(device)
        start = time.perf_counter()
        tokens = run(new_tokens)
        synchronize(device)
        timed.append((time.perf_counter() - start, tokens))
    return min(timed, key=lambda t: t[0])


def benchmark_device(device: str, config, prompts: list[list[int]], args) -> None:
    """Time every mode on `device`; one JSON line each, then ours / transformers."""
    dtype = getattr(torch, args.dtype) if device.startswith("cuda") else torch.float32
    model = Transformer(config).to(device=device, dtype=dtype).eval()
    speeds, reference = {}, {}
    for mode in args.modes:
        if mode == "cuda_graphs" and not device.startswith("cuda"):
            continue
        run = runner(mode, model, prompts, args, device)
        run(8)  # warm-up: allocator, kernels, compile and CUDA graphs
        for new_tokens in args.new_tokens:
            seconds, tokens = time_mode(run, new_tokens, args.repeats, device)
            total = sum(len(t) for t in tokens)
            record = {
                "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
                "threads": torch.get_num_threads(),
                "preset": args.preset,
                "params": model.num_parameters(),
                "dtype": str(dtype).removeprefix("torch."),
                "prompt_tokens": args.prompt_tokens,
                "new_tokens": new_tokens,
                "mode": mode,
                "streams": len(tokens),
                "seconds": round(seconds, 3),  # fastest of --repeats
                "tokens_per_s": round(total / seconds, 1),
            }
            print(json.dumps(record), flush=True)
            speeds[mode, new_tokens] = record["tokens_per_s"]
            if args.profile and getattr(run, "ours", False) and new_tokens == args.new_tokens[0]:
                print(profile_table(run, device), flush=True)
            first = reference.setdefault(new_tokens, tokens[0])
            exact = dtype == torch.float32 and LLAMA_CPP_MODES.get(mode, "f32") == "f32"
            if exact and tokens[0] != first:
                print(json.dumps({"warning": f"{mode}: greedy tokens differ"}), flush=True)
    for new_tokens in args.new_tokens:
        theirs = speeds.get(("transformers", new_tokens))
        for mode in ("eager", "compiled", "cuda_graphs", "batched"):
            if theirs and (mode, new_tokens) in speeds:
                ratio = speeds[mode, new_tokens] / theirs
                line = {"device": device, "new_tokens": new_tokens, "mode": mode}
                print(json.dumps({**line, "ours_over_transformers": round(ratio, 2)}))


def profile_table(run, device: str) -> str:
    """torch.profiler's table for 20 tokens of `run`, sorted by where the time goes."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.startswith("cuda"):
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profile:
        run(20)
        synchronize(device)
    key = "self_device_time_total" if device.startswith("cuda") else "self_cpu_time_total"
    return profile.key_averages().table(sort_by=key, row_limit=30)


def thread_counts(values: list[str] | None) -> list[int | None]:
    counts = []
    for value in values or [None]:
        if value is None or value == "all":
            counts.append(None if value is None else os.cpu_count())
        elif value.isdigit() and int(value) > 0:
            counts.append(int(value))
        else:
            raise UserError(f"--threads takes positive counts or `all`, got {value!r}")
    return counts


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    if any(d.startswith("cuda") for d in devices) and not torch.cuda.is_available():
        raise UserError("--device cuda: CUDA is not available here")
    config = from_preset(args.preset, block_size=args.prompt_tokens + max(args.new_tokens))
    torch.manual_seed(0)
    prompts = torch.randint(6, config.vocab_size, (args.streams, args.prompt_tokens)).tolist()
    for threads in thread_counts(args.threads):
        if threads:
            torch.set_num_threads(threads)
            torch._dynamo.reset()  # a compiled step keeps the thread count it was compiled for
        for device in devices:
            benchmark_device(device, config, prompts, args)


if __name__ == "__main__":
    run_cli(main)
