"""Step 1 of pre-training: get raw text and save it as a DatasetDict (train/validation/test).

    python3 -m dataset.pre_training.download_dataset --output-dir=data/pre_training/raw

Sources (`--source`):
- `hub` (default): TinyStories (roneneldan/TinyStories) and WikiText (Salesforce/wikitext,
  wikitext-103-raw-v1) from the Hugging Face Hub, cleaned (see tinystories.py, wikitext.py).
  With `--dataset fineweb-edu`: FineWeb-Edu (HuggingFaceFW/fineweb-edu), streamed to disk in
  shards, resumable (run the same command again after an interruption; see fineweb_edu.py):
      python3 -m dataset.pre_training.download_dataset --dataset fineweb-edu \\
          --config sample-10BT --max-tokens 4e9 --output-dir data/fineweb/raw
- `sample`: the embedded sample world's stories and articles, generated in seconds, no network.
  Tiny CPU example:
      python3 -m dataset.pre_training.download_dataset \\
          --output-dir=data/sample/pre_training/raw --source sample
- `local`: your own .txt/.jsonl/.parquet files:
      python3 -m dataset.pre_training.download_dataset --output-dir=data/mine/raw \\
          --source local --data-files 'corpus/*.txt'
  With `--dataset fineweb-edu`, FineWeb-shaped .parquet/.jsonl files (a `text` column;
  `token_count`, `int_score` used when there), streamed and sharded like the Hub's.

Output at --output-dir: `save_to_disk` folders train/ validation/ test/ with columns `text` and
`source`, and manifest.json (inputs, Hub revisions, rows in and out of every filter). The folder
appears only when complete; an existing one is replaced only with --overwrite.
"""

import argparse
from collections import Counter

import datasets

from common.errors import UserError, run_cli
from dataset import common
from dataset.local_files import (
    JSONL_SUFFIXES,
    PARQUET_SUFFIXES,
    TEXT_SUFFIXES,
    file_kind,
    iter_jsonl,
    iter_parquet_rows,
    iter_text_documents,
    resolve_data_files,
)
from dataset.pre_training import cleaning, fineweb_edu, tinystories, wikitext
from dataset.sample_world.corpus import pretraining_documents

MODULE = "dataset.pre_training.download_dataset"
DEFAULT_OUTPUT = "data/pre_training/raw"
SAMPLE_SPLIT_SHARES = {"train": 0.95, "validation": 0.025, "test": 0.025}
FEATURES = datasets.Features({"text": datasets.Value("string"), "source": datasets.Value("string")})
DATASETS = ("tinystories-wikitext", "fineweb-edu")
LOCAL_HELD_OUT_FRACTION = 0.01


def optional_cap(text: str) -> int | None:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0 (0 leaves the source out)")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = common.new_parser(MODULE, __doc__, DEFAULT_OUTPUT)
    parser.add_argument(
        "--dataset",
        choices=DATASETS,
        default="tinystories-wikitext",
        help="tinystories-wikitext: the stories and articles below (the default); fineweb-edu: "
        "educational web pages, streamed to disk in resumable shards (--source hub or local)",
    )
    for split, what in (("validation", "validation"), ("test", "test")):
        parser.add_argument(
            f"--{split}-fraction",
            type=common.positive_fraction,
            default=None,
            help=f"share of the documents held out for {what}; none means "
            f"{LOCAL_HELD_OUT_FRACTION} for --source local (seeded), "
            f"{fineweb_edu.DEFAULT_HELD_OUT_FRACTION} for fineweb-edu (evenly spaced)",
        )
    fineweb_edu.add_args(parser)
    hub = parser.add_argument_group("--source hub (tinystories-wikitext)")
    hub.add_argument(
        "--tinystories-version",
        choices=("v1", "v2"),
        default="v1",
        help="v1: the Hub's default parquet data; v2: the TinyStoriesV2-GPT4 text files "
        "(GPT-4 stories only)",
    )
    hub.add_argument(
        "--wikitext-config",
        default=wikitext.DEFAULT_CONFIG,
        help="WikiText config, e.g. wikitext-2-raw-v1 for a small one",
    )
    hub.add_argument(
        "--max-tinystories-docs",
        type=optional_cap,
        default=None,
        help="at most this many TinyStories stories per split (0 leaves TinyStories out; "
        "None: all)",
    )
    hub.add_argument(
        "--max-wikitext-docs",
        type=optional_cap,
        default=None,
        help="at most this many WikiText articles per split (0 leaves WikiText out; None: all)",
    )
    hub.add_argument(
        "--tinystories-test-fraction",
        type=common.positive_fraction,
        default=0.5,
        help="share of TinyStories' validation split carved off (seeded) as its test split",
    )
    sample = parser.add_argument_group("--source sample")
    sample.add_argument(
        "--sample-size-mb",
        type=float,
        default=6.0,
        help="about this many megabytes of text over all splits (95%% train, 2.5%% validation, "
        "2.5%% test)",
    )
    local = parser.add_argument_group("--source local (files given with --data-files)")
    local.add_argument(
        "--text-column", default="text", help="the text field of .jsonl rows / .parquet columns"
    )
    local.add_argument(
        "--txt-documents",
        choices=("blank_line", "file"),
        default="blank_line",
        help=".txt files: one document per blank-line-separated block, or per file",
    )
    args = parser.parse_args(argv)
    if args.sample_size_mb <= 0:
        parser.error("--sample-size-mb must be positive")
    streamed = args.dataset == "fineweb-edu"
    default = fineweb_edu.DEFAULT_HELD_OUT_FRACTION if streamed else LOCAL_HELD_OUT_FRACTION
    for name in ("validation_fraction", "test_fraction"):
        if getattr(args, name) is None:
            setattr(args, name, default)
    if not streamed:
        for flag in ("config", "max_tokens", "min_int_score", "revision"):
            if getattr(args, flag) is not None:
                parser.error(f"--{flag.replace('_', '-')} applies to --dataset fineweb-edu only")
    if args.validation_fraction + args.test_fraction >= 1:
        parser.error("--validation-fraction plus --test-fraction must be less than 1")
    return args


# ---------------------------------------------------------------- hub


def build_hub(args, manifest: common.Manifest, work: common.WorkDir) -> dict:
    parts: dict[str, list[datasets.Dataset]] = {name: [] for name in common.SPLITS}
    if args.max_tinystories_docs != 0:
        for name, split in tinystories.tinystories_splits(
            args.tinystories_version,
            args.tinystories_test_fraction,
            args.max_tinystories_docs,
            args.seed,
            args.cache_dir,
            manifest,
            work,
            args.num_proc,
        ).items():
            parts[name].append(split)
    if args.max_wikitext_docs != 0:
        for name, split in wikitext.wikitext_splits(
            args.wikitext_config, args.max_wikitext_docs, args.cache_dir, manifest, work
        ).items():
            parts[name].append(split)
    if not parts["train"]:
        raise UserError("--max-tinystories-docs 0 and --max-wikitext-docs 0 leave no source")
    return {
        name: datasets.concatenate_datasets([p.cast(FEATURES) for p in splits])
        for name, splits in parts.items()
    }


# ---------------------------------------------------------------- sample


def build_sample(args, manifest: common.Manifest, work: common.WorkDir) -> dict:
    total = int(args.sample_size_mb * 1_000_000)
    seen: set[bytes] = set()  # no document in two splits
    manifest.add_input({"id": "sample_world", "seed": args.seed, "size_mb": args.sample_size_mb})
    splits = {}
    for name, share in SAMPLE_SPLIT_SHARES.items():
        size = max(2_000, int(total * share))

        def generate(name=name, size=size):
            for text, source in pretraining_documents(args.seed, name, size, seen):
                yield {"text": text, "source": source}

        splits[name] = common.from_generator(generate, FEATURES, work, f"sample-{name}", name)
    return splits


# ---------------------------------------------------------------- local


def _local_documents(args, files, counts: Counter):
    """{"text": ...} per usable document of the user's files; skipped rows go into `counts`."""
    column = args.text_column
    for path in files:
        kind = file_kind(path)
        if kind == "text":
            for text in iter_text_documents(path, per_file=args.txt_documents == "file"):
                yield {"text": text}
            continue
        if kind == "jsonl":
            rows = (row for _, row in iter_jsonl(path))
        else:
            rows = iter_parquet_rows(path, columns=[column])
        for row in rows:
            if row is None:
                counts["invalid_json"] += 1
            elif not isinstance(row, dict) or column not in row:
                counts[f"missing_{column}"] += 1
            elif not isinstance(row[column], str):
                counts[f"non_string_{column}"] += 1
            else:
                yield {"text": row[column]}


def build_local(args, manifest: common.Manifest, work: common.WorkDir) -> dict:
    files = resolve_data_files(args.data_files, TEXT_SUFFIXES | JSONL_SUFFIXES | PARQUET_SUFFIXES)
    manifest.add_input(
        {"id": "local", "files": [str(f) for f in files], "kind": file_kind(files[0])}
    )
    counts: Counter = Counter()
    documents = common.from_generator(
        lambda: _local_documents(args, files, counts),
        datasets.Features({"text": datasets.Value("string")}),
        work,
        "local",
    )
    rows_in = len(documents) + sum(counts.values())
    manifest.count("local", "read_rows", rows_in, len(documents), **counts)
    if len(documents) == 0:
        reasons = ", ".join(f"{n} {reason}" for reason, n in counts.items()) or "no documents"
        raise UserError(
            f"--data-files: no usable documents ({reasons}); is --text-column {args.text_column!r} "
            f"the right field?"
        )
    documents = cleaning.strip_and_fingerprint(documents, "local", "local", work, args.num_proc)
    documents = cleaning.keep_clean_unique({"all": documents}, manifest, "local")["all"]
    return common.split_three(documents, args.validation_fraction, args.test_fraction, args.seed)


BUILDERS = {"hub": build_hub, "sample": build_sample, "local": build_local}


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns 0. Raises UserError on bad input (the CLI prints it as one line)."""
    args = parse_args(argv)
    if args.dataset == "fineweb-edu":
        return fineweb_edu.download(args, MODULE)
    return common.run_download("pre_training", MODULE, args, BUILDERS)


if __name__ == "__main__":
    run_cli(main)
