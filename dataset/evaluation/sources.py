"""The datasets of the evaluation tasks: where each comes from, and which of its splits we keep.

Hub ids, configs and splits are lm-evaluation-harness 0.4.13's (the task yaml files'
`dataset_path`, `dataset_name` and splits); evaluation/ reads these copies by name.
`sample_world` is generated (dataset/sample_world/multiple_choice.py), never downloaded.
"""

from typing import NamedTuple


class Source(NamedTuple):
    hub_id: str
    config: str | None
    splits: tuple[str, ...]
    columns: tuple[str, ...]  # what the task reads; a copy without them is not this dataset


SOURCES = {
    "hellaswag": Source(
        "Rowan/hellaswag", None, ("validation", "train"),
        ("activity_label", "ctx_a", "ctx_b", "endings", "label"),
    ),
    "arc_easy": Source(
        "allenai/ai2_arc", "ARC-Easy", ("test", "train"), ("question", "choices", "answerKey")
    ),
    "arc_challenge": Source(
        "allenai/ai2_arc", "ARC-Challenge", ("test", "train"), ("question", "choices", "answerKey")
    ),
    "piqa": Source("baber/piqa", None, ("validation", "train"), ("goal", "sol1", "sol2", "label")),
    "winogrande": Source(
        "allenai/winogrande", "winogrande_xl", ("validation", "train"),
        ("sentence", "option1", "option2", "answer"),
    ),
    "lambada_openai": Source("EleutherAI/lambada_openai", "default", ("test",), ("text",)),
    "sample_world": Source(
        "sample_world", None, ("test", "train"), ("question", "choices", "answer")
    ),
}  # fmt: skip
SAMPLE = "sample_world"
