"""Plumbing shared by the three `download_dataset` CLIs (pre-training, SFT, DPO).

- `new_parser` / `add_common_args` / `add_split_fractions`: the flags every downloader has
  (--output-dir, --source, --overwrite, ...);
- `run_download`: a downloader's main (build the splits with the builder of --source, write);
- `load_hub`: `datasets.load_dataset` with a one-line error naming the offline alternatives;
- `split_three` / `carve`: deterministic, seeded train/validation/test splits;
- `Manifest` and `counted_filter`: every filter's rows in and out go into `manifest.json`;
- `write_dataset`: builds the splits inside a temporary folder that only becomes `--output-dir`
  once everything (the DatasetDict and the manifest) is written.
"""

import argparse
import json
import os
import re
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import datasets
import numpy as np

from common.atomic import atomic_write_text, locked_output_directory
from common.errors import ArgumentParser, UserError

SPLITS = ("train", "validation", "test")
MANIFEST_NAME = "manifest.json"
WORK_DIR_NAME = "_work"  # intermediate Arrow files, inside the temporary output folder
MIN_ROWS_FOR_PROCESSES = 50_000  # below this, worker processes cost more than they save


def new_parser(module: str, doc: str, default_output: str) -> argparse.ArgumentParser:
    """The parser of one downloader, with the flags every downloader has."""
    parser = ArgumentParser(
        prog=f"python3 -m {module}",
        description=doc.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_common_args(parser, default_output)
    return parser


def add_split_fractions(parser, validation: float, test: float, unit: str, test_help=None):
    parser.add_argument(
        "--validation-fraction",
        type=positive_fraction,
        default=validation,
        help=f"share of the {unit} held out (seeded) for validation",
    )
    parser.add_argument(
        "--test-fraction",
        type=positive_fraction,
        default=test,
        help=test_help or f"share of the {unit} held out (seeded) for test",
    )


def add_common_args(parser: argparse.ArgumentParser, default_output: str) -> None:
    parser.add_argument(
        "--output-dir",
        default=default_output,
        help="where the DatasetDict (train/ validation/ test/) and manifest.json go",
    )
    parser.add_argument(
        "--source",
        choices=("hub", "sample", "local"),
        default="hub",
        help="hub: download from the Hugging Face Hub; sample: generate the embedded "
        "sample world (no network, seconds); local: your own files given with --data-files",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --output-dir (without it, an existing one is an error)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the split carving and of the sample world; use the same seed for the "
        "pre-training, SFT and DPO sample data so they describe the same world",
    )
    parser.add_argument(
        "--num-proc",
        type=int,
        default=min(8, os.cpu_count() or 1),
        help="worker processes for cleaning large datasets (the default is min(8, CPU cores))",
    )
    parser.add_argument(
        "--cache-dir",
        default=None,
        help="Hugging Face datasets download cache (None: the library's, ~/.cache/huggingface)",
    )
    parser.add_argument(
        "--data-files",
        nargs="+",
        default=None,
        metavar="FILE",
        help="--source local: files or glob patterns to read",
    )


def positive_fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction in [0, 1)")
    return value


def check_output_dir(args: argparse.Namespace) -> Path:
    """Fail before any download on an existing output (without --overwrite) or bad flags."""
    output = Path(args.output_dir)
    if output.exists() and not args.overwrite:
        raise UserError(f"{output} already exists; pass --overwrite to replace it")
    if args.num_proc < 1:
        raise UserError(f"--num-proc must be at least 1, got {args.num_proc}")
    if args.data_files and args.source != "local":
        raise UserError(f"--data-files is read only with --source local (not {args.source})")
    return output


# ---------------------------------------------------------------- the Hugging Face Hub


def load_hub(repo_id: str, **kwargs) -> datasets.DatasetDict:
    """`datasets.load_dataset(repo_id, **kwargs)`, any failure turned into a one-line UserError."""
    try:
        return datasets.load_dataset(repo_id, **kwargs)
    except Exception as error:  # no network, unknown name, hub outage, ...: all the same to a user
        first_line = (str(error).strip().splitlines() or [""])[0][:300]
        raise UserError(
            f"could not load {repo_id!r} from the Hugging Face Hub ({type(error).__name__}: "
            f"{first_line}); check the network, or run without it: --source sample (the embedded "
            f"sample data) or --source local --data-files FILE... (your own files)"
        ) from error


_COMMIT = re.compile(r"(?<![0-9a-f])[0-9a-f]{40}(?![0-9a-f])")


def hub_revision(dataset: datasets.Dataset) -> str | None:
    """The Hub commit a loaded dataset came from, when its file names record it (else None).

    `datasets` resolves Hub files as `hf://datasets/<repo>@<commit>/...` and caches what it
    builds under `.../<config>/<version>/<commit>/`, so the commit is in one of those names.
    """
    names = list((dataset.info.download_checksums or {}).keys())
    names += [entry.get("filename", "") for entry in dataset.cache_files]
    for name in names:
        match = _COMMIT.search(name)
        if match:
            return match.group(0)
    return None


def hub_input(repo_id: str, dataset_dict: datasets.DatasetDict, **details) -> dict:
    """The manifest entry of one Hub dataset: id, config/files, revision and rows per split."""
    first = next(iter(dataset_dict.values()))
    return {
        "id": repo_id,
        **details,
        "revision": hub_revision(first),
        "splits": {name: len(split) for name, split in dataset_dict.items()},
    }


def require_columns(dataset: datasets.Dataset, columns: list[str], where: str) -> None:
    missing = [column for column in columns if column not in dataset.column_names]
    if missing:
        raise UserError(
            f"{where} has no column {', '.join(map(repr, missing))} "
            f"(it has {', '.join(dataset.column_names) or 'no columns'})"
        )


# ---------------------------------------------------------------- splits


def carve(dataset: datasets.Dataset, fraction: float, seed: int) -> tuple:
    """Split off a seeded random `fraction` of the rows: (rest, carved), each in original order.

    A non-zero fraction carves at least one row, and never the last row of the rest.
    """
    num_rows = len(dataset)
    count = 0 if fraction <= 0 else min(max(1, round(num_rows * fraction)), num_rows - 1)
    order = np.random.default_rng(seed).permutation(num_rows)
    carved, rest = np.sort(order[:count]), np.sort(order[count:])
    return dataset.select(rest), dataset.select(carved)


def split_three(
    dataset: datasets.Dataset, validation_fraction: float, test_fraction: float, seed: int
) -> dict[str, datasets.Dataset]:
    """Seeded train/validation/test split of one dataset; each keeps the original row order."""
    if len(dataset) < 3:
        raise UserError(
            f"only {len(dataset)} usable rows; need at least 3 to make train, validation and test"
        )
    rest, test = carve(dataset, test_fraction, seed)
    remaining = 1.0 - test_fraction
    train, validation = carve(rest, validation_fraction / remaining if remaining else 0.0, seed + 1)
    return {"train": train, "validation": validation, "test": test}


def processes(dataset: datasets.Dataset, num_proc: int) -> int | None:
    """The `num_proc` for a map/filter: worker processes only pay off on large datasets."""
    return num_proc if num_proc > 1 and len(dataset) >= MIN_ROWS_FOR_PROCESSES else None


# ---------------------------------------------------------------- intermediate files


class WorkDir:
    """Names for intermediate Arrow files, so they live (and die) with the temporary output."""

    def __init__(self, path: Path):
        self.path = path
        path.mkdir(parents=True, exist_ok=True)

    def cache(self, name: str) -> dict:
        """Keyword arguments for map/filter that put their output file in this folder."""
        return {"cache_file_name": str(self.path / f"{_safe(name)}.arrow")}

    def folder(self, name: str) -> str:
        folder = self.path / _safe(name)
        folder.mkdir(exist_ok=True)
        return str(folder)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def from_generator(
    generate: Callable[[], Iterator[dict]],
    features: datasets.Features,
    work: WorkDir,
    name: str,
    split: str = "train",
) -> datasets.Dataset:
    """`Dataset.from_generator` into the work folder, streaming (bounded memory).

    The generator runs in this process (so it may update counters), and yielding nothing gives
    an empty dataset instead of the library's "corresponds to no data" error.
    """
    yielded = 0

    def counting() -> Iterator[dict]:
        nonlocal yielded
        for row in generate():
            yielded += 1
            yield row

    try:
        return datasets.Dataset.from_generator(
            counting, features=features, cache_dir=work.folder(name), fingerprint=_safe(name),
            split=split,
        )  # fmt: skip
    except Exception as error:
        user_error = _user_error_in(error)
        if user_error is not None:  # a bad input file: its one line, not the library's wrapping
            raise user_error from None
        if yielded or not isinstance(error, ValueError):
            raise
        return datasets.Dataset.from_dict({key: [] for key in features}, features=features)


def _user_error_in(error: BaseException | None) -> UserError | None:
    """The UserError that `error` was raised from, if any (`datasets` wraps a generator's errors
    in DatasetGenerationError)."""
    while error is not None and not isinstance(error, UserError):
        error = error.__cause__ or error.__context__
    return error


# ---------------------------------------------------------------- manifest and filters


class Manifest:
    """What `manifest.json` says: where the rows came from and how many each filter dropped."""

    def __init__(self, kind: str, args: argparse.Namespace, module: str):
        self.data: dict = {
            "format_version": 1,
            "kind": kind,
            "created_by": f"python3 -m {module}",
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "arguments": {key: value for key, value in vars(args).items()},
            "source": args.source,
            "inputs": [],
            "filters": {},
            "splits": {},
        }

    def add_input(self, entry: dict) -> None:
        self.data["inputs"].append(entry)

    def count(self, group: str, step: str, rows_in: int, rows_out: int, **extra) -> None:
        """Record one filter: `group` names the data ("tinystories/train"), `step` the filter.

        A step that changes the unit (lines in, articles out) passes unit_in/unit_out in `extra`
        and drops nothing.
        """
        dropped = 0 if "unit_out" in extra else rows_in - rows_out
        self.data["filters"].setdefault(group, []).append(
            {"step": step, "rows_in": rows_in, "rows_out": rows_out, "dropped": dropped, **extra}
        )

    def note(self, key: str, value) -> None:
        self.data[key] = value

    def finish(self, splits: dict[str, datasets.Dataset]) -> str:
        for name, split in splits.items():
            entry: dict = {"rows": len(split), "columns": split.column_names}
            if "source" in split.column_names:
                counts: Counter = Counter()
                for batch in split.select_columns(["source"]).iter(batch_size=100_000):
                    counts.update(batch["source"])
                entry["rows_by_source"] = dict(sorted(counts.items()))
            self.data["splits"][name] = entry
        return json.dumps(self.data, indent=2, default=str) + "\n"


def counted_filter(
    dataset: datasets.Dataset,
    keep: Callable[[dict], list[bool]],
    manifest: Manifest,
    group: str,
    step: str,
    work: WorkDir,
    num_proc: int = 1,
) -> datasets.Dataset:
    """`dataset.filter(keep, batched=True)` with its rows in and out written to the manifest."""
    kept = dataset.filter(
        keep,
        batched=True,
        num_proc=processes(dataset, num_proc),
        **work.cache(f"{group}-{step}"),
        desc=f"{group}: {step}",
    )
    manifest.count(group, step, len(dataset), len(kept))
    return kept


# ---------------------------------------------------------------- writing


def run_download(kind: str, module: str, args: argparse.Namespace, builders: dict) -> int:
    """A downloader's main: `builders[args.source](args, manifest, work)` makes the splits,
    which `write_dataset` saves with their manifest. Returns 0 (errors are UserErrors)."""
    manifest = Manifest(kind, args, module)
    write_dataset(args, manifest, lambda work: builders[args.source](args, manifest, work))
    return 0


def write_dataset(
    args: argparse.Namespace,
    manifest: Manifest,
    build: Callable[[WorkDir], dict[str, datasets.Dataset]],
) -> Path:
    """Run `build` and save its splits + manifest.json at --output-dir, atomically.

    `build` gets a WorkDir inside the temporary output folder for its intermediate files. An
    error or Ctrl-C anywhere leaves no output folder behind (and an existing one untouched).
    """
    output = check_output_dir(args)
    started = time.perf_counter()
    with locked_output_directory(output, args.overwrite, what="download output") as temp:
        work = WorkDir(temp / WORK_DIR_NAME)
        splits = build(work)
        if len(splits["train"]) == 0:
            counts = "; ".join(filter_summary(manifest)) or "no rows were read"
            raise UserError(f"no usable rows are left for the train split ({counts})")
        datasets.DatasetDict({name: splits[name] for name in SPLITS}).save_to_disk(str(temp))
        shutil.rmtree(work.path, ignore_errors=True)
        manifest.note("seconds", round(time.perf_counter() - started, 2))
        atomic_write_text(temp / MANIFEST_NAME, manifest.finish(splits))
    print_summary(output, manifest)
    return output


def filter_summary(manifest: Manifest) -> list[str]:
    """One line per data group: rows in, rows out, and what each filter dropped."""
    lines = []
    for group, steps in manifest.data["filters"].items():
        dropped = ", ".join(f"{s['step']} -{s['dropped']}" for s in steps if s["dropped"])
        lines.append(
            f"{group}: {steps[0]['rows_in']} {steps[0].get('unit_in', 'rows')} in, "
            f"{steps[-1]['rows_out']} out" + (f" ({dropped})" if dropped else "")
        )
    return lines


def print_summary(output: Path, manifest: Manifest) -> None:
    for line in filter_summary(manifest):
        print(line)
    data = manifest.data
    rows = ", ".join(f"{name} {entry['rows']}" for name, entry in data["splits"].items())
    print(f"wrote {output} ({rows} rows) in {data['seconds']} s")
