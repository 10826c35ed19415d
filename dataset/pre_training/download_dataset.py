"""Step 1 of pre-training: get raw text and save it as a DatasetDict (train/validation/test).

    python3 -m dataset.pre_training.download_dataset --output-dir=data/pre_training/raw
    python3 -m dataset.pre_training.download_dataset --dataset fineweb-edu --config sample-10BT \\
        --max-tokens 4e9 --output-dir data/fineweb/raw
    python3 -m dataset.pre_training.download_dataset --output-dir=data/sample/pre_training/raw \\
        --source sample   # tiny CPU example, no network

Sources: TinyStories + WikiText, cleaned (tinystories.py, wikitext.py), or FineWeb-Edu
(fineweb_edu.py); the sample world; your .txt, .jsonl or .parquet files. Output: train/
validation/ test/ (columns text, source; exact duplicates dropped) and manifest.json.
"""

import argparse
import functools
from collections.abc import Iterator

import datasets

from common.errors import UserError, run_cli
from dataset import pipeline
from dataset.local_files import (
    file_kind,
    jsonl_rows,
    parquet_rows,
    resolve_data_files,
    text_documents,
)
from dataset.pipeline import Drop, Part
from dataset.pre_training import fineweb_edu, tinystories, wikitext
from dataset.sample_world.corpus import pretraining_documents

MODULE = "dataset.pre_training.download_dataset"
FEATURES = datasets.Features({"text": datasets.Value("string"), "source": datasets.Value("string")})
SAMPLE_SPLIT_SHARES = {"train": 0.95, "validation": 0.025, "test": 0.025}
LOCAL_HELD_OUT_FRACTION = 0.01


def cap(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0 (0 leaves the source out)")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    datasets_help = "the stories and articles below, or educational web pages in resumable shards"
    choices = ("tinystories-wikitext", "fineweb-edu")
    parser.add_argument("--dataset", choices=choices, default=choices[0], help=datasets_help)
    for split in ("validation", "test"):
        held_out = f"share of the documents held out for {split}; none: "
        held_out += f"{LOCAL_HELD_OUT_FRACTION} for --source local (seeded), "
        held_out += f"{fineweb_edu.DEFAULT_HELD_OUT_FRACTION} for fineweb-edu (evenly spaced)"
        parser.add_argument(f"--{split}-fraction", type=pipeline.fraction, help=held_out)
    fineweb_edu.add_arguments(parser)
    add = parser.add_argument_group("--source hub (tinystories-wikitext)").add_argument
    version = "v1: the Hub's parquet data; v2: the TinyStoriesV2-GPT4 text files (GPT-4 only)"
    add("--tinystories-version", choices=("v1", "v2"), default="v1", help=version)
    add("--wikitext-config", default=wikitext.DEFAULT_CONFIG, help="e.g. wikitext-2-raw-v1")
    stories = "at most this many stories per split (0 leaves TinyStories out; None: all)"
    add("--max-tinystories-docs", type=cap, help=stories)
    articles = "at most this many articles per split (0 leaves WikiText out; None: all)"
    add("--max-wikitext-docs", type=cap, help=articles)
    test = "share of TinyStories' validation split carved off (seeded) as its test split"
    add("--tinystories-test-fraction", type=pipeline.fraction, default=0.5, help=test)
    add = parser.add_argument_group("--source sample").add_argument
    size = "about this many megabytes of text (95%% train, 2.5%% validation, 2.5%% test)"
    add("--sample-size-mb", type=float, default=6.0, help=size)
    add = parser.add_argument_group("--source local (--data-files)").add_argument
    add("--text-column", default="text", help="the text field of .jsonl / .parquet rows")
    add(
        "--txt-documents",
        choices=("blank_line", "file"),
        default="blank_line",
        help=".txt files: one document per blank-line-separated block, or per file",
    )


def check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.sample_size_mb <= 0:
        parser.error("--sample-size-mb must be positive")
    streamed = args.dataset == "fineweb-edu"
    default = fineweb_edu.DEFAULT_HELD_OUT_FRACTION if streamed else LOCAL_HELD_OUT_FRACTION
    args.validation_fraction = (
        default if args.validation_fraction is None else args.validation_fraction
    )
    args.test_fraction = default if args.test_fraction is None else args.test_fraction
    if not streamed:
        for flag in ("config", "max_tokens", "min_int_score", "revision"):
            if getattr(args, flag) is not None:
                parser.error(f"--{flag.replace('_', '-')} applies to --dataset fineweb-edu only")
    if args.validation_fraction + args.test_fraction >= 1:
        parser.error("--validation-fraction plus --test-fraction must be less than 1")


def hub_parts(args, run: pipeline.Run) -> list[Part]:
    if args.max_tinystories_docs == 0 and args.max_wikitext_docs == 0:
        raise UserError("--max-tinystories-docs 0 and --max-wikitext-docs 0 leave no source")
    parts = []
    if args.max_tinystories_docs != 0:
        parts += tinystories.parts(args, run, FEATURES)
    if args.max_wikitext_docs != 0:
        parts += wikitext.parts(args, run, FEATURES)
    return parts


def sample_parts(args, run: pipeline.Run) -> list[Part]:
    total, seen = int(args.sample_size_mb * 1_000_000), set()  # no document in two splits
    run.manifest["inputs"].append(
        {"id": "sample_world", "seed": args.seed, "size_mb": args.sample_size_mb}
    )
    parts = []
    for name, share in SAMPLE_SPLIT_SHARES.items():
        size = max(2_000, int(total * share))
        documents = functools.partial(sample_documents, args.seed, name, size, seen)
        parts.append(
            Part(f"sample/{name}", run.generate(f"sample-{name}", documents, FEATURES), name)
        )
    return parts


def sample_documents(seed: int, split: str, size: int, seen: set) -> Iterator[dict]:
    for text, source in pretraining_documents(seed, split, size, seen):
        yield {"text": text, "source": source}


def local_document(row, column: str) -> dict:
    """A row of the user's files -> {text, source}, stripped (raises Drop)."""
    if row is None:
        raise Drop("invalid_json")
    if not isinstance(row, dict) or column not in row:
        raise Drop(f"missing_{column}")
    if not isinstance(row[column], str):
        raise Drop(f"non_string_{column}")
    if not row[column].strip():
        raise Drop("empty")
    return {"text": row[column].strip(), "source": "local"}


def local_parts(args, run: pipeline.Run) -> list[Part]:
    files = resolve_data_files(args.data_files, ("text", "jsonl", "parquet"))
    column, kind = args.text_column, file_kind(files[0])
    run.manifest["inputs"].append({"id": "local", "files": list(map(str, files)), "kind": kind})

    convert = functools.partial(local_document, column=column)

    def rows():
        for path in files:
            if kind == "text":
                texts = text_documents(path, per_file=args.txt_documents == "file")
                raw = ({column: text} for text in texts)
            else:
                raw = jsonl_rows(path) if kind == "jsonl" else parquet_rows(path, [column])
            for row in raw:
                yield pipeline.converted(convert, row, FEATURES)

    hint = f"is --text-column {column!r} the right field?"
    return pipeline.local_parts(run, rows, FEATURES, "documents", hint, dedupe=True)


SOURCES = {"hub": hub_parts, "sample": sample_parts, "local": local_parts}
STEP = pipeline.Step(
    "pre_training", MODULE, __doc__, "data/pre_training/raw", SOURCES, add_arguments, check
)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns 0. Raises UserError on bad input (the CLI prints it as one line)."""
    args = pipeline.parse_args(STEP, argv)
    if args.dataset == "fineweb-edu":
        return fineweb_edu.download(args, MODULE)
    return pipeline.write(STEP, args)


if __name__ == "__main__":
    run_cli(main)
