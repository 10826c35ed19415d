"""ARC (Clark et al. 2018): grade-school science questions with 3-5 answer options.

- `arc_easy`, `arc_challenge`: lm-eval's tasks. allenai/ai2_arc (ARC-Easy, ARC-Challenge), test
  split (2,376 and 1,172 questions); "Question: {question}\\nAnswer:" then " " + an option's
  text; the gold index is the position of `answerKey` among `choices.label` (labels are letters,
  or digits on a few rows).
- `arc_easy_letters`, `arc_challenge_letters`: the letter-answer form for chat models (ours; not
  an lm-eval task). The options are listed as "A. ...", "B. ...", and the choices are the
  letters themselves, so a model is asked which one, as a chat user would ask (MMLU's layout).
  Only `acc`: the choices are all one letter long.
"""

from evaluation.tasks import Task, register

LETTERS = "ABCDE"


def letters_text(doc: dict) -> str:
    options = [f"{LETTERS[i]}. {text}" for i, text in enumerate(doc["choices"]["text"])]
    return "Question: " + doc["question"] + "\n" + "\n".join(options) + "\nAnswer:"


def arc_tasks(name: str, summary: str) -> list[Task]:
    common = dict(
        dataset=name,
        eval_split="test",
        fewshot_split="train",
        output_type="multiple_choice",
        doc_to_target=lambda doc: doc["choices"]["label"].index(doc["answerKey"]),
    )
    return [
        Task(
            name=name,
            metrics=("acc", "acc_norm"),
            doc_to_text=lambda doc: f"Question: {doc['question']}\nAnswer:",
            doc_to_choice=lambda doc: list(doc["choices"]["text"]),
            summary=summary,
            **common,
        ),
        Task(
            name=f"{name}_letters",
            metrics=("acc",),
            doc_to_text=letters_text,
            doc_to_choice=lambda doc: list(LETTERS[: len(doc["choices"]["text"])]),
            summary=summary + ", answered with a letter",
            lm_eval_task=False,
            **common,
        ),
    ]


register(
    *arc_tasks("arc_easy", "grade-school science, easy set"),
    *arc_tasks("arc_challenge", "grade-school science, challenge set"),
)
