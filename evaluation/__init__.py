r"""Evaluation: how good is a model on the yardsticks the field uses.

    python3 -m evaluation --checkpoint checkpoints/pre_training --tasks core
    python3 -m evaluation --checkpoint checkpoints/sft --checkpoint checkpoints/dpo --tasks core
    python3 -m evaluation --hf exports/dpo-hf --tasks hellaswag --limit 500 --json results.json

Tiny CPU example, after the README's sample pipeline (no network: the sample world's test is
generated; the pre-trained model is scored on plain text, the SFT one as a chat model):
    python3 -m evaluation --checkpoint checkpoints/sample_pre_training \
        --checkpoint checkpoints/sample_sft --tasks sample_world

Task definitions: lm-evaluation-harness 0.4.13's (`pip install lm-eval==0.4.13`; its
lm_eval/tasks/{hellaswag,arc,piqa,winogrande,lambada}/ yaml and utils, lm_eval/api/task.py,
lm_eval/api/metrics.py and lm_eval/models/huggingface.py): the same dataset ids and splits,
prompt text, target delimiter, per-task preprocessing, few-shot sampling, tokenization of context
and continuation, and metrics, so our per-example choices and acc/acc_norm equal lm-eval's
(`lm_eval --model hf`) on the exported folder of the same checkpoint
(tests/test_evaluation_parity.py).

Modules: one per task family (hellaswag, arc, piqa, winogrande, lambada, sample_world), and
tasks.py (what a task is, requests, the registry and the `core` group), data.py (the datasets'
copies on disk), models.py (our checkpoints and transformers folders, their tokenization),
scoring.py (batched log-likelihoods, a shared context computed once), metrics.py, runner.py
(one model on one task), results.py (the table and lm-eval's JSON layout), references.py
(published figures of GPT-2, Pythia and SmolLM), cli.py.
"""
