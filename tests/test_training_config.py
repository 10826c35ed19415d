"""The run config parser: --key=value overrides, type checks, unknown keys, --help."""

import dataclasses
from dataclasses import dataclass

import pytest

from common.errors import UserError
from pre_training import CONFIG
from training.config import TrainConfig, option, parse_config


def test_overrides_are_typed_and_accept_both_spellings():
    config = parse_config(
        CONFIG,
        [
            "--micro_batch_size=8",
            "--learning-rate=1e-2",
            "--init-from",
            "checkpoints/base",
            "--compile",
            "--resume=false",
            "--max_tokens=3.5e9",
            "--model_overrides=n_layer=4,n_embd=256",
        ],
    )
    assert config.micro_batch_size == 8 and isinstance(config.micro_batch_size, int)
    assert config.learning_rate == 1e-2
    assert config.init_from == "checkpoints/base"
    assert config.compile is True and config.resume is False
    assert config.max_tokens == 3_500_000_000 and isinstance(config.max_tokens, int)
    assert config.model_overrides == {"n_layer": 4, "n_embd": 256}
    assert CONFIG.micro_batch_size == 8, "the defaults object must not be modified"


def test_a_bool_takes_a_value_after_a_space_or_stands_alone():
    """Bug guarded: `--compile false` stopped with "unexpected argument 'false'"."""
    config = parse_config(
        CONFIG, ["--compile", "false", "--activation_checkpointing", "--seed", "3"]
    )
    assert config.compile is False and config.activation_checkpointing is True
    assert config.seed == 3
    assert parse_config(CONFIG, ["--compile", "off", "--resume", "On"]).resume is True


def test_optional_accepts_none_and_dict_accepts_json():
    config = parse_config(
        dataclasses.replace(CONFIG, init_from="x"),
        ["--init_from=none", '--model_overrides={"n_head": 2}'],
    )
    assert config.init_from is None
    assert config.model_overrides == {"n_head": 2}


def test_unknown_key_lists_close_matches():
    with pytest.raises(UserError, match=r"unknown option --learning_rat.*--learning_rate"):
        parse_config(CONFIG, ["--learning_rat=1e-3"])


@pytest.mark.parametrize(
    "arg, message",
    [
        ("--max_steps=ten", "not a valid int"),
        ("--max_steps=1.5", "not a valid int"),
        ("--learning_rate=fast", "not a valid float"),
        ("--compile=maybe", "true or false"),
        ("--model_overrides=n_layer", "not a valid dict"),
        ("--precision=fp8", "not one of"),
        ("--micro_batch_size=0", "positive"),
        ("--min_lr=1", "min_lr"),
        ("--learning_rate=inf", "--learning_rate=inf must be a finite number"),
        ("--min_lr=nan", "--min_lr=nan must be a finite number"),
        ("--grad_clip=-inf", "finite"),
        ("positional", "unexpected argument"),
    ],
)
def test_bad_values_are_user_errors(arg, message):
    with pytest.raises(UserError, match=message):
        parse_config(CONFIG, [arg])


def test_value_missing_at_the_end_is_an_error():
    with pytest.raises(UserError, match="needs a value"):
        parse_config(CONFIG, ["--run_name"])


def test_help_lists_every_field_with_default_and_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_config(CONFIG, ["--help"], "The script docstring.")
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "The script docstring." in out
    for name in ("tokens_per_step", "activation_checkpointing", "keep_last", "init_from"):
        assert f"--{name}:" in out
    assert "[0.0006]" in out  # the default of learning_rate
    assert "one of: cosine, wsd" in out


def test_subclass_fields_parse_and_check():
    @dataclass(kw_only=True)
    class DpoLikeConfig(TrainConfig):
        beta: float = option("DPO temperature", default=0.1)

        def check(self) -> None:
            super().check()
            if self.beta <= 0:
                raise UserError("--beta must be positive")

    base = DpoLikeConfig(**CONFIG.to_dict())
    assert parse_config(base, ["--beta=0.5"]).beta == 0.5
    with pytest.raises(UserError, match="beta"):
        parse_config(base, ["--beta=-1"])
