"""Step 1 of SFT: get instruction/response conversations and save them as a DatasetDict.

    python3 -m dataset.post_training.sft.download_dataset --output-dir=data/post_training/sft/raw \\
        --tokenizer-profile=post_training_v1

Sources (`--source`):
- `hub` (default): yahma/alpaca-cleaned (instruction, input, output) -> messages
  [user: instruction, then a blank line and the input when there is one; assistant: output],
  split (seeded) into train/validation/test.
- `sample`: instructions about the embedded sample world with checkable constraints; no network.
  Tiny CPU example:
      python3 -m dataset.post_training.sft.download_dataset \\
          --output-dir=data/sample/post_training/sft/raw \\
          --tokenizer-profile=post_training_v1 --source sample --sample-size 2000
- `local`: .jsonl files, one conversation per line, either {"messages": [{"role", "content"},
  ...]} (ending with the assistant's reply) or {"instruction", "input" (optional), "output"}.

Output: train/ validation/ test/ with column `messages` (plus `constraints`, a JSON string for
`dataset.sample_world.check.satisfies`, on sample data) and manifest.json. Unusable rows (missing
or non-string fields, empty output, longer than --max-chars) are skipped and counted; having none
left is an error.
"""

import argparse

import datasets

from common.errors import UserError, run_cli
from dataset import common
from dataset.local_files import JSONL_SUFFIXES, iter_jsonl, resolve_data_files
from dataset.post_training.messages import (
    MESSAGES,
    PROFILES,
    Unusable,
    drop_by_reason,
    message,
    messages_from,
    num_chars,
    text_field,
)
from dataset.sample_world.instructions import sft_rows

MODULE = "dataset.post_training.sft.download_dataset"
DEFAULT_OUTPUT = "data/post_training/sft/raw"
HUB_ID = "yahma/alpaca-cleaned"
FEATURES = datasets.Features({"messages": MESSAGES})
SAMPLE_FEATURES = datasets.Features({"messages": MESSAGES, "constraints": datasets.Value("string")})


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
        "--max-chars",
        type=int,
        default=8000,
        help="skip conversations with more characters than this (all messages together)",
    )
    parser.add_argument(
        "--validation-fraction",
        type=common.positive_fraction,
        default=0.02,
        help="hub/local: share of the conversations held out (seeded) for validation",
    )
    parser.add_argument(
        "--test-fraction",
        type=common.positive_fraction,
        default=0.02,
        help="hub/local: share of the conversations held out (seeded) for test",
    )
    parser.add_argument(
        "--sample-size",
        type=int,
        default=10_000,
        help="sample: train conversations; validation and test get a 20th of it each "
        "(at least 20), with name/animal/place combinations and questions train never shows",
    )
    args = parser.parse_args(argv)
    if args.sample_size < 1 or args.max_chars < 1:
        parser.error("--sample-size and --max-chars must be positive")
    return args


def from_instruction(row: dict) -> list[dict]:
    """Alpaca layout -> [user, assistant]; the input (if any) follows a blank line."""
    instruction = text_field(row, "instruction").strip()
    extra = text_field(row, "input", required=False).strip()
    output = text_field(row, "output")
    user = f"{instruction}\n\n{extra}" if instruction and extra else instruction
    return [message("user", user), message("assistant", output)]


def from_any(row: dict) -> list[dict]:
    """A local row: {"messages": [...]} or the instruction/input/output layout."""
    if "messages" in row:
        messages = messages_from(row["messages"])
        if messages[-1]["role"] != "assistant":
            raise Unusable("last_message_not_assistant")
        if not any(m["role"] == "user" for m in messages):
            raise Unusable("no_user_message")
        return messages
    if "instruction" in row or "output" in row:
        return from_instruction(row)
    raise Unusable("missing_messages_or_instruction")


def normalize(row: dict, max_chars: int, convert=from_instruction) -> dict:
    """{"messages", "reason"}: the conversation, or [] and why the row is unusable."""
    try:
        messages = convert(row)
        if num_chars(messages) > max_chars:
            raise Unusable("too_long")
        return {"messages": messages, "reason": ""}
    except Unusable as unusable:
        return {"messages": [], "reason": str(unusable)}


def _normalize_batch(batch: dict, max_chars: int) -> dict:
    rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
    results = [normalize(row, max_chars) for row in rows]
    return {"messages": [r["messages"] for r in results], "reason": [r["reason"] for r in results]}


def build_hub(args, manifest: common.Manifest, work: common.WorkDir) -> dict:
    loaded = common.load_hub(HUB_ID, cache_dir=args.cache_dir)
    manifest.add_input(common.hub_input(HUB_ID, loaded))
    if "train" not in loaded:
        raise UserError(f"{HUB_ID} has no train split (it has {', '.join(loaded)})")
    raw = loaded["train"]
    common.require_columns(raw, ["instruction", "output"], HUB_ID)
    features = datasets.Features({"messages": MESSAGES, "reason": datasets.Value("string")})
    normalized = raw.map(
        _normalize_batch,
        batched=True,
        fn_kwargs={"max_chars": args.max_chars},
        remove_columns=raw.column_names,
        features=features,
        num_proc=common.processes(raw, args.num_proc),
        **work.cache("alpaca-normalize"),
        desc="alpaca: to messages",
    )
    usable = drop_by_reason(normalized, manifest, "alpaca/train", work, args.num_proc)
    return common.split_three(usable, args.validation_fraction, args.test_fraction, args.seed)


def build_local(args, manifest: common.Manifest, work: common.WorkDir) -> dict:
    files = resolve_data_files(args.data_files, JSONL_SUFFIXES)
    manifest.add_input({"id": "local", "files": [str(f) for f in files]})

    def generate():
        for path in files:
            for _, row in iter_jsonl(path):
                if not isinstance(row, dict):
                    yield {
                        "messages": [],
                        "reason": "invalid_json" if row is None else "not_an_object",
                    }
                else:
                    yield normalize(row, args.max_chars, convert=from_any)

    features = datasets.Features({"messages": MESSAGES, "reason": datasets.Value("string")})
    rows = common.from_generator(generate, features, work, "local-sft")
    usable = drop_by_reason(rows, manifest, "local", work, args.num_proc)
    if len(usable) == 0:
        reasons = manifest.data["filters"]["local"][-1]["reasons"]
        raise UserError(
            f"--data-files: no usable conversation in {len(rows)} rows ({reasons}); each line "
            f'needs "messages" or "instruction"/"output"'
        )
    return common.split_three(usable, args.validation_fraction, args.test_fraction, args.seed)


def build_sample(args, manifest: common.Manifest, work: common.WorkDir) -> dict:
    held_out = max(20, args.sample_size // 20)
    sizes = {"train": args.sample_size, "validation": held_out, "test": held_out}
    manifest.add_input({"id": "sample_world", "seed": args.seed, "sizes": sizes})
    return {
        name: datasets.Dataset.from_list(sft_rows(args.seed, name, size), features=SAMPLE_FEATURES)
        for name, size in sizes.items()
    }


BUILDERS = {"hub": build_hub, "sample": build_sample, "local": build_local}


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns 0. Raises UserError on bad input (the CLI prints it as one line)."""
    args = parse_args(argv)
    manifest = common.Manifest("sft", args, MODULE)
    common.write_dataset(args, manifest, lambda work: BUILDERS[args.source](args, manifest, work))
    return 0


if __name__ == "__main__":
    run_cli(main)
