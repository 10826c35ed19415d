r"""Tokenize every split of a raw dataset into memory-mapped arrays (see tokenized_data.py).

    python3 -m tokenizer.tokenize_dataset --dataset-dir data/pre_training/raw \
        --tokenizer-path data/tokenizer.json --output-dir data/tokens/pre_training --num-proc 8

Tiny CPU example, then SFT and DPO data:

    python3 -m tokenizer.tokenize_dataset --dataset-dir data/sample/pre_training/raw \
        --tokenizer-path data/sample/tokenizer/tokenizer.json \
        --output-dir data/sample/pre_training/tokenized --num-proc 2
    python3 -m tokenizer.tokenize_dataset --dataset-dir data/post_training/sft/raw \
        --tokenizer-path data/tokenizer.json --output-dir data/tokens/sft --num-proc 2 \
        --stage sft --max-length 1025
    python3 -m tokenizer.tokenize_dataset --dataset-dir data/post_training/dpo/raw \
        --tokenizer-path data/tokenizer.json --output-dir data/tokens/dpo --num-proc 2 \
        --stage dpo --max-length 1024

The original README's `--tokenizer-mode post_training_sft` (or `post_training_dpo`,
`pre_training`) and `--tokenizer-profile post_training_v1` are older spellings of `--stage`,
still accepted.

How it runs: the parent process streams rows from the Arrow files in batches, `--num-proc`
worker processes encode them (one thread each, so N processes use N cores; the tokenizer's own
thread pool would leave the Python work on a single core), and the parent appends the results
in row order. At most 2 x N batches are in flight, so memory does not grow with the corpus, and
the output is byte-identical for every `--num-proc`. The whole output folder is written under a
temporary name and renamed into place at the end: an interrupted run (Ctrl-C) leaves nothing
that looks finished.

Each split folder also gets `source_rows.bin` (uint64, one entry per document or pair): the row
of the raw split it came from, which `inspect_tokenized_data` uses to show the raw text.

Context length: a post-training sequence holds at most `--max-length` tokens. An SFT script with
`block_size` B trains on windows of B + 1 tokens, so `--max-length B+1` lets every conversation
fit one window; DPO puts prompt + chosen and prompt + rejected each in one sequence of at most
`--max-length` tokens. Truncation and drop policies are in `tokenizer/batch_encoding.py`.
"""

import argparse
import multiprocessing
import os
import signal
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from tqdm import tqdm

from common.atomic import locked_output_directory, sha256_file
from common.errors import ArgumentParser, UserError, run_cli
from tokenizer import raw_data
from tokenizer.batch_encoding import (
    BatchEncoder,
    EncodedBatch,
    EncodeSettings,
    encode_in_worker,
    init_worker,
)
from tokenizer.encoding import load_tokenizer
from tokenizer.tokenized_data import STAGES, SplitWriter, write_array

SOURCE_ROWS_FILE = "source_rows.bin"
DEFAULT_MAX_LENGTH = 1024
# The original README's spellings, accepted on the command line and nowhere else.
STAGE_OF_TOKENIZER_MODE = {
    "pre_training": "pre_training",
    "post_training_sft": "sft",
    "post_training_dpo": "dpo",
}
STAGES_OF_TOKENIZER_PROFILE = {
    "pre_training": ("pre_training",),
    "post_training_v1": ("sft", "dpo"),
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(
        prog="python3 -m tokenizer.tokenize_dataset",
        description="Tokenize every split of a raw dataset into flat memory-mapped arrays.",
    )
    parser.add_argument(
        "--dataset-dir",
        required=True,
        help="raw DatasetDict folder written by a download_dataset step",
    )
    parser.add_argument(
        "--tokenizer-path", required=True, help="tokenizer.json written by tokenizer.train"
    )
    parser.add_argument(
        "--output-dir",
        required=True,
        help="folder to create; gets one sub-folder per split (written atomically)",
    )
    parser.add_argument(
        "--num-proc",
        type=int,
        default=os.cpu_count() or 1,
        help="worker processes (= CPU cores used); 1 encodes in this process. "
        "Default: all cores. The output does not depend on it",
    )
    parser.add_argument(
        "--stage",
        choices=STAGES,
        default=None,
        help="the training stage the data is for: pre_training (column text), sft (messages; "
        "adds a loss mask) or dpo (prompt/chosen/rejected). Default pre_training",
    )
    parser.add_argument(
        "--tokenizer-mode",
        choices=STAGE_OF_TOKENIZER_MODE,
        default=None,
        help="older spelling of --stage, still accepted: pre_training, post_training_sft (= sft) "
        "or post_training_dpo (= dpo)",
    )
    parser.add_argument(
        "--tokenizer-profile",
        choices=STAGES_OF_TOKENIZER_PROFILE,
        default=None,
        help="older flag, still accepted and only checked: pre_training goes with --stage "
        "pre_training, post_training_v1 with sft and dpo",
    )
    parser.add_argument(
        "--max-length",
        type=int,
        default=None,
        help="sft and dpo: most tokens in one sequence (SFT conversation; DPO prompt + "
        f"longer response). Default {DEFAULT_MAX_LENGTH}. Pre-training documents are never cut",
    )
    parser.add_argument(
        "--overlong",
        choices=("truncate", "drop"),
        default=None,
        help="sft and dpo: what to do with a sequence longer than --max-length. "
        "Both are counted in meta.json. Default truncate",
    )
    parser.add_argument(
        "--max-prompt-length",
        type=int,
        default=None,
        help="dpo: when a pair is too long, a prompt longer than this keeps its "
        "first token and its last tokens up to this length. Default: half of --max-length",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=1000,
        help="rows per work item sent to a worker (memory holds about 2 x num-proc of them). "
        "Default 1000",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output-dir")
    args = parser.parse_args(argv)
    check_args(parser, args)
    return args


def resolve_stage(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """--stage, or the stage an original-README --tokenizer-mode names; --tokenizer-profile is
    only checked against it."""
    stage = args.stage or "pre_training"
    if args.tokenizer_mode is not None:
        stage = STAGE_OF_TOKENIZER_MODE[args.tokenizer_mode]
        if args.stage not in (None, stage):
            parser.error(
                f"--tokenizer-mode {args.tokenizer_mode} means --stage {stage}, not "
                f"--stage {args.stage}; give only --stage"
            )
    stages = STAGES_OF_TOKENIZER_PROFILE.get(args.tokenizer_profile, (stage,))
    if stage not in stages:
        parser.error(
            f"--tokenizer-profile {args.tokenizer_profile} goes with --stage "
            f"{' or '.join(stages)}, not --stage {stage}; leave --tokenizer-profile out"
        )
    return stage


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject contradicting flags (parser.error) and fill in the stage-dependent defaults."""
    if args.num_proc < 1:
        parser.error("--num-proc must be at least 1")
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    args.stage = resolve_stage(parser, args)
    del args.tokenizer_mode, args.tokenizer_profile  # spellings only: --stage says it all
    if args.stage == "pre_training":
        for flag, value in (
            ("--max-length", args.max_length),
            ("--overlong", args.overlong),
            ("--max-prompt-length", args.max_prompt_length),
        ):
            if value is not None:
                parser.error(f"{flag} applies to --stage sft and dpo only (documents are packed)")
        return
    args.overlong = args.overlong or "truncate"
    args.max_length = DEFAULT_MAX_LENGTH if args.max_length is None else args.max_length
    if args.max_length < 2:
        parser.error("--max-length must be at least 2")
    if args.stage == "dpo":
        if args.max_prompt_length is None:
            args.max_prompt_length = args.max_length // 2
        if not 2 <= args.max_prompt_length < args.max_length:
            parser.error("--max-prompt-length must be at least 2 and less than --max-length")
    elif args.max_prompt_length is not None:
        parser.error("--max-prompt-length applies to --stage dpo only")


def start_pool(settings: EncodeSettings, num_proc: int):
    """Start `num_proc` spawned workers that never see Ctrl-C; this process handles it.

    SIGINT is ignored here while the workers are created: an ignored signal stays ignored
    across exec, so a Ctrl-C cannot interrupt their start-up imports with tracebacks. (A Ctrl-C
    pressed while they are being created is lost; press it again.)"""
    # spawn, not fork: forking a process whose Rust/Arrow thread pools already run can deadlock.
    context = multiprocessing.get_context("spawn")
    if threading.current_thread() is not threading.main_thread():  # signals: main thread only
        return context.Pool(num_proc, initializer=init_worker, initargs=(settings,))
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return context.Pool(num_proc, initializer=init_worker, initargs=(settings,))
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def batch_encoder(settings: EncodeSettings, num_proc: int):
    """Yield `encode_all(jobs) -> iterator of EncodedBatch` (in job order) on `num_proc` cores."""
    if num_proc == 1:
        encoder = BatchEncoder(settings)
        previous = os.environ.get("TOKENIZERS_PARALLELISM")
        os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one core, as asked
        try:
            yield lambda jobs: (encoder.encode(*job) for job in jobs)
        finally:
            if previous is None:
                os.environ.pop("TOKENIZERS_PARALLELISM", None)
            else:
                os.environ["TOKENIZERS_PARALLELISM"] = previous
        return
    with start_pool(settings, num_proc) as pool:

        def encode_all(jobs) -> Iterator[EncodedBatch]:
            pending = deque()  # bounded: at most 2 x num_proc batches in flight
            for job in jobs:
                pending.append(pool.apply_async(encode_in_worker, job))
                if len(pending) >= 2 * num_proc:
                    yield pending.popleft().get()
            while pending:
                yield pending.popleft().get()

        yield encode_all


def write_batch(writer: SplitWriter, batch: EncodedBatch, source_rows_file) -> None:
    ends = np.cumsum(batch.lengths.reshape(-1))  # pairs: prompt, chosen, rejected in turn
    pieces = np.split(batch.tokens, ends[:-1]) if len(ends) else []
    if writer.stage == "dpo":
        writer.add_pairs(list(zip(pieces[0::3], pieces[1::3], pieces[2::3])))
    elif writer.stage == "sft":
        writer.add_documents(pieces, np.split(batch.mask, ends[:-1]) if len(ends) else [])
    else:
        writer.add_documents(pieces)
    write_array(source_rows_file, batch.source_rows, np.uint64)


def tokenize_split(dataset, name: str, directory: Path, encode_all, args, vocab_size, sha256):
    columns = raw_data.COLUMNS_BY_STAGE[args.stage]
    writer = SplitWriter(directory, args.stage, vocab_size)
    stats = Counter()

    def jobs():
        first_row = 0
        for rows in dataset.iter_rows(columns, args.batch_size):
            yield first_row, rows
            first_row += len(rows[columns[0]])

    with (
        open(directory / SOURCE_ROWS_FILE, "wb") as source_rows_file,
        tqdm(total=len(dataset), desc=f"tokenizing {name}", unit="rows") as progress,
    ):
        for batch in encode_all(jobs()):
            write_batch(writer, batch, source_rows_file)
            stats.update(batch.stats)
            progress.update(batch.num_rows)
    settings = {"max_length": args.max_length, "overlong": args.overlong}
    if args.stage == "dpo":
        settings["max_prompt_length"] = args.max_prompt_length
    stats = dict(stats)
    if args.stage != "pre_training":
        stats.update(settings)
    stats["source_rows_file"] = SOURCE_ROWS_FILE
    return writer.finish(sha256, stats)


def main(argv=None) -> int:
    args = parse_args(argv)
    tokenizer = load_tokenizer(args.tokenizer_path)
    vocab_size = tokenizer.get_vocab_size()
    sha256 = sha256_file(args.tokenizer_path)
    splits = raw_data.open_splits(args.dataset_dir, allow_single_split=False)
    raw_data.check_columns(splits, args.stage, args.dataset_dir)
    if "train" not in splits:
        raise UserError(f"{args.dataset_dir} has splits {sorted(splits)} but no 'train' split")
    if len(splits["train"]) == 0:
        raise UserError(f"the train split of {args.dataset_dir} has no rows")
    output = Path(args.output_dir)
    if output.exists() and not args.overwrite:  # checked early, before any work
        raise UserError(f"{output} already exists; pass --overwrite to replace it")

    settings = EncodeSettings(
        tokenizer_path=str(args.tokenizer_path),
        stage=args.stage,
        max_length=args.max_length,
        overlong=args.overlong,
        max_prompt_length=args.max_prompt_length,
    )
    started = time.perf_counter()
    metas = {}
    with (
        locked_output_directory(output, args.overwrite, what="tokenize output") as temp,
        batch_encoder(settings, args.num_proc) as encode_all,
    ):
        for name, dataset in splits.items():
            metas[name] = tokenize_split(
                dataset, name, temp / name, encode_all, args, vocab_size, sha256
            )
    seconds = time.perf_counter() - started

    total_tokens = sum(meta["num_tokens"] for meta in metas.values())
    for name, meta in metas.items():
        counters = ", ".join(
            f"{key}={value}" for key, value in meta["stats"].items() if isinstance(value, int)
        )
        documents, tokens = meta["num_documents"], meta["num_tokens"]
        print(f"{name}: {documents:,} documents, {tokens:,} tokens ({counters})")
    print(
        f"wrote {output} ({args.stage}, {total_tokens:,} tokens in {seconds:.1f} s, "
        f"{total_tokens / max(seconds, 1e-9):,.0f} tokens/s)"
    )
    return 0


if __name__ == "__main__":
    run_cli(main)
