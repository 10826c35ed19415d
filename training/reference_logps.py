"""Reference log-probs for DPO, computed once and stored next to the tokenized pairs.

DPO compares the policy with a frozen reference model. Keeping that reference in memory costs a
second copy of the weights and a second forward pass per step; its outputs never change, so
`--reference=precomputed` scores every pair once before training and stores, per split:

    <data_dir>/<split>/reference_logps.bin    float32 [num_pairs, 2]: summed log-prob of the
                                              chosen and the rejected reply (NaN: pair skipped)
    <data_dir>/<split>/reference_logps.json   which reference made them: the weights' sha256,
                                              checkpoint step, block_size and precision

Values made by another checkpoint, another block_size (replies are cut to the block) or another
precision are refused with a UserError; `--recompute_reference` replaces them. The .bin is
written first and the .json last, each atomically, so an interrupted computation leaves no
file that looks finished.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from common.atomic import atomic_write_bytes, atomic_write_text, sha256_file
from common.errors import UserError
from model.checkpoint import WEIGHTS_FILE, read_checkpoint_config, resolve_checkpoint
from training.dpo_data import PreferencePairs, build_batch
from training.dpo_loss import sequence_logps

VALUES_FILE = "reference_logps.bin"
IDENTITY_FILE = "reference_logps.json"


def reference_identity(init_from: str | Path, block_size: int, precision: str) -> dict:
    """What makes stored reference values valid for a run: same weights, cut and precision."""
    step_dir = resolve_checkpoint(init_from)
    config = read_checkpoint_config(step_dir)
    return {
        "checkpoint": str(step_dir),
        "weights_sha256": sha256_file(step_dir / WEIGHTS_FILE),
        "step": config.get("step"),
        "block_size": block_size,
        "precision": precision,
    }


@torch.no_grad()
def compute_reference_logps(
    model: torch.nn.Module,
    pairs: PreferencePairs,
    pairs_per_batch: int,
    device: torch.device,
    autocast: Callable[[], contextlib.AbstractContextManager],
    description: str = "reference log-probs",
) -> np.ndarray:
    """float32 [num_pairs_in_split, 2] (chosen, rejected) summed reply log-probs; NaN = skipped."""
    values = np.full((len(pairs.split.pair_offsets), 2), np.nan, np.float32)
    model.eval()
    for first in tqdm(range(0, len(pairs), pairs_per_batch), desc=description, unit="batch"):
        ks = np.arange(first, min(first + pairs_per_batch, len(pairs)))
        inputs, targets = build_batch(pairs, ks)
        with autocast():  # the precision the training forward passes use
            logits = model(inputs.to(device))  # [2B, T, V_pad]
        sums, _ = sequence_logps(logits, targets.to(device))  # [2B]
        sums = sums.float().cpu().numpy()
        values[pairs.pair_index[ks], 0] = sums[: len(ks)]
        values[pairs.pair_index[ks], 1] = sums[len(ks) :]
    return values


def write_reference_logps(split_dir: Path, values: np.ndarray, identity: dict) -> None:
    (split_dir / IDENTITY_FILE).unlink(missing_ok=True)  # invalid until the new values are in
    atomic_write_bytes(split_dir / VALUES_FILE, values.astype("<f4").tobytes())
    record = {**identity, "num_pairs": int(values.shape[0])}
    atomic_write_text(split_dir / IDENTITY_FILE, json.dumps(record, indent=2) + "\n")


def read_reference_logps(split_dir: Path, identity: dict, num_pairs: int) -> np.ndarray | None:
    """The stored values, None when there are none, UserError when they belong to another run."""
    identity_path, values_path = split_dir / IDENTITY_FILE, split_dir / VALUES_FILE
    if not identity_path.is_file():
        return None
    try:
        stored = json.loads(identity_path.read_text())
    except json.JSONDecodeError:
        return None  # treated as missing: recomputed
    for key in ("weights_sha256", "block_size", "precision"):
        if stored.get(key) != identity[key]:
            raise UserError(
                f"{values_path} was computed with {key}={stored.get(key)!r} (checkpoint "
                f"{stored.get('checkpoint')}), but this run's reference has {identity[key]!r}; "
                "pass --recompute_reference to replace it"
            )
    expected_bytes = num_pairs * 2 * 4
    if stored.get("num_pairs") != num_pairs or not values_path.is_file():
        return None
    if values_path.stat().st_size != expected_bytes:
        return None
    return np.fromfile(values_path, dtype="<f4").reshape(num_pairs, 2)
