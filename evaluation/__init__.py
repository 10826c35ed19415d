r"""Evaluation: lm-evaluation-harness's tasks, with our model as its LM.

    python3 -m evaluation --checkpoint checkpoints/pre_training --tasks core
    python3 -m evaluation --checkpoint checkpoints/sft --checkpoint checkpoints/dpo --tasks core
    python3 -m evaluation --hf exports/dpo-hf --tasks hellaswag --limit 500 --json results.json

Tiny CPU example, after the README's sample pipeline (the sample world's test is generated):
    python3 -m evaluation --checkpoint checkpoints/sample_pre_training \
        --checkpoint checkpoints/sample_sft --tasks sample_world --data-dir data/sample/evaluation

lm.py: our checkpoints as lm-eval's LM "simple-transformer"; tasks.py: the tasks a run scores
(lm-eval's, and ours in dataset/evaluation/tasks/) and one model scored on them, for this command
and the training scripts' in-run scores; cli.py: the command, its table and --json.
"""
