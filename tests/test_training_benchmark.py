"""benchmarks/training_benchmark.py: one JSON line per configuration, errors as lines too
(benchmarks/gpu_check.py parses these lines on a GPU machine)."""

import json
import sys

import pytest
import torch

from benchmarks import training_benchmark
from common.errors import run_cli
from model.config import from_preset
from model.transformer import Transformer

TINY = ["--preset", "debug", "--block-size", "16", "--device", "cpu"]
TINY += ["--steps", "1", "--warmup", "0"]


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_one_json_line_per_configuration(capsys):
    training_benchmark.main([*TINY, "--micro-batch", "1", "2", "--compile", "off"])
    lines = json_lines(capsys.readouterr().out)
    assert [line["micro_batch"] for line in lines] == [1, 2]
    for line in lines:
        assert line["tokens_per_s"] > 0 and line["step_ms"] > 0
        assert line["compile"] is False and line["fused_loss"] is False
        assert "mfu" not in line, "a CPU has no MFU"


def test_accumulated_micro_batches_count_in_the_step_tokens(capsys):
    training_benchmark.main(
        [*TINY, "--micro-batch", "2", "--compile", "off", "--accumulation", "3"]
    )
    (line,) = json_lines(capsys.readouterr().out)
    assert line["accumulation"] == 3
    tokens_per_step = line["tokens_per_s"] * line["step_ms"] / 1000
    assert abs(tokens_per_step - 3 * 2 * 16) < 1  # accumulation x micro-batch x block


def test_a_failing_configuration_is_a_line_not_a_crash(capsys, monkeypatch):
    def no_compiler(*args, **kwargs):
        raise RuntimeError("no C compiler found\nmore detail")

    monkeypatch.setattr(torch, "compile", no_compiler)
    training_benchmark.main([*TINY, "--micro-batch", "1", "--compile", "on"])
    (line,) = json_lines(capsys.readouterr().out)
    assert line["error"] == "RuntimeError: no C compiler found" and line["compile"] is True


def test_fp8_without_torchao_is_a_one_line_error(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchao.float8", None)  # import fails as if not installed
    with pytest.raises(SystemExit):
        run_cli(
            lambda: training_benchmark.main(
                [*TINY, "--micro-batch", "1", "--compile", "off", "--fp8", "auto"]
            )
        )
    err = capsys.readouterr().err
    assert err.startswith("error: --fp8 needs torchao") and err.count("\n") == 1


def test_fp8_converts_the_blocks_matmuls_and_keeps_their_parameters():
    pytest.importorskip("torchao.float8")
    from torchao.float8.float8_linear import Float8Linear

    torch.manual_seed(0)
    model = Transformer(from_preset("debug"))
    before = dict(model.named_parameters())
    assert training_benchmark.convert_blocks_to_float8(model, "all") == 7 * model.config.n_layer
    linears = [m for m in model.layers.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(isinstance(m, Float8Linear) for m in linears)
    assert not isinstance(model.lm_head, Float8Linear)  # tied to the embedding: stays as it was
    assert {name: p for name, p in model.named_parameters()} == before  # the same tensors


def test_fp8_auto_converts_only_the_layers_torchaos_rule_expects_to_gain():
    """At 170m (1024 wide, mlp 2752) tensorwise FP8 pays only for gate and up (N > 1024)."""
    pytest.importorskip("torchao.float8")
    model = Transformer(from_preset("170m", block_size=64))
    converted = training_benchmark.convert_blocks_to_float8(model, "auto")
    assert converted == 2 * model.config.n_layer
    mlp = model.layers[0].mlp
    assert [type(m).__name__ for m in (mlp.gate_proj, mlp.up_proj, mlp.down_proj)] == [
        "Float8Linear",
        "Float8Linear",
        "Linear",
    ]
