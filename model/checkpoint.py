"""A model's files in a checkpoint folder: find them, load them (checked against their
checksums), write them.

    checkpoints/<run>/latest               the name of the newest step folder
    checkpoints/<run>/step_0000100/        model.safetensors (tied matrices stored once),
                                           config.json ({"model": ModelConfig fields, ...}),
                                           tokenizer.json (+ an imported model's
                                           tokenizer_config.json, chat_template.jinja),
                                           SHA256SUMS (+ training's files: training/checkpoint.py)

`load_model` takes a run folder (follows `latest`) or a step folder; a file that differs from
its SHA256SUMS line, or a missing SHA256SUMS, is a one-line error.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model as safetensors_load_model
from safetensors.torch import save_model as safetensors_save_model

from common.atomic import atomic_write_text, readable_as_umask_allows, sha256_file
from common.errors import UserError
from model.config import ModelConfig
from model.transformer import Transformer
from tokenizer.encoding import CONFIG_FILE as TOKENIZER_CONFIG_FILE
from tokenizer.encoding import TEMPLATE_FILE

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
LATEST_FILE = "latest"
SUMS_FILE = "SHA256SUMS"


def verify_checksums(folder: Path, names: list[str] | None = None) -> None:
    """UserError if folder/SHA256SUMS is missing or unreadable, or names the first file of
    `names` (default: every file it lists) whose sha256 differs from its line."""
    path = folder / SUMS_FILE
    if not path.is_file():
        raise UserError(f"{path} is missing, so {folder} cannot be checked for damage")
    sums = {}
    try:
        for line in path.read_text().splitlines():
            digest, name = line.split("  ", 1)
            sums[name] = digest
    except (OSError, UnicodeDecodeError, ValueError):
        raise UserError(f"{path} is unreadable; the checkpoint is damaged") from None
    for name in sums if names is None else names:
        if name in sums and (folder / name).is_file() and sha256_file(folder / name) != sums[name]:
            raise UserError(
                f"{folder / name} does not match its checksum in {path}: the file is damaged (a "
                "bad copy, a disk error, or it was edited); use another checkpoint"
            )


def write_checksums(folder: Path) -> None:
    """folder/SHA256SUMS: the sha256 of every file in it, as `sha256sum` writes them."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name != SUMS_FILE)
    atomic_write_text(folder / SUMS_FILE, "".join(f"{sha256_file(p)}  {p.name}\n" for p in files))


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The plain Transformer inside DDP (`.module`) and torch.compile (`._orig_mod`) wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def resolve_checkpoint(path: str | Path) -> Path:
    """A step folder for `path`: a run folder follows its `latest` file; a step folder is itself."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint {path} not found; pass a run folder like checkpoints/<run>")
    if (path / LATEST_FILE).is_file():
        name = (path / LATEST_FILE).read_text().strip()
        step_dir = path / name
        if not name or not (step_dir / CONFIG_FILE).is_file():
            raise UserError(
                f"{path / LATEST_FILE} points to {name!r}, which is not a checkpoint folder; "
                "pass a step folder (checkpoints/<run>/step_...) instead"
            )
        return step_dir
    if (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file():
        return path
    raise UserError(
        f"{path} is neither a run folder (with a `latest` file) nor a step folder "
        f"(with {CONFIG_FILE} and {WEIGHTS_FILE})"
    )


def save_model_files(
    model: torch.nn.Module,
    step_dir: str | Path,
    config_dict: dict,
    tokenizer_path: str | Path | None = None,
) -> None:
    """Write model.safetensors, config.json (with "model" set from the model), tokenizer.json
    and the files that describe it beside it (tokenizer/encoding.py), then SHA256SUMS of every
    file in the folder (a caller's own files, written before, included).

    `step_dir` should be a temporary folder the caller renames into place when all files are in.
    """
    step_dir = Path(step_dir)
    step_dir.mkdir(parents=True, exist_ok=True)
    model = unwrap_model(model)
    # save_model (not save_file) drops the duplicate name of tied weights and never writes
    # compile's `_orig_mod.` prefixes (we unwrapped above).
    safetensors_save_model(model, str(step_dir / WEIGHTS_FILE))
    readable_as_umask_allows(step_dir / WEIGHTS_FILE)
    config = {**config_dict, "model": model.config.to_dict()}
    atomic_write_text(step_dir / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
    if tokenizer_path is not None:
        shutil.copyfile(tokenizer_path, step_dir / TOKENIZER_FILE)
        for name in (TOKENIZER_CONFIG_FILE, TEMPLATE_FILE):
            if Path(tokenizer_path).with_name(name).is_file():
                shutil.copyfile(Path(tokenizer_path).with_name(name), step_dir / name)
    write_checksums(step_dir)


def read_checkpoint_config(step_dir: Path) -> dict:
    verify_checksums(step_dir, [CONFIG_FILE])
    config_path = step_dir / CONFIG_FILE
    try:
        config = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{config_path} is unreadable or not JSON ({error})") from None
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise UserError(f'{config_path} has no "model" section; is it a model checkpoint?')
    return config


def load_model(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[Transformer, dict, Path | None]:
    """(model in eval mode, the checkpoint's config dict, its tokenizer.json path or None)."""
    step_dir = resolve_checkpoint(path)
    config = read_checkpoint_config(step_dir)
    model_config = ModelConfig.from_dict(config["model"])
    weights = step_dir / WEIGHTS_FILE
    if not weights.is_file():
        raise UserError(f"{weights} is missing; the checkpoint is incomplete")
    verify_checksums(step_dir, [WEIGHTS_FILE, TOKENIZER_FILE, TOKENIZER_CONFIG_FILE, TEMPLATE_FILE])
    model = Transformer(model_config).to(device)
    try:
        # strict: every tensor of the model must be in the file and nothing else.
        safetensors_load_model(model, str(weights), strict=True, device=str(device))
    except (SafetensorError, RuntimeError, OSError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise UserError(
            f"{weights} is corrupt or does not match {step_dir / CONFIG_FILE} ({first_line[:300]})"
        ) from None
    model.eval()
    tokenizer_path = step_dir / TOKENIZER_FILE
    return model, config, tokenizer_path if tokenizer_path.is_file() else None
