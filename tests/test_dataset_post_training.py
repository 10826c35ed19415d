"""The SFT and DPO downloaders: sample, hub (loader patched, real column layouts) and local."""

import json
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
from tokenizer_helpers import all_stages_tokenizer, tokenize

from common.errors import UserError
from dataset.post_training.conversations import from_transcripts
from dataset.post_training.dpo import download_dataset as dpo_download
from dataset.post_training.sft import download_dataset as sft_download
from dataset.sample_world.check import satisfies
from tokenizer.encoding import load_tokenizer
from tokenizer.tokenized_data import open_split

REPO_ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("train", "validation", "test")


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def run(module, output: Path, *flags: str) -> dict:
    argv = ["--output-dir", str(output), "--num-proc", "1"]
    assert module.main(argv + list(flags)) == 0
    return json.loads((output / "manifest.json").read_text())


def rows(output: Path, split: str) -> list[dict]:
    return list(datasets.load_from_disk(str(output / split)))


def all_rows(output: Path) -> list[dict]:
    return [row for split in SPLITS for row in rows(output, split)]


def reasons(manifest: dict, group: str) -> dict:
    return manifest["filters"][group][-1]["reasons"]


def patch_hub(monkeypatch, tables: dict[str, dict[str, dict]]) -> list[str]:
    """Serve {repo: {split: columns}} in place of the Hub; returns the requested repo ids."""
    requested = []

    def load_dataset(path, name=None, **kwargs):
        requested.append(path)
        if path not in tables:
            raise ConnectionError(f"Couldn't reach '{path}' on the Hub")
        return datasets.DatasetDict(
            {split: datasets.Dataset.from_dict(columns) for split, columns in tables[path].items()}
        )

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return requested


# ---------------------------------------------------------------- SFT


def alpaca_columns(count: int) -> dict:
    columns = {
        "output": [f"Answer {i}." for i in range(count)],
        "input": ["" if i % 2 else f"input {i}" for i in range(count)],
        "instruction": [f"Instruction {i}" for i in range(count)],
    }
    columns["output"][0] = "   "  # empty output
    columns["output"][1] = "x" * 500  # over --max-chars 300
    columns["instruction"][2] = None  # missing field
    return columns


def test_sft_hub_alpaca_to_messages_with_counted_filters(tmp_path, monkeypatch):
    requested = patch_hub(monkeypatch, {"yahma/alpaca-cleaned": {"train": alpaca_columns(53)}})
    manifest = run(sft_download, tmp_path / "sft", "--max-chars", "300", "--seed", "1")
    assert requested == ["yahma/alpaca-cleaned"]
    assert reasons(manifest, "alpaca/train") == {
        "empty_assistant": 1,
        "missing_instruction": 1,
        "too_long": 1,
    }
    conversations = {
        row["messages"][0]["content"]: row["messages"] for row in all_rows(tmp_path / "sft")
    }
    assert len(conversations) == 50
    assert conversations["Instruction 4\n\ninput 4"] == [
        user("Instruction 4\n\ninput 4"),
        assistant("Answer 4."),
    ]
    assert conversations["Instruction 5"][1] == assistant("Answer 5.")
    assert [manifest["splits"][s]["rows"] for s in SPLITS] == [48, 1, 1]


def test_sft_hub_split_is_deterministic_per_seed(tmp_path, monkeypatch):
    patch_hub(monkeypatch, {"yahma/alpaca-cleaned": {"train": alpaca_columns(200)}})
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        run(sft_download, tmp_path / name, "--seed", seed)
    assert rows(tmp_path / "a", "test") == rows(tmp_path / "b", "test")
    assert rows(tmp_path / "a", "test") != rows(tmp_path / "c", "test")
    everything = [r["messages"][0]["content"] for r in all_rows(tmp_path / "a")]
    assert len(everything) == len(set(everything)) == 198  # no row in two splits


def smoltalk_columns(count: int, tag: str) -> dict:
    """HuggingFaceTB/smol-smoltalk's layout: messages [{content, role}], source."""
    system = {"content": "You are a concise assistant.", "role": "system"}
    conversations = [
        [
            *([system] if i % 2 else []),
            {"content": f"{tag} question {i}", "role": "user"},
            {"content": f"{tag} answer {i}", "role": "assistant"},
            {"content": f"{tag} follow-up {i}", "role": "user"},
            {"content": f"{tag} second answer {i}", "role": "assistant"},
        ]
        for i in range(count)
    ]
    conversations[0] = conversations[0][:-1]  # ends with the user: nothing to learn
    conversations[1] = [system, {"content": "hello", "role": "assistant"}]  # no user turn
    conversations[2][0] = {"content": "call a tool", "role": "tool"}
    sources = ["smol-magpie-ultra" if i % 3 else "everyday-conversations" for i in range(count)]
    return {"messages": conversations, "source": sources}


def test_sft_hub_smoltalk_keeps_multi_turn_conversations_and_trains_every_reply(
    tmp_path, monkeypatch
):
    requested = patch_hub(
        monkeypatch,
        {
            "HuggingFaceTB/smol-smoltalk": {
                "train": smoltalk_columns(60, "train"),
                "test": smoltalk_columns(12, "test"),
            }
        },
    )
    output = tmp_path / "sft"
    manifest = run(sft_download, output, "--dataset", "HuggingFaceTB/smol-smoltalk")
    assert requested == ["HuggingFaceTB/smol-smoltalk"]
    assert reasons(manifest, "smol-smoltalk/train") == {
        "bad_role": 1,
        "last_message_not_assistant": 1,
        "no_user_message": 1,
    }
    assert [manifest["splits"][s]["rows"] for s in SPLITS] == [56, 1, 9], "test is the Hub's"
    assert all("test question" in row["messages"][-4]["content"] for row in rows(output, "test"))
    train = {row["messages"][-4]["content"]: row for row in all_rows(output)}
    assert train["train question 5"]["messages"][0] == {
        "role": "system",
        "content": "You are a concise assistant.",
    }
    assert train["train question 5"]["source"] == "smol-magpie-ultra"
    assert manifest["splits"]["train"]["rows_by_source"]["everyday-conversations"] > 0

    tokenizer_path = all_stages_tokenizer(tmp_path / "tokenizer")
    tokenize(
        output, tmp_path / "tokenized", tokenizer_path, "--stage", "sft", "--max-length", "512"
    )
    split = open_split(tmp_path / "tokenized" / "train")
    tokenizer = load_tokenizer(tokenizer_path)
    for index, row in enumerate(rows(output, "train")[:5]):
        start, end = (int(x) for x in split.doc_offsets[index : index + 2])
        ids, mask = split.tokens[start:end], split.loss_mask[start:end]
        trained = tokenizer.decode(ids[mask == 1].tolist(), skip_special_tokens=False)
        replies = [m["content"] + "<|end|>" for m in row["messages"] if m["role"] == "assistant"]
        assert trained == "".join(replies), "every assistant turn trained, and nothing else"


def test_sft_sample_constraints_hold_and_held_out_combinations_are_new(tmp_path):
    manifest = run(sft_download, tmp_path / "sft", "--source", "sample", "--sample-size", "400")
    assert [manifest["splits"][s]["rows"] for s in SPLITS] == [400, 20, 20]
    combos = {}
    for split in SPLITS:
        combos[split] = set()
        for row in rows(tmp_path / "sft", split):
            assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
            assert satisfies(row["constraints"], row["messages"][1]["content"])
            constraints = json.loads(row["constraints"])
            if constraints["task"] == "story":
                combos[split].add(tuple(constraints["include"][:3]))
    assert combos["test"] and not combos["test"] & combos["train"]


def test_sft_local_jsonl_both_layouts_and_bad_rows(tmp_path):
    lines = [{"messages": [user(f"Hi {i}"), assistant(f"Hello {i}")]} for i in range(4)]
    lines += [{"instruction": f"Do {i}", "input": "", "output": f"Done {i}"} for i in range(4)]
    lines += [
        {"messages": [user("no answer")]},
        {"messages": [{"role": "robot", "content": "x"}, assistant("y")]},
        {"messages": [user("hi"), assistant(5)]},
        {"instruction": "x", "output": ""},
        {"text": "neither layout"},
    ]
    path = tmp_path / "chat.jsonl"
    path.write_text("\n".join(map(json.dumps, lines)) + "\n{broken json\n")
    manifest = run(sft_download, tmp_path / "sft", "--source", "local", "--data-files", str(path))
    assert reasons(manifest, "local") == {
        "bad_role": 1,
        "empty_assistant": 1,
        "invalid_json": 1,
        "last_message_not_assistant": 1,
        "missing_messages_or_instruction": 1,
        "non_string_content": 1,
    }
    firsts = sorted(row["messages"][0]["content"] for row in all_rows(tmp_path / "sft"))
    assert firsts == sorted([f"Hi {i}" for i in range(4)] + [f"Do {i}" for i in range(4)])


def test_sft_local_with_nothing_usable_is_an_error(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"instruction": "x", "output": 3}) + "\n")
    with pytest.raises(UserError, match="no usable conversation.*non_string_output"):
        run(sft_download, tmp_path / "sft", "--source", "local", "--data-files", str(path))
    assert not (tmp_path / "sft").exists()


def test_sft_hub_failure_and_existing_output_are_one_line_errors(tmp_path, monkeypatch):
    patch_hub(monkeypatch, {})
    with pytest.raises(UserError, match="--source sample.*--source local"):
        run(sft_download, tmp_path / "sft")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "sft").mkdir()
    with pytest.raises(UserError, match="already exists; pass --overwrite"):
        run(sft_download, tmp_path / "sft", "--source", "sample")


# ---------------------------------------------------------------- DPO


def ultrafeedback_columns(prompts: list[str]) -> dict:
    columns = {key: [] for key in ("prompt", "prompt_id", "chosen", "rejected", "messages")}
    columns.update(score_chosen=[], score_rejected=[])
    for i, prompt in enumerate(prompts):
        good, bad = f"Good answer to {prompt}.", f"Bad answer to {prompt}."
        if prompt == "same":
            bad = good
        columns["prompt"].append(prompt)
        columns["prompt_id"].append(f"id{i}")
        columns["chosen"].append([user(prompt), assistant(good)])
        other_prompt = "another prompt" if prompt == "mismatch" else prompt
        columns["rejected"].append([user(other_prompt), assistant(bad)])
        columns["messages"].append([user(prompt), assistant(good)])
        columns["score_chosen"].append(8.0)
        columns["score_rejected"].append(3.5)
    return columns


def test_dpo_hub_ultrafeedback_strips_the_prompt_from_the_answers(tmp_path, monkeypatch):
    train = [f"Question {i}" for i in range(30)] + ["same", "mismatch"]
    tables = {
        "HuggingFaceH4/ultrafeedback_binarized": {
            "train_prefs": ultrafeedback_columns(train),
            "test_prefs": ultrafeedback_columns(["Test 1", "Test 2"]),
            "train_sft": ultrafeedback_columns(["not used"]),
        }
    }
    patch_hub(monkeypatch, tables)
    manifest = run(dpo_download, tmp_path / "dpo")
    assert reasons(manifest, "ultrafeedback_binarized/train_prefs") == {
        "identical_chosen_rejected": 1,
        "prompt_mismatch": 1,
    }
    test = rows(tmp_path / "dpo", "test")
    assert [row["prompt"] for row in test] == [[user("Test 1")], [user("Test 2")]]
    assert test[0]["chosen"] == [assistant("Good answer to Test 1.")]
    assert test[0]["rejected"] == [assistant("Bad answer to Test 1.")]
    assert manifest["splits"]["train"]["rows"] + manifest["splits"]["validation"]["rows"] == 30
    assert manifest["splits"]["validation"]["rows"] == 1


def test_dpo_hub_orca_pairs_keep_the_system_prompt(tmp_path, monkeypatch):
    count = 20
    columns = {
        "system": ["" if i % 2 else "You are helpful." for i in range(count)],
        "question": [f"Q{i}" for i in range(count)],
        "chosen": [f"Right {i}" for i in range(count)],
        "rejected": [f"Wrong {i}" for i in range(count)],
    }
    columns["rejected"][3] = "x" * 400  # over --max-chars
    patch_hub(monkeypatch, {"Intel/orca_dpo_pairs": {"train": columns}})
    manifest = run(
        dpo_download, tmp_path / "dpo", "--dataset", "Intel/orca_dpo_pairs", "--max-chars", "100"
    )
    assert reasons(manifest, "orca_dpo_pairs/train") == {"too_long": 1}
    pairs = {row["prompt"][-1]["content"]: row for row in all_rows(tmp_path / "dpo")}
    assert pairs["Q0"]["prompt"] == [{"role": "system", "content": "You are helpful."}, user("Q0")]
    assert pairs["Q1"]["prompt"] == [user("Q1")]
    assert pairs["Q1"]["chosen"] == [assistant("Right 1")]
    assert [manifest["splits"][s]["rows"] for s in SPLITS] == [17, 1, 1]


HH_PROMPT = "\n\nHuman: What should I cook?\n\nAssistant: Pasta is easy.\n\nHuman: And dessert?"


def test_hh_rlhf_prompt_is_the_shared_part_up_to_the_last_assistant_turn():
    pair = from_transcripts(
        {
            "chosen": HH_PROMPT + "\n\nAssistant: I like ice cream.",
            "rejected": HH_PROMPT + "\n\nAssistant: I like nothing.",
        }
    )
    assert pair == {
        "prompt": [user("What should I cook?"), assistant("Pasta is easy."), user("And dessert?")],
        "chosen": [assistant("I like ice cream.")],
        "rejected": [assistant("I like nothing.")],
    }


def test_dpo_hub_hh_rlhf(tmp_path, monkeypatch):
    def transcripts(count: int, tag: str) -> dict:
        chosen = [f"\n\nHuman: {tag} {i}?\n\nAssistant: Kind answer {i}." for i in range(count)]
        rejected = [f"\n\nHuman: {tag} {i}?\n\nAssistant: Rude answer {i}." for i in range(count)]
        rejected[0] = chosen[0]  # identical
        chosen[1] = f"\n\nHuman: {tag} 1?\n\nAssistant: "  # empty answer
        return {"chosen": chosen, "rejected": rejected}

    patch_hub(
        monkeypatch,
        {"Anthropic/hh-rlhf": {"train": transcripts(12, "Q"), "test": transcripts(4, "T")}},
    )
    manifest = run(dpo_download, tmp_path / "dpo", "--dataset", "Anthropic/hh-rlhf")
    assert reasons(manifest, "hh-rlhf/train") == {
        "empty_assistant": 1,
        "identical_chosen_rejected": 1,
    }
    test = rows(tmp_path / "dpo", "test")
    assert [row["prompt"] for row in test] == [[user("T 2?")], [user("T 3?")]]
    assert test[0]["chosen"] == [assistant("Kind answer 2.")]


def test_dpo_sample_chosen_meets_constraints_and_rejected_breaks_them(tmp_path):
    manifest = run(dpo_download, tmp_path / "dpo", "--source", "sample", "--sample-size", "200")
    run(dpo_download, tmp_path / "again", "--source", "sample", "--sample-size", "200")
    assert [manifest["splits"][s]["rows"] for s in SPLITS] == [200, 20, 20]
    assert set(manifest["sample_rejected_violations"]["train"]) >= {"wrong_name", "other_request"}
    for split in SPLITS:
        assert rows(tmp_path / "dpo", split) == rows(tmp_path / "again", split)
        for row in rows(tmp_path / "dpo", split):
            assert satisfies(row["constraints"], row["chosen"][0]["content"])
            assert not satisfies(row["constraints"], row["rejected"][0]["content"])
            assert [len(row["chosen"]), len(row["rejected"])] == [1, 1]


def test_dpo_local_jsonl_in_every_layout(tmp_path):
    lines = []
    for i in range(3):
        lines.append(
            {"prompt": f"P{i}", "chosen": [assistant(f"c{i}")], "rejected": [assistant(f"r{i}")]}
        )
        lines.append({"system": "", "question": f"Q{i}", "chosen": f"c{i}", "rejected": f"r{i}"})
        lines.append(
            {
                "chosen": f"\n\nHuman: H{i}\n\nAssistant: c{i}",
                "rejected": f"\n\nHuman: H{i}\n\nAssistant: r{i}",
            }
        )
        lines.append({"prompt": [user(f"M{i}")], "chosen": f"c{i}", "rejected": f"r{i}"})
    lines += [
        {"prompt": "x", "chosen": "same", "rejected": "same"},
        {"prompt": "x", "chosen": "only chosen"},
        {"chosen": "no prompt", "rejected": "at all"},
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(map(json.dumps, lines)) + "\n")
    manifest = run(dpo_download, tmp_path / "dpo", "--source", "local", "--data-files", str(path))
    assert reasons(manifest, "local") == {
        "identical_chosen_rejected": 1,
        "missing_chosen_or_rejected": 1,
        "missing_prompt": 1,
    }
    prompts = sorted(row["prompt"][-1]["content"] for row in all_rows(tmp_path / "dpo"))
    assert prompts == sorted(f"{kind}{i}" for kind in "PQHM" for i in range(3))


def test_dpo_bad_input(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="does not exist"):
        run(dpo_download, tmp_path / "dpo", "--source", "local", "--data-files", "nope.jsonl")
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"prompt": "x", "chosen": "a", "rejected": "a"}) + "\n")
    with pytest.raises(UserError, match="no usable preference pair"):
        run(dpo_download, tmp_path / "dpo", "--source", "local", "--data-files", str(path))
    patch_hub(monkeypatch, {})
    with pytest.raises(UserError, match="Anthropic/hh-rlhf.*--source sample"):
        run(dpo_download, tmp_path / "dpo", "--dataset", "Anthropic/hh-rlhf")
    assert [p.name for p in tmp_path.iterdir()] == ["pairs.jsonl"]


def test_dpo_and_sft_cli_run_end_to_end(tmp_path):
    for module in (
        "dataset.post_training.sft.download_dataset",
        "dataset.post_training.dpo.download_dataset",
    ):
        command = [sys.executable, "-m", module, "--output-dir", str(tmp_path / module)]
        command += [
            "--tokenizer-profile=post_training_v1",
            "--source",
            "sample",
            "--sample-size",
            "40",
        ]
        result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert datasets.load_from_disk(str(tmp_path / module))["test"].num_rows == 20
        manifest = json.loads((tmp_path / module / "manifest.json").read_text())
        assert "tokenizer_profile" not in manifest["arguments"]  # the original README's flag
    for profile in ("pre_training", "post_training_v2"):
        with pytest.raises(SystemExit) as exit_info:  # only the one chat format is accepted
            sft_download.main(
                ["--output-dir", str(tmp_path / "x"), f"--tokenizer-profile={profile}"]
            )
        assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:  # argparse: usage + "invalid choice"
        dpo_download.main(["--dataset", "nope"])
    assert exit_info.value.code == 2
