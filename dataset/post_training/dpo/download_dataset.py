"""Step 1 of DPO: get preference pairs (prompt, chosen, rejected) and save them as a DatasetDict.

    python3 -m dataset.post_training.dpo.download_dataset --output-dir=data/post_training/dpo/raw \\
        --tokenizer-profile=post_training_v1

Sources (`--source`):
- `hub` (default), `--dataset`:
  HuggingFaceH4/ultrafeedback_binarized (default; train_prefs -> train + validation,
  test_prefs -> test), Intel/orca_dpo_pairs (train -> train/validation/test),
  Anthropic/hh-rlhf (train -> train + validation, test -> test). Layouts: see formats.py.
- `sample`: pairs about the embedded sample world whose chosen answer meets the instruction and
  whose rejected answer breaks it checkably; no network. Tiny CPU example:
      python3 -m dataset.post_training.dpo.download_dataset \\
          --output-dir=data/sample/post_training/dpo/raw \\
          --tokenizer-profile=post_training_v1 --source sample --sample-size 2000
- `local`: .jsonl files, one pair per line, in any layout of formats.py.

Output: train/ validation/ test/ with columns `prompt`, `chosen`, `rejected` (message lists;
chosen and rejected hold one assistant message each; plus `constraints` on sample data) and
manifest.json. Pairs with identical answers, empty fields, or more than --max-chars characters
(prompt plus the longer answer) are skipped and counted.
"""

import argparse

import datasets

from common.errors import UserError, run_cli
from dataset import common
from dataset.local_files import JSONL_SUFFIXES, iter_jsonl, resolve_data_files
from dataset.post_training.dpo import formats
from dataset.post_training.messages import MESSAGES, PROFILES, Unusable, drop_by_reason, num_chars
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
    parser = argparse.ArgumentParser(
        prog=f"python3 -m {MODULE}",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    common.add_common_args(parser, DEFAULT_OUTPUT)
    parser.add_argument(
        "--tokenizer-profile",
        choices=PROFILES,
        default="post_training_v1",
        help="the chat profile the conversations are meant for (recorded in manifest.json)",
    )
    parser.add_argument(
        "--dataset",
        choices=list(HUB_DATASETS),
        default="HuggingFaceH4/ultrafeedback_binarized",
        help="--source hub: which preference dataset",
    )
    parser.add_argument(
        "--max-chars",
        type=int,
        default=8000,
        help="skip pairs whose prompt plus longer answer has more characters than this",
    )
    parser.add_argument(
        "--validation-fraction",
        type=common.positive_fraction,
        default=0.02,
        help="share of the train pairs held out (seeded) for validation",
    )
    parser.add_argument(
        "--test-fraction",
        type=common.positive_fraction,
        default=0.02,
        help="share held out for test, when the source has no test split (orca, local)",
    )
    parser.add_argument(
        "--sample-size",
        type=int,
        default=10_000,
        help="sample: train pairs; validation and test get a 20th of it each (at least 20), "
        "with instructions train never shows",
    )
    args = parser.parse_args(argv)
    if args.sample_size < 1 or args.max_chars < 1:
        parser.error("--sample-size and --max-chars must be positive")
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


def _normalize_batch(batch: dict, max_chars: int, convert) -> dict:
    rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
    results = [normalize(row, max_chars, convert) for row in rows]
    return {key: [r[key] for r in results] for key in FEATURES}


def _normalized(split: datasets.Dataset, group: str, convert, args, manifest, work):
    pairs = split.map(
        _normalize_batch,
        batched=True,
        fn_kwargs={"max_chars": args.max_chars, "convert": convert},
        remove_columns=split.column_names,
        features=FEATURES,
        num_proc=common.processes(split, args.num_proc),
        **work.cache(f"{group}-normalize"),
        desc=f"{group}: to messages",
    )
    return drop_by_reason(pairs, manifest, group, work, args.num_proc)


def build_hub(args, manifest: common.Manifest, work: common.WorkDir) -> dict:
    spec = HUB_DATASETS[args.dataset]
    loaded = common.load_hub(args.dataset, cache_dir=args.cache_dir)
    manifest.add_input(common.hub_input(args.dataset, loaded))
    for name in filter(None, (spec.train, spec.test)):
        if name not in loaded:
            raise UserError(f"{args.dataset} has no {name} split (it has {', '.join(loaded)})")
        common.require_columns(loaded[name], ["chosen", "rejected"], f"{args.dataset} {name}")
    short_name = args.dataset.split("/")[-1]  # manifest groups: "hh-rlhf/train"
    train = _normalized(
        loaded[spec.train], f"{short_name}/{spec.train}", spec.convert, args, manifest, work
    )
    if spec.test is None:
        return common.split_three(train, args.validation_fraction, args.test_fraction, args.seed)
    train, validation = common.carve(train, args.validation_fraction, args.seed)
    test = _normalized(
        loaded[spec.test], f"{short_name}/{spec.test}", spec.convert, args, manifest, work
    )
    return {"train": train, "validation": validation, "test": test}


def build_local(args, manifest: common.Manifest, work: common.WorkDir) -> dict:
    files = resolve_data_files(args.data_files, JSONL_SUFFIXES)
    manifest.add_input({"id": "local", "files": [str(f) for f in files]})

    def generate():
        for path in files:
            for _, row in iter_jsonl(path):
                if isinstance(row, dict):
                    yield normalize(row, args.max_chars, formats.from_any)
                else:
                    reason = "invalid_json" if row is None else "not_an_object"
                    yield {"prompt": [], "chosen": [], "rejected": [], "reason": reason}

    rows = common.from_generator(generate, FEATURES, work, "local-dpo")
    usable = drop_by_reason(rows, manifest, "local", work, args.num_proc)
    if len(usable) == 0:
        reasons = manifest.data["filters"]["local"][-1]["reasons"]
        raise UserError(
            f"--data-files: no usable preference pair in {len(rows)} rows ({reasons}); each line "
            f"needs chosen, rejected and a prompt (see dataset/post_training/dpo/formats.py)"
        )
    return common.split_three(usable, args.validation_fraction, args.test_fraction, args.seed)


def build_sample(args, manifest: common.Manifest, work: common.WorkDir) -> dict:
    held_out = max(20, args.sample_size // 20)
    sizes = {"train": args.sample_size, "validation": held_out, "test": held_out}
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
    args = parse_args(argv)
    manifest = common.Manifest("dpo", args, MODULE)
    common.write_dataset(args, manifest, lambda work: BUILDERS[args.source](args, manifest, work))
    return 0


if __name__ == "__main__":
    run_cli(main)
