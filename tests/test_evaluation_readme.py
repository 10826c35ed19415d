"""Every command of the README's "Evaluate" section, exactly as written, in a folder that holds
what the earlier README steps would have made (tiny checkpoints of the three stages, the DPO
export); the Hub is a fake that serves fixtures with the real datasets' columns."""

import contextlib
import io
import json
import re
import shlex
from pathlib import Path

import datasets
import pytest
from evaluation_fixtures import CORE, DATASETS, fixture_dataset
from model_fixtures import build_checkpoint, build_tokenizer

import evaluation.cli
from dataset.evaluation import download_dataset
from model.checkpoint import CONFIG_FILE, write_checksums

README = Path(__file__).resolve().parents[1] / "README.md"
HUB = {(path, config): name for name, (path, config, _, _) in DATASETS.items()}


def evaluate_commands() -> list[str]:
    section = README.read_text().split("## Evaluate\n", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("   #", 1)[0].strip()  # a trailing comment
            if line.startswith("python3 -m "):
                commands.append(line)
    return commands


def test_the_section_has_the_issues_commands():
    commands = evaluate_commands()
    assert commands[0].startswith("python3 -m dataset.evaluation.download_dataset")
    assert any("--hf exports/dpo-hf" in command for command in commands)
    assert any("--checkpoint checkpoints/sft --checkpoint checkpoints/dpo" in c for c in commands)


def test_every_command_runs_as_written(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    from model.export.hf import export

    monkeypatch.chdir(tmp_path)
    tokenizer = build_tokenizer(tmp_path / "tokenizer.json")
    for stage in ("pre_training", "sft", "dpo"):
        _, run = build_checkpoint(Path("checkpoints") / stage, tokenizer)
        config_path = run / "step_0000001" / CONFIG_FILE
        config = json.loads(config_path.read_text())
        config["stage"] = stage
        config_path.write_text(json.dumps(config))
        write_checksums(config_path.parent)  # we edited a checked file
    export(Path("checkpoints/dpo"), Path("exports/dpo-hf"))
    asked = []

    def fake_hub(path, name=None, **kwargs):
        asked.append((path, name))
        return fixture_dataset(HUB[path, name])

    monkeypatch.setattr(datasets, "load_dataset", fake_hub)
    for command in evaluate_commands():
        argv = shlex.split(command)[3:]
        module = shlex.split(command)[2]
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            if module == "dataset.evaluation.download_dataset":
                assert download_dataset.main(argv) == 0
            else:
                assert module == "evaluation"
                assert evaluation.cli.main([*argv, "--quiet"]) == 0
        assert "Traceback" not in out.getvalue()
    assert len(asked) == len({DATASETS[name][:2] for name in CORE})  # each copy made once
    for name in CORE:
        assert (download_dataset.copy_folder("data/evaluation", *DATASETS[name][:2])).is_dir()
    assert (Path("data/evaluation/sample_world/default") / "manifest.json").is_file()
    results = json.loads(Path("results.json").read_text())
    assert set(results["results"]) == {"hellaswag"}
    assert results["config"]["model"] == "hf"
