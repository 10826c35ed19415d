"""dataset.pre_training.download_dataset: sample, hub (loader patched) and local sources.

The Hub is never contacted: `datasets.load_dataset` is replaced by a fake that returns tiny
datasets with the real column layouts, so the real loading and cleaning code runs.
"""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import datasets
import pytest

from common.errors import UserError
from dataset.pipeline import hub_revision
from dataset.pre_training import download_dataset
from dataset.pre_training.tinystories import repair_mojibake, v2_stories
from dataset.pre_training.wikitext import detokenize, rebuild_articles

REPO_ROOT = Path(__file__).resolve().parents[1]

# Rows exactly as Salesforce/wikitext stores them: one line each, with empty rows, leading
# spaces, trailing newlines and WikiText's tokenization.
WIKITEXT_ROWS = [
    "",
    " = Valkyria Chronicles III = \n",
    "",
    " Senjō no Valkyria 3 : Unrecorded Chronicles is a tactical role @-@ playing game . \n",
    "",
    " = = Gameplay = = \n",
    "",
    " The game 's battle system sold 1 @,@ 000 copies at 2 @.@ 5 dollars ( roughly ) . \n",
    " = = = Sub section = = = \n",
    " It does n't end here ; it goes on . \n",
    "",
    " = Empty Article = \n",
    "",
    " = = Only a heading = = \n",
    "",
    " = Tower Building of the Little Rock Arsenal = \n",
    " The Tower Building is a building . \n",
]
VALKYRIA = (
    "= Valkyria Chronicles III =\n"
    "Senjō no Valkyria 3: Unrecorded Chronicles is a tactical role-playing game.\n"
    "= = Gameplay = =\n"
    "The game's battle system sold 1,000 copies at 2.5 dollars (roughly).\n"
    "= = = Sub section = = =\n"
    "It doesn't end here; it goes on."
)
TINYSTORIES_TRAIN = [
    "Once upon a time, there was a cat.",
    "  Once upon a time, there was a cat.  \n",  # duplicate once stripped
    "",
    "Tom said, â€œDonâ€™t go!â€",  # mojibake, repairable
    "Ã¢â€ garbled beyond repair",
    "Lily ate a cafÃ© cake.",
    "A plain story.",
]
TINYSTORIES_VALIDATION = [
    "A plain story.",  # also in train: dropped from validation
    "Validation one.",
    "Validation two.",
    "Validation three.",
    "Validation four.",
]
TINYSTORIES_V2_LINES = [
    "Once upon a time there was a dog.",
    "",
    "The dog was happy.",
    "<|endoftext|>",
    "Second story.",
    "<|endoftext|>",
    "<|endoftext|>",
    "Last story without a separator.",
]


def strings(values: list[str]) -> datasets.Dataset:
    return datasets.Dataset.from_dict(
        {"text": values}, features=datasets.Features({"text": datasets.Value("string")})
    )


class FakeHub:
    """Stands in for `datasets.load_dataset`; records every call."""

    def __init__(self):
        self.calls: list[tuple[str, dict]] = []

    def __call__(self, path, name=None, **kwargs):
        self.calls.append((path, {"name": name, **kwargs}))
        if path == "Salesforce/wikitext":
            splits = ("train", "validation", "test")
            return datasets.DatasetDict({s: strings(WIKITEXT_ROWS) for s in splits})
        if path == "roneneldan/TinyStories" and kwargs.get("data_files"):
            lines = TINYSTORIES_V2_LINES
            return datasets.DatasetDict({"train": strings(lines), "validation": strings(lines[4:])})
        if path == "roneneldan/TinyStories":
            return datasets.DatasetDict(
                {"train": strings(TINYSTORIES_TRAIN), "validation": strings(TINYSTORIES_VALIDATION)}
            )
        raise AssertionError(f"unexpected hub dataset {path}")


@pytest.fixture
def fake_hub(monkeypatch) -> FakeHub:
    hub = FakeHub()
    monkeypatch.setattr(datasets, "load_dataset", hub)
    return hub


def run(output: Path, *flags: str) -> dict:
    assert download_dataset.main(["--output-dir", str(output), "--num-proc", "1", *flags]) == 0
    return json.loads((output / "manifest.json").read_text())


def texts(output: Path, split: str, source: str | None = None) -> list[str]:
    rows = datasets.load_from_disk(str(output / split))
    return [row["text"] for row in rows if source is None or row["source"] == source]


def steps(manifest: dict, group: str) -> dict[str, dict]:
    return {step["step"]: step for step in manifest["filters"][group]}


# ---------------------------------------------------------------- cleaning functions


def test_wikitext_articles_start_at_titles_not_sections():
    counts = Counter()
    articles = list(rebuild_articles(WIKITEXT_ROWS, counts))
    assert articles == [
        VALKYRIA,
        "= Empty Article =\n= = Only a heading = =",  # dropped by the step, and counted
        "= Tower Building of the Little Rock Arsenal =\nThe Tower Building is a building.",
    ]
    assert not counts


def test_wikitext_lines_before_the_first_title_are_counted_not_kept():
    counts = Counter()
    articles = list(rebuild_articles([" stray line \n", " = Title = \n", " Text . \n"], counts))
    assert articles == ["= Title =\nText."]
    assert counts["lines_before_first_title"] == 1


@pytest.mark.parametrize(
    "raw, clean",
    [
        ("a 1 @,@ 000 @-@ strong army of 2 @.@ 5 km", "a 1,000-strong army of 2.5 km"),
        (
            "he said , ( quietly ) : it 's fine ; is n't it ?",
            "he said, (quietly): it's fine; isn't it?",
        ),
        ("= = Career = =", "= = Career = ="),
    ],
)
def test_wikitext_detokenize(raw, clean):
    assert detokenize(raw) == clean


@pytest.mark.parametrize(
    "raw, repaired, clean",
    [
        ("Donâ€™t", "Don’t", True),
        ("â€œHi!â€", "“Hi!”", True),  # the closing quote lost its last byte
        ("â€œHi!â€\x9d", "“Hi!”", True),  # ... or kept it as a control character
        ("cafÃ© and naÃ¯ve", "café and naïve", True),
        ("Ã¢â‚¬â„¢ twice garbled", "’ twice garbled", True),
        ("smile ðŸ˜Š", "smile 😊", True),
        ("Ã¢â€ beyond repair", None, False),
        ("café’s real Unicode", "café’s real Unicode", True),
    ],
)
def test_mojibake_repair(raw, repaired, clean):
    text, ok = repair_mojibake(raw)
    assert ok == clean
    if repaired is not None:
        assert text == repaired


def test_tinystories_v2_lines_regroup_into_stories():
    stories = list(v2_stories(TINYSTORIES_V2_LINES))
    assert stories == [
        "Once upon a time there was a dog.\n\nThe dog was happy.",
        "Second story.",
        "",
        "Last story without a separator.",
    ]


# ---------------------------------------------------------------- hub (loader patched)


def test_hub_cleans_tinystories_and_rebuilds_wikitext(tmp_path, fake_hub):
    output = tmp_path / "raw"
    manifest = run(output, "--seed", "3")

    assert [call[0] for call in fake_hub.calls] == ["roneneldan/TinyStories", "Salesforce/wikitext"]
    assert fake_hub.calls[1][1]["name"] == "wikitext-103-raw-v1"
    train = texts(output, "train", "tinystories")
    assert train == [
        "Once upon a time, there was a cat.",
        "Tom said, “Don’t go!”",
        "Lily ate a café cake.",
        "A plain story.",
    ]
    tiny = steps(manifest, "tinystories/train")
    assert tiny["drop_unusable"]["reasons"] == {"empty": 1, "unrepairable_mojibake": 1}
    assert tiny["drop_duplicates"]["dropped"] == 1
    # The validation copy of a train story is dropped; the rest is split into validation + test.
    assert steps(manifest, "tinystories/validation")["drop_duplicates"]["dropped"] == 1
    held_out = texts(output, "validation", "tinystories") + texts(output, "test", "tinystories")
    assert sorted(held_out) == sorted(TINYSTORIES_VALIDATION[1:])
    assert len(texts(output, "test", "tinystories")) == 2
    for split in ("train", "validation", "test"):
        assert texts(output, split, "wikitext")[0] == VALKYRIA
        assert manifest["splits"][split]["rows_by_source"]["wikitext"] == 2
    wiki = steps(manifest, "wikitext/train")
    assert wiki["rebuild_articles"]["rows_in"] == len(WIKITEXT_ROWS)
    assert wiki["drop_unusable"]["reasons"] == {"no_text_under_headings": 1}
    assert [entry["id"] for entry in manifest["inputs"]] == [
        "roneneldan/TinyStories",
        "Salesforce/wikitext",
    ]
    assert manifest["splits"]["train"]["columns"] == ["text", "source"]


def test_hub_mix_flags_v2_files_config_and_caps(tmp_path, fake_hub):
    output = tmp_path / "raw"
    manifest = run(
        output,
        "--tinystories-version",
        "v2",
        "--wikitext-config",
        "wikitext-2-raw-v1",
        "--max-wikitext-docs",
        "1",
        "--max-tinystories-docs",
        "2",
    )
    tiny_call, wiki_call = fake_hub.calls
    assert tiny_call[1]["data_files"] == {
        "train": "TinyStoriesV2-GPT4-train.txt",
        "validation": "TinyStoriesV2-GPT4-valid.txt",
    }
    assert wiki_call[1]["name"] == "wikitext-2-raw-v1"
    assert texts(output, "train", "tinystories") == [
        "Once upon a time there was a dog.\n\nThe dog was happy.",
        "Second story.",
    ]  # capped at 2 of 3
    assert texts(output, "train", "wikitext") == [VALKYRIA]
    assert steps(manifest, "wikitext/train")["cap_1"]["dropped"] == 1


def test_hub_one_source_can_be_left_out(tmp_path, fake_hub):
    manifest = run(tmp_path / "raw", "--max-wikitext-docs", "0")
    assert [call[0] for call in fake_hub.calls] == ["roneneldan/TinyStories"]
    assert set(manifest["splits"]["train"]["rows_by_source"]) == {"tinystories"}
    with pytest.raises(UserError, match="leave no source"):
        run(tmp_path / "none", "--max-wikitext-docs", "0", "--max-tinystories-docs", "0")


def test_hub_failure_names_the_offline_sources_and_writes_nothing(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'roneneldan/TinyStories' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", no_network)
    with pytest.raises(UserError) as error:
        run(tmp_path / "raw")
    message = str(error.value)
    assert "--source sample" in message and "--source local" in message
    assert "\n" not in message
    assert list(tmp_path.iterdir()) == []  # no output, no temporary folder


def test_hub_failure_after_the_first_source_leaves_nothing(tmp_path, monkeypatch, fake_hub):
    def wikitext_down(path, name=None, **kwargs):
        if path == "Salesforce/wikitext":
            raise OSError("503 Service Unavailable")
        return fake_hub(path, name, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", wikitext_down)
    with pytest.raises(UserError, match="Salesforce/wikitext"):
        run(tmp_path / "raw")
    assert list(tmp_path.iterdir()) == []


def test_hub_revision_is_read_from_the_resolved_file_names():
    sha = "0123456789abcdef0123456789abcdef01234567"
    url = f"hf://datasets/roneneldan/TinyStories@{sha}/data/train-00000-of-00004.parquet"
    loaded = SimpleNamespace(info=SimpleNamespace(download_checksums={url: {}}), cache_files=[])
    assert hub_revision(loaded) == sha
    assert hub_revision(strings(["x"])) is None  # an in-memory dataset: unknown


def test_data_files_without_local_source_is_an_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run(tmp_path / "raw", "--source", "sample", "--data-files", "a.txt")
    assert exit_info.value.code == 2
    assert "--data-files is read only with --source local" in capsys.readouterr().err


def test_ctrl_c_leaves_no_output(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(datasets, "load_dataset", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "raw")
    assert list(tmp_path.iterdir()) == []


def test_cli_offline_prints_one_line_and_exits_non_zero(tmp_path):
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    env["HF_DATASETS_OFFLINE"] = "1"
    result = subprocess.run(
        [sys.executable, "-m", "dataset.pre_training.download_dataset"]
        + ["--output-dir", str(tmp_path / "raw")],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--source sample" in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "raw").exists()


# ---------------------------------------------------------------- sample


def test_sample_end_to_end_is_deterministic(tmp_path):
    first = run(tmp_path / "a", "--source", "sample", "--sample-size-mb", "0.2")
    run(tmp_path / "b", "--source", "sample", "--sample-size-mb", "0.2")
    for split in ("train", "validation", "test"):
        assert texts(tmp_path / "a", split) == texts(tmp_path / "b", split)
        assert set(first["splits"][split]["rows_by_source"]) == {
            "sample_stories",
            "sample_articles",
        }
    every = [t for split in ("train", "validation", "test") for t in texts(tmp_path / "a", split)]
    assert 190_000 < sum(len(t.encode()) for t in every) < 215_000
    loaded = datasets.load_from_disk(str(tmp_path / "a"))
    assert set(loaded) == {"train", "validation", "test"}
    assert loaded["train"].column_names == ["text", "source"]
    assert not set(texts(tmp_path / "a", "train")) & set(texts(tmp_path / "a", "test"))


def test_sample_cli_refuses_to_overwrite_without_flag(tmp_path):
    output = tmp_path / "raw"
    run(output, "--source", "sample", "--sample-size-mb", "0.05")
    manifest = (output / "manifest.json").read_text()
    command = [sys.executable, "-m", "dataset.pre_training.download_dataset", "--source", "sample"]
    command += ["--output-dir", str(output), "--sample-size-mb", "0.05"]
    again = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == [
        f"error: {output} already exists; pass --overwrite to replace it"
    ]
    assert (output / "manifest.json").read_text() == manifest  # untouched
    run(output, "--source", "sample", "--sample-size-mb", "0.05", "--overwrite", "--seed", "1")
    assert json.loads((output / "manifest.json").read_text())["arguments"]["seed"] == 1


# ---------------------------------------------------------------- local files


def test_local_text_files_blank_line_blocks_and_whole_files(tmp_path):
    (tmp_path / "a.txt").write_text("First doc\nstill first.\n\n  \nSecond doc.\n\n\nThird.\n")
    (tmp_path / "b.txt").write_text("Fourth.\n\nFifth.\n\nFirst doc\nstill first.\n")
    pattern = str(tmp_path / "*.txt")
    manifest = run(tmp_path / "blocks", "--source", "local", "--data-files", pattern)
    every = [t for s in ("train", "validation", "test") for t in texts(tmp_path / "blocks", s)]
    assert sorted(every) == [
        "Fifth.",
        "First doc\nstill first.",
        "Fourth.",
        "Second doc.",
        "Third.",
    ]
    assert steps(manifest, "local")["drop_duplicates"]["dropped"] == 1
    assert all(len(texts(tmp_path / "blocks", s)) >= 1 for s in ("train", "validation", "test"))

    (tmp_path / "c.txt").write_text("Sixth.\n\nSeventh.\n")
    run(tmp_path / "files", "--source", "local", "--data-files", pattern, "--txt-documents", "file")
    every = [t for s in ("train", "validation", "test") for t in texts(tmp_path / "files", s)]
    assert sorted(every) == sorted(
        (tmp_path / name).read_text().strip() for name in ("a.txt", "b.txt", "c.txt")
    )


def test_local_jsonl_skips_and_counts_unusable_rows(tmp_path):
    lines = [json.dumps({"body": f"Document {i}."}) for i in range(10)]
    lines += ["{not json", json.dumps({"other": "x"}), json.dumps({"body": 7}), "[1, 2]"]
    (tmp_path / "docs.jsonl").write_text("\n".join(lines) + "\n")
    manifest = run(
        tmp_path / "raw",
        "--source",
        "local",
        "--data-files",
        str(tmp_path / "docs.jsonl"),
        "--text-column",
        "body",
        "--validation-fraction",
        "0.2",
        "--test-fraction",
        "0.2",
    )
    read = steps(manifest, "local")["drop_unusable"]
    assert read["rows_in"] == 14 and read["rows_out"] == 10
    assert read["reasons"] == {"invalid_json": 1, "missing_body": 2, "non_string_body": 1}
    assert [manifest["splits"][s]["rows"] for s in ("train", "validation", "test")] == [6, 2, 2]
    assert manifest["splits"]["train"]["rows_by_source"] == {"local": 6}


def test_local_parquet(tmp_path):
    datasets.Dataset.from_dict({"content": [f"Row {i}." for i in range(20)]}).to_parquet(
        str(tmp_path / "docs.parquet")
    )
    run(
        tmp_path / "raw",
        "--source",
        "local",
        "--data-files",
        str(tmp_path / "docs.parquet"),
        "--text-column",
        "content",
        "--seed",
        "5",
    )
    every = [t for s in ("train", "validation", "test") for t in texts(tmp_path / "raw", s)]
    assert sorted(every) == sorted(f"Row {i}." for i in range(20))


@pytest.mark.parametrize(
    "setup, flags, message",
    [
        (lambda d: None, ["--data-files", "missing.txt"], "does not exist"),
        (lambda d: None, [], "needs --data-files"),
        (lambda d: (d / "empty.txt").write_text(""), ["--data-files", "empty.txt"], "is empty"),
        (lambda d: (d / "a.csv").write_text("x"), ["--data-files", "a.csv"], "unsupported"),
        (
            lambda d: (d / "a.jsonl").write_text('{"body": "x"}\n'),
            ["--data-files", "a.jsonl"],
            "--text-column 'text'",
        ),
        (
            lambda d: ((d / "a.txt").write_text("x"), (d / "b.jsonl").write_text("{}")),
            ["--data-files", "a.txt", "b.jsonl"],
            "mixes file kinds",
        ),
        (
            lambda d: (d / "blank.txt").write_text("\n\n  \n"),
            ["--data-files", "blank.txt"],
            "no usable documents",
        ),
        (
            lambda d: (d / "latin1.txt").write_bytes("Fine.\n\nCafé au lait.\n".encode("latin1")),
            ["--data-files", "latin1.txt"],
            "latin1.txt is not UTF-8 text (line 3); convert it .* `iconv -f latin1 -t utf-8 ",
        ),
        (
            lambda d: (d / "latin1.txt").write_bytes("Café.\n".encode("latin1")),
            ["--data-files", "latin1.txt", "--txt-documents=file"],
            "latin1.txt is not UTF-8 text (line 1)",
        ),
        (
            lambda d: (d / "l1.jsonl").write_bytes(
                '{"text": "ok"}\n{"text": "né"}\n'.encode("latin1")
            ),
            ["--data-files", "l1.jsonl"],
            "l1.jsonl is not UTF-8 text (line 2); .*l1.utf8.jsonl",
        ),
    ],
)
def test_local_bad_input_is_a_one_line_error_and_writes_nothing(tmp_path, setup, flags, message):
    inputs = tmp_path / "in"
    inputs.mkdir()
    setup(inputs)
    flags = [str(inputs / f) if not f.startswith("-") else f for f in flags]
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        run(tmp_path / "raw", "--source", "local", *flags)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "raw").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["in"]


def test_an_empty_split_is_an_error_not_an_unreadable_folder(tmp_path):
    """`load_from_disk` cannot read a split saved with no rows: refused, naming the split."""
    (tmp_path / "a.txt").write_text("".join(f"Document {i}.\n\n" for i in range(20)))
    flags = ["--source", "local", "--data-files", str(tmp_path / "a.txt")]
    with pytest.raises(UserError, match="no usable rows are left for the test split"):
        run(tmp_path / "raw", *flags, "--test-fraction", "0")
    assert not (tmp_path / "raw").exists()


def test_local_parquet_without_the_text_column_is_an_error(tmp_path):
    datasets.Dataset.from_dict({"body": ["a", "b", "c"]}).to_parquet(str(tmp_path / "d.parquet"))
    with pytest.raises(UserError, match="no usable documents.*missing_text"):
        run(tmp_path / "raw", "--source", "local", "--data-files", str(tmp_path / "d.parquet"))
