#!/usr/bin/env bash
# The whole pipeline on the embedded sample data, on CPU, in minutes:
# download -> tokenizer -> tokenize -> count -> pre-train -> SFT -> DPO -> one chat reply
# -> the sample world's multiple-choice scores.
#   bash scripts/sample_pipeline.sh
# Outputs: data/sample/ (datasets, tokenizer, shards) and checkpoints/sample_*/ (runs).
# Run it again to start over: every step replaces its own earlier output. Each stage's header
# says how many seconds the run has taken so far.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
PY=.venv/bin/python
S=data/sample
# A model this small runs fastest on one intra-op thread; more threads spin-wait and slow it
# down several times over whenever another process shares the cores.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
stage() { echo "== $1 (${SECONDS} s)"; }

stage "1. sample corpora (one world for pre-training, SFT, DPO and the test)"
$PY -m dataset.pre_training.download_dataset --source sample --output-dir $S/pre_training/raw \
    --sample-size-mb 4 --overwrite
$PY -m dataset.post_training.sft.download_dataset --source sample \
    --output-dir $S/post_training/sft/raw --sample-size 2000 --overwrite
$PY -m dataset.post_training.dpo.download_dataset --source sample \
    --output-dir $S/post_training/dpo/raw --sample-size 1000 --overwrite
$PY -m dataset.evaluation.download_dataset --tasks sample_world --output-dir $S/evaluation --overwrite

stage "2. tokenizer"
$PY -m tokenizer.train --dataset-dir $S/pre_training/raw --output-path $S/tokenizer/tokenizer.json \
    --vocab-size 2048 --overwrite

stage "3. tokenize and count"
$PY -m tokenizer.tokenize_dataset --dataset-dir $S/pre_training/raw \
    --tokenizer-path $S/tokenizer/tokenizer.json --output-dir $S/pre_training/tokenized --overwrite
$PY -m tokenizer.tokenize_dataset --dataset-dir $S/post_training/sft/raw \
    --tokenizer-path $S/tokenizer/tokenizer.json --output-dir $S/post_training/sft/tokenized \
    --stage sft --max-length 257 --overwrite
$PY -m tokenizer.tokenize_dataset --dataset-dir $S/post_training/dpo/raw \
    --tokenizer-path $S/tokenizer/tokenizer.json --output-dir $S/post_training/dpo/tokenized \
    --stage dpo --max-length 256 --overwrite
$PY -m tokenizer.count_tokenized_data --tokenized-dir $S/pre_training/tokenized
$PY -m tokenizer.inspect_tokenized_data --raw-dataset-dir $S/pre_training/raw \
    --tokenized-dataset-dir $S/pre_training/tokenized --tokenizer-path $S/tokenizer/tokenizer.json \
    --index 0 --num 1 --max-tokens 40 --max-chars 300 < /dev/null

# Each run scores the sample world's multiple-choice test (all 280 items) once, at its last
# step (TensorBoard: eval/sample_world/acc; the run's closing summary), and measures the
# validation loss there too.
RUN="--compile=false --eval_batches=4 --eval_tasks=sample_world --eval_tasks_limit=0"
RUN="$RUN --eval_data_dir=$S/evaluation --tokenizer_path=$S/tokenizer/tokenizer.json --overwrite"

stage "4. pre-training (debug-size model, 1M tokens)"
$PY pre_training.py --data_dir=$S/pre_training/tokenized --run_name=sample_pre_training \
    --model_preset=debug --block_size=256 --micro_batch_size=16 --tokens_per_step=8192 \
    --max_steps=120 --eval_interval=120 --checkpoint_interval=120 --eval_tasks_interval=120 $RUN

stage "5. SFT (the requested name and home are copied from the prompt after ~100 steps)"
$PY post_training_sft.py --data_dir=$S/post_training/sft/tokenized \
    --init_from=checkpoints/sample_pre_training --run_name=sample_sft --block_size=256 \
    --micro_batch_size=16 --tokens_per_step=4096 --max_steps=150 --warmup_steps=10 \
    --learning_rate=3e-3 --min_lr=3e-4 --muon_lr=0.02 --embedding_lr=6e-3 --head_lr=6e-3 \
    --eval_interval=150 --checkpoint_interval=150 --eval_tasks_interval=150 $RUN

stage "6. DPO"
$PY post_training_dpo.py --data_dir=$S/post_training/dpo/tokenized \
    --init_from=checkpoints/sample_sft --run_name=sample_dpo --block_size=256 \
    --micro_batch_size=8 --pairs_per_step=16 --max_steps=60 --warmup_steps=5 \
    --learning_rate=3e-4 --min_lr=3e-5 --rpo_alpha=1.0 --muon_lr=2e-3 --embedding_lr=6e-4 \
    --head_lr=6e-4 --eval_interval=60 --checkpoint_interval=60 --eval_tasks_interval=60 $RUN

stage "7. chat"
$PY -m model.generate --checkpoint checkpoints/sample_dpo --chat --temperature 0 \
    --max-new-tokens 120 <<'EOF'
Write a short story about a dog named Max who lives in a forest.
EOF

stage "8. evaluation: the sample world's multiple-choice test (4 choices: chance is 25%)"
$PY -m evaluation --checkpoint checkpoints/sample_pre_training --checkpoint checkpoints/sample_sft \
    --checkpoint checkpoints/sample_dpo --tasks sample_world --data-dir $S/evaluation --quiet
echo "Done in ${SECONDS} s. TensorBoard: .venv/bin/tensorboard --logdir checkpoints"
