"""LAMBADA, OpenAI's version (Paperno et al. 2016; Radford et al. 2019): predict the last word
of a passage. lm-eval's `lambada_openai` task: EleutherAI/lambada_openai, config "default", test
split (5,153 passages).

The context is the passage without its last space-separated word; the continuation is " " +
that word. `acc`: the model's greedy tokens are exactly the word's tokens; `perplexity`:
exp(-mean log-likelihood of the word), over the passages.
"""

from evaluation.tasks import Task, register

register(
    Task(
        name="lambada_openai",
        dataset="lambada_openai",
        eval_split="test",
        fewshot_split="test",  # lm-eval: no train or validation split, so the test split
        output_type="loglikelihood",
        metrics=("perplexity", "acc"),
        doc_to_text=lambda doc: " ".join(doc["text"].split(" ")[:-1]),
        doc_to_target=lambda doc: " " + doc["text"].split(" ")[-1],
        summary="the last word of a passage (greedy match, perplexity)",
    )
)
