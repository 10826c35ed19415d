"""What the SFT and DPO `download_dataset` CLIs share: their flags, the held-out sizes of the
sample data, and reading `--source local` jsonl files into normalised rows.

Each CLI supplies a `normalize(row) -> dict` that returns the row's columns plus a `reason`
column, empty for a usable row and naming the problem otherwise (`messages.drop_by_reason`
then drops and counts those rows).
"""

import argparse
from collections.abc import Callable, Iterator

import datasets

from common.errors import UserError
from dataset import common
from dataset.local_files import JSONL_SUFFIXES, iter_jsonl, resolve_data_files
from dataset.post_training.messages import drop_by_reason

SAMPLE_HELD_OUT_SHARE = 20  # validation and test get a 20th of --sample-size each...
SAMPLE_MIN_HELD_OUT = 20  # ...but at least this many


def add_post_training_args(parser: argparse.ArgumentParser, unit: str, test_help=None) -> None:
    """--max-chars, --sample-size, the split fractions and the original README's
    --tokenizer-profile; `unit` names a row ("conversations", "pairs")."""
    parser.add_argument(
        "--tokenizer-profile",
        choices=("post_training_v1",),
        default=argparse.SUPPRESS,
        help="older flag, still accepted and otherwise unused: the original README passes "
        "post_training_v1, the one chat format these conversations are for",
    )
    parser.add_argument(
        "--max-chars",
        type=int,
        default=8000,
        help=f"skip {unit} with more characters than this (all messages of a conversation; "
        "a pair's prompt plus its longer answer)",
    )
    parser.add_argument(
        "--sample-size",
        type=int,
        default=10_000,
        help=f"sample: train {unit}; validation and test get a {SAMPLE_HELD_OUT_SHARE}th of it "
        f"each (at least {SAMPLE_MIN_HELD_OUT}), with instructions train never shows",
    )
    common.add_split_fractions(parser, 0.02, 0.02, unit, test_help)


def check_post_training_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.sample_size < 1 or args.max_chars < 1:
        parser.error("--sample-size and --max-chars must be positive")
    vars(args).pop("tokenizer_profile", None)  # checked by its choices; not a setting


def sample_sizes(sample_size: int) -> dict[str, int]:
    """Rows per split of the sample data: --sample-size for train, a share of it held out."""
    held_out = max(SAMPLE_MIN_HELD_OUT, sample_size // SAMPLE_HELD_OUT_SHARE)
    return {"train": sample_size, "validation": held_out, "test": held_out}


def normalized(
    split: datasets.Dataset,
    group: str,
    normalize: Callable[[dict], dict],
    features: datasets.Features,
    args: argparse.Namespace,
    manifest: common.Manifest,
    work: common.WorkDir,
) -> datasets.Dataset:
    """`normalize` every row of a Hub split, then drop the unusable rows, counted under `group`."""
    rows = split.map(
        _normalize_batch,
        batched=True,
        fn_kwargs={"normalize": normalize, "columns": list(features)},
        remove_columns=split.column_names,
        features=features,
        num_proc=common.processes(split, args.num_proc),
        **work.cache(f"{group}-normalize"),
        desc=f"{group}: to messages",
    )
    return drop_by_reason(rows, manifest, group, work, args.num_proc)


def _normalize_batch(batch: dict[str, list], normalize: Callable[[dict], dict], columns) -> dict:
    results = [normalize(dict(zip(batch, values))) for values in zip(*batch.values())]
    return {column: [result[column] for result in results] for column in columns}


def local_rows(
    args: argparse.Namespace,
    manifest: common.Manifest,
    work: common.WorkDir,
    features: datasets.Features,
    normalize: Callable[[dict], dict],
    unit: str,
    needs: str,
) -> datasets.Dataset:
    """The usable rows of the --data-files jsonl files, normalised; the others are counted
    (lines that are not JSON objects as `invalid_json` / `not_an_object`). None usable is a
    UserError saying what a line `needs`."""
    files = resolve_data_files(args.data_files, JSONL_SUFFIXES)
    manifest.add_input({"id": "local", "files": [str(f) for f in files]})
    empty = {name: [] for name in features if name != "reason"}

    def generate() -> Iterator[dict]:
        for path in files:
            for _, row in iter_jsonl(path):
                if isinstance(row, dict):
                    yield normalize(row)
                else:
                    yield {**empty, "reason": "invalid_json" if row is None else "not_an_object"}

    rows = common.from_generator(generate, features, work, "local-rows")
    usable = drop_by_reason(rows, manifest, "local", work, args.num_proc)
    if len(usable) == 0:
        reasons = manifest.data["filters"]["local"][-1]["reasons"]
        raise UserError(
            f"--data-files: no usable {unit} in {len(rows)} rows ({reasons}); each line {needs}"
        )
    return usable
