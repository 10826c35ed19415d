"""Conversations as message lists, from the layouts instruction and preference data come in.

A message is {"role": "system" | "user" | "assistant", "content": str}. Each function takes a raw
row and returns the converted row, or raises `Drop(reason)` (counted in manifest.json):
- `from_instruction`: Alpaca's instruction, input (optional) and output -> [user, assistant];
- `from_conversation`: SmolTalk's `messages`, system prompts included, ending with a reply;
- pairs, all becoming prompt (messages ending with a user turn), chosen and rejected (one
  assistant message each): `from_messages` (UltraFeedback: chosen/rejected message lists that
  begin with the prompt turns), `from_strings` (Orca: system, question, chosen, rejected
  strings), `from_transcripts` (hh-rlhf: whole "\n\nHuman: ...\n\nAssistant: ..." transcripts,
  the prompt their shared beginning up to its last "\n\nAssistant:"), and `pair_from_any` for
  local files in any of these layouts.
"""

import argparse
import functools
import os
import re
from collections.abc import Callable
from typing import NamedTuple

from dataset import pipeline
from dataset.local_files import jsonl_rows, resolve_data_files
from dataset.pipeline import Drop, Part, Run, Step, converted, fraction

ROLES = ("system", "user", "assistant")
ASSISTANT = "\n\nAssistant:"
_TURN = re.compile(r"\n\n(Human|Assistant):")


def message(role: str, content) -> dict:
    if not isinstance(content, str):
        raise Drop("non_string_content")
    if not content.strip():
        raise Drop(f"empty_{role}")
    return {"role": role, "content": content.strip()}


def messages_from(value) -> list[dict]:
    """A validated copy of a list of {role, content} dicts."""
    if not isinstance(value, list) or not value:
        raise Drop("messages_not_a_list")
    if any(not isinstance(item, dict) or item.get("role") not in ROLES for item in value):
        raise Drop("bad_role")
    return [message(item["role"], item.get("content")) for item in value]


def text_field(row: dict, name: str, required: bool = True) -> str:
    """row[name] as a string; a missing one is '' unless required."""
    value = row.get(name)
    if value is None and not required:
        return ""
    if value is None:
        raise Drop(f"missing_{name}")
    if not isinstance(value, str):
        raise Drop(f"non_string_{name}")
    return value


def length(messages: list[dict]) -> int:
    return sum(len(m["content"]) for m in messages)


def from_instruction(row: dict) -> list[dict]:
    """Alpaca layout -> [user, assistant]; the input (if any) follows a blank line."""
    instruction = text_field(row, "instruction").strip()
    extra = text_field(row, "input", required=False).strip()
    user = f"{instruction}\n\n{extra}" if instruction and extra else instruction
    return [message("user", user), message("assistant", text_field(row, "output"))]


def from_conversation(row: dict) -> list[dict]:
    """A {"messages": [...]} row: system, user and assistant turns, at least one user turn,
    ending with the assistant's reply."""
    messages = messages_from(row.get("messages"))
    if messages[-1]["role"] != "assistant":
        raise Drop("last_message_not_assistant")
    if not any(m["role"] == "user" for m in messages):
        raise Drop("no_user_message")
    return messages


def conversation_from_any(row: dict) -> list[dict]:
    """A local row: {"messages": [...]} or the instruction/input/output layout."""
    if "messages" in row:
        return from_conversation(row)
    if "instruction" in row or "output" in row:
        return from_instruction(row)
    raise Drop("missing_messages_or_instruction")


def _pair(prompt: list[dict], chosen: dict, rejected: dict) -> dict:
    if not prompt or prompt[-1]["role"] != "user":
        raise Drop("prompt_not_ending_with_user")
    if chosen["content"] == rejected["content"]:
        raise Drop("identical_chosen_rejected")
    return {"prompt": prompt, "chosen": [chosen], "rejected": [rejected]}


def from_messages(row: dict) -> dict:
    """UltraFeedback: the chosen and rejected lists hold the prompt turns too; strip them off
    (a `prompt` column is used only when the lists hold nothing but the answers)."""
    chosen, rejected = messages_from(row.get("chosen")), messages_from(row.get("rejected"))
    if chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
        raise Drop("answer_not_assistant")
    prompt = chosen[:-1]
    if prompt != rejected[:-1]:
        raise Drop("prompt_mismatch")
    if not prompt and isinstance(row.get("prompt"), list):
        prompt = messages_from(row["prompt"])
    elif not prompt:
        prompt = [message("user", text_field(row, "prompt"))]
    return _pair(prompt, chosen[-1], rejected[-1])


def from_strings(row: dict) -> dict:
    """Orca DPO pairs: system (may be empty), question (or prompt), chosen, rejected."""
    question = text_field(row, "question" if "question" in row else "prompt")
    system = text_field(row, "system", required=False)
    prompt = ([message("system", system)] if system.strip() else []) + [message("user", question)]
    answers = [message("assistant", text_field(row, name)) for name in ("chosen", "rejected")]
    return _pair(prompt, *answers)


def parse_transcript(text: str) -> list[dict]:
    """ "\\n\\nHuman: hi\\n\\nAssistant: hello" -> [user: hi, assistant: hello]."""
    parts = _TURN.split(text)
    if parts[0].strip():
        raise Drop("text_before_first_turn")
    return [
        message("user" if speaker == "Human" else "assistant", content)
        for speaker, content in zip(parts[1::2], parts[2::2])
    ]


def from_transcripts(row: dict) -> dict:
    """hh-rlhf: the prompt is the shared beginning up to its last "\\n\\nAssistant:"."""
    chosen, rejected = text_field(row, "chosen"), text_field(row, "rejected")
    shared = os.path.commonprefix([chosen, rejected])
    cut = shared.rfind(ASSISTANT)
    if cut < 0:
        raise Drop("no_shared_prompt")
    answers = [text[cut + len(ASSISTANT) :] for text in (chosen, rejected)]
    if any(_TURN.search(answer) for answer in answers):
        raise Drop("answer_has_several_turns")
    return _pair(parse_transcript(shared[:cut]), *(message("assistant", a) for a in answers))


def pair_from_any(row: dict) -> dict:
    """A local row in any of the three layouts (or prompt messages with string answers)."""
    if "chosen" not in row or "rejected" not in row:
        raise Drop("missing_chosen_or_rejected")
    if isinstance(row["chosen"], list):
        return from_messages(row)
    has_prompt = "prompt" in row or "question" in row
    if not has_prompt and isinstance(row["chosen"], str) and ASSISTANT in row["chosen"]:
        return from_transcripts(row)
    if not has_prompt:
        raise Drop("missing_prompt")
    if isinstance(row.get("prompt"), list):
        answers = [message("assistant", text_field(row, name)) for name in ("chosen", "rejected")]
        return _pair(messages_from(row["prompt"]), *answers)
    return from_strings(row)


SAMPLE_HELD_OUT_SHARE = 20  # validation and test get a 20th of --sample-size each...
SAMPLE_MIN_HELD_OUT = 20  # ...but at least this many


def add_arguments(parser: argparse.ArgumentParser, unit: str) -> None:
    """--max-chars, --sample-size, the held-out shares and the original README's
    --tokenizer-profile; `unit` names a row ("conversations", "pairs")."""
    add = parser.add_argument
    profile = "older flag, accepted and unused (the one chat format there is)"
    add(
        "--tokenizer-profile", choices=["post_training_v1"], default=argparse.SUPPRESS, help=profile
    )
    longest = f"skip {unit} with more characters than this (a conversation's messages; a pair's "
    add("--max-chars", type=int, default=8000, help=longest + "prompt and longer answer)")
    size = f"sample: train {unit}; validation and test get a {SAMPLE_HELD_OUT_SHARE}th of it "
    size += f"each (at least {SAMPLE_MIN_HELD_OUT}), with instructions train never shows"
    add("--sample-size", type=int, default=10_000, help=size)
    held_out = f"share of the {unit} held out (seeded) for"
    add("--validation-fraction", type=fraction, default=0.02, help=f"{held_out} validation")
    test = f"{held_out} test, when the source has no test split"
    add("--test-fraction", type=fraction, default=0.02, help=test)


def check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.sample_size < 1 or args.max_chars < 1:
        parser.error("--sample-size and --max-chars must be positive")
    vars(args).pop("tokenizer_profile", None)  # checked by its choices; not a setting


class HubDataset(NamedTuple):
    convert: Callable  # a row -> the output columns (raises Drop)
    features: dict  # the output columns' types
    columns: list[str]  # what the Hub's rows must have
    train: str  # its train split: train, less the held-out shares
    test: str | None  # its test split, when it has one


def step(stage: str, module: str, doc: str, hub: dict, what: str, unit: str, sample, local):
    """The SFT or DPO data step: --dataset (a key of `hub`, the first by default), the shared
    flags, and the three sources; `local` is (convert, features, row unit, what a row needs)."""

    def add(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--dataset", choices=list(hub), default=next(iter(hub)), help=f"--source hub: {what}"
        )
        add_arguments(parser, unit)

    sources = {
        "hub": functools.partial(hub_parts, hub=hub),
        "sample": sample,
        "local": functools.partial(local_parts, local=local),
    }
    return Step(stage, module, doc, f"data/post_training/{stage}/raw", sources, add, check)


def hub_parts(args, run: Run, hub: dict[str, HubDataset]) -> list[Part]:
    """The --dataset's train split less the held-out shares, and its test split if it has one."""
    spec = hub[args.dataset]
    loaded = run.hub(args.dataset, [spec.train] + ([spec.test] if spec.test else []), spec.columns)
    short = args.dataset.split("/")[-1].removesuffix("-cleaned")  # "alpaca/train"
    convert = functools.partial(spec.convert, max_chars=args.max_chars)
    parts = []
    for split, into in ((spec.train, "train"), (spec.test, "test")):
        if split is not None:
            group = f"{short}/{split}"
            rows = run.convert(group, loaded[split], convert, spec.features)
            parts.append(Part(group, rows, into))
    parts[0].carve = {"validation": args.validation_fraction}
    if spec.test is None:
        parts[0].carve["test"] = args.test_fraction
    return parts


def sample_parts(args, run: Run, rows: Callable[[int, str, int], list], features) -> list[Part]:
    """`rows(seed, split, count)` of the sample world for each split."""
    held_out = max(SAMPLE_MIN_HELD_OUT, args.sample_size // SAMPLE_HELD_OUT_SHARE)
    sizes = {"train": args.sample_size, "validation": held_out, "test": held_out}
    run.manifest["inputs"].append({"id": "sample_world", "seed": args.seed, "sizes": sizes})
    parts = []
    for name, count in sizes.items():
        generate = functools.partial(rows, args.seed, name, count)
        parts.append(
            Part(f"sample/{name}", run.generate(f"sample-{name}", generate, features), name)
        )
    return parts


def local_parts(args, run: Run, local: tuple) -> list[Part]:
    """The --data-files jsonl rows, converted; lines that are not JSON objects are counted."""
    convert, features, unit, needs = local
    files = resolve_data_files(args.data_files, ("jsonl",))
    run.manifest["inputs"].append({"id": "local", "files": [str(f) for f in files]})
    convert = functools.partial(convert, max_chars=args.max_chars)

    def rows():
        for path in files:
            for row in jsonl_rows(path):
                if not isinstance(row, dict):
                    reason = "invalid_json" if row is None else "not_an_object"
                    yield {**dict.fromkeys(features), "reason": reason}
                else:
                    yield converted(convert, row, features)

    return pipeline.local_parts(run, rows, features, unit, f"each line {needs}")
