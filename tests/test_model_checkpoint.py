"""model/checkpoint.py: save/load round trips, path resolution, and clear errors."""

import json

import pytest
import torch
from model_fixtures import build_checkpoint, build_tokenizer
from safetensors import safe_open

from common.errors import UserError
from model.checkpoint import load_model, resolve_checkpoint, save_model_files, write_checksums
from model.config import from_preset
from model.transformer import Transformer


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory):
    return build_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer.json")


@pytest.mark.parametrize("tie", [True, False])
def test_round_trip_keeps_weights_config_and_tying(tmp_path, tokenizer_path, tie):
    model, run = build_checkpoint(tmp_path / "run", tokenizer_path, tie_embeddings=tie)
    loaded, config, tok = load_model(run)
    assert loaded.config == model.config
    assert config["stage"] == "pre_training" and config["model"] == model.config.to_dict()
    assert tok == run / "step_0000001" / "tokenizer.json"
    for (name, want), got in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(want, got), name
    assert (loaded.lm_head.weight is loaded.embed_tokens.weight) == tie
    assert not loaded.training
    idx = torch.randint(0, 300, (1, 10))
    with torch.no_grad():
        torch.testing.assert_close(loaded(idx), model(idx), rtol=0, atol=0)


def test_compiled_model_is_saved_without_orig_mod_prefix(tmp_path):
    model = Transformer(from_preset("debug"))
    save_model_files(torch.compile(model), tmp_path / "step", {"stage": "sft"})
    with safe_open(str(tmp_path / "step" / "model.safetensors"), "pt") as file:
        keys = list(file.keys())
    assert keys and not any("_orig_mod" in key for key in keys)
    assert "layers.0.attention.q_proj.weight" in keys
    loaded, _, tok = load_model(tmp_path / "step")
    assert tok is None and loaded.config == model.config


def test_resolve_follows_latest_and_accepts_step_dirs(tmp_path, tokenizer_path):
    _, run = build_checkpoint(tmp_path / "run", tokenizer_path)
    assert resolve_checkpoint(run) == run / "step_0000001"
    assert resolve_checkpoint(run / "step_0000001") == run / "step_0000001"


def test_missing_and_broken_checkpoints_give_one_line_errors(tmp_path, tokenizer_path):
    with pytest.raises(UserError, match="not found"):
        resolve_checkpoint(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="neither a run folder"):
        resolve_checkpoint(tmp_path / "empty")
    _, run = build_checkpoint(tmp_path / "run", tokenizer_path)
    (run / "latest").write_text("step_0000099\n")
    with pytest.raises(UserError, match="points to 'step_0000099'"):
        load_model(run)


def test_corrupt_weights_are_reported(tmp_path, tokenizer_path):
    _, run = build_checkpoint(tmp_path / "run", tokenizer_path)
    weights = run / "step_0000001" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    write_checksums(weights.parent)  # past the checksum, to the loader's own check
    with pytest.raises(UserError, match="corrupt or does not match") as error:
        load_model(run)
    assert "\n" not in str(error.value)


def test_weights_that_do_not_match_the_config_are_reported(tmp_path, tokenizer_path):
    """strict loading: a config with one more layer than the weights must not load silently."""
    _, run = build_checkpoint(tmp_path / "run", tokenizer_path)
    config_path = run / "step_0000001" / "config.json"
    config = json.loads(config_path.read_text())
    config["model"]["n_layer"] += 1
    config_path.write_text(json.dumps(config))
    write_checksums(config_path.parent)
    with pytest.raises(UserError, match="corrupt or does not match"):
        load_model(run)
    config_path.write_text("{not json")
    write_checksums(config_path.parent)
    with pytest.raises(UserError, match="not JSON"):
        load_model(run)


def test_a_checkpoint_without_its_checksums_is_refused(tmp_path, tokenizer_path):
    """Bug guarded: deleting SHA256SUMS silently turned the damage check off."""
    _, run = build_checkpoint(tmp_path / "run", tokenizer_path)
    (run / "step_0000001" / "SHA256SUMS").unlink()
    with pytest.raises(UserError, match="SHA256SUMS is missing"):
        load_model(run)


def scramble_middle(path, size: int = 64) -> None:
    """Overwrite `size` bytes in the middle of a file: same size, same header, wrong values."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + size] = bytes(range(size))
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("command", ["load_model", "model.generate", "model.export.hf"])
def test_damaged_weights_are_named_by_every_reader(tmp_path, tokenizer_path, command):
    """Bug guarded: bytes written into the middle of model.safetensors loaded without
    complaint, and generate ended in a `probability tensor contains inf/nan` traceback."""
    import subprocess
    import sys
    from pathlib import Path

    _, run = build_checkpoint(tmp_path / "run", tokenizer_path)
    load_model(run)  # intact: loads
    weights = run / "step_0000001" / "model.safetensors"
    scramble_middle(weights)
    expected = f"{weights} does not match its checksum"
    if command == "load_model":
        with pytest.raises(UserError, match=expected) as error:
            load_model(run)
        assert "\n" not in str(error.value)
        return
    args = {
        "model.generate": ["--prompt", "Once", "--max-new-tokens", "3"],
        "model.export.hf": ["--output-dir", str(tmp_path / "export")],
    }[command]
    completed = subprocess.run(
        [sys.executable, "-m", command, "--checkpoint", str(run), *args],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 2, completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {expected}"), lines
    assert "the file is damaged" in lines[0]
    assert not (tmp_path / "export").exists(), "nothing exported"
