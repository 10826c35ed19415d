"""WinoGrande (Sakaguchi et al. 2019): which of two names fills the blank of a sentence.
lm-eval's `winogrande` task: allenai/winogrande, winogrande_xl, validation split (1,267).

Partial scoring: the sentence is cut at the blank "_"; each option fills it, giving one context
per option ("... because Sarah"), and both are scored on the same continuation, the rest of the
sentence after the blank (stripped, after a space). Only `acc` (no acc_norm: the continuation is
the same for both options).
"""

from evaluation.tasks import Task, register


def doc_to_text(doc: dict) -> int:
    """The gold index (lm-eval returns it here: the text differs per choice)."""
    return {"1": 0, "2": 1}[doc["answer"]]


def doc_to_target(doc: dict) -> str:
    blank = doc["sentence"].index("_") + 1
    return doc["sentence"][blank:].strip()


def doc_to_choice(doc: dict) -> list[str]:
    blank = doc["sentence"].index("_")
    return [doc["sentence"][:blank] + option for option in (doc["option1"], doc["option2"])]


register(
    Task(
        name="winogrande",
        dataset="winogrande",
        eval_split="validation",
        fewshot_split="train",
        output_type="multiple_choice",
        fewshot_skips_eval_doc=True,  # lm-eval's yaml has no test split
        metrics=("acc",),
        multiple_input=True,
        doc_to_text=doc_to_text,
        doc_to_target=doc_to_target,
        doc_to_choice=doc_to_choice,
        summary="pronoun resolution, which of two names fills the blank",
    )
)
