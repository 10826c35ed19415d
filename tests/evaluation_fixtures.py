"""Tiny copies of the benchmarks' datasets, with the real datasets' exact column layouts (names
and types, as the Hub's parquet files have them), written where the evaluation data step writes
them (data/evaluation/<dataset_path>/<dataset_name>/, save_to_disk), which lm-eval's tasks then
read through dataset.evaluation.download_dataset.local_copies.

The rows are made up but carry what each task's preprocessing acts on: HellaSwag's WikiHow
brackets ("[header]", "[title]", "[step]"), double spaces and a lower-case ctx_b; ARC rows with
digit labels and with 3 and 5 options; Winogrande's blank; LAMBADA passages whose last word is
several tokens, and one whose context ends with a space; OpenBookQA's answer key with a leading
space; GSM8K's "#### answer" lines; WikiText pages longer than the model's window.
"""

from __future__ import annotations

from pathlib import Path

import datasets

from dataset.evaluation.download_dataset import copy_folder

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
    "openbookqa": datasets.Features(
        {
            "id": STRING,
            "question_stem": STRING,
            "choices": datasets.Sequence({"text": STRING, "label": STRING}),
            "answerKey": STRING,
        }
    ),
    "gsm8k": datasets.Features({"question": STRING, "answer": STRING}),
    "wikitext": datasets.Features({"page": STRING}),
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
    return {
        "id": qid,
        "question": question,
        "choices": {"text": texts, "label": labels},
        "answerKey": key,
    }


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

OPENBOOKQA_TEST = [
    {"id": "7-980", "question_stem": "The sun is responsible for",
     "choices": {"text": ["puppies learning new tricks", "children growing up and getting old",
                          "flowers wilting in a vase", "plants sprouting, blooming and wilting"],
                 "label": list("ABCD")}, "answerKey": "D"},
    {"id": "7-584", "question_stem": "When the moon is closest to the Earth, the tides are",
     "choices": {"text": ["low", "high", "gone", "blue"], "label": list("ABCD")},
     "answerKey": " B"},
    {"id": "8-376", "question_stem": "A magnet will stick to",
     "choices": {"text": ["a wooden spoon", "an iron nail", "a glass cup", "a paper bag"],
                 "label": list("ABCD")}, "answerKey": "B"},
]  # fmt: skip
OPENBOOKQA_TRAIN = [
    {"id": "t-1", "question_stem": "Water freezes at",
     "choices": {"text": ["zero degrees", "fifty degrees", "a party", "noon"],
                 "label": list("ABCD")}, "answerKey": "A"},
    {"id": "t-2", "question_stem": "Plants need sunlight to",
     "choices": {"text": ["sing", "make food", "walk", "sleep"], "label": list("ABCD")},
     "answerKey": "B"},
]  # fmt: skip

GSM8K_TEST = [
    {"question": "Tom has 3 apples and buys 4 more. How many apples does he have?",
     "answer": "Tom has 3 + 4 = <<3+4=7>>7 apples.\n#### 7"},
    {"question": "A box holds 12 eggs. How many eggs are in 2 boxes?",
     "answer": "2 boxes hold 2 * 12 = <<2*12=24>>24 eggs.\n#### 24"},
    {"question": "Sara had 10 dollars and spent 6. How much is left?",
     "answer": "She has 10 - 6 = <<10-6=4>>4 dollars left.\n#### 4"},
]  # fmt: skip
GSM8K_TRAIN = [
    {"question": "Ann reads 5 pages a day. How many pages does she read in 3 days?",
     "answer": "She reads 5 * 3 = <<5*3=15>>15 pages.\n#### 15"},
    {"question": "A cat has 4 legs. How many legs do 2 cats have?",
     "answer": "2 cats have 2 * 4 = <<2*4=8>>8 legs.\n#### 8"},
]  # fmt: skip

WIKITEXT_PAGE = (
    " = The Old Mill = \n \n The old mill stood by the river for two hundred years . It ground "
    "wheat for the village , and the miller lived in a small house beside it . \n \n = = "
    "History = = \n \n In 1820 a flood damaged the wheel , and the village @-@ folk rebuilt it "
    "in one summer . The new wheel turned until 1950 , when the mill closed . \n"
)
WIKITEXT_TEST = [{"page": WIKITEXT_PAGE}, {"page": " = Short Page = \n \n It is short . \n"}]

# lm-eval task -> (dataset_path, dataset_name, layout, {split: rows}), as lm-eval's YAML names them
DATASETS = {
    "hellaswag": ("Rowan/hellaswag", None, "hellaswag",
                  {"validation": HELLASWAG_EVAL, "train": HELLASWAG_TRAIN}),
    "arc_easy": ("allenai/ai2_arc", "ARC-Easy", "arc", {"test": ARC_EVAL, "train": ARC_TRAIN}),
    "arc_challenge": ("allenai/ai2_arc", "ARC-Challenge", "arc",
                      {"test": ARC_EVAL[::-1], "train": ARC_TRAIN}),
    "piqa": ("baber/piqa", None, "piqa", {"validation": PIQA_EVAL, "train": PIQA_TRAIN}),
    "winogrande": ("allenai/winogrande", "winogrande_xl", "winogrande",
                   {"validation": WINOGRANDE_EVAL, "train": WINOGRANDE_TRAIN}),
    "lambada_openai": ("EleutherAI/lambada_openai", "default", "lambada", {"test": LAMBADA_TEST}),
    "openbookqa": ("allenai/openbookqa", "main", "openbookqa",
                   {"test": OPENBOOKQA_TEST, "train": OPENBOOKQA_TRAIN,
                    "validation": OPENBOOKQA_TRAIN}),
    "gsm8k": ("openai/gsm8k", "main", "gsm8k", {"test": GSM8K_TEST, "train": GSM8K_TRAIN}),
    "wikitext": ("EleutherAI/wikitext_document_level", "wikitext-2-raw-v1", "wikitext",
                 {"test": WIKITEXT_TEST, "train": WIKITEXT_TEST, "validation": WIKITEXT_TEST}),
}  # fmt: skip
CORE = ("hellaswag", "arc_easy", "arc_challenge", "piqa", "winogrande", "lambada_openai")


def fixture_dataset(name: str) -> datasets.DatasetDict:
    _, _, layout, splits = DATASETS[name]
    return datasets.DatasetDict(
        {
            split: datasets.Dataset.from_list(rows, features=FEATURES[layout])
            for split, rows in splits.items()
        }
    )


def write_evaluation_data(data_dir: Path, names=tuple(DATASETS)) -> Path:
    """The copies `python3 -m dataset.evaluation.download_dataset` would make for these tasks."""
    for name in names:
        path, config, _, _ = DATASETS[name]
        fixture_dataset(name).save_to_disk(str(copy_folder(data_dir, path, config)))
    return data_dir


def all_texts() -> list[str]:
    """Every string of the fixtures (to train a tokenizer that knows their words)."""
    texts = []
    for *_, splits in DATASETS.values():
        for rows in splits.values():
            for row in rows:
                texts += [v for v in row.values() if isinstance(v, str)]
                texts += [t for v in row.values() if isinstance(v, list) for t in v]
                if "choices" in row:
                    texts += row["choices"]["text"]
    return texts
