"""Step 1 of DPO: get preference pairs (prompt, chosen, rejected) and save them as a DatasetDict.

    python3 -m dataset.post_training.dpo.download_dataset --output-dir=data/post_training/dpo/raw
    python3 -m dataset.post_training.dpo.download_dataset \\
        --output-dir=data/sample/post_training/dpo/raw --source sample --sample-size 2000

Sources: HuggingFaceH4/ultrafeedback_binarized, Intel/orca_dpo_pairs or Anthropic/hh-rlhf
(layouts: conversations.py); the sample world's pairs (the rejected answer breaks the request
checkably); .jsonl pairs in any of those layouts. Output: train/ validation/ test/ with prompt,
chosen and rejected message lists, and manifest.json.
"""

from functools import partial

import datasets

from common.errors import run_cli
from dataset import pipeline
from dataset.pipeline import MESSAGES, Drop
from dataset.post_training import conversations
from dataset.post_training.conversations import HubDataset
from dataset.sample_world.tasks import dpo_rows

MODULE = "dataset.post_training.dpo.download_dataset"
FEATURES = datasets.Features({"prompt": MESSAGES, "chosen": MESSAGES, "rejected": MESSAGES})
SAMPLE_FEATURES = datasets.Features({**FEATURES, "constraints": datasets.Value("string")})


def pair(row: dict, layout, max_chars: int) -> dict:
    """{prompt, chosen, rejected} of one row in `layout`; prompt + longer answer <= max_chars."""
    converted = layout(row)
    answer = max(conversations.length(converted[name]) for name in ("chosen", "rejected"))
    if conversations.length(converted["prompt"]) + answer > max_chars:
        raise Drop("too_long")
    return converted


def sample_parts(args, run) -> list:
    """The sample pairs; the manifest counts the kinds of rejected answer in each split."""
    kinds = {}

    def rows(seed, split, count):
        pairs, kinds[split] = dpo_rows(seed, split, count)
        return pairs

    parts = conversations.sample_parts(args, run, rows, SAMPLE_FEATURES)
    run.manifest["sample_rejected_violations"] = {
        s: dict(sorted(k.items())) for s, k in kinds.items()
    }
    return parts


def hub(layout, train: str, test: str | None) -> HubDataset:
    return HubDataset(partial(pair, layout=layout), FEATURES, ["chosen", "rejected"], train, test)


STEP = conversations.step(
    "dpo",
    MODULE,
    __doc__,
    {
        "HuggingFaceH4/ultrafeedback_binarized": hub(
            conversations.from_messages, "train_prefs", "test_prefs"
        ),
        "Intel/orca_dpo_pairs": hub(conversations.from_strings, "train", None),
        "Anthropic/hh-rlhf": hub(conversations.from_transcripts, "train", "test"),
    },
    "which preference dataset",
    "pairs",
    sample=sample_parts,
    local=(
        partial(pair, layout=conversations.pair_from_any),
        FEATURES,
        "preference pair",
        "needs chosen, rejected and a prompt (see dataset/post_training/conversations.py)",
    ),
)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns 0. Raises UserError on bad input (the CLI prints it as one line)."""
    return pipeline.write(STEP, pipeline.parse_args(STEP, argv))


if __name__ == "__main__":
    run_cli(main)
