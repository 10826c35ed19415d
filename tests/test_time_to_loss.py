"""benchmarks/time_to_loss.py: recipes become the right configs, and the figure is read right."""

import json
import shlex
from pathlib import Path

import pytest
from training_fixtures import make_inputs

from benchmarks import time_to_loss
from common.errors import UserError
from training.config import parse_config


def test_a_target_met_by_the_first_evaluation_is_reported_as_an_upper_bound(capsys):
    runs = {
        "baseline": [{"tokens": [100, 200], "val_loss": [3.0, 2.0], "seconds": [1.0, 2.0]}],
        "fast": [{"tokens": [100, 200], "val_loss": [1.5, 1.0], "seconds": [1.0, 2.0]}],
    }
    curves = time_to_loss.summarize(runs)
    assert curves["fast"]["at_most"] and not curves["baseline"]["at_most"]
    time_to_loss.print_report(curves)
    assert "<=         100 tokens (<=0.50x)" in capsys.readouterr().out


def test_tokens_to_target_interpolate_between_evaluations():
    tokens, losses, seconds = [100, 200, 300], [3.0, 2.0, 1.0], [10.0, 20.0, 30.0]
    assert time_to_loss.first_reach(tokens, losses, seconds, 1.5) == (250, 25.0)
    assert time_to_loss.first_reach(tokens, losses, seconds, 3.0) == (100, 10.0)
    assert time_to_loss.first_reach(tokens, losses, seconds, 0.5) is None


def test_a_recipe_scales_its_warmups_with_the_run_and_checks_its_values(tmp_path):
    args = time_to_loss.build_parser().parse_args(["--data-dir", "d", "--tokenizer-path", "t"])
    for key, value in time_to_loss.MODES["cpu"].items():
        setattr(args, key, getattr(args, key) or value)
    args.out_dir = tmp_path
    recipe = time_to_loss.parse_recipe("default:muon_lr=0.05,warmup=0.1")
    config = time_to_loss.run_config(args, recipe, "run", seed=3)
    steps = -(-2_000_000 // 8192)
    assert config.max_steps == steps and config.warmup_steps == round(0.1 * steps)
    assert config.optimizer == "muon" and config.muon_lr == 0.05 and config.seed == 3
    baseline = time_to_loss.run_config(args, time_to_loss.parse_recipe("baseline"), "b", 3)
    assert baseline.warmup_steps == round(300 / 6700 * steps), "the old CONFIG's 300 of 6,700"
    assert (baseline.learning_rate, baseline.optimizer) == (6e-4, "adamw")
    with pytest.raises(UserError):
        time_to_loss.run_config(args, time_to_loss.parse_recipe("default:muon_lr=x"), "r", 3)
    with pytest.raises(UserError):
        time_to_loss.parse_recipe("sgd")
    with pytest.raises(UserError, match="fraction of the run"):
        time_to_loss.run_config(args, time_to_loss.parse_recipe("default:warmup=abc"), "r", 3)


def test_every_recipe_is_checked_before_the_first_one_trains(tmp_path, monkeypatch):
    def no_training(*args):
        raise AssertionError("a run started before every recipe was checked")

    monkeypatch.setattr(time_to_loss, "run_recipe", no_training)
    tokenizer, data = make_inputs(tmp_path)
    argv = [
        "--data-dir",
        str(data),
        "--tokenizer-path",
        str(tokenizer),
        "--out-dir",
        str(tmp_path / "runs"),
        "--recipes",
        "baseline",
        "default:muon_lrr=0.04",
    ]
    with pytest.raises(UserError, match="muon_lrr"):
        time_to_loss.main(argv)


def test_two_recipes_through_the_engine(tmp_path, capsys):
    tokenizer, data = make_inputs(tmp_path)
    argv = [
        "--data-dir",
        str(data),
        "--tokenizer-path",
        str(tokenizer),
        "--block-size",
        "32",
        "--micro-batch-size",
        "4",
        "--tokens-per-step",
        "128",
        "--max-tokens",
        "1024",
        "--evals",
        "4",
        "--eval-batches",
        "2",
        "--out-dir",
        str(tmp_path / "runs"),
        "--recipes",
        "baseline",
        "default",
        "--json",
        str(tmp_path / "summary.json"),
    ]
    assert time_to_loss.main(argv) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    baseline, muon = summary["baseline"], summary["default"]
    assert baseline["tokens"] == muon["tokens"] == [256, 512, 768, 1024]
    assert baseline["token_ratio"] == 1.0 and baseline["target"] == baseline["val_loss"][-1]
    assert all(b > 0 for b in baseline["seconds"])
    if "token_ratio" in muon:
        assert muon["tokens_to_target"] <= 1024
    assert "to reach baseline's final validation loss" in capsys.readouterr().out


def test_the_readmes_old_recipe_command_is_the_baseline():
    """README's pre-training step tells users how to get the AdamW recipe back: it must be it."""
    import pre_training

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    line = next(x for x in readme.splitlines() if "pre_training.py --optimizer=adamw" in x)
    config = parse_config(pre_training.CONFIG, shlex.split(line)[2:])
    for name, value in time_to_loss.BASELINE.items():
        if name == "warmup":
            assert config.warmup_steps / config.max_steps == pytest.approx(value)
        else:
            assert getattr(config, name) == value, name
