"""Step 1 of DPO: get preference pairs (prompt, chosen, rejected) and save them as a DatasetDict.

    python3 -m dataset.post_training.dpo.download_dataset --output-dir=data/post_training/dpo/raw

Sources (`--source`):
- `hub` (default), `--dataset`:
  HuggingFaceH4/ultrafeedback_binarized (default; train_prefs -> train + validation,
  test_prefs -> test), Intel/orca_dpo_pairs (train -> train/validation/test),
  Anthropic/hh-rlhf (train -> train + validation, test -> test). Layouts: see formats.py.
- `sample`: pairs about the embedded sample world whose chosen answer meets the instruction and
  whose rejected answer breaks it checkably; no network. Tiny CPU example:
      python3 -m dataset.post_training.dpo.download_dataset \\
          --output-dir=data/sample/post_training/dpo/raw \\
          --source sample --sample-size 2000
- `local`: .jsonl files, one pair per line, in any layout of formats.py.

Output: train/ validation/ test/ with columns `prompt`, `chosen`, `rejected` (message lists;
chosen and rejected hold one assistant message each; plus `constraints` on sample data) and
manifest.json. Pairs with identical answers, empty fields, or more than --max-chars characters
(prompt plus the longer answer) are skipped and counted.
"""

import argparse
from functools import partial

import datasets

from common.errors import UserError, run_cli
from dataset import common
from dataset.post_training.download_common import (
    add_post_training_args,
    check_post_training_args,
    local_rows,
    normalized,
    sample_sizes,
)
from dataset.post_training.dpo import formats
from dataset.post_training.messages import MESSAGES, Unusable, num_chars
from dataset.sample_world.preferences import dpo_rows

MODULE = "dataset.post_training.dpo.download_dataset"
DEFAULT_OUTPUT = "data/post_training/dpo/raw"


class HubDataset:
    def __init__(self, convert, train: str, test: str | None):
        self.convert, self.train, self.test = convert, train, test


HUB_DATASETS = {
    "HuggingFaceH4/ultrafeedback_binarized": HubDataset(
        formats.from_messages, "train_prefs", "test_prefs"
    ),
    "Intel/orca_dpo_pairs": HubDataset(formats.from_strings, "train", None),
    "Anthropic/hh-rlhf": HubDataset(formats.from_transcripts, "train", "test"),
}
PAIR = {"prompt": MESSAGES, "chosen": MESSAGES, "rejected": MESSAGES}
FEATURES = datasets.Features({**PAIR, "reason": datasets.Value("string")})
SAMPLE_FEATURES = datasets.Features({**PAIR, "constraints": datasets.Value("string")})


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = common.new_parser(MODULE, __doc__, DEFAULT_OUTPUT)
    parser.add_argument(
        "--dataset",
        choices=list(HUB_DATASETS),
        default="HuggingFaceH4/ultrafeedback_binarized",
        help="--source hub: which preference dataset",
    )
    add_post_training_args(
        parser, "pairs", test_help="share held out for test, when the source has no test split "
        "(orca, local)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    check_post_training_args(parser, args)
    return args


def normalize(row: dict, max_chars: int, convert) -> dict:
    """{"prompt", "chosen", "rejected", "reason"}: the pair, or empty lists and the reason."""
    try:
        pair = convert(row)
        longer = max(num_chars(pair["chosen"]), num_chars(pair["rejected"]))
        if num_chars(pair["prompt"]) + longer > max_chars:
            raise Unusable("too_long")
        return {**pair, "reason": ""}
    except Unusable as unusable:
        return {"prompt": [], "chosen": [], "rejected": [], "reason": str(unusable)}


def build_hub(args, manifest: common.Manifest, work: common.WorkDir) -> dict:
    spec = HUB_DATASETS[args.dataset]
    loaded = common.load_hub(args.dataset, cache_dir=args.cache_dir)
    manifest.add_input(common.hub_input(args.dataset, loaded))
    for name in filter(None, (spec.train, spec.test)):
        if name not in loaded:
            raise UserError(f"{args.dataset} has no {name} split (it has {', '.join(loaded)})")
        common.require_columns(loaded[name], ["chosen", "rejected"], f"{args.dataset} {name}")
    short_name = args.dataset.split("/")[-1]  # manifest groups: "hh-rlhf/train"
    convert = partial(normalize, max_chars=args.max_chars, convert=spec.convert)
    train = normalized(
        loaded[spec.train], f"{short_name}/{spec.train}", convert, FEATURES, args, manifest, work
    )
    if spec.test is None:
        return common.split_three(train, args.validation_fraction, args.test_fraction, args.seed)
    train, validation = common.carve(train, args.validation_fraction, args.seed)
    test = normalized(
        loaded[spec.test], f"{short_name}/{spec.test}", convert, FEATURES, args, manifest, work
    )
    return {"train": train, "validation": validation, "test": test}


def build_local(args, manifest: common.Manifest, work: common.WorkDir) -> dict:
    convert = partial(normalize, max_chars=args.max_chars, convert=formats.from_any)
    needs = "needs chosen, rejected and a prompt (see dataset/post_training/dpo/formats.py)"
    usable = local_rows(args, manifest, work, FEATURES, convert, "preference pair", needs)
    return common.split_three(usable, args.validation_fraction, args.test_fraction, args.seed)


def build_sample(args, manifest: common.Manifest, work: common.WorkDir) -> dict:
    sizes = sample_sizes(args.sample_size)
    splits, violations = {}, {}
    for name, size in sizes.items():
        rows, kinds = dpo_rows(args.seed, name, size)
        splits[name] = datasets.Dataset.from_list(rows, features=SAMPLE_FEATURES)
        violations[name] = dict(sorted(kinds.items()))
    manifest.add_input({"id": "sample_world", "seed": args.seed, "sizes": sizes})
    manifest.note("sample_rejected_violations", violations)
    return splits


BUILDERS = {"hub": build_hub, "sample": build_sample, "local": build_local}


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns 0. Raises UserError on bad input (the CLI prints it as one line)."""
    return common.run_download("dpo", MODULE, parse_args(argv), BUILDERS)


if __name__ == "__main__":
    run_cli(main)
