"""PIQA (Bisk et al. 2020): which of two solutions reaches a physical goal. lm-eval's `piqa`
task: baber/piqa, validation split (1,838 examples); "Question: {goal}\\nAnswer:" then
" {sol1}" or " {sol2}"."""

from evaluation.tasks import Task, register

register(
    Task(
        name="piqa",
        dataset="piqa",
        eval_split="validation",
        fewshot_split="train",
        output_type="multiple_choice",
        fewshot_skips_eval_doc=True,  # lm-eval's yaml has no test split
        metrics=("acc", "acc_norm"),
        doc_to_text=lambda doc: f"Question: {doc['goal']}\nAnswer:",
        doc_to_choice=lambda doc: [doc["sol1"], doc["sol2"]],
        doc_to_target=lambda doc: int(doc["label"]),
        summary="physical commonsense, which of two solutions works",
    )
)
