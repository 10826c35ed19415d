"""Training checkpoints: atomic writes, retention, and resume with fallback past broken ones.

    checkpoints/<run>/latest          text: name of the newest complete step folder
    checkpoints/<run>/best            text: name of the kept step folder with the lowest val loss
    checkpoints/<run>/step_0000100/   model.safetensors, config.json, tokenizer.json
                                      (model/checkpoint.save_model_files) + training_state.pt
                                      + SHA256SUMS (the sha256 of each, common/checksums.py)
    checkpoints/<run>/tensorboard/

Why a kill -9 can never leave `latest` on a broken checkpoint: a step folder is written under a
temporary name (`step_0000100.tmp-<pid>`), every file is fsynced, then it is renamed into
place (one atomic rename) and its parent fsynced; only then is `latest` replaced (write temp
file + fsync + rename). A crash before the rename leaves a `.tmp-` folder that no reader looks
at (the next run deletes it); a crash after it leaves `latest` on the previous, complete step.
Old folders are first renamed to `.deleting-<pid>` and then removed, for the same reason.

A full disk while saving is a one-line error ("no space left on the disk at ...") that leaves
the previous checkpoint as it was.

Resume reads `latest`; if that checkpoint cannot be read or a file differs from its recorded
checksum (a disk error, a file truncated or edited by hand...), it says so and falls back to
the newest older step folder that loads.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_model as safetensors_load_model

from common.atomic import atomic_directory, atomic_write_text
from common.checksums import ChecksumMismatch, verify_checksums, write_checksums
from common.disk_space import report_full_disk
from common.errors import UserError
from model.checkpoint import CONFIG_FILE, LATEST_FILE, WEIGHTS_FILE, save_model_files

STATE_FILE = "training_state.pt"
BEST_FILE = "best"
STEP_PATTERN = re.compile(r"^step_(\d+)$")


def step_dir_name(step: int) -> str:
    return f"step_{step:07d}"


def step_dirs(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete-looking step folders as (step, path), oldest first (temp folders excluded)."""
    if not run_dir.is_dir():
        return []
    found = []
    for path in run_dir.iterdir():
        match = STEP_PATTERN.match(path.name)
        if match and path.is_dir():
            found.append((int(match.group(1)), path))
    return sorted(found)


def has_checkpoints(run_dir: Path) -> bool:
    return (run_dir / LATEST_FILE).exists() or bool(step_dirs(run_dir))


def looks_like_run_folder(run_dir: Path) -> bool:
    """True when every entry is one a run writes (so deleting the folder loses no user file)."""
    known = {LATEST_FILE, BEST_FILE, "tensorboard"}
    return all(
        path.name in known or STEP_PATTERN.match(path.name.split(".")[0]) or ".tmp-" in path.name
        for path in run_dir.iterdir()
    )


def remove_leftovers(run_dir: Path) -> None:
    """Delete folders a killed run left behind (half-written or half-deleted step folders)."""
    if not run_dir.is_dir():
        return
    for path in run_dir.iterdir():
        if ".tmp-" in path.name or ".deleting-" in path.name or ".old-" in path.name:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: torch.nn.Module,
    config_json: dict,
    tokenizer_path: Path,
    training_state: dict,
    keep_last: int,
) -> Path:
    """Write step folder `step`, point `latest` at it, prune old ones; returns its path."""
    final = run_dir / step_dir_name(step)
    # report_full_disk inside atomic_directory: it looks at the free space before the partial
    # folder is deleted (a torch.save short write says no more than "unexpected pos")
    with atomic_directory(final, overwrite=True) as temp, report_full_disk(run_dir):
        save_model_files(model, temp, config_json, tokenizer_path)
        torch.save(training_state, temp / STATE_FILE)
        write_checksums(temp)
        for path in temp.iterdir():
            _fsync_path(path)
        _fsync_path(temp)
    _fsync_path(run_dir)  # make the rename itself durable before `latest` names it
    with report_full_disk(run_dir):
        atomic_write_text(run_dir / LATEST_FILE, final.name + "\n")
    _fsync_path(run_dir)
    prune(run_dir, keep_last)
    return final


def _val_loss(step_dir: Path) -> float:
    try:
        value = json.loads((step_dir / CONFIG_FILE).read_text())["metrics"].get("val_loss")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return float("inf")
    return float("inf") if value is None else float(value)


def prune(run_dir: Path, keep_last: int) -> None:
    """Keep the newest `keep_last` step folders and the best by validation loss."""
    dirs = step_dirs(run_dir)
    if not dirs:
        return
    losses = {step: _val_loss(path) for step, path in dirs}
    best_step = min(losses, key=lambda s: (losses[s], s))  # ties: the earliest
    keep = {step for step, _ in dirs[-keep_last:]}
    if losses[best_step] != float("inf"):
        keep.add(best_step)
        atomic_write_text(run_dir / BEST_FILE, step_dir_name(best_step) + "\n")
    latest = (run_dir / LATEST_FILE).read_text().strip() if (run_dir / LATEST_FILE).exists() else ""
    for step, path in dirs:
        if step in keep or path.name == latest:
            continue
        doomed = path.with_name(f"{path.name}.deleting-{os.getpid()}")
        os.replace(path, doomed)
        shutil.rmtree(doomed, ignore_errors=True)


def load_training_state(step_dir: Path) -> dict:
    return torch.load(step_dir / STATE_FILE, map_location="cpu", weights_only=True)


def resume_candidates(run_dir: Path) -> list[Path]:
    """Step folders to try in order: the one `latest` names, then older ones, newest first.

    (Without a usable `latest` file: every step folder, newest first.)
    """
    candidates, newest_allowed = [], None
    latest_file = run_dir / LATEST_FILE
    if latest_file.is_file():
        name = latest_file.read_text(errors="replace").strip()
        match = STEP_PATTERN.match(name)
        if match:
            candidates.append(run_dir / name)
            newest_allowed = int(match.group(1))
    for step, path in reversed(step_dirs(run_dir)):
        if path not in candidates and (newest_allowed is None or step < newest_allowed):
            candidates.append(path)
    return candidates


def load_for_resume(
    run_dir: Path,
    model: torch.nn.Module,
    check_compatible: Callable[[dict, Path], None],
    announce: bool = True,
) -> tuple[Path, dict, dict]:
    """Load the newest readable checkpoint of `run_dir` into `model`.

    Returns (step folder, its config.json dict, its training state). `check_compatible(config,
    path)` raises UserError when the checkpoint cannot continue under the current config; that
    error is final (no fallback). Unreadable checkpoints are skipped with a message.
    """
    candidates = resume_candidates(run_dir)
    if not candidates:
        raise UserError(
            f"--resume: no checkpoint in {run_dir} to resume from; drop --resume to start a "
            "new run (with --overwrite to clear that folder)"
        )
    for index, step_dir in enumerate(candidates):
        try:
            verify_checksums(step_dir)
            config = json.loads((step_dir / CONFIG_FILE).read_text())
            if not isinstance(config, dict) or "model" not in config or "train" not in config:
                raise ValueError("config.json lacks the model or train section")
        except (OSError, ValueError, ChecksumMismatch) as error:
            _skip(step_dir, error, candidates[index + 1 :], announce)
            continue
        check_compatible(config, step_dir)
        try:
            state = load_training_state(step_dir)
            safetensors_load_model(model, str(step_dir / WEIGHTS_FILE), strict=True)
        except Exception as error:  # any failure to read these files means: unusable
            _skip(step_dir, error, candidates[index + 1 :], announce)
            continue
        return step_dir, config, state
    raise UserError(
        f"--resume: no readable checkpoint in {run_dir} (tried {len(candidates)}); "
        "start a new run with --overwrite"
    )


def _skip(step_dir: Path, error: Exception, rest: list[Path], announce: bool) -> None:
    if announce:
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else repr(error)
        following = f"falling back to {rest[0].name}" if rest else "no older checkpoint left"
        print(
            f"warning: checkpoint {step_dir} is unreadable ({reason}); {following}", file=sys.stderr
        )


def capture_rng_state(device: torch.device) -> dict:
    """Python, NumPy, torch (and the training GPU's) RNG states, as plain types and tensors
    that the weights-only checkpoint loader accepts. Only `device`'s CUDA state: asking for
    every GPU's would create a CUDA context on each visible GPU (under torchrun, rank 0 would
    take memory on all of them)."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.copy()), position, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng_state(state: dict, device: torch.device) -> None:
    random.setstate(_to_tuple(state["python"]))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy(), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and isinstance(state.get("cuda"), torch.Tensor):
        torch.cuda.set_rng_state(state["cuda"], device)


def _to_tuple(value):
    return tuple(_to_tuple(v) for v in value) if isinstance(value, list | tuple) else value
