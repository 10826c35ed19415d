r"""Tokenize every split of a raw dataset into memory-mapped arrays (see tokenized_data.py).

    python3 -m tokenizer.tokenize_dataset --dataset-dir data/pre_training/raw \
        --tokenizer-path data/tokenizer.json --output-dir data/tokens/pre_training --num-proc 8

Tiny CPU example, then SFT and DPO data:

    python3 -m tokenizer.tokenize_dataset --dataset-dir data/sample/pre_training/raw \
        --tokenizer-path data/sample/tokenizer/tokenizer.json \
        --output-dir data/sample/pre_training/tokenized --num-proc 2
    python3 -m tokenizer.tokenize_dataset --dataset-dir data/post_training/sft/raw \
        --tokenizer-path data/tokenizer.json --output-dir data/tokens/sft --stage sft \
        --max-length 1025
    python3 -m tokenizer.tokenize_dataset --dataset-dir data/post_training/dpo/raw \
        --tokenizer-path data/tokenizer.json --output-dir data/tokens/dpo --stage dpo \
        --max-length 1024

The original README's `--tokenizer-mode post_training_sft` (or `post_training_dpo`,
`pre_training`) and `--tokenizer-profile post_training_v1` are older spellings of `--stage`.

The parent process streams rows in batches, `--num-proc` spawned workers encode them (one thread
each), and the parent appends the results in row order, with at most 2 x N batches in flight:
memory stays flat and the output is byte-identical for every --num-proc. The output folder is
written under a temporary name and renamed at the end (an interrupted run leaves nothing that
looks finished). What is dropped or cut is counted in meta.json's stats:
- pre_training: rows whose text is empty or not a string are skipped; documents are never cut.
- sft: malformed conversations are skipped; a conversation longer than --max-length (block
  size + 1 lets each fit one training window) is truncated or, with --overlong drop, dropped;
  one with no trained (assistant) token left is dropped.
- dpo: prompt + chosen and prompt + rejected must each fit --max-length; a pair whose prompt
  alone fills it is dropped; otherwise `truncate` cuts a prompt longer than --max-prompt-length
  to its first token and its last ones (the question and the opening of the answer matter
  most), then both answers to the room left (a cut answer loses its end of turn). Pairs with
  identical answers are dropped.
Conversations are rendered by the tokenizer's chat template (tokenizer/encoding.py): ours for a
tokenizer.train tokenizer, an imported model's own beside its tokenizer.json.
"""

import argparse
import multiprocessing
import os
import signal
import threading
import time
from collections import Counter, deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

import numpy as np
from tqdm import tqdm

from common.atomic import locked_output_directory, sha256_file
from common.errors import ArgumentParser, UserError, run_cli
from tokenizer import raw_data
from tokenizer.encoding import ROLES, load_tokenizer
from tokenizer.tokenized_data import STAGES, SplitWriter, token_dtype

DEFAULT_MAX_LENGTH = 1024
# The original README's spellings, accepted on the command line and nowhere else.
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
    add(
        "--tokenizer-path",
        required=True,
        help="tokenizer.json written by tokenizer.train, or "
        "an imported model's (checkpoints/<name>/tokenizer.json)",
    )
    add("--output-dir", required=True, help="folder to create, one sub-folder per split")
    add("--overwrite", action="store_true", help="replace an existing --output-dir")
    cores = "worker processes (= CPU cores used; 1: this process). Default: all; same output"
    add("--num-proc", type=int, default=os.cpu_count() or 1, help=cores)
    batch = "rows per work item (memory holds about 2 x num-proc of them). Default 1000"
    add("--batch-size", type=int, default=1000, help=batch)
    add_stage_arguments(parser)
    args = parser.parse_args(argv)
    check_args(parser, args)
    return args


def add_stage_arguments(parser: argparse.ArgumentParser) -> None:
    """--stage (and the original README's spellings of it) and what sft and dpo data use."""
    add = parser.add_argument
    stage = "the training stage the data is for: pre_training (column text, the default), sft "
    add(
        "--stage",
        choices=STAGES,
        help=stage + "(messages, + a loss mask) or dpo (prompt/chosen/rejected)",
    )
    mode = "older spelling of --stage: post_training_sft (= sft), post_training_dpo (= dpo)"
    add("--tokenizer-mode", choices=STAGE_OF_MODE, help=mode)
    profile = (
        "older flag, only checked: pre_training for pre_training, post_training_v1 for sft/dpo"
    )
    add("--tokenizer-profile", choices=STAGES_OF_PROFILE, help=profile)
    length = "sft and dpo: most tokens in one sequence (an SFT conversation; a DPO prompt + "
    add("--max-length", type=int, help=length + f"its longer answer). Default {DEFAULT_MAX_LENGTH}")
    overlong = "sft and dpo: what happens to a longer one (counted in meta.json). Default truncate"
    add("--overlong", choices=("truncate", "drop"), help=overlong)
    prompt = "dpo: a pair too long keeps at most this many prompt tokens (its first and last). "
    add("--max-prompt-length", type=int, help=prompt + "Default: half of --max-length")


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject contradicting flags (parser.error) and fill in the stage-dependent defaults."""
    if args.num_proc < 1 or args.batch_size < 1:
        parser.error("--num-proc and --batch-size must be at least 1")
    stage = STAGE_OF_MODE.get(args.tokenizer_mode) or args.stage or "pre_training"
    if args.tokenizer_mode and args.stage not in (None, stage):
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
    post = ("--max-length", "--overlong", "--max-prompt-length")
    if stage == "pre_training":
        given = [flag for flag in post if getattr(args, flag[2:].replace("-", "_")) is not None]
        if given:
            parser.error(f"{given[0]} applies to --stage sft and dpo only (documents are packed)")
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


# ---------------------------------------------------------------- encoding (in the workers)


@dataclass
class Encoded:
    """The documents (or DPO pairs) kept from one batch of rows, flattened."""

    tokens: np.ndarray  # (sum of lengths,) every kept document back to back
    lengths: np.ndarray  # (docs,) tokens per document, or (pairs, 3) prompt/chosen/rejected
    source_rows: np.ndarray  # (docs,) each kept document's row in the raw split
    num_rows: int  # raw rows covered, kept or not
    mask: np.ndarray | None = None  # (sum of lengths,) uint8 loss mask, sft only
    stats: Counter = field(default_factory=Counter)


def is_conversation(messages, single_reply: bool = False) -> bool:
    """A non-empty list of {role, content} messages (with single_reply: one assistant message)."""
    ok = isinstance(messages, list) and bool(messages)
    ok = ok and all(
        isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str)
        for m in messages
    )
    return ok and (not single_reply or [m["role"] for m in messages] == ["assistant"])


class Encoder:
    """`encoder(first_row, rows)` turns one batch of raw rows into an `Encoded`."""

    def __init__(self, settings: argparse.Namespace):
        self.settings = settings  # the command's parsed flags
        self.tokenizer = load_tokenizer(settings.tokenizer_path)
        self.dtype = token_dtype(self.tokenizer.get_vocab_size())

    def ids(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch_fast(texts, add_special_tokens=False)]

    def __call__(self, first_row: int, rows: dict[str, list]) -> Encoded:
        stage = self.settings.stage
        if stage == "pre_training":
            return self.documents(first_row, rows["text"])
        if stage == "sft":
            return self.conversations(first_row, rows["messages"])
        return self.pairs(first_row, list(zip(rows["prompt"], rows["chosen"], rows["rejected"])))

    def encoded(self, docs: list, rows: list, num_rows: int, stats: Counter, masks=None) -> Encoded:
        """Flatten `docs` (each a list of id lists: [BOS] + text, a conversation, or a pair's
        prompt, chosen and rejected) into one Encoded."""
        parts = [part for doc in docs for part in doc]
        lengths = np.fromiter(map(len, parts), np.int64, len(parts))
        tokens = np.fromiter(chain.from_iterable(parts), self.dtype, int(lengths.sum()))
        width = {"pre_training": 2, "sft": 1, "dpo": 3}[self.settings.stage]
        lengths = lengths.reshape(len(docs), width)  # (docs, parts of a doc)
        lengths = lengths if width == 3 else lengths.sum(axis=1)
        mask = (
            None
            if masks is None
            else np.fromiter(chain.from_iterable(masks), np.uint8, len(tokens))
        )
        return Encoded(tokens, lengths, np.asarray(rows, np.uint64), num_rows, mask, stats)

    def documents(self, first_row: int, texts: list) -> Encoded:
        stats = Counter(rows_in=len(texts))
        kept = [(first_row + i, t) for i, t in enumerate(texts) if isinstance(t, str) and t]
        stats["skipped_not_a_string"] = sum(not isinstance(t, str) for t in texts)
        stats["skipped_empty"] = len(texts) - len(kept) - stats["skipped_not_a_string"]
        bos = [self.tokenizer.bos_id] * (self.tokenizer.bos_id is not None)
        docs = [[bos, ids] for ids in self.ids([text for _, text in kept])]
        stats["documents"] = len(docs)
        stats["text_bytes"] = sum(len(text.encode()) for _, text in kept)
        return self.encoded(docs, [row for row, _ in kept], len(texts), stats)

    def conversations(self, first_row: int, conversations: list) -> Encoded:
        max_length, stats = self.settings.max_length, Counter(conversations_in=len(conversations))
        chat = self.tokenizer
        valid = [
            (first_row + i, chat.chat_pieces(m))
            for i, m in enumerate(conversations)
            if is_conversation(m)
        ]
        stats["skipped_malformed"] = len(conversations) - len(valid)
        contents = iter(self.ids([p.text for _, pieces in valid for p in pieces if p.content]))
        docs, masks, rows = [], [], []
        for row, pieces in valid:
            ids, mask = chat.pieces_to_ids(pieces, contents)
            if not any(mask):
                stats["dropped_no_assistant_turn"] += 1
                continue
            if len(ids) > max_length and self.settings.overlong == "drop":
                stats["dropped_overlong"] += 1
                continue
            if len(ids) > max_length:
                ids, mask = ids[:max_length], mask[:max_length]
                if not any(mask):
                    stats["dropped_no_trainable_token_after_truncation"] += 1
                    continue
                stats["truncated"] += 1
            docs.append([ids])
            masks.append(mask)
            rows.append(row)
        stats["documents"] = len(docs)
        stats["trainable_tokens"] = sum(map(sum, masks))
        return self.encoded(docs, rows, len(conversations), stats, masks)

    def pairs(self, first_row: int, triples: list) -> Encoded:
        stats, docs, rows, chat = Counter(pairs_in=len(triples)), [], [], self.tokenizer
        valid = [
            (
                first_row + i,
                (
                    chat.chat_pieces(p, add_generation_prompt=True),
                    chat.reply_pieces(p, c[0]["content"]),
                    chat.reply_pieces(p, r[0]["content"]),
                ),
            )
            for i, (p, c, r) in enumerate(triples)
            if is_conversation(p)
            and is_conversation(c, single_reply=True)
            and is_conversation(r, single_reply=True)
        ]
        stats["skipped_malformed"] = len(triples) - len(valid)
        texts = [p.text for _, parts in valid for pieces in parts for p in pieces if p.content]
        contents = iter(self.ids(texts))
        for row, parts in valid:
            ids = (chat.pieces_to_ids(pieces, contents)[0] for pieces in parts)
            fitted = self.fit_pair(*ids, stats)
            if fitted is not None and fitted[0][1] == fitted[0][2]:
                stats["dropped_identical"] += 1
            elif fitted is not None:
                stats.update(fitted[1])  # truncations are counted for the pairs kept
                docs.append(fitted[0])
                rows.append(row)
        stats["pairs"] = len(docs)
        return self.encoded(docs, rows, len(triples), stats)

    def fit_pair(self, prompt: list, chosen: list, rejected: list, stats: Counter):
        """The DPO truncation policy (module docstring): ((prompt, chosen, rejected), the cuts
        made), or None when the pair is dropped (counted in `stats`)."""
        max_length, keep, cuts = (
            self.settings.max_length,
            self.settings.max_prompt_length,
            Counter(),
        )
        if len(prompt) >= max_length:
            stats["dropped_prompt_fills_context"] += 1
            return None
        if len(prompt) + max(len(chosen), len(rejected)) <= max_length:
            return (prompt, chosen, rejected), cuts
        if self.settings.overlong == "drop":
            stats["dropped_overlong"] += 1
            return None
        if len(prompt) > keep:
            prompt = prompt[:1] + prompt[len(prompt) - (keep - 1) :]  # the first token + the end
            cuts["prompts_truncated"] += 1
        room = max_length - len(prompt)
        cuts["responses_truncated"] += max(len(chosen), len(rejected)) > room
        return (prompt, chosen[:room], rejected[:room]), +cuts


_worker: Encoder | None = None  # one per worker process, made by the pool's initializer


def init_worker(settings: argparse.Namespace) -> None:
    global _worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops the pool
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread each: N processes, N cores
    _worker = Encoder(settings)


def encode_in_worker(first_row: int, rows: dict) -> Encoded:
    return _worker(first_row, rows)


@contextmanager
def batch_encoder(settings: argparse.Namespace, num_proc: int):
    """Yield `encode_all(jobs) -> iterator of Encoded` (in job order) on `num_proc` cores."""
    if num_proc == 1:
        previous = os.environ.get("TOKENIZERS_PARALLELISM")
        os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one core, as asked
        encoder = Encoder(settings)
        try:
            yield lambda jobs: (encoder(*job) for job in jobs)
        finally:
            os.environ.pop("TOKENIZERS_PARALLELISM")
            if previous is not None:
                os.environ["TOKENIZERS_PARALLELISM"] = previous
        return
    # spawn, not fork: forking a process whose Rust/Arrow thread pools run can deadlock. SIGINT
    # is ignored while the workers start (an ignored signal stays ignored across exec), so a
    # Ctrl-C cannot interrupt their imports with tracebacks.
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        pool = multiprocessing.get_context("spawn").Pool(num_proc, init_worker, (settings,))
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)
    with pool:

        def encode_all(jobs):
            pending = deque()  # bounded: at most 2 x num_proc batches in flight
            for job in jobs:
                pending.append(pool.apply_async(encode_in_worker, job))
                if len(pending) >= 2 * num_proc:
                    yield pending.popleft().get()
            while pending:
                yield pending.popleft().get()

        yield encode_all


# ---------------------------------------------------------------- writing (in this process)


def tokenize_split(split, name: str, directory: Path, encode_all, args, vocab_size, sha256):
    columns = raw_data.COLUMNS[args.stage]
    writer, stats = SplitWriter(directory, args.stage, vocab_size, source_rows=True), Counter()

    def jobs():
        first_row = 0
        for rows in split.iter_rows(columns, args.batch_size):
            yield first_row, rows
            first_row += len(rows[columns[0]])

    with tqdm(total=len(split), desc=f"tokenizing {name}", unit="rows") as progress:
        for batch in encode_all(jobs()):
            ends = np.cumsum(batch.lengths.reshape(-1))  # pairs: prompt, chosen, rejected in turn
            pieces = np.split(batch.tokens, ends[:-1]) if len(ends) else []
            if args.stage == "dpo":
                pairs = list(zip(pieces[0::3], pieces[1::3], pieces[2::3]))
                writer.add_pairs(pairs, batch.source_rows)
            else:
                masks = None if batch.mask is None else np.split(batch.mask, ends[:-1])
                writer.add_documents(pieces, masks, batch.source_rows)
            stats.update(batch.stats)
            progress.update(batch.num_rows)
    stats = dict(+stats)  # the counters that counted something
    if args.stage != "pre_training":
        stats |= {"max_length": args.max_length, "overlong": args.overlong}
    if args.stage == "dpo":
        stats["max_prompt_length"] = args.max_prompt_length
    return writer.finish(sha256, stats)


def main(argv=None) -> int:
    args = parse_args(argv)
    tokenizer = load_tokenizer(args.tokenizer_path)
    splits = raw_data.open_splits(args.dataset_dir, allow_single_split=False)
    raw_data.check_columns(splits, args.stage, args.dataset_dir)
    if "train" not in splits or len(splits["train"]) == 0:
        raise UserError(
            f"{args.dataset_dir} has no train split with rows (it has {', '.join(splits)})"
        )
    output = Path(args.output_dir)
    if output.exists() and not args.overwrite:  # checked early, before any work
        raise UserError(f"{output} already exists; pass --overwrite to replace it")
    started, metas, sha256 = time.perf_counter(), {}, sha256_file(args.tokenizer_path)
    with (
        locked_output_directory(output, args.overwrite, what="tokenize output") as temp,
        batch_encoder(args, args.num_proc) as encode_all,
    ):
        for name, split in splits.items():
            vocab_size = tokenizer.get_vocab_size()
            metas[name] = tokenize_split(
                split, name, temp / name, encode_all, args, vocab_size, sha256
            )
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
