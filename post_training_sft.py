r"""Supervised fine-tuning (SFT): teach the pre-trained model to answer in the chat format.

Starts from a pre-training checkpoint's weights (a fresh optimizer and schedule) and trains on
tokenized conversations (`tokenize_dataset --stage sft`), packed whole into rows, with the loss
on the assistant's tokens only (training/sft_stage.py). Every engine feature is there:
precision, accumulation, validation loss and answers to held-out prompts in TensorBoard, atomic
checkpoints, exact --resume, torchrun DDP. `python3 post_training_sft.py --help` lists every
option; the constants a user edits are the CONFIG below.

    # the real run (one L4; after pre_training.py and the README's SFT data steps)
    python3 post_training_sft.py
    tensorboard --logdir checkpoints
    python3 post_training_sft.py --resume=true                 # continue after a stop
    torchrun --nproc_per_node=4 post_training_sft.py           # several GPUs
    python3 -m model.generate --checkpoint checkpoints/sft --chat

Tiny CPU example (a minute or two; after the tiny pre-training example in pre_training.py):
    python3 -m dataset.post_training.sft.download_dataset \
        --output-dir data/sample/post_training/sft/raw \
        --source sample --sample-size 2000
    python3 -m tokenizer.tokenize_dataset --dataset-dir data/sample/post_training/sft/raw \
        --tokenizer-path data/sample/tokenizer/tokenizer.json \
        --output-dir data/sample/post_training/sft/tokenized \
        --stage sft --max-length 129
    python3 post_training_sft.py --data_dir=data/sample/post_training/sft/tokenized \
        --tokenizer_path=data/sample/tokenizer/tokenizer.json \
        --init_from=checkpoints/sample_pre_training --run_name=sample_sft \
        --block_size=128 --micro_batch_size=16 --tokens_per_step=2048 --max_steps=300 \
        --warmup_steps=10 --learning_rate=3e-3 --min_lr=3e-4 --muon_lr=0.02 \
        --embedding_lr=6e-3 --head_lr=6e-3 --eval_interval=100 --eval_batches=4 \
        --checkpoint_interval=100
At the end it prints the model's answer to a held-out instruction.
"""

import sys

from common.errors import run_cli
from training.config import parse_config
from training.sft_stage import SFTConfig, SFTStage, greedy_answer
from training.trainer import train

# The 170m pre-trained model on one 24 GB L4: Alpaca-cleaned is ~52k conversations, ~10M
# tokens, ~11k packed rows of 1024; 64 rows per step -> ~170 steps per epoch, ~3 epochs.
CONFIG = SFTConfig(
    run_name="sft",
    checkpoint_dir="checkpoints",
    data_dir="data/post_training/sft/tokenized",
    tokenizer_path="data/tokenizer/tokenizer.json",
    init_from="checkpoints/pre_training",
    eval_split="validation",
    block_size=1024,
    micro_batch_size=16,
    tokens_per_step=65_536,
    max_steps=500,
    learning_rate=1e-4,  # norm gains (all weights with --optimizer=adamw): ~1/6 of AdamW's
    # pre-training rate (6e-4): adapt the format, keep the knowledge
    min_lr=1e-5,
    warmup_steps=20,
    schedule="cosine",
    decay_fraction=0.2,
    weight_decay=0.0,
    beta1=0.9,
    beta2=0.95,
    grad_clip=1.0,
    # Muon, as pre-training, at its rates x the same 1/6 (benchmarks/post_training_optimizer.py)
    optimizer="muon",
    muon_lr=3.3e-3,
    embedding_lr=1e-3,
    head_lr=1e-3,
    muon_momentum=0.9,
    muon_momentum_start=0.85,
    muon_momentum_warmup=0,
    muon_weight_decay=0.0,
    muon_ns_steps=5,
    precision="auto",
    compile=True,
    activation_checkpointing=False,
    eval_interval=50,
    eval_batches=20,
    log_interval=5,
    checkpoint_interval=100,
    keep_last=3,
    sample_max_new_tokens=128,
    num_text_samples=3,
    # the six zero-shot tasks as a chat model (+ ARC's letter form), 300 examples each
    eval_tasks="core",
    eval_tasks_interval=250,
    eval_tasks_limit=300,
    eval_data_dir="data/evaluation",
    seed=1337,
)

DEMO_INSTRUCTION = "Write a short story about a dog named Max who lives in a forest."


def main(argv: list[str] | None = None) -> int:
    config = parse_config(CONFIG, sys.argv[1:] if argv is None else argv, __doc__)
    result = train(config, SFTStage)
    if not result.should_report:
        return result.exit_code  # stopped by Ctrl-C/SIGTERM, or not the printing rank
    tokenizer = result.tokenizer
    prompt = tokenizer.prompt([{"role": "user", "content": DEMO_INSTRUCTION}])
    answer = greedy_answer(result.model, tokenizer, prompt, config.sample_max_new_tokens or 64)
    print(f"\n{result.val_summary} after {result.step} steps; saved {result.last_checkpoint}")
    print(f"user: {DEMO_INSTRUCTION}\nassistant: {answer}")
    if result.task_scores:
        print(f"benchmarks (eval_tasks): {result.task_summary}")
    return 0


if __name__ == "__main__":
    run_cli(main)
