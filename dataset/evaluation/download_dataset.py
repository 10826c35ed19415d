"""The evaluation data step: copy each benchmark's dataset from the Hub to disk, once.

    python3 -m dataset.evaluation.download_dataset --output-dir data/evaluation

Writes one `save_to_disk` DatasetDict per dataset, `data/evaluation/<name>/` (hellaswag,
arc_easy, arc_challenge, piqa, winogrande, lambada_openai, sample_world), with the splits the
tasks read and a manifest.json (Hub id, config, revision, rows per split). From then on
`python3 -m evaluation` and the training scripts' in-run scores read these copies and never the
network. A copy already there is kept (--overwrite replaces it).

Tiny CPU example, no network: only the sample world's test, generated in a second:
    python3 -m dataset.evaluation.download_dataset --output-dir data/evaluation --source sample

Each folder appears only when complete; of two runs writing the same folder, the second stops
with one line naming the first one's process id.
"""

import argparse
import json
import time
from pathlib import Path

import datasets

from common.atomic import atomic_write_text, locked_output_directory
from common.errors import ArgumentParser, UserError, run_cli
from dataset.evaluation.sources import SAMPLE, SOURCES
from dataset.pipeline import hub_input, load_hub
from dataset.sample_world.multiple_choice import multiple_choice_rows

MODULE = "dataset.evaluation.download_dataset"
DEFAULT_OUTPUT = "data/evaluation"
MANIFEST_NAME = "manifest.json"


def sample_dataset(seed: int) -> datasets.DatasetDict:
    """The sample world's multiple-choice test (and its few-shot split), generated."""
    return datasets.DatasetDict(
        {split: datasets.Dataset.from_list(multiple_choice_rows(seed, split))
         for split in SOURCES[SAMPLE].splits}
    )  # fmt: skip


def fetch(name: str, seed: int = 0, cache_dir: str | None = None) -> datasets.DatasetDict:
    """Dataset `name` (a SOURCES key) with the splits the tasks read, from the Hub or generated."""
    source = SOURCES[name]
    if name == SAMPLE:
        return sample_dataset(seed)
    loaded = load_hub(source.hub_id, name=source.config, cache_dir=cache_dir)
    missing = [split for split in source.splits if split not in loaded]
    if missing:
        named = source.hub_id + (f" ({source.config})" if source.config else "")
        raise UserError(
            f"{named} has no split {', '.join(missing)} "
            f"(it has {', '.join(loaded)}); the Hub copy changed, see dataset/evaluation/sources.py"
        )
    return datasets.DatasetDict({split: loaded[split] for split in source.splits})


def write(name: str, output_dir: str | Path, overwrite: bool, seed: int = 0,
          cache_dir: str | None = None) -> Path:  # fmt: skip
    """Fetch `name` and save it at output_dir/name with its manifest, atomically."""
    final = Path(output_dir) / name
    started = time.perf_counter()
    with locked_output_directory(final, overwrite, what="evaluation data") as temp:
        dataset_dict = fetch(name, seed, cache_dir)
        dataset_dict.save_to_disk(str(temp))
        source = SOURCES[name]
        if name == SAMPLE:
            inputs = [{"id": "dataset.sample_world.multiple_choice", "seed": seed}]
        else:
            inputs = [hub_input(source.hub_id, dataset_dict, config=source.config)]
        manifest = {
            "format_version": 1,
            "kind": "evaluation",
            "name": name,
            "created_by": f"python3 -m {MODULE}",
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "inputs": inputs,
            "splits": {split: {"rows": len(d), "columns": d.column_names}
                       for split, d in dataset_dict.items()},
            "seconds": round(time.perf_counter() - started, 2),
        }  # fmt: skip
        atomic_write_text(temp / MANIFEST_NAME, json.dumps(manifest, indent=2) + "\n")
    return final


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(
        prog=f"python3 -m {MODULE}",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--output-dir", default=DEFAULT_OUTPUT, help="one folder per dataset is written in here"
    )
    parser.add_argument(
        "--datasets",
        default="all",
        help=f"comma-separated names among {', '.join(SOURCES)}, or all",
    )
    parser.add_argument(
        "--source",
        choices=("hub", "sample"),
        default="hub",
        help="hub: the benchmarks from the Hugging Face Hub, plus the sample world; sample: only "
        "the sample world's test (generated, no network)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace copies already in --output-dir"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the sample world (the sample pipeline's: 0)"
    )
    parser.add_argument(
        "--cache-dir",
        default=None,
        help="Hugging Face datasets download cache (None: the library's, ~/.cache/huggingface)",
    )
    return parser.parse_args(argv)


def chosen_datasets(args: argparse.Namespace) -> list[str]:
    if args.source == "sample":
        if args.datasets not in ("all", SAMPLE):
            raise UserError(f"--source sample writes only {SAMPLE}; leave --datasets out")
        return [SAMPLE]
    if args.datasets == "all":
        return list(SOURCES)
    names = [name.strip() for name in args.datasets.split(",") if name.strip()]
    unknown = [name for name in names if name not in SOURCES]
    if unknown or not names:
        raise UserError(
            f"unknown dataset {', '.join(unknown) or '(none given)'}; choose among "
            f"{', '.join(SOURCES)}, or all"
        )
    return names


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for name in chosen_datasets(args):
        final = Path(args.output_dir) / name
        if final.exists() and not args.overwrite:
            print(f"{final}: already there, kept (--overwrite replaces it)")
            continue
        write(name, args.output_dir, args.overwrite, args.seed, args.cache_dir)
        rows = ", ".join(
            f"{split} {entry['rows']}"
            for split, entry in json.loads((final / MANIFEST_NAME).read_text())["splits"].items()
        )
        print(f"{final}: {rows}")
    return 0


if __name__ == "__main__":
    run_cli(main)
