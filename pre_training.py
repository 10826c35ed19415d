r"""Pre-train the Transformer on the tokenized corpus: next-token prediction on random windows.

The constants a user edits are the CONFIG below; any field can be overridden on the command
line as --key=value (`python3 pre_training.py --help` lists them all). Outputs go to
checkpoints/<run_name>/ (step folders, `latest`, `tensorboard/`).

    # the real run (one L4, ~a day; needs the README's data and tokenizer steps first)
    python3 pre_training.py
    # watch it
    tensorboard --logdir checkpoints
    # continue after Ctrl-C / a crash / a preemption, exactly where it stopped
    python3 pre_training.py --resume=true
    # several GPUs (same tokens per step: gradient accumulation shrinks to compensate)
    torchrun --nproc_per_node=4 pre_training.py
    # a bigger GPU
    python3 pre_training.py --model_preset=124m --micro_batch_size=32 --compile=true

Tiny CPU example (a few minutes; the sample corpus, tokenizer and tokenized data first):
    python3 -m dataset.pre_training.download_dataset --output-dir data/sample/pre_training/raw \
        --source sample
    python3 -m tokenizer.train --dataset-dir data/sample/pre_training/raw \
        --output-path data/sample/tokenizer/tokenizer.json \
        --vocab-size 2048
    python3 -m tokenizer.tokenize_dataset --dataset-dir data/sample/pre_training/raw \
        --tokenizer-path data/sample/tokenizer/tokenizer.json \
        --output-dir data/sample/pre_training/tokenized
    python3 pre_training.py --data_dir=data/sample/pre_training/tokenized \
        --tokenizer_path=data/sample/tokenizer/tokenizer.json \
        --model_preset=debug --block_size=256 --micro_batch_size=16 --tokens_per_step=8192 \
        --max_steps=300 --eval_interval=100 --eval_batches=4 --checkpoint_interval=100 \
        --run_name=sample_pre_training
At the end it prints the model's continuation of a fixed prompt.
"""

import sys

from common.errors import run_cli
from model.generate import generate_text
from training.config import TrainConfig, parse_config
from training.pretraining_stage import PretrainingStage
from training.trainer import train

# The 170m preset on one 24 GB L4 for about a day: 8 x 1024 tokens per forward pass
# (`python3 -m model.plan --preset 170m --gpu L4` puts the limit near 15), 64 micro-batches per
# step (0.5M tokens), 6,700 steps = ~3.5B tokens (~20 tokens per parameter).
CONFIG = TrainConfig(
    run_name="pre_training",
    checkpoint_dir="checkpoints",
    data_dir="data/pre_training/tokenized",
    tokenizer_path="data/tokenizer/tokenizer.json",
    model_preset="170m",
    block_size=1024,
    micro_batch_size=8,
    tokens_per_step=524_288,
    max_steps=6_700,
    # Muon for the blocks' matrices, AdamW for embedding, head and norms; no warm-up, flat, then
    # a linear decay over the last 20% (benchmarks/README.md: the measurement behind each value).
    optimizer="muon",
    muon_lr=0.02,  # any width: an orthogonalised update's size does not depend on it
    embedding_lr=6e-3,  # at width 768, scaled by sqrt(768 / n_embd)
    head_lr=6e-3,  # likewise
    learning_rate=6e-3,  # the norm gains (and everything, with --optimizer=adamw)
    min_lr=6e-4,
    warmup_steps=0,
    schedule="wsd",
    decay_fraction=0.2,
    weight_decay=0.1,
    beta1=0.9,
    beta2=0.95,
    grad_clip=1.0,
    muon_momentum=0.9,
    muon_momentum_start=0.85,
    muon_momentum_warmup=0,
    muon_weight_decay=0.0,
    muon_ns_steps=5,
    precision="auto",
    compile=True,
    activation_checkpointing=False,
    eval_interval=250,
    eval_batches=20,
    log_interval=10,
    sample_max_new_tokens=64,
    checkpoint_interval=500,
    keep_last=3,
    # lm-eval's six zero-shot tasks, 300 examples each (data: dataset.evaluation.download_dataset)
    eval_tasks="core",
    eval_tasks_interval=500,
    eval_tasks_limit=300,
    eval_data_dir="data/evaluation",
    seed=1337,
)

PROMPT = "Once upon a time"


def main(argv: list[str] | None = None) -> int:
    config = parse_config(CONFIG, sys.argv[1:] if argv is None else argv, __doc__)
    result = train(config, PretrainingStage)
    if not result.should_report:
        return result.exit_code  # stopped by Ctrl-C/SIGTERM, or not the printing rank
    vocab_size = result.tokenizer.get_vocab_size()
    sampling = dict(temperature=0.8, top_k=50, seed=config.seed, vocab_size=vocab_size)
    text = generate_text(result.model, result.tokenizer, PROMPT, 100, **sampling)
    print(f"\n{result.val_summary} after {result.step} steps; checkpoint {result.last_checkpoint}")
    print(f"sample: {PROMPT}{text}")
    if result.task_scores:
        print(f"benchmarks (eval_tasks): {result.task_summary}")
    return 0


if __name__ == "__main__":
    run_cli(main)
