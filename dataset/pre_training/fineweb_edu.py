"""FineWeb-Edu (HuggingFaceFW/fineweb-edu), streamed from the Hub into shards on disk.

    python3 -m dataset.pre_training.download_dataset --dataset fineweb-edu \\
        --config sample-10BT --max-tokens 4e9 --output-dir data/fineweb/raw

The Hub's layout, the same in every config: one `train` split of parquet files with the
columns text, id, dump, url, file_path, language, language_score, token_count (GPT-2 tokens),
score (the educational classifier's score, 0-5) and int_score (it rounded). The dataset keeps
pages with int_score >= 3, so `--min-int-score 4` (or 5) is what filters further. Configs:
`sample-10BT`, `sample-100BT`, `sample-350BT` (random samples of about 10, 100 and 350 billion
GPT-2 tokens), `default` (everything, about 1.3 trillion) and one per Common Crawl dump
(`CC-MAIN-2024-10`, ...).

`datasets.load_dataset(..., streaming=True)` reads the files as it goes (nothing is cached on
disk, only the columns used are decoded); the Hub commit is resolved once and pinned, so a
resumed download reads the same files. `--source local --data-files 'dir/*.parquet'` (or
.jsonl) streams files of the same layout through the same code, e.g. a copy made with
`huggingface-cli download HuggingFaceFW/fineweb-edu --repo-type dataset --include
'sample/10BT/*'`; only `text` is required there (`token_count` missing: tokens are estimated as
UTF-8 bytes / 4.6, FineWeb-Edu's ratio; `int_score` only with --min-int-score).

Per document: the text is stripped; empty texts, missing ones and (with --min-int-score)
lower-scored pages are dropped and counted. FineWeb is deduplicated upstream (MinHash, per
dump), so no exact-duplicate pass here (it would hold a fingerprint per document in memory).
Shards, resuming, held-out splits and the budget: dataset/resumable_download.py.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from common.errors import UserError
from dataset.common import Manifest
from dataset.local_files import JSONL_SUFFIXES, PARQUET_SUFFIXES, file_kind, resolve_data_files
from dataset.resumable_download import (
    ShardPlan,
    StreamSource,
    one_line,
    run_streamed_download,
)

REPO_ID = "HuggingFaceFW/fineweb-edu"
SOURCE = "fineweb-edu"
HUB_COLUMNS = (
    "text", "id", "dump", "url", "file_path", "language", "language_score", "token_count",
    "score", "int_score",
)  # fmt: skip
CONFIG_TOKENS = {  # about what each config holds, in GPT-2 tokens (the dataset card's sizes)
    "sample-10BT": 10e9,
    "sample-100BT": 100e9,
    "sample-350BT": 350e9,
    "default": 1.3e12,
}
DUMP_CONFIG = re.compile(r"CC-MAIN-\d{4}-\d{2}")
DEFAULT_CONFIG = "sample-10BT"
# FineWeb-Edu's UTF-8 bytes per GPT-2 token (a 10M-token sample of it holds 46 MB of text): the
# disk-space estimate, and the token count of local documents without `token_count`.
BYTES_PER_TOKEN = 4.6
BATCH_ROWS = 1000  # rows per Arrow batch read from the stream: shards close between batches
DEFAULT_SHARD_MB = 256
DEFAULT_HELD_OUT_FRACTION = 0.001  # 4e9 tokens: ~4,000 documents (~4M tokens) each


def add_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("--dataset fineweb-edu (streamed; resumable)")
    group.add_argument(
        "--config",
        default=None,
        help=f"FineWeb-Edu config: {', '.join(CONFIG_TOKENS)} or a dump like CC-MAIN-2024-10; "
        f"none means {DEFAULT_CONFIG}",
    )
    group.add_argument(
        "--max-tokens",
        type=token_count,
        default=None,
        help="stop once the kept documents hold this many GPT-2 tokens (the dataset's "
        "token_count), e.g. 4e9; none means the whole config",
    )
    group.add_argument(
        "--min-int-score",
        type=int,
        choices=range(6),
        default=None,
        help="keep only pages whose int_score (educational value, 0-5) is at least this; "
        "the dataset holds >= 3 only",
    )
    group.add_argument(
        "--shard-size-mb",
        type=float,
        default=DEFAULT_SHARD_MB,
        help="text per shard (MB): what an interruption can lose, and the size of train's "
        "Arrow files",
    )
    group.add_argument(
        "--revision",
        default=None,
        help="Hub branch, tag or commit to read; none means the newest commit, resolved once and "
        "kept for resumes",
    )


def token_count(text: str) -> int:
    """argparse type: '4e9' -> 4_000_000_000 (a positive whole number)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value > 0 and value != float("inf") and value.is_integer()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number, e.g. 4e9")
    return int(value)


def check_args(args: argparse.Namespace) -> None:
    """One-line errors for flags no FineWeb-Edu download can use, before any network."""
    if args.source == "sample":
        raise UserError(
            "--dataset fineweb-edu reads --source hub or --source local (FineWeb-shaped "
            "parquet or jsonl files); the sample world has no FineWeb form"
        )
    config = args.config or DEFAULT_CONFIG
    if args.source == "hub" and config not in CONFIG_TOKENS and not DUMP_CONFIG.fullmatch(config):
        raise UserError(
            f"--config {config!r} is not a FineWeb-Edu config; choose one of "
            f"{', '.join(CONFIG_TOKENS)} or a Common Crawl dump like CC-MAIN-2024-10"
        )
    if args.source == "local" and (args.config or args.revision):
        raise UserError("--config and --revision name Hub data; --source local reads --data-files")
    size = CONFIG_TOKENS.get(config) if args.source == "hub" else None
    if args.max_tokens and size and args.max_tokens > size:
        larger = [name for name, tokens in CONFIG_TOKENS.items() if tokens >= args.max_tokens]
        hint = f"--config {larger[0]}" if larger else "several configs"
        raise UserError(
            f"--max-tokens {args.max_tokens:.3g} is more than FineWeb-Edu {config} holds "
            f"(about {size:.3g} tokens); lower it or use {hint}"
        )
    if args.shard_size_mb <= 0:
        raise UserError(f"--shard-size-mb must be positive, got {args.shard_size_mb}")


# ---------------------------------------------------------------- documents


def documents(table: pa.Table, text_column: str, min_int_score, source: str, drops) -> pa.Table:
    """One raw batch -> columns text (stripped), source, tokens; drops counted by reason."""
    drops["read"] += table.num_rows
    text = table.column(text_column)
    keep = pc.is_valid(text)
    if not pa.types.is_string(text.type) and not pa.types.is_large_string(text.type):
        raise UserError(f"column {text_column!r} holds {text.type}, not text")
    drops["missing_text"] += table.num_rows - int(pc.sum(keep).as_py() or 0)
    if min_int_score is not None:
        scored = pc.and_(keep, pc.fill_null(pc.greater_equal(table["int_score"], min_int_score),
                                            False))  # fmt: skip
        drops[f"int_score_below_{min_int_score}"] += int(pc.sum(pc.xor(keep, scored)).as_py())
        keep = scored
    table = table.filter(keep)
    stripped = pc.utf8_trim_whitespace(table.column(text_column))
    nonempty = pc.greater(pc.binary_length(stripped), 0)
    drops["empty"] += table.num_rows - int(pc.sum(nonempty).as_py() or 0)
    table, stripped = table.filter(nonempty), stripped.filter(nonempty)
    if "token_count" in table.column_names:
        tokens = pc.fill_null(table["token_count"], 0).cast(pa.int64())
    else:
        lengths = np.asarray(pc.binary_length(stripped), np.float64)
        tokens = pa.array(np.ceil(lengths / BYTES_PER_TOKEN).astype(np.int64))
    sources = pc.fill_null(pa.nulls(table.num_rows, pa.string()), source)
    return pa.table({"text": stripped, "source": sources, "tokens": tokens})


class FineWebStream(StreamSource):
    """Cleaned batches (`documents`) of a streaming `datasets.IterableDataset`, resumable from
    its `state_dict()`. `open_dataset()` makes the IterableDataset (the Hub's or local files)."""

    def __init__(self, open_dataset, text_column: str, min_int_score, name: str, known_tokens):
        super().__init__()
        self.open_dataset, self.text_column, self.min_int_score = (
            open_dataset, text_column, min_int_score,
        )  # fmt: skip
        self.name, self.known_tokens = name, known_tokens
        self.batch_rows = BATCH_ROWS  # read once: a resumed run must cut the same batches
        self.dataset = None

    def open(self, state: dict | None) -> Iterator[pa.Table]:
        self.dataset = self.open_dataset().with_format("arrow")
        if state is not None:
            self.dataset.load_state_dict(state)
        for table in self.dataset.iter(batch_size=self.batch_rows):
            yield documents(table, self.text_column, self.min_int_score, self.name, self.drops)

    def state(self) -> dict:
        return self.dataset.state_dict()


def load_streaming(path: str, **kwargs):
    """`datasets.load_dataset(path, split="train", streaming=True, **kwargs)`; a failure to
    reach the files is one line."""
    import datasets

    try:
        return datasets.load_dataset(path, split="train", streaming=True, **kwargs)
    except Exception as error:
        raise UserError(
            f"could not open {path} {kwargs.get('name') or ''} ({one_line(error)}); check the "
            "network, or stream local copies of its files with --source local --data-files "
            "'dir/*.parquet'"
        ) from error


def hub_commit(revision: str | None) -> str:
    """The commit sha that `revision` (None: the newest) of FineWeb-Edu is at now."""
    import huggingface_hub

    try:
        return huggingface_hub.HfApi().dataset_info(REPO_ID, revision=revision).sha
    except Exception as error:
        raise UserError(
            f"could not reach {REPO_ID} on the Hugging Face Hub ({one_line(error)}); check the "
            "network and --revision, or read local files with --source local --data-files "
            "'dir/*.parquet'"
        ) from error


def local_columns(path: Path) -> list[str]:
    """The columns of a parquet file (its schema) or of a jsonl file (its first row)."""
    if file_kind(path) == "parquet":
        import pyarrow.parquet as pq

        try:
            return pq.read_schema(path).names
        except Exception as error:
            raise UserError(f"{path} is not a readable Parquet file ({error})") from None
    with open(path, encoding="utf-8", errors="replace") as file:
        for line in file:
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    raise UserError(f"{path}: the first line is not JSON") from None
                return list(row) if isinstance(row, dict) else []
    return []


# ---------------------------------------------------------------- the download


def download(args: argparse.Namespace, module: str) -> int:
    """The `--dataset fineweb-edu` download (see the module docstring); returns 0."""
    check_args(args)
    config = args.config or DEFAULT_CONFIG
    fractions = (args.validation_fraction, args.test_fraction)
    key = {
        "dataset": SOURCE,
        "source": args.source,
        "max_tokens": args.max_tokens,
        "min_int_score": args.min_int_score,
        "shard_size_mb": args.shard_size_mb,
        "batch_rows": BATCH_ROWS,
        "validation_fraction": fractions[0],
        "test_fraction": fractions[1],
    }
    manifest = Manifest("pre_training", args, module)
    columns = ["text", "token_count"] + (["int_score"] if args.min_int_score is not None else [])
    if args.source == "hub":
        key |= {"config": config, "revision": args.revision}

        def make_stream(pinned: dict) -> StreamSource:
            pinned.setdefault("revision", hub_commit(args.revision))
            manifest.add_input({"id": REPO_ID, "config": config, "revision": pinned["revision"],
                                "streaming": True, "columns": columns})  # fmt: skip
            return FineWebStream(
                lambda: load_streaming(REPO_ID, name=config, revision=pinned["revision"],
                                       columns=columns, cache_dir=args.cache_dir),
                "text", args.min_int_score, SOURCE, int(CONFIG_TOKENS.get(config, 0)) or None,
            )  # fmt: skip
    else:
        files = resolve_data_files(args.data_files, PARQUET_SUFFIXES | JSONL_SUFFIXES)
        present = local_columns(files[0])
        wanted = [args.text_column] + [c for c in columns[1:] if c in present]
        missing = [c for c in [args.text_column] + columns[2:] if c not in present]
        if missing:
            raise UserError(
                f"--data-files: {files[0]} has no column {', '.join(map(repr, missing))} (it "
                f"has {', '.join(present) or 'none'}); check --text-column / --min-int-score"
            )
        key |= {"files": [[str(f), f.stat().st_size] for f in files], "text": args.text_column}
        builder = "parquet" if file_kind(files[0]) == "parquet" else "json"
        extra = {"columns": wanted} if builder == "parquet" else {}

        def make_stream(pinned: dict) -> StreamSource:
            manifest.add_input({"id": "local", "files": [str(f) for f in files],
                                "streaming": True, "columns": wanted})  # fmt: skip
            return FineWebStream(
                lambda: load_streaming(builder, data_files=[str(f) for f in files], **extra),
                args.text_column, args.min_int_score, "local", None,
            )  # fmt: skip

    plan = ShardPlan(
        shard_bytes=int(args.shard_size_mb * 1e6),
        validation_fraction=fractions[0],
        test_fraction=fractions[1],
        bytes_per_token=BYTES_PER_TOKEN,
    )
    output = Path(args.output_dir)
    run_streamed_download(
        output, key, make_stream, args.max_tokens, plan, manifest, overwrite=args.overwrite
    )
    return 0
