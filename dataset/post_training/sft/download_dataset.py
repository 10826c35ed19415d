"""Step 1 of SFT: get instruction/response conversations and save them as a DatasetDict.

    python3 -m dataset.post_training.sft.download_dataset --output-dir=data/post_training/sft/raw

Sources (`--source`):
- `hub` (default), `--dataset`:
  yahma/alpaca-cleaned (default): (instruction, input, output) -> messages [user: instruction,
  then a blank line and the input when there is one; assistant: output], split (seeded) into
  train/validation/test.
  HuggingFaceTB/smol-smoltalk: multi-turn conversations (`messages`, system prompts included,
  and the `source` sub-dataset of each row, kept); its train split -> train + validation
  (seeded), its test split -> test:
      python3 -m dataset.post_training.sft.download_dataset \\
          --dataset HuggingFaceTB/smol-smoltalk --output-dir data/post_training/smoltalk/raw
  Tokenized with --stage sft, every assistant turn is trained and no
  other (the loss mask, tokenizer/encoding.py).
- `sample`: instructions about the embedded sample world with checkable constraints; no network.
  Tiny CPU example:
      python3 -m dataset.post_training.sft.download_dataset \\
          --output-dir=data/sample/post_training/sft/raw \\
          --source sample --sample-size 2000
- `local`: .jsonl files, one conversation per line, either {"messages": [{"role", "content"},
  ...]} (ending with the assistant's reply) or {"instruction", "input" (optional), "output"}.

Output: train/ validation/ test/ with column `messages` (plus `source` for SmolTalk, and
`constraints`, a JSON string for `dataset.sample_world.check.satisfies`, on sample data) and
manifest.json. Unusable rows (missing
or non-string fields, empty output, longer than --max-chars) are skipped and counted; having none
left is an error.
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
from dataset.post_training.messages import (
    MESSAGES,
    Unusable,
    message,
    messages_from,
    num_chars,
    text_field,
)
from dataset.sample_world.instructions import sft_rows

MODULE = "dataset.post_training.sft.download_dataset"
DEFAULT_OUTPUT = "data/post_training/sft/raw"
ROW_FEATURES = datasets.Features({"messages": MESSAGES, "reason": datasets.Value("string")})
SOURCE_FEATURES = datasets.Features(
    {"messages": MESSAGES, "source": datasets.Value("string"), "reason": datasets.Value("string")}
)
SAMPLE_FEATURES = datasets.Features({"messages": MESSAGES, "constraints": datasets.Value("string")})


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = common.new_parser(MODULE, __doc__, DEFAULT_OUTPUT)
    parser.add_argument(
        "--dataset",
        choices=list(HUB_DATASETS),
        default="yahma/alpaca-cleaned",
        help="--source hub: which instruction dataset (alpaca-cleaned: single instructions; "
        "smol-smoltalk: multi-turn conversations with system prompts)",
    )
    add_post_training_args(
        parser, "conversations", test_help="share held out for test, when the source has no "
        "test split (alpaca, local)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    check_post_training_args(parser, args)
    return args


def from_instruction(row: dict) -> list[dict]:
    """Alpaca layout -> [user, assistant]; the input (if any) follows a blank line."""
    instruction = text_field(row, "instruction").strip()
    extra = text_field(row, "input", required=False).strip()
    output = text_field(row, "output")
    user = f"{instruction}\n\n{extra}" if instruction and extra else instruction
    return [message("user", user), message("assistant", output)]


def from_conversation(row: dict) -> list[dict]:
    """A {"messages": [...]} row (SmolTalk's layout): any system, user and assistant turns,
    ending with the assistant's reply, with at least one user turn."""
    messages = messages_from(row.get("messages"))
    if messages[-1]["role"] != "assistant":
        raise Unusable("last_message_not_assistant")
    if not any(m["role"] == "user" for m in messages):
        raise Unusable("no_user_message")
    return messages


def from_any(row: dict) -> list[dict]:
    """A local row: {"messages": [...]} or the instruction/input/output layout."""
    if "messages" in row:
        return from_conversation(row)
    if "instruction" in row or "output" in row:
        return from_instruction(row)
    raise Unusable("missing_messages_or_instruction")


def normalize(row: dict, max_chars: int, convert=from_instruction, keep_source=False) -> dict:
    """{"messages", "reason"} (+ "source"): the conversation, or [] and why it is unusable."""
    extra = {"source": str(row.get("source") or "")} if keep_source else {}
    try:
        messages = convert(row)
        if num_chars(messages) > max_chars:
            raise Unusable("too_long")
        return {"messages": messages, **extra, "reason": ""}
    except Unusable as unusable:
        return {"messages": [], **extra, "reason": str(unusable)}


class HubDataset:
    """How one Hub dataset becomes conversations: its converter, columns and splits."""

    def __init__(self, convert, columns: list[str], train: str, test: str | None, source: bool):
        self.convert, self.columns, self.train, self.test = convert, columns, train, test
        self.features = SOURCE_FEATURES if source else ROW_FEATURES


HUB_DATASETS = {
    "yahma/alpaca-cleaned": HubDataset(
        from_instruction, ["instruction", "output"], "train", None, source=False
    ),
    "HuggingFaceTB/smol-smoltalk": HubDataset(
        from_conversation, ["messages"], "train", "test", source=True
    ),
}


def build_hub(args, manifest: common.Manifest, work: common.WorkDir) -> dict:
    spec = HUB_DATASETS[args.dataset]
    loaded = common.load_hub(args.dataset, cache_dir=args.cache_dir)
    manifest.add_input(common.hub_input(args.dataset, loaded))
    for name in filter(None, (spec.train, spec.test)):
        if name not in loaded:
            raise UserError(f"{args.dataset} has no {name} split (it has {', '.join(loaded)})")
        common.require_columns(loaded[name], spec.columns, f"{args.dataset} {name}")
    short_name = args.dataset.split("/")[-1].replace("-cleaned", "")  # "alpaca/train"
    convert = partial(
        normalize, max_chars=args.max_chars, convert=spec.convert,
        keep_source=spec.features is SOURCE_FEATURES,
    )  # fmt: skip

    def usable(split: str) -> datasets.Dataset:
        return normalized(
            loaded[split], f"{short_name}/{split}", convert, spec.features, args, manifest, work
        )

    if spec.test is None:
        return common.split_three(
            usable(spec.train), args.validation_fraction, args.test_fraction, args.seed
        )
    train, validation = common.carve(usable(spec.train), args.validation_fraction, args.seed)
    return {"train": train, "validation": validation, "test": usable(spec.test)}


def build_local(args, manifest: common.Manifest, work: common.WorkDir) -> dict:
    convert = partial(normalize, max_chars=args.max_chars, convert=from_any)
    needs = 'needs "messages" or "instruction"/"output"'
    usable = local_rows(args, manifest, work, ROW_FEATURES, convert, "conversation", needs)
    return common.split_three(usable, args.validation_fraction, args.test_fraction, args.seed)


def build_sample(args, manifest: common.Manifest, work: common.WorkDir) -> dict:
    sizes = sample_sizes(args.sample_size)
    manifest.add_input({"id": "sample_world", "seed": args.seed, "sizes": sizes})
    return {
        name: datasets.Dataset.from_list(sft_rows(args.seed, name, size), features=SAMPLE_FEATURES)
        for name, size in sizes.items()
    }


BUILDERS = {"hub": build_hub, "sample": build_sample, "local": build_local}


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns 0. Raises UserError on bad input (the CLI prints it as one line)."""
    return common.run_download("sft", MODULE, parse_args(argv), BUILDERS)


if __name__ == "__main__":
    run_cli(main)
