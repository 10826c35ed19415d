"""The three download_dataset CLIs against real faults: two runs on one --output-dir, a full
disk, leftovers of a killed run, and input files that are not UTF-8. Each ends in one line and
a non-zero exit, and a finished output is never lost."""

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
from tokenizer_helpers import kill_when, start_cli

from common.errors import UserError
from common.locking import folder_lock
from dataset.post_training.dpo import download_dataset as dpo_download
from dataset.post_training.sft import download_dataset as sft_download
from dataset.pre_training import download_dataset as pre_download

REPO = Path(__file__).resolve().parents[1]
SAMPLE = {  # the smallest sample of each downloader
    pre_download: ["--source", "sample", "--sample-size-mb", "0.05"],
    sft_download: ["--source", "sample", "--sample-size", "20"],
    dpo_download: ["--source", "sample", "--sample-size", "20"],
}
DOWNLOADERS = list(SAMPLE)


def cli(module, output: Path, *flags) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", module.__name__, f"--output-dir={output}", *map(str, flags)]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.mark.parametrize("module", DOWNLOADERS, ids=lambda m: m.__name__.split(".")[-2])
def test_a_second_run_on_the_same_output_names_the_first(tmp_path, module):
    output = tmp_path / "raw"
    with folder_lock(output, what="download output"):
        line = one_error_line(cli(module, output, *SAMPLE[module]))
    assert f"process {os.getpid()}" in line and str(output) in line
    assert list(tmp_path.iterdir()) == []  # nothing written, the lock file gone with its holder


@pytest.mark.parametrize("module", DOWNLOADERS, ids=lambda m: m.__name__.split(".")[-2])
def test_full_disk_is_one_line_and_keeps_the_previous_output(tmp_path, module, monkeypatch):
    output = tmp_path / "raw"
    assert module.main([f"--output-dir={output}", *SAMPLE[module]]) == 0
    manifest = (output / "manifest.json").read_text()

    def no_space(self, *args, **kwargs):
        (Path(args[0]) / "partial.arrow").write_bytes(b"\0" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(datasets.DatasetDict, "save_to_disk", no_space)
    with pytest.raises(UserError, match=f"^no space left on the disk at {output} ") as error:
        module.main([f"--output-dir={output}", "--overwrite", "--seed=3", *SAMPLE[module]])
    assert "\n" not in str(error.value)
    assert (output / "manifest.json").read_text() == manifest
    assert [p.name for p in tmp_path.iterdir()] == ["raw"]


def test_a_killed_download_leaves_nothing_the_next_run_keeps(tmp_path):
    output = tmp_path / "raw"
    process = start_cli(
        pre_download.__name__,
        f"--output-dir={output}",
        "--source",
        "sample",
        "--sample-size-mb",
        20,
    )
    kill_when(process, lambda: list(tmp_path.glob("raw.tmp-*")))
    assert [p.name for p in tmp_path.glob("raw.tmp-*")] == [f"raw.tmp-{process.pid}"]

    result = cli(pre_download, output, *SAMPLE[pre_download])
    assert result.returncode == 0, result.stderr
    assert f"raw.tmp-{process.pid}, left behind by an interrupted run" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


def test_non_utf8_jsonl_is_one_line_naming_the_file_and_iconv(tmp_path):
    # json.dumps(..., ensure_ascii=False) is what writes raw "é" bytes; encode those as Latin-1.
    def write(name: str, rows: list[dict]) -> Path:
        text = "\n".join(json.dumps(row, ensure_ascii=False) for row in rows) + "\n"
        (tmp_path / name).write_bytes(text.encode("latin1"))
        return tmp_path / name

    chat = [{"role": "user", "content": "Café?"}, {"role": "assistant", "content": "Oui."}]
    inputs = {
        pre_download: write("docs.jsonl", [{"text": "fine"}, {"text": "naïve"}]),
        sft_download: write("sft.jsonl", [{"messages": chat}]),
        dpo_download: write("dpo.jsonl", [{"prompt": "Café?", "chosen": "a", "rejected": "b"}]),
    }
    for module, path in inputs.items():
        line = one_error_line(
            cli(module, tmp_path / "raw", "--source", "local", "--data-files", path)
        )
        first = 2 if module is pre_download else 1
        assert f"{path} is not UTF-8 text (line {first})" in line
        assert f"iconv -f latin1 -t utf-8 {path} > " in line
    assert not (tmp_path / "raw").exists()
