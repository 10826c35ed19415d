"""HellaSwag (Zellers et al. 2019): pick the most plausible ending of an ActivityNet or WikiHow
snippet. lm-eval's `hellaswag` task: Rowan/hellaswag, validation split (10,042 examples).

The context is `activity_label: ctx_a Ctx_b` (ctx_b capitalised); context and endings are
cleaned as lm-eval's `preprocess` does: strip, " [title]" becomes ". ", any other "[...]"
(WikiHow's header and step markers) is removed, double spaces become one.
"""

import re

from evaluation.tasks import Task, register


def preprocess(text: str) -> str:
    text = text.strip()
    text = text.replace(" [title]", ". ")  # brackets are artifacts of the WikiHow part
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def process_doc(doc: dict) -> dict:
    context = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
    return {
        **doc,
        "query": preprocess(doc["activity_label"] + ": " + context),
        "choices": [preprocess(ending) for ending in doc["endings"]],
        "gold": int(doc["label"]),
    }


register(
    Task(
        name="hellaswag",
        dataset="hellaswag",
        eval_split="validation",
        fewshot_split="train",
        output_type="multiple_choice",
        fewshot_skips_eval_doc=True,  # lm-eval's yaml has no test split
        metrics=("acc", "acc_norm"),
        process_doc=process_doc,
        doc_to_text=lambda doc: doc["query"],
        doc_to_choice=lambda doc: doc["choices"],
        doc_to_target=lambda doc: int(doc["label"]),
        summary="commonsense sentence endings (4 choices)",
    )
)
