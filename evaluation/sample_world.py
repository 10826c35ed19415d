"""The sample world's multiple-choice test (ours, offline): which home, which animal, which
friend, what happened. Built by dataset/sample_world/multiple_choice.py from the world's facts,
so it needs no download; `python3 -m dataset.evaluation.download_dataset --source sample` saves a
copy like the other tasks'.

The context is the question ("Where does Max live?" or a story opening); the choices are whole
answer sentences ("Max lives in the forest."), after a space. As a chat task the question is the
user's turn and the sentence the assistant's reply, exactly as in the sample SFT data.
"""

from evaluation.tasks import Task, register

register(
    Task(
        name="sample_world",
        dataset="sample_world",
        eval_split="test",
        fewshot_split="train",
        output_type="multiple_choice",
        metrics=("acc", "acc_norm"),
        doc_to_text=lambda doc: doc["question"],
        doc_to_choice=lambda doc: list(doc["choices"]),
        doc_to_target=lambda doc: int(doc["answer"]),
        summary="facts and stories of the embedded sample world (4 choices, no download)",
        lm_eval_task=False,
    )
)
