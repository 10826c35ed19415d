"""pre_training.py end to end: overrides, the printed config and sample, one-line errors."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from training_fixtures import make_inputs, tiny_config

import pre_training
from common.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def argv_for(config) -> list[str]:
    return [
        f"--{key}={value}"
        for key, value in config.to_dict().items()
        if key not in ("model_overrides", "init_from")
    ]


def test_a_tiny_run_prints_its_config_and_a_continuation(tmp_path, capsys):
    config = tiny_config(tmp_path, *make_inputs(tmp_path), max_steps=4)
    assert pre_training.main(argv_for(config)) == 0
    out = capsys.readouterr().out
    assert "micro_batch_size         = 4" in out, "the resolved config is printed"
    assert "sample: Once upon a time" in out
    # the closing summary gives bits per byte too (issue 10: comparable across tokenizers)
    assert re.search(r"\nval loss \d+\.\d{4}, \d+\.\d{4} bits per byte after 4 steps", out)
    assert (tmp_path / "checkpoints" / "run" / "latest").is_file()


def test_defaults_point_at_the_readme_paths():
    assert pre_training.CONFIG.data_dir == "data/pre_training/tokenized"
    assert pre_training.CONFIG.tokenizer_path == "data/tokenizer/tokenizer.json"
    assert pre_training.CONFIG.checkpoint_dir == "checkpoints"
    pre_training.CONFIG.check()


def test_bad_input_is_one_line_and_exit_2():
    completed = subprocess.run(
        [sys.executable, "pre_training.py", "--max_step=5"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 2
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in completed.stderr
    assert lines[0].startswith("error: unknown option --max_step; did you mean --max_steps")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--max_steps=lots"], "--max_steps='lots' is not a valid int"),
        (["--tokenizer_path=/nonexistent/tok.json"], "tokenizer file /nonexistent/tok.json not"),
        (["--data_dir=/nonexistent"], "tokenized dataset folder /nonexistent not found"),
    ],
)
def test_bad_input_messages(args, message, tmp_path):
    config = tiny_config(tmp_path, *make_inputs(tmp_path))
    with pytest.raises(UserError, match=re.escape(message)):
        pre_training.main(argv_for(config) + args)
