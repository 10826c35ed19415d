"""Benchmark `tokenizer.tokenize_dataset` against raw `Tokenizer.encode_batch`.

    python3 benchmarks/tokenize_benchmark.py --sizes-mb 50 500 --num-proc 2

Small CPU example (about a minute):

    python3 benchmarks/tokenize_benchmark.py --sizes-mb 5 --num-proc 2

For each corpus size it generates a pre-training DatasetDict of about that much text (the
sample world's stories and articles via `dataset.pre_training.download_dataset --source sample`,
or a built-in generator of similar sentences if that module is missing), trains one tokenizer
(on the first corpus, `--vocab-size`, at most 20M characters), then measures, each in its own
subprocess:

- raw: the split's texts read into memory, then `Tokenizer.encode_batch` (and `_fast`) over
  batches of 1000 texts with the tokenizer's own thread pool (all cores); only the encode calls
  are timed. This is the ceiling.
- tokenize_dataset: the whole CLI run, `--num-proc N`, reading, encoding and writing; timed
  from inside (its own printed seconds) and as a whole command (process start included).
  Peak RSS from /proc, sampled every 50 ms: the largest single process's peak (VmHWM) and the
  peak of the summed RSS of the process tree (shared library pages count once per process).

Work files (corpora, tokenizer) go to `--work-dir` (default data/tokenize_benchmark, git-ignored);
each corpus is deleted after its run unless `--keep`.
"""

import argparse
import importlib.util
import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.process_memory import run_measured  # noqa: E402 - needs the path above

RAW_ENCODE = r"""
import json, sys, time, resource
import datasets
from tokenizer.encoding import load_tokenizer
texts = datasets.load_from_disk(sys.argv[1])["train"]["text"]
tokenizer = load_tokenizer(sys.argv[2])
result = {}
for name in ("encode_batch", "encode_batch_fast"):
    encode = getattr(tokenizer, name)
    tokens = 0
    started = time.perf_counter()
    for start in range(0, len(texts), 1000):
        tokens += sum(len(e.ids) + 1 for e in encode(texts[start:start + 1000],
                                                     add_special_tokens=False))
    result[name] = {"tokens": tokens, "seconds": time.perf_counter() - started}
result["text_bytes"] = sum(len(t.encode()) for t in texts)
result["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(result))
"""

NAMES = "Max Lily Tom Mia Ben Zoe Sam Lucy Leo Ella Jack Anna Finn Ruby Oscar Nora".split()  # noqa: SIM905
ANIMALS = "dog cat fox rabbit bear owl duck frog mouse horse lion turtle".split()  # noqa: SIM905
PLACES = ["forest", "park", "river", "garden", "farm", "beach", "village", "meadow", "hill", "pond"]
OBJECTS = ["ball", "kite", "hat", "box", "boat", "drum", "book", "apple", "stick", "shell"]
FEELINGS = ["happy", "sad", "proud", "scared", "brave", "sleepy", "excited", "calm"]
TEMPLATES = [
    "Once upon a time, there was a {a} named {n} who lived near the {p}.",
    "{n} found a {o} in the {p} and showed it to {m}.",
    "{n} felt {f} because the {o} was lost.",
    '"Can I play with your {o}?" asked {m}.',
    "The {a} ran to the {p} {k} times before lunch.",
    "{n} and {m} shared the {o}, and they were {f}.",
    "At night, the little {a} looked at the stars and smiled.",
    "It rained on day {k}, so {n} stayed home with the {o}.",
]


def builtin_stories(total_bytes: int, seed: int = 0):
    """Yield {"text", "source"} rows of simple stories until `total_bytes` of text."""
    rng = random.Random(seed)
    produced = 0
    while produced < total_bytes:
        sentences = [
            rng.choice(TEMPLATES).format(
                a=rng.choice(ANIMALS),
                n=rng.choice(NAMES),
                m=rng.choice(NAMES),
                p=rng.choice(PLACES),
                o=rng.choice(OBJECTS),
                f=rng.choice(FEELINGS),
                k=rng.randint(2, 999),
            )
            for _ in range(rng.randint(3, 10))
        ]
        text = " ".join(sentences)
        produced += len(text.encode())
        yield {"text": text, "source": "builtin"}


def make_corpus(directory: Path, size_mb: float) -> str:
    """A pre-training DatasetDict of about `size_mb` MB of text; returns where the text came from.

    The sample world's generator (dataset.pre_training.download_dataset --source sample) when it
    is there, else the built-in sentences above."""
    if (directory / "dataset_dict.json").is_file():
        return "cached"
    if importlib.util.find_spec("dataset.pre_training.download_dataset"):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "dataset.pre_training.download_dataset",
                "--output-dir",
                str(directory),
                "--source",
                "sample",
                "--sample-size-mb",
                str(size_mb),
                "--overwrite",
            ],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        return "sample world (dataset.pre_training.download_dataset --source sample)"
    import datasets

    total = int(size_mb * 1e6)
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_generator(
                builtin_stories, gen_kwargs={"total_bytes": total, "seed": 0}
            ),
            "validation": datasets.Dataset.from_generator(
                builtin_stories, gen_kwargs={"total_bytes": total // 100 + 1000, "seed": 1}
            ),
        }
    ).save_to_disk(str(directory))
    return "built-in generator"


def train_tokenizer(corpus: Path, tokenizer_path: Path, vocab_size: int) -> None:
    command = [
        "-m",
        "tokenizer.train",
        "--dataset-dir",
        str(corpus),
        "--output-path",
        str(tokenizer_path),
        "--vocab-size",
        str(vocab_size),
        "--max-chars",
        "20000000",
    ]
    subprocess.run([sys.executable, *command], cwd=REPO, check=True, capture_output=True)


def measure(corpus: Path, tokenizer_path: Path, work: Path, num_proc: int) -> dict:
    """One table row: raw encode_batch against the tokenize_dataset CLI on `corpus`."""
    raw_run = run_measured(
        [sys.executable, "-c", RAW_ENCODE, str(corpus), str(tokenizer_path)], work / "raw.log"
    )
    raw = json.loads(raw_run["stdout"].strip().splitlines()[-1])
    out = work / f"tokens_{corpus.name}"
    run = run_measured(
        [
            sys.executable,
            "-m",
            "tokenizer.tokenize_dataset",
            "--dataset-dir",
            str(corpus),
            "--tokenizer-path",
            str(tokenizer_path),
            "--output-dir",
            str(out),
            "--overwrite",
            "--num-proc",
            str(num_proc),
        ],
        work / "tokenize.log",
    )
    metas = [json.loads(p.read_text()) for p in sorted(out.glob("*/meta.json"))]
    shutil.rmtree(out)
    inner = float(re.search(r"tokens in ([\d.]+) s", run["stdout"]).group(1))
    tokens = sum(meta["num_tokens"] for meta in metas)  # every split: the time covers all
    raw_rate = raw["encode_batch"]["tokens"] / raw["encode_batch"]["seconds"]
    fast_rate = raw["encode_batch_fast"]["tokens"] / raw["encode_batch_fast"]["seconds"]
    return {
        "size_mb": sum(meta["stats"]["text_bytes"] for meta in metas) / 1e6,
        "train_text_mb": raw["text_bytes"] / 1e6,
        "tokens": tokens,
        "raw_encode_batch_tok_s": raw_rate,
        "raw_encode_batch_fast_tok_s": fast_rate,
        "tokenize_dataset_tok_s": tokens / inner,
        "tokenize_dataset_whole_command_tok_s": tokens / run["seconds"],
        "ratio_vs_encode_batch": tokens / inner / raw_rate,
        "ratio_whole_command_vs_encode_batch": tokens / run["seconds"] / raw_rate,
        "ratio_vs_encode_batch_fast": tokens / inner / fast_rate,
        "peak_rss_largest_process_mb": run["largest_process_peak_rss_mb"],
        "peak_rss_process_tree_mb": run["tree_peak_rss_mb"],
        "raw_encode_peak_rss_mb": raw["maxrss_mb"],
    }


def print_table(results: list[dict], num_proc: int, vocab_size: int) -> None:
    print(f"\ncores: {os.cpu_count()}, --num-proc {num_proc}, vocab {vocab_size}")
    print(
        "| text MB | raw encode_batch tok/s | raw encode_batch_fast tok/s | tokenize_dataset tok/s "
        "(whole command) | ratio | peak RSS largest process MB | peak RSS process tree MB |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['size_mb']:.0f} | {r['raw_encode_batch_tok_s']:,.0f} | "
            f"{r['raw_encode_batch_fast_tok_s']:,.0f} | {r['tokenize_dataset_tok_s']:,.0f} "
            f"({r['tokenize_dataset_whole_command_tok_s']:,.0f}) | "
            f"{r['ratio_vs_encode_batch']:.2f} ({r['ratio_whole_command_vs_encode_batch']:.2f}) | "
            f"{r['peak_rss_largest_process_mb']:.0f} | {r['peak_rss_process_tree_mb']:.0f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mb", type=float, nargs="+", default=[50, 500])
    parser.add_argument("--num-proc", type=int, default=os.cpu_count())
    parser.add_argument("--vocab-size", type=int, default=32768)
    parser.add_argument("--work-dir", default=str(REPO / "data" / "tokenize_benchmark"))
    parser.add_argument("--keep", action="store_true", help="keep the generated corpora")
    args = parser.parse_args()
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    tokenizer_path = work / "tokenizer.json"
    results = []
    for size in args.sizes_mb:
        corpus = work / f"corpus_{size:g}mb"
        origin = make_corpus(corpus, size)
        if not tokenizer_path.exists():  # one tokenizer, trained on the first corpus
            train_tokenizer(corpus, tokenizer_path, args.vocab_size)
        row = {"corpus": origin, **measure(corpus, tokenizer_path, work, args.num_proc)}
        results.append(row)
        print(json.dumps(row), flush=True)
        if not args.keep:
            shutil.rmtree(corpus)
    print_table(results, args.num_proc, args.vocab_size)


if __name__ == "__main__":
    main()
