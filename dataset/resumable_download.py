"""A streamed download written to disk shard by shard, resumable after any interruption.

    run_streamed_download(output, key, make_stream, budget, plan, manifest, overwrite=False)

`make_stream(pinned)` gives a `StreamSource`: it opens an iterator of cleaned Arrow batches
(columns `text`, `source`, `tokens`), gives the state to resume it from, and counts what its
filters drop. `pinned` is a dict saved with the progress: what the first run resolved (the
Hub commit it read) and a resumed run must reuse. Batches go, as they arrive, into shards of
about `plan.shard_bytes` of text, each split (train, validation, test) its own Arrow files.
Memory holds one batch at a time.

While it runs, everything lives in `<output>.partial/`:

    progress.json                  the arguments that decide the result (`key`), the finished
                                   shards, the stream's state after the last one, the counters
    train/data-00000.arrow ...     finished shards (Arrow IPC streams, as `save_to_disk` writes)
    train/.data-00003.arrow.tmp    the shard being written

A finished shard is renamed into place, then progress.json is replaced (atomically): so after
Ctrl-C, `kill -9`, a lost network or a full disk, the next run with the same `key` starts after
the last finished shard (writing the next one over what is left of it) from the stream's saved
state (`IterableDataset.load_state_dict`: files already finished are skipped unread, the one in
progress is read again up to where it stopped). Shards close only between batches, so the
resumed run cuts the same shards as an uninterrupted one: the result is byte-identical. Another
`key` is an error (`--overwrite` discards the old partial download).

Held-out documents: kept document k (counted over the whole stream) goes to validation when
ceil((k + 1) f) > ceil(k f) for f = --validation-fraction: documents 0, 1/f, 2/f, ... evenly
spaced, so even a tiny download holds some. Test takes the same pattern over the documents
validation leaves. The budget (`budget` tokens, the stream's `tokens` column) counts every kept
document; the document that reaches it is the last one.

At the end the folder gets what `load_from_disk` reads (per split `state.json` and
`dataset_info.json`, then `dataset_dict.json`) and `manifest.json`, and is renamed to
`<output>` (an existing one, with --overwrite, is replaced only then).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
from datasets.arrow_writer import ArrowWriter
from tqdm import tqdm

from common.atomic import atomic_write_text, remove_leftovers
from common.disk_space import free_bytes, report_full_disk
from common.errors import UserError
from common.locking import folder_lock

SPLITS = ("train", "validation", "test")
FEATURES = datasets.Features({"text": datasets.Value("string"), "source": datasets.Value("string")})
PROGRESS_NAME = "progress.json"
PROGRESS_VERSION = 1
DISK_MARGIN = 1.05  # Arrow offsets, the source column and metadata, on top of the text


class StreamSource:
    """What a download streams; fineweb_edu.FineWebStream is the real one.

    `open(state)` yields pa.Table batches with columns text, source and tokens (int64),
    continuing after `state` (None: from the start); `state()` is a JSON-able dict to resume
    from, valid between batches; `drops` counts the rows its filters dropped, by reason, in the
    order the filters run, plus "read" (every row read).
    """

    name: str  # manifest group, e.g. "fineweb-edu"
    known_tokens: int | None = None  # what the whole source holds, when known (for the bar)

    def __init__(self):
        self.drops: Counter = Counter()

    def open(self, state: dict | None) -> Iterator[pa.Table]:
        raise NotImplementedError

    def state(self) -> dict:
        raise NotImplementedError


@dataclass
class ShardPlan:
    shard_bytes: int  # close the shards once this much text went into them
    validation_fraction: float
    test_fraction: float
    bytes_per_token: float  # for the disk-space estimate


def partial_path(output: Path) -> Path:
    return output.with_name(f"{output.name}.partial")


# ---------------------------------------------------------------- progress


@dataclass
class Progress:
    """progress.json: where a download stands after its last finished shard."""

    key: dict
    shards: int = 0
    files: dict[str, list[str]] = field(default_factory=lambda: {s: [] for s in SPLITS})
    stream_state: dict | None = None
    kept: int = 0  # documents kept so far (all splits): the held-out counter
    not_validation: int = 0  # of those, documents validation did not take
    rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    text_bytes: int = 0
    drops: dict[str, int] = field(default_factory=dict)
    pinned: dict = field(default_factory=dict)  # see make_stream in the module docstring
    done: bool = False
    budget_short: str = ""  # why the download ended before its budget, if it did
    seconds: float = 0.0  # streaming time over all runs

    @property
    def total_tokens(self) -> int:
        return sum(self.tokens.values())

    def save(self, folder: Path) -> None:
        text = json.dumps({"format_version": PROGRESS_VERSION, **asdict(self)}, indent=1)
        atomic_write_text(folder / PROGRESS_NAME, text + "\n")

    @classmethod
    def load(cls, folder: Path) -> Progress | None:
        path = folder / PROGRESS_NAME
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            raise UserError(
                f"{path} is unreadable ({error}); pass --overwrite to start the download over"
            ) from None
        if data.pop("format_version", None) != PROGRESS_VERSION:
            raise UserError(f"{path} is from another version; pass --overwrite to start over")
        return cls(**data)


def key_difference(old: dict, new: dict) -> str:
    """'--max-tokens 1e9 (this run: 2e9)' for the first setting that differs."""
    for name in sorted(set(old) | set(new)):
        if old.get(name) != new.get(name):
            return f"{name} {old.get(name)!r} (this run: {new.get(name)!r})"
    return "nothing"


# ---------------------------------------------------------------- shards


class SplitShards:
    """One split's shard files: finished ones listed in progress, one open at a time."""

    def __init__(self, folder: Path, files: list[str]):
        self.folder, self.files = folder, files
        folder.mkdir(parents=True, exist_ok=True)
        self.writer: ArrowWriter | None = None
        self.temp: Path | None = None

    def write(self, table: pa.Table, index: int) -> None:
        if self.writer is None:
            self.temp = self.folder / f".{shard_name(index)}.tmp"
            self.writer = ArrowWriter(features=FEATURES, path=str(self.temp))
        self.writer.write_table(table)

    def commit(self, index: int) -> None:
        """Close the open shard (if any rows went in) under its final name."""
        if self.writer is None:
            return
        self.writer.finalize()
        self.writer.close()
        os.replace(self.temp, self.folder / shard_name(index))
        self.files.append(shard_name(index))
        self.writer = self.temp = None

    def discard(self) -> None:
        if self.writer is not None:
            with contextlib.suppress(Exception):  # a full disk may refuse the close too
                self.writer.close()
            self.temp.unlink(missing_ok=True)
            self.writer = self.temp = None


def shard_name(index: int) -> str:
    return f"data-{index:05d}.arrow"


def held_out(first: int, count: int, fraction: float) -> np.ndarray:
    """[count] bool: whether documents first .. first+count-1 are held out (module docstring)."""
    if fraction <= 0:
        return np.zeros(count, dtype=bool)
    index = np.arange(first, first + count, dtype=np.float64)
    return np.ceil((index + 1) * fraction) > np.ceil(index * fraction)


def assign_splits(progress: Progress, count: int, plan: ShardPlan) -> np.ndarray:
    """[count] int8 split ids (0 train, 1 validation, 2 test) of the next `count` kept
    documents; advances the held-out counters."""
    validation = held_out(progress.kept, count, plan.validation_fraction)
    others = int((~validation).sum())
    remaining = 1.0 - plan.validation_fraction
    test = held_out(progress.not_validation, others, plan.test_fraction / remaining)
    split = np.zeros(count, dtype=np.int8)
    split[validation] = 1
    split[np.flatnonzero(~validation)[test]] = 2
    progress.kept += count
    progress.not_validation += others
    return split


def within_budget(tokens: np.ndarray, used: int, budget: int | None) -> int:
    """How many of these documents to keep: all, or up to the one that reaches the budget."""
    if budget is None:
        return len(tokens)
    reached = np.flatnonzero(used + np.cumsum(tokens) >= budget)
    return int(reached[0]) + 1 if len(reached) else len(tokens)


# ---------------------------------------------------------------- the download


def check_disk_space(folder: Path, progress: Progress, budget: int | None, plan: ShardPlan):
    """UserError before streaming if the disk cannot hold what the budget still needs."""
    if budget is None:
        return
    need = max(0, budget - progress.total_tokens) * plan.bytes_per_token * DISK_MARGIN
    free = free_bytes(folder)
    if free is not None and free < need:
        raise UserError(
            f"the download needs about {need / 1e9:.1f} GB more at {folder} "
            f"({budget - progress.total_tokens:,} tokens x {plan.bytes_per_token} bytes), but "
            f"only {free / 1e9:.1f} GB are free; lower --max-tokens or free some space"
        )


def open_partial(output: Path, key: dict, overwrite: bool) -> tuple[Path, Progress]:
    """The partial folder and its progress: resumed when its key is ours, else new."""
    folder = partial_path(output)
    progress = Progress.load(folder) if folder.is_dir() else None
    if progress is not None and progress.key != key:
        if not overwrite:
            raise UserError(
                f"{folder} holds an unfinished download with other settings: "
                f"{key_difference(progress.key, key)}; run the same command as before to "
                "finish it, or pass --overwrite to discard it and start over"
            )
        progress = None
    if progress is None:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        progress = Progress(key=key)
        progress.save(folder)
    else:
        print(
            f"resuming {folder}: {progress.shards} finished shards, "
            f"{sum(progress.rows.values()):,} documents, {progress.total_tokens:,} tokens"
        )
    return folder, progress


def run_streamed_download(
    output: Path,
    key: dict,
    make_stream: Callable[[dict], StreamSource],
    budget: int | None,
    plan: ShardPlan,
    manifest,
    overwrite: bool = False,
) -> Path:
    """Stream `make_stream(...)` into `output` (module docstring); returns `output`."""
    if output.exists() and not overwrite:
        raise UserError(f"{output} already exists; pass --overwrite to replace it")
    with folder_lock(output, what="download output"):
        for leftover in remove_leftovers(output):
            print(f"removed {leftover}, left behind by an interrupted run")
        folder, progress = open_partial(output, key, overwrite)
        try:
            stream = make_stream(progress.pinned)
            if not progress.done:
                stream_into(folder, progress, stream, budget, plan)
            if not all(progress.rows.values()):
                raise UserError(
                    f"the download ended with {progress.rows} documents per split; train, "
                    "validation and test each need some: pass --overwrite with a larger "
                    "--max-tokens (or other split fractions)"
                )
        except BaseException:
            if progress.shards == 0:  # nothing finished: nothing to resume, leave nothing
                shutil.rmtree(folder, ignore_errors=True)
            raise
        finish(folder, output, progress, stream, manifest)
    return output


def stream_into(folder: Path, progress: Progress, stream: StreamSource, budget, plan) -> None:
    """Check the disk, then stream into shards; an interruption says what is kept."""
    check_disk_space(folder, progress, budget or stream.known_tokens, plan)
    stream.drops.update(progress.drops)
    shards = {name: SplitShards(folder / name, progress.files[name]) for name in SPLITS}
    try:
        with report_full_disk(folder):
            stream_shards(stream, progress, shards, folder, budget, plan)
    except (UserError, KeyboardInterrupt) as error:
        if progress.shards == 0:
            raise
        raise _with_resume_hint(error, folder, progress) from None
    finally:
        for split in shards.values():
            split.discard()  # an unfinished shard (none after a commit)


def _with_resume_hint(error: BaseException, folder: Path, progress: Progress) -> BaseException:
    kept = f"the {progress.shards} finished shards stay in {folder}"
    if isinstance(error, KeyboardInterrupt):
        print(f"\ninterrupted; {kept}: run the same command to continue")
        return error
    return UserError(f"{error} ({kept}; the same command continues from them)")


def stream_shards(stream, progress, shards, folder, budget, plan) -> None:
    """Read batches into shards until the stream ends or the budget is reached."""
    started = time.perf_counter()
    shard_text = 0
    total = budget or stream.known_tokens
    bar = tqdm(
        total=total, initial=min(progress.total_tokens, total) if total else 0, unit="tok",
        unit_scale=True, desc=f"downloading {stream.name}", dynamic_ncols=True,
    )  # fmt: skip
    batches = stream.open(progress.stream_state)
    with bar:
        while not progress.done:
            try:
                table = next(batches, None)
            except Exception as error:  # network, Hub, damaged file: the shards are kept
                raise UserError(f"reading {stream.name} failed ({one_line(error)})") from error
            if table is None:  # the stream ended
                progress.done = True
                if budget is not None:
                    progress.budget_short = (
                        f"the source ran out at {progress.total_tokens:,} tokens, before the "
                        f"budget of {budget:,}"
                    )
            else:
                tokens = np.asarray(table.column("tokens"), np.int64)
                keep = within_budget(tokens, progress.total_tokens, budget)
                used = int(tokens[:keep].sum())
                progress.done = budget is not None and progress.total_tokens + used >= budget
                shard_text += _write(table.slice(0, keep), progress, shards, plan)
                bar.update(used)
                bar.set_postfix(
                    docs=f"{sum(progress.rows.values()):,}",
                    text=size_text(progress.text_bytes), refresh=False,
                )  # fmt: skip
            if progress.done or shard_text >= plan.shard_bytes:
                commit(progress, shards, folder, stream, started)
                started, shard_text = time.perf_counter(), 0


def _write(table: pa.Table, progress: Progress, shards: dict, plan: ShardPlan) -> int:
    """Append one batch to the open shards by split; returns its text bytes."""
    if table.num_rows == 0:
        return 0
    split = assign_splits(progress, table.num_rows, plan)
    tokens = np.asarray(table.column("tokens"), np.int64)
    text_bytes = int(pa.compute.sum(pa.compute.binary_length(table.column("text"))).as_py())
    for index, name in enumerate(SPLITS):
        rows = np.flatnonzero(split == index)
        if len(rows):
            shards[name].write(table.select(["text", "source"]).take(rows), progress.shards)
            progress.rows[name] += len(rows)
            progress.tokens[name] += int(tokens[rows].sum())
    progress.text_bytes += text_bytes
    return text_bytes


def commit(progress, shards, folder, stream, started) -> None:
    """Finish the open shards and record them with the stream's state, atomically."""
    for split in shards.values():
        split.commit(progress.shards)
    progress.shards += 1
    progress.stream_state = stream.state()
    progress.drops = dict(stream.drops)
    progress.seconds += time.perf_counter() - started
    progress.save(folder)


# ---------------------------------------------------------------- the end


def fingerprint(*parts) -> str:
    return hashlib.blake2b(json.dumps(parts, sort_keys=True).encode(), digest_size=8).hexdigest()


def write_split_metadata(folder: Path, name: str, files: list[str], key: dict) -> None:
    """The state.json and dataset_info.json that `Dataset.save_to_disk` writes beside its
    Arrow files, so `datasets.load_from_disk` opens the split as it is."""
    state = {
        "_data_files": [{"filename": filename} for filename in files],
        "_fingerprint": fingerprint(key, name, files),
        "_format_columns": None,
        "_format_kwargs": {},
        "_format_type": None,
        "_output_all_columns": False,
        "_split": name,
    }
    info = asdict(datasets.DatasetInfo(features=FEATURES))
    atomic_write_text(folder / "state.json", json.dumps(state, indent=2, sort_keys=True))
    atomic_write_text(
        folder / "dataset_info.json", json.dumps({k: info[k] for k in sorted(info)}, indent=2)
    )


def finish(folder: Path, output: Path, progress: Progress, stream, manifest) -> None:
    for name in SPLITS:
        write_split_metadata(folder / name, name, progress.files[name], progress.key)
    atomic_write_text(folder / "dataset_dict.json", json.dumps({"splits": list(SPLITS)}))
    read = progress.drops.get("read", 0)
    steps, rows = [], read
    for reason, count in progress.drops.items():  # in the order the filters run
        if reason != "read":
            steps.append({"step": f"drop_{reason}", "rows_in": rows, "rows_out": rows - count,
                          "dropped": count})  # fmt: skip
            rows -= count
    kept = sum(progress.rows.values())
    if kept < rows:  # the budget stopped it: the rest of what was read is left out
        steps.append({"step": "max_tokens", "rows_in": rows, "rows_out": kept,
                      "dropped": rows - kept})  # fmt: skip
    manifest.data["filters"][stream.name] = steps or [
        {"step": "read_rows", "rows_in": read, "rows_out": kept, "dropped": 0}
    ]
    manifest.data["splits"] = {
        name: {
            "rows": progress.rows[name],
            "columns": list(FEATURES),
            "rows_by_source": {stream.name: progress.rows[name]},
            "tokens": progress.tokens[name],
            "shards": len(progress.files[name]),
        }
        for name in SPLITS
    }
    if progress.budget_short:
        manifest.note("budget_not_reached", progress.budget_short)
        print(f"note: {progress.budget_short}")
    manifest.note("text_bytes", progress.text_bytes)
    manifest.note("seconds", round(progress.seconds, 2))
    atomic_write_text(folder / "manifest.json", json.dumps(manifest.data, indent=2) + "\n")
    move_into_place(folder, output)
    (output / PROGRESS_NAME).unlink(missing_ok=True)
    rows = ", ".join(f"{name} {progress.rows[name]:,}" for name in SPLITS)
    tokens = progress.total_tokens
    print(
        f"wrote {output} ({rows} documents, {tokens:,} tokens, {size_text(progress.text_bytes)} "
        f"of text in {progress.shards} shards; {progress.seconds:.0f} s streaming)"
    )


def one_line(error: BaseException) -> str:
    """'ConnectionError: Connection reset by peer': an error's type and first line."""
    first = (str(error).strip().splitlines() or [""])[0][:300]
    return f"{type(error).__name__}: {first}"


def size_text(num_bytes: int) -> str:
    return f"{num_bytes / 1e9:.2f} GB" if num_bytes >= 1e9 else f"{num_bytes / 1e6:.1f} MB"


def move_into_place(folder: Path, output: Path) -> None:
    """Rename the finished folder to `output`; an old output is moved aside first and removed
    after (a run killed in between gets it back from `common.atomic.remove_leftovers`)."""
    if output.exists():
        old = output.with_name(f"{output.name}.old-{os.getpid()}")
        os.replace(output, old)
        os.replace(folder, output)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(folder, output)
