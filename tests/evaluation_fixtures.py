"""Tiny copies of the six benchmarks' datasets, with the real datasets' exact column layouts
(names and types, as the Hub's parquet files have them), written the way the evaluation data
step writes them (data/evaluation/<name>/, save_to_disk) and, for lm-eval, as parquet files.

The rows are made up but carry what each task's preprocessing acts on: HellaSwag's WikiHow
brackets ("[header]", "[title]", "[step]"), double spaces and a lower-case ctx_b; ARC rows with
digit labels and with 3 and 5 options; Winogrande's blank; LAMBADA passages whose last word is
several tokens, and one whose context ends with a space.
"""

from __future__ import annotations

from pathlib import Path

import datasets

STRING = datasets.Value("string")
FEATURES = {
    "hellaswag": datasets.Features(
        {
            "ind": datasets.Value("int32"),
            "activity_label": STRING,
            "ctx_a": STRING,
            "ctx_b": STRING,
            "ctx": STRING,
            "endings": datasets.Sequence(STRING),
            "source_id": STRING,
            "split": STRING,
            "split_type": STRING,
            "label": STRING,
        }
    ),
    "arc": datasets.Features(
        {
            "id": STRING,
            "question": STRING,
            "choices": datasets.Sequence({"text": STRING, "label": STRING}),
            "answerKey": STRING,
        }
    ),
    "piqa": datasets.Features(
        {
            "goal": STRING,
            "sol1": STRING,
            "sol2": STRING,
            "label": datasets.ClassLabel(names=["0", "1"]),
        }
    ),
    "winogrande": datasets.Features(
        {"sentence": STRING, "option1": STRING, "option2": STRING, "answer": STRING}
    ),
    "lambada": datasets.Features({"text": STRING}),
}


def _hellaswag(ind, label, ctx_a, ctx_b, endings, source="activitynet", split="val"):
    return {
        "ind": ind,
        "activity_label": label[0],
        "ctx_a": ctx_a,
        "ctx_b": ctx_b,
        "ctx": ctx_a + (" " + ctx_b if ctx_b else ""),
        "endings": endings,
        "source_id": f"{source}~{ind}",
        "split": split,
        "split_type": "indomain",
        "label": label[1],
    }


HELLASWAG_EVAL = [
    _hellaswag(
        1, ("Roof shingle removal", "3"), "A man is sitting on a roof.", "he",
        ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.",
         "is holding a rubik's cube.", "starts pulling up roofing on a roof."],
    ),
    _hellaswag(
        2, ("Home and Garden", "1"),
        "[header] How to water a plant [title] Check the soil. [step] Push a finger into the "
        "soil  near the stem.",
        "if it feels dry",
        ["[substeps] it is time to paint the fence.", "[substeps] give the plant a slow drink "
         "of water.", "you should sell the house.", "[title] Call a friend  for lunch."],
        source="wikihow",
    ),
    _hellaswag(
        3, ("Playing guitar", "0"), "A girl holds a guitar on her lap. She", "",
        ["strums the strings and sings a song.", "eats the guitar slowly.",
         "throws the guitar into a lake.", "paints the guitar blue [step] and red."],
    ),
    _hellaswag(
        4, ("Food and Entertaining", "2"),
        "[header] How to make toast [title] Slice the bread. [step] Use a bread knife.",
        "put the slices",
        ["into the washing machine.", "[title] on the roof of your car.",
         "into the toaster and press the lever.", "in a drawer for a year."],
        source="wikihow",
    ),
]  # fmt: skip
HELLASWAG_TRAIN = [
    _hellaswag(
        10, ("Washing dishes", "0"), "A woman stands at a sink full of plates.", "she",
        ["scrubs each plate with a sponge.", "flies away.", "reads a book to the plates.",
         "plants a tree in the sink."], split="train",
    ),
    _hellaswag(
        11, ("Pets and Animals", "1"),
        "[header] How to walk a dog [title] Put on the leash. [step] Clip it to the collar.",
        "then",
        ["[substeps] bake a cake.", "walk out of the door with your dog.", "sleep.",
         "[title] Sell the leash."], source="wikihow", split="train",
    ),
    _hellaswag(
        12, ("Running a marathon", "3"), "People run down a street.", "the crowd",
        ["sits on the runners.", "turns into birds.", "eats the street.",
         "cheers as they pass."], split="train",
    ),
]  # fmt: skip


def _arc(qid, question, texts, labels, key):
    return {"id": qid, "question": question, "choices": {"text": texts, "label": labels},
            "answerKey": key}  # fmt: skip


ARC_EVAL = [
    _arc("q1", "Which part of a plant takes in water from the soil?",
         ["leaves", "roots", "flowers", "seeds"], list("ABCD"), "B"),
    _arc("q2", "What happens to water when it freezes?",
         ["It becomes a gas.", "It becomes a solid.", "It disappears."], list("ABC"), "B"),
    _arc("q3", "Which of these is a source of light?",
         ["the Moon", "a mirror", "the Sun", "a window"], list("1234"), "3"),
    _arc("q4", "Which tool measures temperature?",
         ["a ruler", "a scale", "a thermometer", "a clock", "a magnet"], list("ABCDE"), "C"),
]  # fmt: skip
ARC_TRAIN = [
    _arc("t1", "What do bees make?", ["milk", "honey", "wool", "silk"], list("ABCD"), "B"),
    _arc("t2", "Which planet do we live on?", ["Mars", "Earth", "Venus"], list("ABC"), "B"),
    _arc("t3", "What pulls objects toward the ground?", ["gravity", "light", "sound", "wind"],
         list("1234"), "1"),
]  # fmt: skip

PIQA_EVAL = [
    {"goal": "To keep bread fresh,", "sol1": "put it in a sealed bag.",
     "sol2": "leave it in the rain.", "label": 0},
    {"goal": "How do I dry wet shoes?", "sol1": "Put them in the freezer overnight.",
     "sol2": "Stuff them with newspaper and leave them in a warm room.", "label": 1},
    {"goal": "Open a jar with a tight lid", "sol1": "Run the lid under hot water, then twist.",
     "sol2": "Run the lid under cold water, then throw it.", "label": 0},
]  # fmt: skip
PIQA_TRAIN = [
    {"goal": "To cool soup quickly,", "sol1": "stir it in a wide bowl.",
     "sol2": "cover it with a blanket.", "label": 0},
    {"goal": "Sharpen a pencil", "sol1": "Use a spoon.", "sol2": "Use a sharpener.", "label": 1},
    {"goal": "To light a dark room,", "sol1": "switch on a lamp.", "sol2": "close the door.",
     "label": 0},
]  # fmt: skip

WINOGRANDE_EVAL = [
    {"sentence": "Sarah lent Maria her bike because _ did not need it that day.",
     "option1": "Sarah", "option2": "Maria", "answer": "1"},
    {"sentence": "The trophy did not fit in the suitcase because the _ was too small.",
     "option1": "trophy", "option2": "suitcase", "answer": "2"},
    {"sentence": "Tom asked Ben for help, since _ knew how to fix the sink.",
     "option1": "Tom", "option2": "Ben", "answer": "2"},
]  # fmt: skip
WINOGRANDE_TRAIN = [
    {"sentence": "The cat chased the mouse until _ was tired.", "option1": "the cat",
     "option2": "the mouse", "answer": "1"},
    {"sentence": "Anna thanked Lucy because _ had received a gift.", "option1": "Anna",
     "option2": "Lucy", "answer": "1"},
    {"sentence": "The glass broke when it hit the floor because the _ was hard.",
     "option1": "glass", "option2": "floor", "answer": "2"},
]  # fmt: skip

LAMBADA_TEST = [
    {"text": "She opened the old box and found a letter from her grandmother. She read the "
             "letter twice, then folded the letter"},
    {"text": "The dog waited by the door every evening. When the car stopped outside, the dog "
             "barked and wagged its tail at the sound of footsteps"},
    {"text": "He planted the seeds in spring and watered them every day. By summer the garden "
             "was full of tomatoes"},
    # two spaces before the last word: the context ends with a space, which lm-eval moves to
    # the front of the continuation
    {"text": "The train left the station at noon and reached the coast by  evening"},
]  # fmt: skip

# dataset name (dataset/evaluation/sources.py) -> (layout, {split: rows})
DATASETS = {
    "hellaswag": ("hellaswag", {"validation": HELLASWAG_EVAL, "train": HELLASWAG_TRAIN}),
    "arc_easy": ("arc", {"test": ARC_EVAL, "train": ARC_TRAIN}),
    "arc_challenge": ("arc", {"test": ARC_EVAL[::-1], "train": ARC_TRAIN}),
    "piqa": ("piqa", {"validation": PIQA_EVAL, "train": PIQA_TRAIN}),
    "winogrande": ("winogrande", {"validation": WINOGRANDE_EVAL, "train": WINOGRANDE_TRAIN}),
    "lambada_openai": ("lambada", {"test": LAMBADA_TEST}),
}


def fixture_dataset(name: str) -> datasets.DatasetDict:
    layout, splits = DATASETS[name]
    return datasets.DatasetDict(
        {split: datasets.Dataset.from_list(rows, features=FEATURES[layout])
         for split, rows in splits.items()}
    )  # fmt: skip


def write_evaluation_data(data_dir: Path, names=tuple(DATASETS)) -> Path:
    """data_dir/<name>/ for each dataset, as python3 -m dataset.evaluation.download_dataset
    writes them."""
    for name in names:
        fixture_dataset(name).save_to_disk(str(data_dir / name))
    return data_dir


def all_texts() -> list[str]:
    """Every string of the fixtures (to train a tokenizer that knows their words)."""
    texts = []
    for _layout, splits in DATASETS.values():
        for rows in splits.values():
            for row in rows:
                texts += [v for v in row.values() if isinstance(v, str)]
                texts += [t for v in row.values() if isinstance(v, list) for t in v]
                if "choices" in row:
                    texts += row["choices"]["text"]
    return texts
