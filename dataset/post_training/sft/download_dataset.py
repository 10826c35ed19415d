"""Step 1 of SFT: get instruction/response conversations and save them as a DatasetDict.

    python3 -m dataset.post_training.sft.download_dataset --output-dir=data/post_training/sft/raw
    python3 -m dataset.post_training.sft.download_dataset \\
        --dataset HuggingFaceTB/smol-smoltalk --output-dir data/post_training/smoltalk/raw
    python3 -m dataset.post_training.sft.download_dataset \\
        --output-dir=data/sample/post_training/sft/raw --source sample --sample-size 2000

Sources: yahma/alpaca-cleaned or HuggingFaceTB/smol-smoltalk (layouts: conversations.py); the
sample world's instructions (with `constraints` for dataset.sample_world.check); .jsonl lines of
{"messages"} or {"instruction", "input", "output"}. Output: train/ validation/ test/ with column
`messages`, and manifest.json.
"""

from functools import partial

import datasets

from common.errors import run_cli
from dataset import pipeline
from dataset.pipeline import MESSAGES, Drop
from dataset.post_training import conversations
from dataset.post_training.conversations import HubDataset, from_conversation, from_instruction
from dataset.sample_world.tasks import sft_rows

MODULE = "dataset.post_training.sft.download_dataset"
FEATURES = datasets.Features({"messages": MESSAGES})
SOURCE_FEATURES = datasets.Features({"messages": MESSAGES, "source": datasets.Value("string")})
SAMPLE_FEATURES = datasets.Features({"messages": MESSAGES, "constraints": datasets.Value("string")})


def conversation(row: dict, layout, max_chars: int, keep_source: bool = False) -> dict:
    """{"messages"} (+ SmolTalk's "source") of one row in `layout`, no longer than max_chars."""
    messages = layout(row)
    if conversations.length(messages) > max_chars:
        raise Drop("too_long")
    source = {"source": str(row.get("source") or "")} if keep_source else {}
    return {"messages": messages} | source


HUB = {
    "yahma/alpaca-cleaned": HubDataset(
        partial(conversation, layout=from_instruction),
        FEATURES,
        ["instruction", "output"],
        "train",
        None,
    ),
    "HuggingFaceTB/smol-smoltalk": HubDataset(
        partial(conversation, layout=from_conversation, keep_source=True),
        SOURCE_FEATURES,
        ["messages"],
        "train",
        "test",
    ),
}
STEP = conversations.step(
    "sft",
    MODULE,
    __doc__,
    HUB,
    "which instruction dataset (alpaca-cleaned: single "
    "instructions; smol-smoltalk: multi-turn conversations with system prompts)",
    "conversations",
    sample=partial(conversations.sample_parts, rows=sft_rows, features=SAMPLE_FEATURES),
    local=(
        partial(conversation, layout=conversations.conversation_from_any),
        FEATURES,
        "conversation",
        'needs "messages" or "instruction"/"output"',
    ),
)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns 0. Raises UserError on bad input (the CLI prints it as one line)."""
    return pipeline.write(STEP, pipeline.parse_args(STEP, argv))


if __name__ == "__main__":
    run_cli(main)
