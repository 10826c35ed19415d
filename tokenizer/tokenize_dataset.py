r"""Tokenize every split of a raw dataset into memory-mapped arrays (tokenizer/tokenized_data.py).

    python3 -m tokenizer.tokenize_dataset --dataset-dir data/pre_training/raw \
        --tokenizer-path data/tokenizer/tokenizer.json --output-dir data/pre_training/tokenized
    python3 -m tokenizer.tokenize_dataset --dataset-dir data/sample/pre_training/raw \
        --tokenizer-path data/sample/tokenizer/tokenizer.json \
        --output-dir data/sample/pre_training/tokenized --num-proc 2   # tiny CPU example

Each stage has one function below that turns a batch of raw rows into token arrays and says what
it skips, drops or cuts (counted in meta.json's stats); conversations are rendered by the
tokenizer's chat template (tokenizer/encoding.py). `--num-proc` worker processes encode batches
while this process writes them in row order, so the output is the same for any --num-proc. The
original README's `--tokenizer-mode` / `--tokenizer-profile` are older spellings of `--stage`.
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
from tokenizer.encoding import ROLES, load_tokenizer
from tokenizer.tokenized_data import STAGES, SplitWriter, token_dtype

DEFAULT_MAX_LENGTH = 1024
STAGE_OF_MODE = {
    "pre_training": "pre_training",
    "post_training_sft": "sft",
    "post_training_dpo": "dpo",
}
STAGES_OF_PROFILE = {"pre_training": ("pre_training",), "post_training_v1": ("sft", "dpo")}


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(
        prog="python3 -m tokenizer.tokenize_dataset",
        description="Tokenize every split of a raw dataset into flat memory-mapped arrays.",
    )
    add = parser.add_argument
    add("--dataset-dir", required=True, help="raw DatasetDict folder written by a download step")
    add("--tokenizer-path", required=True, help="tokenizer.json of tokenizer.train or a model's")
    add("--output-dir", required=True, help="folder to create, one sub-folder per split")
    add("--overwrite", action="store_true", help="replace an existing --output-dir")
    workers = "worker processes (1: this one). Default: the CPU cores"
    add("--num-proc", type=int, default=os.cpu_count() or 1, help=workers)
    add("--batch-size", type=int, default=1000, help="rows per work item. Default 1000")
    add(
        "--stage",
        choices=STAGES,
        help="the training stage the data is for: pre_training (column text; the default), sft "
        "(messages, + a loss mask) or dpo (prompt, chosen, rejected)",
    )
    mode = "older spelling of --stage: post_training_sft (= sft), post_training_dpo (= dpo)"
    add("--tokenizer-mode", choices=STAGE_OF_MODE, help=mode)
    profile = "older flag, only checked: pre_training, or post_training_v1 for sft and dpo"
    add("--tokenizer-profile", choices=STAGES_OF_PROFILE, help=profile)
    add(
        "--max-length",
        type=int,
        help="sft and dpo: most tokens in one sequence (an SFT conversation; a DPO prompt + its "
        f"longer reply). Default {DEFAULT_MAX_LENGTH}",
    )
    overlong = "sft and dpo: cut a longer one, or drop it. Default truncate"
    add("--overlong", choices=("truncate", "drop"), help=overlong)
    add(
        "--max-prompt-length",
        type=int,
        help="dpo: a pair too long keeps at most this many prompt tokens (its first and last). "
        "Default: half of --max-length",
    )
    args = parser.parse_args(argv)
    check_args(parser, args)
    return args


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject contradicting flags (parser.error) and fill in the stage-dependent defaults."""
    if args.num_proc < 1 or args.batch_size < 1:
        parser.error("--num-proc and --batch-size must be at least 1")
    stage = STAGE_OF_MODE.get(args.tokenizer_mode) or args.stage or "pre_training"
    if args.stage not in (None, stage):
        parser.error(
            f"--tokenizer-mode {args.tokenizer_mode} means --stage {stage}, not --stage "
            f"{args.stage}; give only --stage"
        )
    allowed = STAGES_OF_PROFILE.get(args.tokenizer_profile, (stage,))
    if stage not in allowed:
        parser.error(
            f"--tokenizer-profile {args.tokenizer_profile} goes with --stage "
            f"{' or '.join(allowed)}, not --stage {stage}; leave it out"
        )
    args.stage = stage
    del args.tokenizer_mode, args.tokenizer_profile  # spellings only: --stage says it all
    if stage == "pre_training":
        for flag in ("max_length", "overlong", "max_prompt_length"):
            if getattr(args, flag) is not None:
                parser.error(f"--{flag.replace('_', '-')} applies to --stage sft and dpo only")
        return
    args.overlong = args.overlong or "truncate"
    args.max_length = DEFAULT_MAX_LENGTH if args.max_length is None else args.max_length
    if args.max_length < 2:
        parser.error("--max-length must be at least 2")
    if stage == "sft" and args.max_prompt_length is not None:
        parser.error("--max-prompt-length applies to --stage dpo only")
    if stage == "dpo":
        args.max_prompt_length = args.max_prompt_length or args.max_length // 2
        if not 2 <= args.max_prompt_length < args.max_length:
            parser.error("--max-prompt-length must be at least 2 and less than --max-length")


# ---------------------------------------------------------------- one function per stage
# Each takes a batch of raw rows and returns ([(raw row, token arrays)], counts).


def document_rows(tokenizer, settings, first_row: int, batch: dict) -> tuple[list, Counter]:
    """pre_training: [BOS] + the text of each row. Rows whose text is empty or not a string are
    skipped; documents are never cut."""
    texts, dtype = batch["text"], token_dtype(tokenizer.get_vocab_size())
    stats = Counter(rows_in=len(texts))
    kept = []
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            stats["skipped_not_a_string"] += 1
        elif not text:
            stats["skipped_empty"] += 1
        else:
            kept.append(index)
    bos = [tokenizer.bos_id] if tokenizer.bos_id is not None else []
    encoded = encode_texts(tokenizer, [texts[index] for index in kept])
    rows = [(first_row + index, (np.array(bos + ids, dtype),)) for index, ids in zip(kept, encoded)]
    stats["documents"] = len(rows)
    stats["text_bytes"] = sum(len(texts[index].encode()) for index in kept)
    return rows, stats


def conversation_rows(tokenizer, settings, first_row: int, batch: dict) -> tuple[list, Counter]:
    """sft: each conversation and its loss mask (1 on the assistant turns). Malformed ones are
    skipped; one longer than --max-length is cut to it (with --overlong drop: dropped); one with
    no assistant token (left after the cut) is dropped."""
    conversations, dtype = batch["messages"], token_dtype(tokenizer.get_vocab_size())
    stats = Counter(conversations_in=len(conversations))
    valid = [
        (i, tokenizer.chat_pieces(m)) for i, m in enumerate(conversations) if is_conversation(m)
    ]
    stats["skipped_malformed"] = len(conversations) - len(valid)
    contents = content_ids(tokenizer, [pieces for _, pieces in valid])
    rows, max_length = [], settings.max_length
    for index, pieces in valid:
        ids, mask = tokenizer.pieces_to_ids(pieces, contents)
        if not any(mask):
            stats["dropped_no_assistant_turn"] += 1
            continue
        if len(ids) > max_length:
            if settings.overlong == "drop":
                stats["dropped_overlong"] += 1
                continue
            ids, mask = ids[:max_length], mask[:max_length]
            if not any(mask):
                stats["dropped_no_trainable_token_after_truncation"] += 1
                continue
            stats["truncated"] += 1
        rows.append((first_row + index, (np.array(ids, dtype), np.array(mask, np.uint8))))
        stats["trainable_tokens"] += sum(mask)
    stats["documents"] = len(rows)
    return rows, stats


def pair_rows(tokenizer, settings, first_row: int, batch: dict) -> tuple[list, Counter]:
    """dpo: each pair's prompt, chosen and rejected reply, cut to fit by `fit_pair`. Malformed
    pairs are skipped; pairs whose (cut) replies are identical are dropped."""
    triples = list(zip(batch["prompt"], batch["chosen"], batch["rejected"]))
    stats, dtype = Counter(pairs_in=len(triples)), token_dtype(tokenizer.get_vocab_size())
    valid = []
    for index, (prompt, chosen, rejected) in enumerate(triples):
        if is_conversation(prompt) and is_reply(chosen) and is_reply(rejected):
            parts = [tokenizer.chat_pieces(prompt, add_generation_prompt=True)]
            parts += [
                tokenizer.reply_pieces(prompt, reply[0]["content"]) for reply in (chosen, rejected)
            ]
            valid.append((index, parts))
    stats["skipped_malformed"] = len(triples) - len(valid)
    contents = content_ids(tokenizer, [pieces for _, parts in valid for pieces in parts])
    rows = []
    for index, parts in valid:
        prompt, chosen, rejected = [
            tokenizer.pieces_to_ids(pieces, contents)[0] for pieces in parts
        ]
        fitted, counts = fit_pair(prompt, chosen, rejected, settings)
        if fitted is not None and fitted[1] == fitted[2]:
            fitted, counts = None, Counter(dropped_identical=1)
        stats.update(counts)
        if fitted is not None:
            rows.append((first_row + index, tuple(np.array(part, dtype) for part in fitted)))
    stats["pairs"] = len(rows)
    return rows, stats


def fit_pair(prompt: list, chosen: list, rejected: list, settings) -> tuple[tuple | None, Counter]:
    """The DPO cut policy: prompt + each reply must fit --max-length. A pair whose prompt alone
    fills it is dropped. Otherwise a prompt longer than --max-prompt-length keeps its first token
    and its last ones (the question and the opening of the answer matter most), then both replies
    are cut to the room left (a cut reply loses its end of turn). Returns (the parts or None when
    the pair is dropped, what was done)."""
    max_length, keep = settings.max_length, settings.max_prompt_length
    if len(prompt) >= max_length:
        return None, Counter(dropped_prompt_fills_context=1)
    if len(prompt) + max(len(chosen), len(rejected)) <= max_length:
        return (prompt, chosen, rejected), Counter()
    if settings.overlong == "drop":
        return None, Counter(dropped_overlong=1)
    cuts = Counter()
    if len(prompt) > keep:
        prompt = prompt[:1] + prompt[len(prompt) - (keep - 1) :]
        cuts["prompts_truncated"] = 1
    room = max_length - len(prompt)
    if max(len(chosen), len(rejected)) > room:
        cuts["responses_truncated"] = 1
    return (prompt, chosen[:room], rejected[:room]), cuts


def is_conversation(messages) -> bool:
    """A non-empty list of {role, content} messages with known roles and string contents."""
    if not isinstance(messages, list) or not messages:
        return False
    return all(
        isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str)
        for m in messages
    )


def is_reply(messages) -> bool:
    return is_conversation(messages) and [m["role"] for m in messages] == ["assistant"]


def encode_texts(tokenizer, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in tokenizer.encode_batch_fast(texts, add_special_tokens=False)]


def content_ids(tokenizer, conversations: list) -> Iterator[list[int]]:
    """The ids of every message content of these rendered conversations, in order (one batch)."""
    texts = [piece.text for pieces in conversations for piece in pieces if piece.content]
    return iter(encode_texts(tokenizer, texts))


STAGE_ROWS = {"pre_training": document_rows, "sft": conversation_rows, "dpo": pair_rows}


_worker = None  # (tokenizer, settings) of this process


def load_worker(settings: argparse.Namespace) -> None:
    global _worker
    _worker = (load_tokenizer(settings.tokenizer_path), settings)


def start_pool_worker(settings: argparse.Namespace) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops the pool
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread each: N processes, N cores
    load_worker(settings)


def encode_batch(first_row: int, batch: dict) -> tuple[list, Counter, int]:
    """(encoded rows, counts, raw rows read) of one batch of raw rows."""
    tokenizer, settings = _worker
    rows, stats = STAGE_ROWS[settings.stage](tokenizer, settings, first_row, batch)
    return rows, stats, len(next(iter(batch.values())))


@contextmanager
def batch_encoder(settings: argparse.Namespace):
    """Yield `encode_all(jobs)`: the `encode_batch` results of the jobs, in order."""
    if settings.num_proc == 1:
        load_worker(settings)
        yield lambda jobs: (encode_batch(*job) for job in jobs)
        return
    # spawn, not fork: forking a process whose Rust/Arrow thread pools run can deadlock. SIGINT
    # is ignored while the workers start (an ignored signal stays ignored across exec), so a
    # Ctrl-C cannot interrupt their imports with tracebacks.
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        context = multiprocessing.get_context("spawn")
        pool = context.Pool(settings.num_proc, start_pool_worker, (settings,))
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)

    def encode_all(jobs):
        pending = deque()  # at most 2 x num_proc batches in flight: memory stays flat
        for job in jobs:
            pending.append(pool.apply_async(encode_batch, job))
            if len(pending) >= 2 * settings.num_proc:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()

    with pool:
        yield encode_all


def tokenize_split(split, directory: Path, encode_all, args, vocab_size: int, sha256: str) -> dict:
    """Write one split's arrays and meta.json; returns the meta."""
    columns = raw_data.COLUMNS[args.stage]
    writer, stats = SplitWriter(directory, args.stage, vocab_size, source_rows=True), Counter()
    jobs = split.iter_rows(columns, args.batch_size)
    with tqdm(total=len(split), desc=f"tokenizing {split.name}", unit="rows") as progress:
        for rows, batch_stats, num_rows in encode_all(jobs):
            writer.add_rows(rows)
            stats.update(batch_stats)
            progress.update(num_rows)
    stats = dict(+stats)  # the counters that counted something
    if args.stage != "pre_training":
        stats |= {"max_length": args.max_length, "overlong": args.overlong}
    if args.stage == "dpo":
        stats["max_prompt_length"] = args.max_prompt_length
    return writer.finish(sha256, stats)


def main(argv=None) -> int:
    args = parse_args(argv)
    vocab_size = load_tokenizer(args.tokenizer_path).get_vocab_size()
    splits = raw_data.open_splits(args.dataset_dir, allow_single_split=False)
    raw_data.check_columns(splits, args.stage, args.dataset_dir)
    if "train" not in splits or len(splits["train"]) == 0:
        raise UserError(
            f"{args.dataset_dir} has no train split with rows (it has {', '.join(splits)})"
        )
    output, started = Path(args.output_dir), time.perf_counter()
    sha256, metas = sha256_file(args.tokenizer_path), {}
    with (
        locked_output_directory(output, args.overwrite, what="tokenize output") as temp,
        batch_encoder(args) as encode_all,
    ):
        for name, split in splits.items():
            metas[name] = tokenize_split(split, temp / name, encode_all, args, vocab_size, sha256)
    seconds = time.perf_counter() - started
    for name, meta in metas.items():
        counts = ", ".join(f"{k}={v}" for k, v in meta["stats"].items() if isinstance(v, int))
        sizes = f"{meta['num_documents']:,} documents, {meta['num_tokens']:,} tokens"
        print(f"{name}: {sizes} ({counts})")
    total = sum(meta["num_tokens"] for meta in metas.values())
    print(
        f"wrote {output} ({args.stage}, {total:,} tokens in {seconds:.1f} s, "
        f"{total / max(seconds, 1e-9):,.0f} tokens/s)"
    )
    return 0


if __name__ == "__main__":
    run_cli(main)
