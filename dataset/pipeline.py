"""The one download pipeline that the pre-training, SFT and DPO data steps configure.

A `Step` names its stage, its flags and, for each --source (hub, sample, local), a function that
returns `Part`s: rows from one place, each bound for a split (and, for some, shares of it carved
off, seeded, into the held-out splits). A row is converted by the step's function, which returns
the output columns or raises `Drop(reason)`; every reason is counted in manifest.json. Then come
exact duplicates (pre-training), caps, the carving, and the write: the DatasetDict (train/
validation/ test/) and manifest.json are built in a temporary folder that becomes --output-dir
only when complete. FineWeb-Edu has its own resumable path (dataset/pre_training/fineweb_edu.py).
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np

from common.atomic import atomic_write_text, locked_output_directory
from common.errors import ArgumentParser, UserError

SPLITS = ("train", "validation", "test")
MIN_ROWS_FOR_PROCESSES = 50_000  # below this, worker processes cost more than they save
MESSAGES = [{"role": datasets.Value("string"), "content": datasets.Value("string")}]


class Drop(Exception):
    """A row that cannot be used; the message is the reason counted in the manifest."""


@dataclass
class Part:
    group: str  # its name in the manifest: "alpaca/train"
    rows: datasets.Dataset  # output columns, plus `reason` ("" = usable) when rows may drop
    into: str = "train"  # the split it goes to, less the shares carved off into others
    carve: dict[str, float] = field(default_factory=dict)
    limit: int | None = None  # keep at most this many rows in each split
    dedupe: bool = False  # drop exact duplicate texts over such parts, the first copy kept


@dataclass
class Step:
    stage: str  # pre_training, sft or dpo: the manifest's "stage"
    module: str
    doc: str  # the module docstring: its first line describes the command
    default_output: str
    sources: dict[str, Callable]  # --source -> parts(args, run) -> list[Part]
    add_arguments: Callable[[argparse.ArgumentParser], None]
    check: Callable[[argparse.ArgumentParser, argparse.Namespace], None]


def fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction in [0, 1)")
    return value


def parse_args(step: Step, argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(
        prog=f"python3 -m {step.module}",
        description=step.doc.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    output = "where the DatasetDict (train/ validation/ test/) and manifest.json go"
    add("--output-dir", default=step.default_output, help=output)
    sources = "hub: the Hugging Face Hub; sample: the embedded sample world (no network, seconds); "
    sources += "local: your own files, given with --data-files"
    add("--source", choices=("hub", "sample", "local"), default="hub", help=sources)
    add("--overwrite", action="store_true", help="replace an existing --output-dir")
    seed = "seed of the split carving and the sample world (one seed for all sample data)"
    add("--seed", type=int, default=0, help=seed)
    cores = min(8, os.cpu_count() or 1)
    add("--num-proc", type=int, default=cores, help="worker processes converting large datasets")
    add("--cache-dir", help="Hugging Face datasets cache (None: the library's own)")
    add("--data-files", nargs="+", metavar="FILE", help="--source local: files or globs to read")
    step.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.num_proc < 1:
        parser.error(f"--num-proc must be at least 1, got {args.num_proc}")
    if args.data_files and args.source != "local":
        parser.error(f"--data-files is read only with --source local (not {args.source})")
    step.check(parser, args)
    return args


def new_manifest(stage: str, module: str, args: argparse.Namespace) -> dict:
    """manifest.json's fields; a step fills in inputs, filters (rows in and out of each) and
    splits."""
    return {
        "format_version": 1,
        "stage": stage,
        "created_by": f"python3 -m {module}",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "arguments": vars(args),
        "source": args.source,
        "inputs": [],
        "filters": {},
        "splits": {},
    }


class Run:
    """What a step's source function works with: the flags, the manifest and a work folder."""

    def __init__(self, step: Step, args: argparse.Namespace, work: Path):
        self.args, self.work = args, work
        work.mkdir(parents=True, exist_ok=True)
        self.manifest = new_manifest(step.stage, step.module, args)

    def count(self, group: str, step: str, rows_in: int, rows_out: int, **extra) -> None:
        """Record one filter of `group`; a step that changes the unit passes unit_in/unit_out."""
        dropped = 0 if "unit_out" in extra else rows_in - rows_out
        self.manifest["filters"].setdefault(group, []).append(
            {"step": step, "rows_in": rows_in, "rows_out": rows_out, "dropped": dropped, **extra}
        )

    def hub(self, repo_id: str, splits: Iterable[str], columns: Iterable[str] = (), **kwargs):
        """`datasets.load_dataset(repo_id, **kwargs)`, its splits and columns checked, recorded
        in the manifest (with the Hub commit it came from)."""
        try:
            loaded = datasets.load_dataset(repo_id, cache_dir=self.args.cache_dir, **kwargs)
        except Exception as error:  # no network, unknown name, Hub outage: the same to a user
            raise UserError(
                f"could not load {repo_id!r} from the Hugging Face Hub ({one_line(error)}); "
                "check the network, or use --source sample or --source local --data-files FILE..."
            ) from error
        for name in splits:
            if name not in loaded:
                raise UserError(f"{repo_id} has no {name} split (it has {', '.join(loaded)})")
            missing = [c for c in columns if c not in loaded[name].column_names]
            if missing:
                has = ", ".join(loaded[name].column_names)
                raise UserError(f"{repo_id} {name} has no column {missing[0]!r} (it has {has})")
        details = {key: value for key, value in kwargs.items() if value is not None}
        self.manifest["inputs"].append(hub_input(repo_id, loaded, **details))
        return loaded

    def convert(self, group: str, dataset, convert: Callable, features) -> datasets.Dataset:
        """Every row through `convert` (batched, in worker processes when it pays)."""
        big = len(dataset) >= MIN_ROWS_FOR_PROCESSES and self.args.num_proc > 1
        return dataset.map(
            _convert_batch,
            batched=True,
            remove_columns=dataset.column_names,
            fn_kwargs={"convert": convert, "features": features},
            features=with_reason(features),
            num_proc=self.args.num_proc if big else None,
            cache_file_name=str(self.work / f"{_safe(group)}.arrow"),
            desc=group,
        )

    def generate(self, group: str, rows: Callable[[], Iterable[dict]], features):
        """A dataset of the dicts `rows()` yields (converted already), in the work folder."""
        features, yielded = datasets.Features(features), 0

        def counted():
            nonlocal yielded
            for row in rows():
                yielded += 1
                yield row

        try:
            return datasets.Dataset.from_generator(
                counted,
                features=features,
                cache_dir=str(self.work / _safe(group)),
                fingerprint=_safe(group),
            )
        except Exception as error:  # datasets wraps our errors, and fails on zero rows
            cause = error
            while cause is not None and not isinstance(cause, UserError):
                cause = cause.__cause__ or cause.__context__
            if cause is not None:
                raise cause from None
            if yielded:
                raise
            return datasets.Dataset.from_dict({key: [] for key in features}, features=features)


def local_parts(run: Run, rows: Callable, features, unit: str, hint: str, dedupe=False) -> list:
    """The user's rows (`rows()` yields them converted), held-out shares carved off (seeded);
    a UserError when none is usable."""
    usable = run.generate("local", rows, with_reason(features))
    reasons = Counter(usable["reason"])
    if not reasons.pop("", 0):
        counts = f"{len(usable)} rows ({dict(reasons)})"
        raise UserError(f"--data-files: no usable {unit} in {counts}; {hint}")
    shares = {"validation": run.args.validation_fraction, "test": run.args.test_fraction}
    return [Part("local", usable, "train", shares, dedupe=dedupe)]


def with_reason(features: dict) -> datasets.Features:
    """The columns of converted rows: the output's, and `reason` ("" for a usable row)."""
    return datasets.Features({**features, "reason": datasets.Value("string")})


def _convert_batch(batch: dict, convert: Callable, features) -> dict:
    out = {name: [] for name in [*features, "reason"]}
    for values in zip(*batch.values()):
        row = converted(convert, dict(zip(batch, values)), features)
        for name, column in out.items():
            column.append(row[name])
    return out


def converted(convert: Callable, row: dict, features) -> dict:
    """convert(row) with an empty `reason`, or empty columns and the reason it was dropped."""
    try:
        return {**convert(row), "reason": ""}
    except Drop as drop:
        return {**{name: None for name in features}, "reason": str(drop)}


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def one_line(error: BaseException) -> str:
    """'ConnectionError: Connection reset by peer': an error's type and first line."""
    return f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0][:300]}"


_COMMIT = re.compile(r"(?<![0-9a-f])[0-9a-f]{40}(?![0-9a-f])")


def hub_input(repo_id: str, loaded: datasets.DatasetDict, **details) -> dict:
    """The manifest entry of a Hub dataset: id, config/files, revision and rows per split."""
    first = next(iter(loaded.values()))
    splits = {name: len(split) for name, split in loaded.items()}
    return {"id": repo_id, **details, "revision": hub_revision(first), "splits": splits}


def hub_revision(dataset: datasets.Dataset) -> str | None:
    """The Hub commit a loaded dataset came from, read from its resolved file names
    (`hf://datasets/<repo>@<commit>/...`, or its cache folder `.../<commit>/`), or None."""
    names = list((dataset.info.download_checksums or {}).keys())
    names += [entry.get("filename", "") for entry in dataset.cache_files]
    for name in names:
        match = _COMMIT.search(name)
        if match:
            return match.group(0)
    return None


def keep(run: Run, parts: list[Part]) -> dict[str, datasets.Dataset]:
    """Drop the unusable rows and the duplicates (counted), cap, carve; the splits in order."""
    usable = {}
    for part in parts:
        rows = part.rows
        if "reason" in rows.column_names:
            reasons = rows["reason"]
            kept = [index for index, reason in enumerate(reasons) if not reason]
            counts = dict(sorted(Counter(reason for reason in reasons if reason).items()))
            run.count(part.group, "drop_unusable", len(rows), len(kept), reasons=counts)
            rows = rows.select(kept).remove_columns("reason")
        usable[part.group] = rows
    deduped = {p.group: usable[p.group] for p in parts if p.dedupe}
    usable |= _drop_duplicates(run, deduped) if deduped else {}
    splits: dict[str, list] = {name: [] for name in SPLITS}
    for part in parts:
        carved = carve(usable[part.group], part.into, part.carve, run.args.seed)
        for name, rows in carved.items():
            if part.limit is not None and len(rows) > part.limit:
                group = part.group if name == part.into else f"{part.group} ({name})"
                run.count(group, f"cap_{part.limit}", len(rows), part.limit)
                rows = rows.select(range(part.limit))
            splits[name].append(rows)
    return {name: datasets.concatenate_datasets(rows) for name, rows in splits.items()}


def texts(rows: datasets.Dataset) -> Iterator[str]:
    """The `text` column, read in batches."""
    for batch in rows.select_columns(["text"]).iter(batch_size=10_000):
        yield from batch["text"]


def _digests(rows: datasets.Dataset) -> np.ndarray:
    """[rows] a 64-bit fingerprint (8 bytes of blake2b) of each row's text."""
    digests = b"".join(
        hashlib.blake2b(text.encode(), digest_size=8).digest() for text in texts(rows)
    )
    return np.frombuffer(digests, np.int64)


def _drop_duplicates(run: Run, usable: dict) -> dict:
    digests = [_digests(rows) for rows in usable.values()]
    _, first = np.unique(np.concatenate(digests), return_index=True)
    keep_flags, start, result = np.zeros(sum(map(len, digests)), bool), 0, {}
    keep_flags[first] = True
    for (group, rows), part_digests in zip(usable.items(), digests):
        kept = np.flatnonzero(keep_flags[start : start + len(part_digests)])
        start += len(part_digests)
        run.count(group, "drop_duplicates", len(rows), len(kept))
        result[group] = rows.select(kept)
    return result


def carve(dataset, into: str, shares: dict[str, float], seed: int) -> dict:
    """{into: the rest, split: a seeded random `share` of the rows, ...}, each in original
    order; a non-zero share takes at least one row, and never the last one of the rest."""
    order = np.random.default_rng(seed).permutation(len(dataset))
    result, start = {}, 0
    for name, share in shares.items():
        wanted = max(1, round(len(dataset) * share)) if share > 0 else 0
        count = max(0, min(wanted, len(dataset) - start - 1))
        result[name] = dataset.select(np.sort(order[start : start + count]))
        start += count
    result[into] = dataset.select(np.sort(order[start:]))
    return result


def write(step: Step, args: argparse.Namespace) -> int:
    """Build the splits of --source and write them with their manifest; returns 0."""
    output, started = Path(args.output_dir), time.perf_counter()
    with locked_output_directory(output, args.overwrite, what="download output") as temp:
        run = Run(step, args, temp / "_work")
        splits = keep(run, step.sources[args.source](args, run))
        for name, rows in splits.items():  # (`load_from_disk` cannot read an empty split)
            if len(rows) == 0:
                lines = "; ".join(summary(run)) or "no rows were read"
                raise UserError(f"no usable rows are left for the {name} split ({lines})")
        datasets.DatasetDict(splits).save_to_disk(str(temp))
        shutil.rmtree(run.work, ignore_errors=True)
        for name, rows in splits.items():
            run.manifest["splits"][name] = {"rows": len(rows), "columns": rows.column_names}
            if "source" in rows.column_names:
                sources = dict(sorted(Counter(rows["source"]).items()))
                run.manifest["splits"][name]["rows_by_source"] = sources
        run.manifest["seconds"] = round(time.perf_counter() - started, 2)
        atomic_write_text(temp / "manifest.json", json.dumps(run.manifest, indent=2, default=str))
    for line in summary(run):
        print(line)
    rows = ", ".join(f"{name} {entry['rows']}" for name, entry in run.manifest["splits"].items())
    print(f"wrote {output} ({rows} rows) in {run.manifest['seconds']} s")
    return 0


def summary(run: Run) -> list[str]:
    """One line per data group: rows in, rows out, and what each filter dropped."""
    lines = []
    for group, steps in run.manifest["filters"].items():
        dropped = ", ".join(f"{s['step']} -{s['dropped']}" for s in steps if s["dropped"])
        lines.append(
            f"{group}: {steps[0]['rows_in']} {steps[0].get('unit_in', 'rows')} in, "
            f"{steps[-1]['rows_out']} out" + (f" ({dropped})" if dropped else "")
        )
    return lines
