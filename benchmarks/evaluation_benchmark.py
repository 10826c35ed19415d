"""Evaluation speed: the six-task suite (python3 -m evaluation's `core`) on a preset, in
examples per second, with synthetic examples shaped like the real ones (no network needed).

    python3 benchmarks/evaluation_benchmark.py --threads 1                    # debug preset, CPU
    python3 benchmarks/evaluation_benchmark.py --threads 1 --preset 15m --limit 200
    python3 benchmarks/evaluation_benchmark.py --preset 124m --device cuda --limit full

Each task gets examples in its real dataset's column layout, with its number of choices and
about its word counts (below), made of made-up words, saved as the evaluation data step saves a
copy, and goes through the real path: lm-eval's task (its prompts, requests and metrics), our
LM (evaluation/lm.py: our tokenizer, a BPE trained on the made-up words, so a word is one or two
tokens; batched scoring, a context shared by the choices computed once). `--limit full` uses
the real evaluation splits' sizes (10,042 HellaSwag examples ... 20,848 in all). A
random-initialised model is enough: speed does not depend on the weights.

Prints one JSON line per task (examples, seconds, examples/s) and one for the whole suite.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere

import datasets  # noqa: E402

from common.errors import ArgumentParser, UserError, run_cli  # noqa: E402
from dataset.evaluation.download_dataset import copy_folder  # noqa: E402
from evaluation.lm import SimpleTransformerLM, use_bf16  # noqa: E402
from evaluation.tasks import evaluate_tasks, load_tasks  # noqa: E402
from model.config import PRESETS, from_preset  # noqa: E402
from model.generate import pick_device  # noqa: E402
from model.transformer import Transformer  # noqa: E402
from tokenizer.encoding import SPECIAL_TOKENS, load_tokenizer  # noqa: E402

# the real evaluation splits' sizes, and rough word counts of their parts
FULL_SIZES = {
    "hellaswag": 10042,
    "arc_easy": 2376,
    "arc_challenge": 1172,
    "piqa": 1838,
    "winogrande": 1267,
    "lambada_openai": 5153,
}
# where lm-eval's task YAML files say each dataset is, and the split they evaluate
DATASETS = {
    "hellaswag": ("Rowan/hellaswag", None, "validation"),
    "arc_easy": ("allenai/ai2_arc", "ARC-Easy", "test"),
    "arc_challenge": ("allenai/ai2_arc", "ARC-Challenge", "test"),
    "piqa": ("baber/piqa", None, "validation"),
    "winogrande": ("allenai/winogrande", "winogrande_xl", "validation"),
    "lambada_openai": ("EleutherAI/lambada_openai", "default", "test"),
}
WORDS = 3000


class Words:
    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        letters = "abcdefghijklmnopqrstuvwxyz"
        self.vocabulary = [
            "".join(self.rng.choice(letters) for _ in range(self.rng.randint(2, 9)))
            for _ in range(WORDS)
        ]

    def __call__(self, low: int, high: int) -> str:
        return " ".join(self.rng.choices(self.vocabulary, k=self.rng.randint(low, high)))


def synthetic_docs(name: str, count: int, words: Words) -> list[dict]:
    """`count` rows in the column layout of the task's dataset, about its real lengths."""
    rows = []
    for i in range(count):
        if name == "hellaswag":
            rows.append(
                {
                    "activity_label": words(1, 3),
                    "ctx_a": words(15, 35) + ".",
                    "ctx_b": words(2, 8),
                    "endings": [words(8, 25) + "." for _ in range(4)],
                    "label": str(i % 4),
                }
            )
        elif name in ("arc_easy", "arc_challenge"):
            n = 4 if i % 10 else 3
            rows.append(
                {
                    "question": words(10, 30) + "?",
                    "choices": {"text": [words(1, 6) for _ in range(n)], "label": list("ABCD"[:n])},
                    "answerKey": "ABCD"[i % n],
                }
            )
        elif name == "piqa":
            rows.append(
                {"goal": words(5, 15), "sol1": words(8, 30), "sol2": words(8, 30), "label": i % 2}
            )
        elif name == "winogrande":
            rows.append(
                {
                    "sentence": words(6, 12) + " _ " + words(4, 10) + ".",
                    "option1": words(1, 2),
                    "option2": words(1, 2),
                    "answer": "12"[i % 2],
                }
            )
        elif name == "lambada_openai":
            rows.append({"text": words(40, 100)})
    return rows


def train_tokenizer(words: Words, path: Path) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=4096,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([words(50, 50) for _ in range(400)], trainer)
    tokenizer.save(str(path))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--preset",
        default=None,
        choices=sorted(PRESETS),
        help="model size (default: debug on a CPU, 124m on a GPU)",
    )
    parser.add_argument(
        "--device", default=None, help="cpu, cuda (default: cuda when there is one)"
    )
    parser.add_argument(
        "--limit",
        default="100",
        help="examples per task, or `full` for the real splits' sizes (default: 100)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="choices per forward pass (default: 32 on a CPU, 256 on a GPU)",
    )
    parser.add_argument(
        "--block-size",
        type=int,
        default=None,
        help="context length (default: the preset's, at least 512 so every example fits)",
    )
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    parser.add_argument("--tasks", default=",".join(FULL_SIZES), help="comma-separated core tasks")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    preset = args.preset or ("124m" if device.type == "cuda" else "debug")
    names = [name.strip() for name in args.tasks.split(",") if name.strip()]
    unknown = [name for name in names if name not in FULL_SIZES]
    if unknown:
        raise UserError(f"--tasks: {', '.join(unknown)} not among {', '.join(FULL_SIZES)}")
    if args.limit != "full" and not args.limit.isdigit():
        raise UserError(f"--limit must be a whole number or full, got {args.limit!r}")
    batch_size = args.batch_size or (256 if device.type == "cuda" else 32)
    datasets.disable_progress_bars()
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    words = Words(seed=0)
    folder = tempfile.TemporaryDirectory()  # the copies, read while the tasks run
    tokenizer = load_tokenizer(train_tokenizer(words, Path(folder.name) / "tokenizer.json"))
    counts = {n: FULL_SIZES[n] if args.limit == "full" else int(args.limit) for n in names}
    for name in names:  # as the evaluation data step saves its copies
        path, config, split = DATASETS[name]
        rows = datasets.Dataset.from_list(synthetic_docs(name, counts[name], words))
        splits = datasets.DatasetDict({split: rows, "train": rows.select(range(min(8, len(rows))))})
        splits.save_to_disk(str(copy_folder(folder.name, path, config)))
    tasks, _ = load_tasks(names, folder.name)
    torch.manual_seed(0)
    config = from_preset(preset)
    vocab_size = max(config.vocab_size, tokenizer.get_vocab_size())
    block_size = args.block_size or max(config.block_size, 512)
    config = from_preset(preset, vocab_size=vocab_size, block_size=block_size)
    model = Transformer(config).to(device).eval()
    lm = SimpleTransformerLM(model, tokenizer, batch_size, use_bf16(args.precision, device))
    total_examples, total_seconds = 0, 0.0
    for name in names:
        one = {"tasks": {name: tasks["tasks"][name]}, "groups": {}, "group_map": {}}
        with contextlib.redirect_stderr(io.StringIO()):  # lm-eval's bars
            evaluate_tasks(lm, one, limit=min(8, counts[name]), bootstrap_iters=0)  # warm-up
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            evaluate_tasks(lm, one, bootstrap_iters=0)
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - started
        count = counts[name]
        total_examples += count
        total_seconds += seconds
        print(
            json.dumps(
                {
                    "task": name,
                    "examples": count,
                    "seconds": round(seconds, 2),
                    "examples_per_s": round(count / seconds, 1),
                }
            ),
            flush=True,
        )
    print(
        json.dumps(
            {
                "suite": names,
                "block_size": block_size,
                "preset": preset,
                "device": str(device),
                "bf16": lm.bf16,
                "batch_size": batch_size,
                "threads": torch.get_num_threads(),
                "examples": total_examples,
                "seconds": round(total_seconds, 2),
                "examples_per_s": round(total_examples / total_seconds, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    run_cli(main)
