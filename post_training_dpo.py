r"""Direct Preference Optimization (DPO): prefer the chosen answer over the rejected one.

Starts from an SFT checkpoint (`--init_from`); the same weights, frozen, are the reference the
DPO loss measures against (`--reference=live` keeps a copy in memory, `--reference=precomputed`
scores every pair once into the data folder instead). Chosen and rejected replies go through
the model in one concatenated batch. Losses: sigmoid (DPO; with --label_smoothing > 0 the
conservative cDPO), robust, ipo; --rpo_alpha > 0 adds the chosen reply's NLL (RPO), which keeps
DPO from lowering the likelihood of good answers along with bad ones. TensorBoard shows
train/loss, rewards/chosen, rewards/rejected, rewards/margins, rewards/accuracies, logps/chosen,
logps/rejected, their val/ counterparts on the test split, and answers to held-out prompts.
Every engine feature is there: precision, accumulation, atomic checkpoints, exact --resume,
torchrun DDP. `--help` lists every option; the constants a user edits are the CONFIG below.

    # the real run (one L4; after post_training_sft.py and the README's DPO data steps)
    python3 post_training_dpo.py
    tensorboard --logdir checkpoints
    python3 post_training_dpo.py --reference=precomputed       # less GPU memory
    python3 post_training_dpo.py --loss_type=ipo --beta=0.5
    python3 post_training_dpo.py --resume=true                 # continue after a stop
    torchrun --nproc_per_node=4 post_training_dpo.py           # several GPUs
    python3 -m model.generate --checkpoint checkpoints/dpo --chat

Tiny CPU example (two minutes; after the tiny SFT example in post_training_sft.py):
    python3 -m dataset.post_training.dpo.download_dataset \
        --output-dir data/sample/post_training/dpo/raw \
        --source sample --sample-size 1000
    python3 -m tokenizer.tokenize_dataset --dataset-dir data/sample/post_training/dpo/raw \
        --tokenizer-path data/sample/tokenizer/tokenizer.json \
        --output-dir data/sample/post_training/dpo/tokenized \
        --stage dpo --max-length 129
    python3 post_training_dpo.py --data_dir=data/sample/post_training/dpo/tokenized \
        --tokenizer_path=data/sample/tokenizer/tokenizer.json --init_from=checkpoints/sample_sft \
        --run_name=sample_dpo --block_size=128 --micro_batch_size=8 --pairs_per_step=8 \
        --max_steps=120 --warmup_steps=5 --learning_rate=3e-4 --min_lr=3e-5 --rpo_alpha=1.0 \
        --muon_lr=2e-3 --embedding_lr=6e-4 --head_lr=6e-4 \
        --eval_interval=60 --eval_batches=4 --checkpoint_interval=60
At the end it prints the held-out reward accuracy and the model's answer to a held-out prompt.
"""

import sys

from common.errors import run_cli
from training.config import parse_config
from training.dpo_stage import DPOConfig, DPOStage
from training.sft_stage import greedy_answer
from training.trainer import train

# The 170m SFT model on one 24 GB L4: UltraFeedback (~61k pairs), 64 pairs per step
# (8 pairs = 16 rows of <= 1024 tokens per forward pass), ~one epoch.
CONFIG = DPOConfig(
    run_name="dpo",
    checkpoint_dir="checkpoints",
    data_dir="data/post_training/dpo/tokenized",
    tokenizer_path="data/tokenizer/tokenizer.json",
    init_from="checkpoints/sft",
    eval_split="test",
    beta=0.1,
    loss_type="sigmoid",
    label_smoothing=0.0,
    rpo_alpha=0.0,  # plain DPO; 1.0 (the RPO paper's) kept the sample model's answers intact
    reference="live",
    recompute_reference=False,
    block_size=1024,
    micro_batch_size=8,  # pairs per forward pass (2 x 8 rows)
    pairs_per_step=64,  # sets tokens_per_step = 64 x block_size
    tokens_per_step=0,
    max_steps=950,
    learning_rate=5e-6,  # DPO moves little: ~1/20 of SFT's (norm gains; all with adamw)
    min_lr=5e-7,
    warmup_steps=50,
    schedule="cosine",
    decay_fraction=0.2,
    weight_decay=0.0,
    beta1=0.9,
    beta2=0.95,
    grad_clip=1.0,
    # Muon, as pre-training, at its rates x 1/120 (5e-6 / AdamW's pre-training 6e-4)
    optimizer="muon",
    muon_lr=1.7e-4,
    embedding_lr=5e-5,
    head_lr=5e-5,
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


def main(argv: list[str] | None = None) -> int:
    config = parse_config(CONFIG, sys.argv[1:] if argv is None else argv, __doc__)
    result = train(config, DPOStage)
    if not result.should_report:
        return result.exit_code  # stopped by Ctrl-C/SIGTERM, or not the printing rank
    tokenizer, held_out = result.tokenizer, result.val_metrics  # the evaluation of the last step
    print(f"\nafter {result.step} steps ({result.last_checkpoint})", end="")
    if held_out:  # (none when --resume found the run already finished)
        accuracy, margin = held_out["rewards/accuracies"], held_out["rewards/margins"]
        print(f", on {config.eval_split}: loss {held_out['loss']:.4f}, ", end="")
        print(f"reward accuracy {accuracy:.3f}, reward margin {margin:.4f}", end="")
    print()
    prompt = result.stage.eval_prompt(0)
    answer = greedy_answer(result.model, tokenizer, prompt, config.sample_max_new_tokens or 64)
    print(f"prompt: {tokenizer.decode(prompt, skip_special_tokens=False)}\nanswer: {answer}")
    if result.task_scores:
        print(f"benchmarks (eval_tasks): {result.task_summary}")
    return 0


if __name__ == "__main__":
    run_cli(main)
