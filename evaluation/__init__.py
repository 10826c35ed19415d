r"""Evaluation: lm-evaluation-harness's tasks, with our model as its LM.

    python3 -m evaluation --checkpoint checkpoints/pre_training --tasks core
    python3 -m evaluation --checkpoint checkpoints/sft --checkpoint checkpoints/dpo --tasks core
    python3 -m evaluation --hf exports/dpo-hf --tasks hellaswag --limit 500 --json results.json

Tiny CPU example, after the README's sample pipeline (no network: the sample world's test is
generated; the pre-trained model is scored on plain text, the SFT one as a chat model):
    python3 -m evaluation --checkpoint checkpoints/sample_pre_training \
        --checkpoint checkpoints/sample_sft --tasks sample_world --data-dir data/sample/evaluation

Tasks, prompts, metrics and the results layout are lm-eval's (`lm_eval.evaluator`); the data are
the copies of `python3 -m dataset.evaluation.download_dataset`, and our own tasks (the `core`
group, sample_world, ARC's letter forms) are YAML files in dataset/evaluation/tasks/.
lm.py: our checkpoints as lm-eval's LM "simple-transformer"; tasks.py: the tasks a run scores,
and one model scored on them (the training scripts' in-run scores too); cli.py: the command,
its table and --json; references.py: published figures of GPT-2 and Pythia.
"""
