"""python3 -m evaluation: the table, lm-eval's results file, --limit, the chat default by stage,
several models side by side (an HF folder through lm-eval's own hf model), the data step, and
every bad input as one line with exit status 2."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from evaluation_fixtures import CORE, write_evaluation_data
from model_fixtures import build_checkpoint, build_tokenizer

from common.errors import run_cli
from evaluation.cli import main
from model.checkpoint import CONFIG_FILE, write_checksums

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    tokenizer = build_tokenizer(root / "tokenizer.json")
    build_checkpoint(root / "base", tokenizer)
    _, sft = build_checkpoint(root / "sft", tokenizer, seed=1)
    config_path = sft / "step_0000001" / CONFIG_FILE
    config = json.loads(config_path.read_text())
    config["stage"] = "sft"
    config_path.write_text(json.dumps(config))
    write_checksums(sft / "step_0000001")  # we edited a checked file
    write_evaluation_data(root / "data")
    return {"root": root, "tokenizer": tokenizer, "data": root / "data"}


def run(argv, capsys) -> tuple[int, str, str]:
    """main() through run_cli, as `python3 -m evaluation` runs it: (exit status, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: main([*argv, "--quiet"]))
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_table_and_json_of_two_models(setup, capsys):
    root = setup["root"]
    argv = ["--checkpoint", str(root / "base"), "--checkpoint", str(root / "sft")]
    argv += ["--tasks", "piqa,lambada_openai", "--data-dir", str(setup["data"])]
    argv += ["--json", str(root / "out" / "results.json"), "--log-samples"]
    code, out, err = run(argv, capsys)
    assert code == 0, err
    assert "[1] base" in out and "plain text" in out.splitlines()[0]
    assert "[2] sft" in out and "a chat model" in out.splitlines()[1]  # the SFT stage's default
    assert "piqa" in out and "lambada_openai" in out and "perplexity" in out
    assert "Pythia-160M" in out  # published reference figures for these tasks
    assert "\npiqa            acc " in out and " 50.0" in out  # two choices: random is 50%
    for name, chat in (("base", False), ("sft", True)):
        layout = json.loads((root / "out" / f"results.{name}.json").read_text())
        piqa = layout["results"]["piqa"]
        assert {"acc,none", "acc_stderr,none", "acc_norm,none", "acc_norm_stderr,none"} <= set(piqa)
        assert set(layout["results"]["lambada_openai"]) >= {"perplexity,none", "acc,none"}
        assert layout["n-samples"]["piqa"] == {"original": 3, "effective": 3}
        assert layout["config"]["apply_chat_template"] is chat
        assert layout["config"]["model"] == "simple-transformer"
        assert layout["configs"]["piqa"]["dataset_path"] == "baber/piqa"
        assert len(layout["samples"]["piqa"]) == 3 and layout["random_baseline"]["piqa"] == 0.5
        assert 0.0 <= piqa["acc,none"] <= 1.0
        # the chat model's requests are its chat template's text, the plain one's plain text
        context = layout["samples"]["piqa"][0]["arguments"][0][0]
        assert context.startswith("<|endoftext|><|user|>") is chat


def test_limit_and_no_chat(setup, capsys):
    root = setup["root"]
    argv = ["--checkpoint", str(root / "sft"), "--no-chat", "--tasks", "hellaswag", "--limit", "2"]
    argv += ["--data-dir", str(setup["data"]), "--json", str(root / "limit.json")]
    code, out, err = run(argv, capsys)
    assert code == 0, err
    layout = json.loads((root / "limit.json").read_text())
    assert layout["n-samples"]["hellaswag"] == {"original": 4, "effective": 2}
    assert layout["config"]["apply_chat_template"] is False and "plain text" in out


def test_core_adds_the_letter_forms_for_chat_models_only(setup, capsys, tmp_path):
    """A plain-text model beside a chat model: ARC's letter forms are scored on the chat one."""
    root = setup["root"]
    argv = ["--checkpoint", str(root / "base"), "--checkpoint", str(root / "sft")]
    argv += ["--tasks", "core", "--limit", "1", "--data-dir", str(setup["data"])]
    argv += ["--json", str(tmp_path / "r.json")]
    code, out, err = run(argv, capsys)
    assert code == 0, err
    letters = {"arc_easy_letters", "arc_challenge_letters"}
    base, sft = (json.loads((tmp_path / f"r.{n}.json").read_text()) for n in ("base", "sft"))
    assert set(base["results"]) == set(CORE) and set(sft["results"]) == {*CORE, *letters}
    for name in (*CORE, *letters):
        assert f"\n{name} " in out
    rows = [line.split() for line in out.splitlines()]
    assert ["arc_easy_letters", "acc"] in [row[:2] for row in rows]
    for row in rows:
        if row[:2] == ["arc_easy_letters", "acc"]:  # [2]'s figure (of one example) and random
            assert len(row) == 4, row  # and none for [1]


def test_hf_folder_beside_a_checkpoint(setup, capsys, tmp_path):
    pytest.importorskip("transformers")
    from model.export.hf import export

    export(setup["root"] / "base", tmp_path / "hf")
    argv = ["--checkpoint", str(setup["root"] / "base"), "--hf", str(tmp_path / "hf")]
    argv += ["--tasks", "winogrande", "--data-dir", str(setup["data"])]
    argv += ["--json", str(tmp_path / "r.json"), "--log-samples"]
    code, out, err = run(argv, capsys)
    assert code == 0, err
    ours = json.loads((tmp_path / "r.base.json").read_text())
    theirs = json.loads((tmp_path / "r.hf.json").read_text())
    assert ours["config"]["model"] == "simple-transformer" and theirs["config"]["model"] == "hf"
    for a, b in zip(ours["samples"]["winogrande"], theirs["samples"]["winogrande"]):
        assert loglikelihoods(a) == pytest.approx(loglikelihoods(b), abs=1e-3)  # the export


def loglikelihoods(sample: dict) -> list[float]:
    return [response[0][0] for response in sample["resps"]]


def test_two_models_of_one_name_keep_their_own_columns_and_files(setup, capsys, tmp_path):
    root = setup["root"]
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "base").symlink_to(root / "base")  # a/base and base: one short name
    argv = ["--checkpoint", str(root / "base"), "--checkpoint", str(tmp_path / "a" / "base")]
    argv += ["--checkpoint", str(root / "base"), "--tasks", "piqa"]
    argv += ["--data-dir", str(setup["data"]), "--json", str(tmp_path / "r.json")]
    code, out, err = run(argv, capsys)
    assert code == 0, err
    written = [line.removeprefix("wrote ") for line in err.splitlines() if line.startswith("wrote")]
    assert len(written) == 3 and len(set(written)) == 3, err  # none overwrote another
    names = [json.loads(Path(path).read_text())["config"]["model_name"] for path in written]
    assert names == [str(root / "base"), str(tmp_path / "a" / "base"), f"{root / 'base'} #2"]
    assert all(f"] {name}" in out for name in names)


def test_bf16_on_a_cpu_is_bf16_for_checkpoints_too(setup, capsys, tmp_path):
    argv = ["--checkpoint", str(setup["root"] / "base"), "--tasks", "piqa", "--precision", "bf16"]
    argv += ["--data-dir", str(setup["data"]), "--json", str(tmp_path / "bf16.json")]
    argv += ["--log-samples"]
    code, out, err = run(argv, capsys)
    assert code == 0, err
    argv[argv.index("bf16")] = "fp32"
    argv[argv.index(str(tmp_path / "bf16.json"))] = str(tmp_path / "fp32.json")
    code, out, err = run(argv, capsys)
    assert code == 0, err
    bf16, fp32 = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("bf16", "fp32"))
    assert bf16["config"]["dtype"] == "bfloat16" and fp32["config"]["dtype"] == "float32"
    pairs = list(zip(bf16["samples"]["piqa"], fp32["samples"]["piqa"]))
    # the same scores to bf16's precision, but not the same numbers: it really ran in bf16
    assert any(loglikelihoods(a) != loglikelihoods(b) for a, b in pairs)
    for a, b in pairs:
        assert loglikelihoods(a) == pytest.approx(loglikelihoods(b), rel=0.05, abs=0.1)


def one_line_error(code, err, *words):
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for word in words:
        assert word in lines[0], lines[0]


def test_bad_inputs_are_one_line_each(setup, capsys, tmp_path):
    root, data = setup["root"], str(setup["data"])
    base = ["--checkpoint", str(root / "base"), "--data-dir", data]
    one_line_error(*run([*base, "--tasks", "hellaswag,piqaa"], capsys)[::2], "closest: piqa")
    one_line_error(*run(["--checkpoint", str(tmp_path / "gone")], capsys)[::2], "not found")
    one_line_error(*run([], capsys)[::2], "--checkpoint")
    for limit in ("", "0", "x"):
        one_line_error(*run([*base, "--limit", limit], capsys)[::2], "--limit")
    one_line_error(*run([*base, "--num-fewshot", "-1"], capsys)[::2], "--num-fewshot")
    one_line_error(*run([*base, "--device", "bogus"], capsys)[::2], "not a device")
    one_line_error(*run([*base, "--tasks", " , "], capsys)[::2], "--tasks is empty")
    one_line_error(
        *run([*base, "--tasks", "winogrande", "--num-fewshot", "9"], capsys)[::2], "only 3"
    )
    # a tokenizer that is not the one the run used (the checkpoint records its sha256)
    other = build_tokenizer(tmp_path / "other.json", vocab_size=280)
    _, run_dir = build_checkpoint(tmp_path / "recorded", setup["tokenizer"])
    config_path = run_dir / "step_0000001" / CONFIG_FILE
    config = json.loads(config_path.read_text())
    config["tokenizer"]["sha256"] = "0" * 64
    config_path.write_text(json.dumps(config))
    write_checksums(run_dir / "step_0000001")
    argv = ["--checkpoint", str(run_dir), "--tokenizer", str(other), "--data-dir", data]
    one_line_error(*run(argv, capsys)[::2], "not the tokenizer")
    # a tokenizer with more tokens than the model has embeddings
    big = build_tokenizer(tmp_path / "big" / "tokenizer.json", vocab_size=400)
    _, small = build_checkpoint(tmp_path / "small", setup["tokenizer"])
    (small / "step_0000001" / "tokenizer.json").write_bytes(big.read_bytes())
    write_checksums(small / "step_0000001")
    one_line_error(*run(["--checkpoint", str(small)], capsys)[::2], "does not match")
    # an HF folder that is not a causal LM, and one that is no model at all
    pytest.importorskip("transformers")
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    one_line_error(*run(["--hf", str(tmp_path / "bert")], capsys)[::2], "not a causal")
    one_line_error(*run(["--hf", str(tmp_path)], capsys)[::2], "no config.json")


def test_no_network_and_no_local_copy(setup, tmp_path):
    """The evaluation never fetches: a missing copy is one line naming the data step; the data
    step without a network is one line too (the Hub really is asked, in offline mode)."""
    offline = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    env = {**os.environ, **offline, "OMP_NUM_THREADS": "1"}
    empty = str(tmp_path / "empty")
    commands = [
        ["evaluation", "--checkpoint", str(setup["root"] / "base"), "--tasks", "piqa"],
        ["dataset.evaluation.download_dataset", "--tasks", "piqa", "--output-dir", empty],
    ]
    commands[0] += ["--data-dir", empty, "--quiet"]
    for command, words in zip(commands, ("dataset.evaluation.download_dataset", "baber/piqa")):
        result = subprocess.run(
            [sys.executable, "-m", *command],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert result.returncode == 2, result.stderr
        assert len(errors) == 1 and words in errors[0], result.stderr
        assert "Traceback" not in result.stderr
    assert not list((tmp_path / "empty" / "baber" / "piqa").iterdir())  # nothing half-written


def test_help_names_every_task(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for name in ("hellaswag", "arc_challenge_letters", "lambada_openai", "sample_world", "core"):
        assert name in out


def test_lm_evals_own_command_line_scores_our_checkpoint(setup, tmp_path):
    """`python3 -m evaluation.lm` is lm-eval's command line with our model registered as
    simple-transformer (its default device, cuda:0, falls back to the CPU), its tasks reading
    the copies in --data-dir (the sample world's test needs none); a missing copy is one line
    naming the data step, and nothing is fetched."""
    offline = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    env = {**os.environ, **offline, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "evaluation.lm", "--model", "simple-transformer"]
    command += ["--model_args", f"checkpoint={setup['root'] / 'base'}", "--limit", "8"]
    command += ["--include_path", str(REPO / "dataset/evaluation/tasks"), "--tasks"]

    def lm_eval(*args):
        return subprocess.run(
            [*command, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )

    result = lm_eval("sample_world,piqa", "--data-dir", str(setup["data"]))
    assert result.returncode == 0, result.stderr[-3000:]
    for task in ("sample_world", "piqa"):
        rows = [line for line in result.stdout.splitlines() if line.startswith(f"|{task}")]
        assert len(rows) == 1 and "|acc " in rows[0], result.stdout
    result = lm_eval("piqa", "--data-dir", str(tmp_path / "empty"))
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr[-3000:]
    assert f"download_dataset --tasks piqa --output-dir {tmp_path / 'empty'}" in errors[0]
    assert "Traceback" not in result.stderr and not (tmp_path / "empty").exists()
