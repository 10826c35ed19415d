"""FineWeb-Edu (HuggingFaceFW/fineweb-edu): its parquet files, one by one, into shards on disk.

    python3 -m dataset.pre_training.download_dataset --dataset fineweb-edu \\
        --config sample-10BT --max-tokens 4e9 --output-dir data/fineweb/raw

The config's parquet files (`sample/10BT/*.parquet`; `default` is `data/*/*`, a dump like
CC-MAIN-2024-10 `data/CC-MAIN-2024-10/*`) are read in order, at a commit resolved once, where they
lie on the Hub (`HfFileSystem`): only the columns used, row group by row group, each read retried
over a brief network loss. Nothing but the shards is written to disk. `--source local --data-files
'dir/*.parquet'` reads such files from disk.

Texts are stripped; missing, empty and (--min-int-score) lower-scored ones are dropped and counted;
tokens are token_count (or UTF-8 bytes / 4.6). Kept document k goes to validation when
ceil((k + 1) f) > ceil(k f), f = --validation-fraction (evenly spaced), test likewise over the rest;
the document that reaches --max-tokens is the last. Until the end everything is in
`<output>.partial/`: the finished shards and progress.json (where reading stands: file, row group,
batch; and every counter), replaced after each shard. After Ctrl-C, kill -9, a lost network or a
full disk, the same command continues from the last finished shard: the text read after it (at
most --shard-size-mb) is read again, and the result is byte-identical to an uninterrupted run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from datasets.arrow_writer import ArrowWriter
from tqdm import tqdm

from common.atomic import atomic_write_text, remove_leftovers, replace_directory
from common.disk_space import free_bytes, report_full_disk
from common.errors import UserError
from common.locking import folder_lock
from dataset.local_files import resolve_data_files
from dataset.pipeline import SPLITS, new_manifest, one_line

REPO_ID = "HuggingFaceFW/fineweb-edu"
CONFIG_TOKENS = {
    "sample-10BT": 10e9,
    "sample-100BT": 100e9,
    "sample-350BT": 350e9,
    "default": 1.3e12,
}
DUMP_CONFIG = re.compile(r"CC-MAIN-\d{4}-\d{2}")
DEFAULT_CONFIG = "sample-10BT"
BYTES_PER_TOKEN = 4.6  # FineWeb-Edu's UTF-8 bytes per GPT-2 token
PARQUET_BYTES_PER_TOKEN = 3.0  # ...and its parquet files' (compressed): a dump's size in tokens
BATCH_ROWS = 1000  # rows per batch read: shards close between batches
DEFAULT_HELD_OUT_FRACTION = 0.001  # 4e9 tokens: ~4,000 documents (~4M tokens) each
DISK_MARGIN = 1.05  # Arrow offsets, the source column and metadata, on top of the text
FEATURES = datasets.Features({"text": datasets.Value("string"), "source": datasets.Value("string")})
KEY_FLAGS = [  # what a resumed download must share with the one it continues
    "source",
    "config",
    "revision",
    "max_tokens",
    "min_int_score",
    "shard_size_mb",
    "validation_fraction",
    "test_fraction",
    "text_column",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument_group("--dataset fineweb-edu (file by file; resumable)").add_argument
    configs = ", ".join(CONFIG_TOKENS)
    add("--config", help=f"{configs} or a dump like CC-MAIN-2024-10; none: {DEFAULT_CONFIG}")
    budget = "stop once the kept documents hold this many GPT-2 tokens (the dataset's "
    add("--max-tokens", type=token_count, help=budget + "token_count), e.g. 4e9; none: all")
    score = "keep only pages whose int_score (educational value, 0-5) is at least this"
    add("--min-int-score", type=int, choices=range(6), help=score)
    shard = "text per shard (MB): what an interruption can make it read again"
    add("--shard-size-mb", type=float, default=256, help=shard)
    add("--revision", help="Hub branch, tag or commit; none: the newest, resolved once")


def token_count(text: str) -> int:
    """argparse type: '4e9' -> 4_000_000_000 (a positive whole number)."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not (0 < value < float("inf") and value.is_integer()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number, e.g. 4e9")
    return int(value)


def check_args(args: argparse.Namespace) -> None:
    """One-line errors for flags no FineWeb-Edu download can use, before any network."""
    if args.source == "sample":
        raise UserError("--dataset fineweb-edu reads --source hub or --source local, not sample")
    config = args.config or DEFAULT_CONFIG
    if args.source == "hub" and config not in CONFIG_TOKENS and not DUMP_CONFIG.fullmatch(config):
        configs = ", ".join(CONFIG_TOKENS)
        raise UserError(f"--config {config!r} is not a FineWeb-Edu config ({configs}, CC-MAIN-...)")
    if args.source == "local" and (args.config or args.revision):
        raise UserError("--config and --revision name Hub data; --source local reads --data-files")
    size = CONFIG_TOKENS.get(config) if args.source == "hub" else None
    if args.max_tokens and size and args.max_tokens > size:
        larger = [name for name, tokens in CONFIG_TOKENS.items() if tokens >= args.max_tokens]
        hint = f" or use --config {larger[0]}" if larger else ""
        raise UserError(
            f"--max-tokens {args.max_tokens:.3g} is more than FineWeb-Edu {config} holds "
            f"(about {size:.3g} tokens); lower it{hint}"
        )
    if args.shard_size_mb <= 0:
        raise UserError(f"--shard-size-mb must be positive, got {args.shard_size_mb}")


class HubFiles:
    """The config's parquet files at one commit, each read where it lies."""

    name = "fineweb-edu"

    def __init__(self, config: str, revision: str | None):
        import huggingface_hub

        folder = f"data/{config}/"
        if config == "default":
            folder = "data/"
        elif config.startswith("sample-"):
            folder = f"sample/{config.removeprefix('sample-')}/"
        api = huggingface_hub.HfApi()
        info = hub_call(api.dataset_info, REPO_ID, revision=revision, files_metadata=True)
        self.revision = info.sha
        names = [(s.rfilename, s.size or 0) for s in info.siblings]
        self.files = sorted(
            f for f in names if f[0].startswith(folder) and f[0].endswith(".parquet")
        )
        if not self.files:
            raise UserError(f"{REPO_ID} holds no parquet files under {folder} at {info.sha}")
        size = sum(size for _, size in self.files) / PARQUET_BYTES_PER_TOKEN
        self.known_tokens = int(CONFIG_TOKENS.get(config, size))

    def open(self, index: int) -> pq.ParquetFile:
        import huggingface_hub

        remote = f"datasets/{REPO_ID}@{self.revision}/{self.files[index][0]}"
        return pq.ParquetFile(hub_call(huggingface_hub.HfFileSystem().open, remote))


class LocalFiles:
    """FineWeb-shaped parquet files of the user's (--source local --data-files)."""

    name, revision, known_tokens = "local", None, None

    def __init__(self, patterns: list[str]):
        self.paths = resolve_data_files(patterns, ("parquet",))
        self.files = [(str(path), path.stat().st_size) for path in self.paths]

    def open(self, index: int) -> pq.ParquetFile:
        try:
            return pq.ParquetFile(self.paths[index])
        except Exception as error:
            raise UserError(f"{self.paths[index]} is not a Parquet file ({error})") from None


def hub_call(function, *args, **kwargs):
    try:
        return function(*args, **kwargs)
    except Exception as error:
        raise UserError(
            f"could not reach {REPO_ID} on the Hugging Face Hub ({one_line(error)}); check the "
            "network and --revision, or use --source local --data-files 'dir/*.parquet'"
        ) from error


@dataclass
class Progress:
    """progress.json: where a download stands after its last finished shard."""

    key: dict
    revision: str | None = None
    position: list[int] = field(default_factory=lambda: [0, 0, 0])  # file, row group, batch
    shards: int = 0
    files: dict[str, list[str]] = field(default_factory=lambda: {s: [] for s in SPLITS})
    kept: int = 0  # documents kept so far (all splits): the held-out counter
    not_validation: int = 0  # of those, documents validation did not take
    rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    text_bytes: int = 0
    drops: dict[str, int] = field(default_factory=lambda: {"read": 0})  # in the filters' order
    done: bool = False
    budget_short: str = ""  # why the download ended before its budget, if it did
    seconds: float = 0.0  # reading time over all runs

    @property
    def total_tokens(self) -> int:
        return sum(self.tokens.values())

    def save(self, folder: Path) -> None:
        atomic_write_text(folder / "progress.json", json.dumps(asdict(self), indent=1) + "\n")


def open_progress(folder: Path, key: dict, overwrite: bool) -> Progress:
    """The progress of an unfinished download with these settings, or a new one."""
    try:
        progress = Progress(**json.loads((folder / "progress.json").read_text()))
    except FileNotFoundError:
        progress = None
    except (OSError, ValueError, TypeError):
        raise UserError(f"{folder}/progress.json is damaged; pass --overwrite") from None
    differs = [name for name in key if progress and key[name] != progress.key.get(name)]
    if differs and not overwrite:
        name = differs[0]
        raise UserError(
            f"{folder} holds an unfinished download with other settings: {name} "
            f"{progress.key.get(name)!r} (this run: {key[name]!r}); run the same command as "
            "before to finish it, or pass --overwrite to start over"
        )
    if progress is None or differs:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        return Progress(key=key)
    documents = sum(progress.rows.values())
    print(
        f"resuming {folder}: {progress.shards} finished shards, {documents:,} documents, "
        f"{progress.total_tokens:,} tokens"
    )
    return progress


def held_out(first: int, count: int, fraction: float) -> np.ndarray:
    """[count] bool: whether documents first .. first+count-1 are held out (module docstring)."""
    if fraction <= 0:
        return np.zeros(count, dtype=bool)
    index = np.arange(first, first + count, dtype=np.float64)
    return np.ceil((index + 1) * fraction) > np.ceil(index * fraction)


def assign_splits(progress: Progress, count: int, fractions: tuple[float, float]) -> np.ndarray:
    """[count] split ids (0 train, 1 validation, 2 test) of the next kept documents."""
    validation = held_out(progress.kept, count, fractions[0])
    others = int((~validation).sum())
    test = held_out(progress.not_validation, others, fractions[1] / (1.0 - fractions[0]))
    split = validation.astype(np.int8)
    split[np.flatnonzero(~validation)[test]] = 2
    progress.kept += count
    progress.not_validation += others
    return split


class Download:
    """One run: the files, the shards being written, the progress."""

    def __init__(self, args, files, folder: Path, progress: Progress):
        self.args, self.files, self.folder, self.progress = args, files, folder, progress
        self.columns = [args.text_column, "token_count"]
        if args.min_int_score is not None:
            self.columns.append("int_score")
        self.writers: dict[str, tuple[ArrowWriter, Path]] = {}
        self.shard_text = 0

    def count(self, reason: str, rows: int) -> None:
        self.progress.drops[reason] = self.progress.drops.get(reason, 0) + rows

    def documents(self, table: pa.Table) -> pa.Table:
        """One batch -> columns text (stripped) and tokens; what is dropped is counted."""
        text, score = table.column(self.args.text_column), self.args.min_int_score
        if not pa.types.is_string(text.type) and not pa.types.is_large_string(text.type):
            raise UserError(f"column {self.args.text_column!r} holds {text.type}, not text")
        self.count("read", table.num_rows)
        self.count("missing_text", text.null_count)
        keep = pc.is_valid(text)
        if score is not None:
            scored = pc.and_(keep, pc.fill_null(pc.greater_equal(table["int_score"], score), False))
            self.count(f"int_score_below_{score}", pc.sum(pc.xor(keep, scored)).as_py() or 0)
            keep = scored
        stripped = pc.utf8_trim_whitespace(text.filter(keep))
        nonempty = pc.greater(pc.binary_length(stripped), 0)
        self.count("empty", len(stripped) - (pc.sum(nonempty).as_py() or 0))
        stripped, table = stripped.filter(nonempty), table.filter(keep).filter(nonempty)
        if "token_count" in table.column_names:
            tokens = np.asarray(pc.fill_null(table["token_count"], 0), np.int64)
        else:  # estimated from the text's size
            tokens = np.ceil(np.asarray(pc.binary_length(stripped)) / BYTES_PER_TOKEN)
        return pa.table({"text": stripped, "tokens": tokens.astype(np.int64)})

    def add(self, table: pa.Table) -> None:
        """Write one batch's documents (up to the budget) into the open shards."""
        progress = self.progress
        tokens = np.asarray(table.column("tokens"))
        budget = self.args.max_tokens or np.inf
        reached = np.flatnonzero(progress.total_tokens + np.cumsum(tokens) >= budget)
        if len(reached):  # the document that reaches the budget is the last one
            last = reached[0] + 1
            table, tokens, progress.done = table.slice(0, last), tokens[:last], True
        fractions = (self.args.validation_fraction, self.args.test_fraction)
        split = assign_splits(progress, table.num_rows, fractions)
        rows = pa.table({"text": table["text"], "source": [self.files.name] * table.num_rows})
        for index, name in enumerate(SPLITS):
            chosen = np.flatnonzero(split == index)
            if len(chosen):
                self.writer(name).write_table(rows.take(chosen))
                progress.rows[name] += len(chosen)
                progress.tokens[name] += int(tokens[chosen].sum())
        text_bytes = pc.sum(pc.binary_length(table["text"])).as_py() or 0
        progress.text_bytes += text_bytes
        self.shard_text += text_bytes

    def writer(self, split: str) -> ArrowWriter:
        if split not in self.writers:
            temp = self.folder / split / f".data-{self.progress.shards:05d}.arrow.tmp"
            temp.parent.mkdir(exist_ok=True)
            self.writers[split] = (ArrowWriter(features=FEATURES, path=str(temp)), temp)
        return self.writers[split][0]

    def commit(self, position: list[int], started: float) -> None:
        """Close the open shards under their final names, then record them in progress.json."""
        progress = self.progress
        for split, (writer, temp) in self.writers.items():
            writer.finalize()
            writer.close()
            name = temp.name[1:].removesuffix(".tmp")
            os.replace(temp, temp.with_name(name))
            progress.files[split].append(name)
        self.writers, self.shard_text = {}, 0
        progress.shards += 1
        progress.position = position
        progress.seconds += time.perf_counter() - started
        progress.save(self.folder)

    def discard(self) -> None:
        """Remove the shard being written (a full disk may refuse to close it, too)."""
        for writer, temp in self.writers.values():
            with contextlib.suppress(Exception):
                writer.close()
            temp.unlink(missing_ok=True)

    def batches(self):
        """(position after it, batch) of every batch from where progress.json stands on."""
        first_file, first_group, first_batch = self.progress.position
        for index in range(first_file, len(self.files.files)):
            with self.files.open(index) as parquet:
                columns = self.present_columns(index, parquet.schema_arrow.names)
                start = first_group if index == first_file else 0
                for group in range(start, parquet.num_row_groups):
                    skip = first_batch if (index, group) == (first_file, first_group) else 0
                    reader = parquet.iter_batches(BATCH_ROWS, row_groups=[group], columns=columns)
                    try:
                        for number, batch in enumerate(reader, start=1):
                            if number > skip:
                                yield [index, group, number], pa.Table.from_batches([batch])
                    except Exception as error:  # network, Hub, a damaged file: shards are kept
                        name = self.files.files[index][0]
                        raise UserError(f"reading {name} failed ({one_line(error)})") from error
        yield [len(self.files.files), 0, 0], None

    def present_columns(self, index: int, names: list[str]) -> list[str]:
        missing = [c for c in self.columns if c not in names and c != "token_count"]
        if missing:
            name = self.files.files[index][0]
            raise UserError(f"{name} has no column {missing[0]!r}; check --text-column")
        return [column for column in self.columns if column in names]

    def run(self) -> None:
        """Read to the end or the budget, closing a shard every --shard-size-mb of text."""
        progress, started, budget = self.progress, time.perf_counter(), self.args.max_tokens
        total = budget or self.files.known_tokens
        initial = min(progress.total_tokens, total or 0)
        desc = f"downloading {self.files.name}"
        with tqdm(total=total, initial=initial, unit="tok", unit_scale=True, desc=desc) as bar:
            for position, table in self.batches():
                if table is None:  # the files ran out
                    progress.done = True
                    if budget is not None:
                        got = f"{progress.total_tokens:,} tokens"
                        progress.budget_short = f"the source ran out at {got}, before {budget:,}"
                else:
                    before = progress.total_tokens
                    self.add(self.documents(table))
                    bar.update(progress.total_tokens - before)
                if progress.done or self.shard_text >= self.args.shard_size_mb * 1e6:
                    self.commit(position, started)
                    started = time.perf_counter()
                if progress.done:
                    return


def download(args: argparse.Namespace, module: str) -> int:
    """The `--dataset fineweb-edu` download (module docstring); returns 0."""
    check_args(args)
    output = Path(args.output_dir)
    if output.exists() and not args.overwrite:
        raise UserError(f"{output} already exists; pass --overwrite to replace it")
    key = {name: getattr(args, name) for name in KEY_FLAGS} | {"batch_rows": BATCH_ROWS}
    if args.source == "local":
        files = LocalFiles(args.data_files)
        key["files"] = [list(file) for file in files.files]
    folder = output.with_name(f"{output.name}.partial")
    with folder_lock(output, what="download output"):
        for leftover in remove_leftovers(output):
            print(f"removed {leftover}, left behind by an interrupted run")
        progress = open_progress(folder, key, args.overwrite)
        try:
            if args.source == "hub":
                files = HubFiles(args.config or DEFAULT_CONFIG, progress.revision or args.revision)
                progress.revision = files.revision
            if not progress.done:
                continue_download(Download(args, files, folder, progress))
        except BaseException:
            if progress.shards == 0:  # nothing finished: nothing to resume, leave nothing
                shutil.rmtree(folder, ignore_errors=True)
            raise
        if not all(progress.rows.values()):
            counts = f"{progress.rows} documents"
            raise UserError(
                f"train, validation and test each need some, not {counts}; pass a "
                "larger --max-tokens with --overwrite"
            )
        finish(args, module, files, folder, progress)
        replace_directory(folder, output)
    counts = ", ".join(f"{name} {progress.rows[name]:,}" for name in SPLITS)
    print(
        f"wrote {output} ({counts} documents, {progress.total_tokens:,} tokens, "
        f"{progress.text_bytes / 1e6:,.1f} MB of text in {progress.shards} shards; "
        f"{progress.seconds:.0f} s reading)"
    )
    return 0


def continue_download(download: Download) -> None:
    """Check the disk, then read; an interruption says what is kept and how to go on."""
    progress, folder = download.progress, download.folder
    budget = download.args.max_tokens or download.files.known_tokens
    need = ((budget or 0) - progress.total_tokens) * BYTES_PER_TOKEN * DISK_MARGIN
    free = free_bytes(folder)
    if free is not None and free < need:
        gigabytes = f"about {need / 1e9:.1f} GB more at {folder}, but only {free / 1e9:.1f} GB"
        raise UserError(f"the download needs {gigabytes} are free; lower --max-tokens")
    try:
        with report_full_disk(folder):
            download.run()
    except (UserError, KeyboardInterrupt) as error:
        if progress.shards == 0:
            raise
        kept = f"the {progress.shards} finished shards stay in {folder}"
        if isinstance(error, KeyboardInterrupt):
            print(f"\ninterrupted; {kept}: run the same command to continue")
            raise
        raise UserError(f"{error} ({kept}; the same command continues from them)") from None
    finally:
        download.discard()


def finish(args, module: str, files, folder: Path, progress: Progress) -> None:
    """Give the folder what `load_from_disk` reads, and manifest.json."""
    for name in SPLITS:
        state = {
            "_data_files": [{"filename": f} for f in progress.files[name]],
            "_split": name,
            "_fingerprint": f"{name}-{progress.kept}",
            "_format_columns": None,
            "_format_kwargs": {},
            "_format_type": None,
            "_output_all_columns": False,
        }
        atomic_write_text(folder / name / "state.json", json.dumps(state, indent=2))
        datasets.DatasetInfo(features=FEATURES).write_to_directory(str(folder / name))
    atomic_write_text(folder / "dataset_dict.json", json.dumps({"splits": list(SPLITS)}))
    manifest = new_manifest("pre_training", module, args)
    source = {"id": "local"}
    if args.source == "hub":
        config = args.config or DEFAULT_CONFIG
        source = {"id": REPO_ID, "config": config, "revision": files.revision}
    manifest["inputs"].append(source | {"files": [name for name, _ in files.files]})
    manifest["filters"][files.name] = filter_steps(progress)
    for name in SPLITS:
        manifest["splits"][name] = {
            "rows": progress.rows[name],
            "columns": list(FEATURES),
            "rows_by_source": {files.name: progress.rows[name]},
            "tokens": progress.tokens[name],
            "shards": len(progress.files[name]),
        }
    manifest |= {"text_bytes": progress.text_bytes, "seconds": round(progress.seconds, 2)}
    if progress.budget_short:
        manifest["budget_not_reached"] = progress.budget_short
        print(f"note: {progress.budget_short}")
    atomic_write_text(folder / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    (folder / "progress.json").unlink()


def filter_steps(progress: Progress) -> list[dict]:
    """The manifest's rows in and out of each filter, in the order they ran, then the budget."""
    steps, rows = [], progress.drops["read"]
    for reason, dropped in progress.drops.items():
        if reason != "read":
            steps.append(filter_step(f"drop_{reason}", rows, rows - dropped))
            rows -= dropped
    kept = sum(progress.rows.values())
    if kept < rows:  # the budget stopped it: the rest of what was read is left out
        steps.append(filter_step("max_tokens", rows, kept))
    return steps


def filter_step(name: str, rows_in: int, rows_out: int) -> dict:
    return {"step": name, "rows_in": rows_in, "rows_out": rows_out, "dropped": rows_in - rows_out}
