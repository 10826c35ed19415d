#!/usr/bin/env bash
# The whole pipeline on the embedded sample data, on CPU, in minutes:
# download -> tokenizer -> tokenize -> count -> pre-train -> SFT -> DPO -> one chat reply
# -> the sample world's multiple-choice scores.
#   bash scripts/sample_pipeline.sh
# Outputs: data/sample/ (datasets, tokenizer, shards) and checkpoints/sample_*/ (runs).
# Run it again to start over: every step replaces its own earlier output.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
PY=.venv/bin/python
S=data/sample
# A model this small runs fastest on one intra-op thread; more threads spin-wait and slow it
# down several times over whenever another process shares the cores.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

echo "== 1. sample corpora (the same world for pre-training, SFT and DPO)"
$PY -m dataset.pre_training.download_dataset --source sample --output-dir $S/pre_training/raw \
    --overwrite
$PY -m dataset.post_training.sft.download_dataset --source sample \
    --output-dir $S/post_training/sft/raw --sample-size 4000 --overwrite
$PY -m dataset.post_training.dpo.download_dataset --source sample \
    --output-dir $S/post_training/dpo/raw --sample-size 2000 --overwrite
$PY -m dataset.evaluation.download_dataset --tasks sample_world --output-dir $S/evaluation --overwrite

echo "== 2. tokenizer"
$PY -m tokenizer.train --dataset-dir $S/pre_training/raw --output-path $S/tokenizer/tokenizer.json \
    --vocab-size 2048 --overwrite

echo "== 3. tokenize and count"
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

# In-run benchmark scores: the sample world's multiple-choice test (all 280 items), which needs
# no download (TensorBoard: eval/sample_world/acc; each run's closing summary).
SCORES="--eval_tasks=sample_world --eval_tasks_limit=0 --eval_data_dir=$S/evaluation"

echo "== 4. pre-training (debug-size model)"
$PY pre_training.py --data_dir=$S/pre_training/tokenized --tokenizer_path=$S/tokenizer/tokenizer.json \
    --run_name=sample_pre_training --overwrite --model_preset=debug --block_size=256 \
    --micro_batch_size=16 --tokens_per_step=8192 --max_steps=250 --eval_interval=100 \
    --eval_batches=4 --checkpoint_interval=200 --compile=false $SCORES --eval_tasks_interval=125

echo "== 5. SFT (copying the requested name and home from the prompt appears between 300 and 600 steps)"
$PY post_training_sft.py --data_dir=$S/post_training/sft/tokenized \
    --tokenizer_path=$S/tokenizer/tokenizer.json --init_from=checkpoints/sample_pre_training \
    --run_name=sample_sft --overwrite --block_size=256 --micro_batch_size=16 \
    --tokens_per_step=4096 --max_steps=600 --warmup_steps=10 --learning_rate=3e-3 --min_lr=3e-4 \
    --muon_lr=0.02 --embedding_lr=6e-3 --head_lr=6e-3 \
    --eval_interval=200 --eval_batches=4 --checkpoint_interval=600 --compile=false \
    $SCORES --eval_tasks_interval=300

echo "== 6. DPO"
$PY post_training_dpo.py --data_dir=$S/post_training/dpo/tokenized \
    --tokenizer_path=$S/tokenizer/tokenizer.json --init_from=checkpoints/sample_sft \
    --run_name=sample_dpo --overwrite --block_size=256 --micro_batch_size=8 --pairs_per_step=16 \
    --max_steps=120 --warmup_steps=5 --learning_rate=3e-4 --min_lr=3e-5 --rpo_alpha=1.0 \
    --muon_lr=2e-3 --embedding_lr=6e-4 --head_lr=6e-4 \
    --eval_interval=60 --eval_batches=4 --checkpoint_interval=120 --compile=false \
    $SCORES --eval_tasks_interval=60

echo "== 7. chat"
$PY -m model.generate --checkpoint checkpoints/sample_dpo --chat --temperature 0 \
    --max-new-tokens 120 <<'EOF'
Write a short story about a dog named Max who lives in a forest.
EOF

echo "== 8. evaluation: the sample world's multiple-choice test (4 choices: chance is 25%)"
$PY -m evaluation --checkpoint checkpoints/sample_pre_training --checkpoint checkpoints/sample_sft \
    --checkpoint checkpoints/sample_dpo --tasks sample_world --data-dir $S/evaluation --quiet
echo "Done. TensorBoard: .venv/bin/tensorboard --logdir checkpoints"
