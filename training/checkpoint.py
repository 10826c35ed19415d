"""The run folder: atomic checkpoints, retention, resume with checksums, one writer at a time.

    checkpoints/<run>/latest, best, tensorboard/, step_0000100/ (model.safetensors, config.json,
    tokenizer.json: model/checkpoint.py; training_state.pt; SHA256SUMS)

A step folder is written under a temporary name, fsynced, renamed into place, and only then
named by `latest`, so a kill -9 never leaves `latest` on a broken checkpoint. Resume falls back
past one that is unreadable or differs from its SHA256SUMS.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_model as safetensors_load_model

from common.atomic import atomic_directory, atomic_write_text
from common.disk_space import report_full_disk
from common.errors import UserError
from model.checkpoint import (
    CONFIG_FILE,
    LATEST_FILE,
    WEIGHTS_FILE,
    save_model_files,
    verify_checksums,
)
from training.device import Distributed, barrier

STATE_FILE = "training_state.pt"
BEST_FILE = "best"
STEP_PATTERN = re.compile(r"^step_(\d+)$")


def step_dir_name(step: int) -> str:
    return f"step_{step:07d}"


def step_dirs(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete-looking step folders as (step, path), oldest first."""
    if not run_dir.is_dir():
        return []
    matches = ((STEP_PATTERN.match(path.name), path) for path in run_dir.iterdir())
    return sorted((int(match.group(1)), path) for match, path in matches if match and path.is_dir())


def prepare_run_folder(config, run_dir: Path, dist: Distributed) -> None:
    """Refuse to mix two runs in one folder; clear what a killed run left behind."""
    has_checkpoints = (run_dir / LATEST_FILE).exists() or bool(step_dirs(run_dir))
    if config.resume and not has_checkpoints:
        raise UserError(
            f"--resume: no checkpoint in {run_dir} to resume from; drop --resume to "
            "start a new run (with --overwrite to clear that folder)"
        )
    if not config.resume and not config.overwrite and has_checkpoints:
        raise UserError(
            f"{run_dir} already holds a run; pass --resume=true to continue it, "
            "--overwrite=true to start it over, or choose another --run_name"
        )
    init = Path(config.init_from).resolve() if config.init_from else None
    if init and run_dir.resolve() in (init, *init.parents):
        raise UserError(
            f"--init_from={config.init_from} lies inside this run's own folder "
            f"{run_dir}; give the new run another --run_name"
        )
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"{run_dir} is a file; choose another --run_name or --checkpoint_dir")
    if not config.resume and run_dir.exists():  # nothing in it to resume: start clean
        ours = (LATEST_FILE, BEST_FILE, "tensorboard")
        if not all(
            p.name in ours or STEP_PATTERN.match(p.name.split(".")[0]) for p in run_dir.iterdir()
        ):
            raise UserError(
                f"{run_dir} holds files that are not from a training run; choose "
                "another --run_name or --checkpoint_dir"
            )
        if dist.is_main:
            shutil.rmtree(run_dir)
    barrier(dist)  # nobody writes before rank 0 has cleared the folder
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        for path in run_dir.iterdir():  # half-written or half-deleted step folders
            if any(mark in path.name for mark in (".tmp-", ".deleting-", ".old-")):
                shutil.rmtree(path, ignore_errors=True)
    barrier(dist)


def fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(final: Path, model, config_json: dict, tokenizer_path: Path, state: dict):
    """Write the step folder `final` and point its run folder's `latest` at it."""
    run_dir = final.parent
    # report_full_disk inside atomic_directory: it sees the free space before the partial
    # folder is deleted (a torch.save short write says no more than "unexpected pos")
    with atomic_directory(final, overwrite=True) as temp, report_full_disk(run_dir):
        torch.save(state, temp / STATE_FILE)
        save_model_files(model, temp, config_json, tokenizer_path)  # and SHA256SUMS of both
        for path in [*temp.iterdir(), temp]:
            fsync(path)
    fsync(run_dir)  # the rename is durable before `latest` names it
    with report_full_disk(run_dir):
        atomic_write_text(run_dir / LATEST_FILE, final.name + "\n")
    fsync(run_dir)


def prune(run_dir: Path, keep_last: int) -> None:
    """Keep the newest `keep_last` step folders, the one `latest` names, and the best by
    validation loss (among checkpoints whose own weights were evaluated)."""
    dirs = step_dirs(run_dir)
    keep = {step for step, _ in dirs[-keep_last:]}
    losses = {step: validation_loss(path) for step, path in dirs}
    if losses and min(losses.values()) < math.inf:
        best = min(losses, key=lambda step: (losses[step], step))  # ties: the earliest
        keep.add(best)
        atomic_write_text(run_dir / BEST_FILE, step_dir_name(best) + "\n")
    latest = (run_dir / LATEST_FILE).read_text().strip() if (run_dir / LATEST_FILE).exists() else ""
    for step, path in dirs:
        if step not in keep and path.name != latest:
            doomed = path.with_name(f"{path.name}.deleting-{os.getpid()}")
            os.replace(path, doomed)  # a crash while deleting leaves no half step folder
            shutil.rmtree(doomed, ignore_errors=True)


def validation_loss(step_dir: Path) -> float:
    try:
        value = json.loads((step_dir / CONFIG_FILE).read_text())["metrics"].get("val_loss")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return math.inf
    return math.inf if value is None else float(value)


def resume_candidates(run_dir: Path) -> list[Path]:
    """The step folder `latest` names, then older ones, newest first (without a usable
    `latest`: every step folder, newest first)."""
    candidates, newest = [], None
    if (run_dir / LATEST_FILE).is_file():
        name = (run_dir / LATEST_FILE).read_text(errors="replace").strip()
        if match := STEP_PATTERN.match(name):
            candidates, newest = [run_dir / name], int(match.group(1))
    older = [path for step, path in reversed(step_dirs(run_dir)) if newest is None or step < newest]
    return candidates + older


def mismatches(saved: dict, expected: dict) -> list[str]:
    """`section.key` of `expected` whose value differs in the checkpoint's config.json."""
    found = []
    for key, now in expected.items():
        section, _, name = key.rpartition(".")
        before = (saved.get(section) or {}).get(name) if section else saved.get(name)
        if before != now:
            label = name if section in ("train", "run") else key
            found.append(f"{label} (checkpoint {before!r}, now {now!r})")
    return found


def load_checkpoint(
    run_dir: Path, model: torch.nn.Module, expected: dict, announce: bool = True
) -> tuple[Path, dict, dict]:
    """(step folder, config.json, training state) of the newest readable checkpoint, its
    weights loaded into `model`. One that does not match `expected` (the run's model, data and
    batch shape) is a UserError that names each field."""
    candidates = resume_candidates(run_dir)
    for index, step_dir in enumerate(candidates):
        try:
            verify_checksums(step_dir)
            saved = json.loads((step_dir / CONFIG_FILE).read_text())
            if not isinstance(saved, dict) or not isinstance(saved.get("model"), dict):
                raise ValueError("config.json has no model section")
        except (OSError, ValueError, UserError) as error:
            skip(step_dir, error, candidates[index + 1 :], announce)
            continue
        if differences := mismatches(saved, expected):
            raise UserError(
                f"--resume: {step_dir} does not match this run ({'; '.join(differences)}); use "
                "the checkpoint's values, or another --run_name"
            )
        try:
            state = torch.load(step_dir / STATE_FILE, map_location="cpu", weights_only=True)
            safetensors_load_model(model, str(step_dir / WEIGHTS_FILE), strict=True)
        except Exception as error:  # any failure to read these files means: unusable
            skip(step_dir, error, candidates[index + 1 :], announce)
            continue
        return step_dir, saved, state
    raise UserError(
        f"--resume: no readable checkpoint in {run_dir} (tried {len(candidates)}); "
        "start a new run with --overwrite"
    )


def skip(step_dir: Path, error: Exception, rest: list[Path], announce: bool) -> None:
    if announce:
        reason = (str(error).strip().splitlines() or [repr(error)])[0][:200]
        following = f"falling back to {rest[0].name}" if rest else "no older checkpoint left"
        print(
            f"warning: checkpoint {step_dir} is unreadable ({reason}); {following}", file=sys.stderr
        )


def capture_rng_state(device: torch.device) -> dict:
    """torch's RNG state and the training GPU's: only `device`'s, since asking every GPU's
    would make rank 0 of a torchrun job create a CUDA context on each of them."""
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
