"""model/export/hf.py: the exported folder loads in transformers as Llama with identical outputs.

transformers is a test-only dependency (the exporter writes the files by hand).
"""

import ast
import json
from pathlib import Path

import pytest
import torch
from model_fixtures import SAMPLE_TEXT, build_checkpoint, build_tokenizer

from common.errors import UserError
from model.export.hf import export, main
from model.generate import generate
from tokenizer.encoding import CHAT_TEMPLATE, load_tokenizer

transformers = pytest.importorskip("transformers")


MESSAGES = [
    {"role": "system", "content": "You are a fox."},
    {"role": "user", "content": "Where do you live?"},
    {"role": "assistant", "content": "In the forest, near the river."},
    {"role": "user", "content": "What is 12 + 7?"},
]


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory):
    return build_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer.json")


@pytest.fixture(scope="module", params=[True, False], ids=["tied", "untied"])
def exported(request, tmp_path_factory, tokenizer_path):
    """(our model, HF model, export dir) for a GQA debug model, tied and untied."""
    root = tmp_path_factory.mktemp("export")
    ours, run = build_checkpoint(
        root / "run", tokenizer_path, n_kv_head=2, tie_embeddings=request.param
    )
    out = export(run, root / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    return ours, hf, out


def test_config_and_weight_names(exported):
    ours, hf, out = exported
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["model_type"] == "llama"
    assert config["num_key_value_heads"] == 2 and config["num_attention_heads"] == 4
    assert config["vocab_size"] == ours.config.padded_vocab_size
    assert hf.config.tie_word_embeddings == ours.config.tie_embeddings
    assert (hf.lm_head.weight.data_ptr() == hf.model.embed_tokens.weight.data_ptr()) == (
        ours.config.tie_embeddings
    )
    assert type(hf).__name__ == "LlamaForCausalLM"


def test_logits_match_in_fp32(exported):
    ours, hf, _ = exported
    torch.manual_seed(1)
    idx = torch.randint(0, ours.config.vocab_size, (3, 64))
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, ours(idx), atol=1e-4, rtol=0)


def test_greedy_generation_matches_token_for_token(exported):
    ours, hf, _ = exported
    prompt = [0, 45, 78, 90, 12]
    mine = list(generate(ours, prompt, 20, temperature=0.0, stop_ids=()))
    with torch.no_grad():
        theirs = hf.generate(
            torch.tensor([prompt]),
            max_new_tokens=20,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=1,
            min_new_tokens=20,
        )
    assert theirs[0, len(prompt) :].tolist() == mine


def test_tokenizer_and_chat_template_match_ours(exported, tokenizer_path):
    _, _, out = exported
    ours = load_tokenizer(tokenizer_path)
    theirs = transformers.AutoTokenizer.from_pretrained(out)
    assert theirs.bos_token == "<|endoftext|>" and theirs.eos_token == "<|end|>"
    assert theirs.pad_token == "<|pad|>"
    for text in [*SAMPLE_TEXT.split(". "), "  leading spaces", "tabs\tand\nnewlines", "🦊"]:
        assert theirs(text).input_ids == ours.document(text), text
        assert theirs.decode(ours.document(text), skip_special_tokens=True) == text
    prompt = theirs.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True)
    prompt = prompt["input_ids"] if isinstance(prompt, dict) or hasattr(prompt, "keys") else prompt
    assert prompt == ours.prompt(MESSAGES)
    full = theirs.apply_chat_template(MESSAGES[:3], tokenize=True)
    full = full["input_ids"] if hasattr(full, "keys") else full
    assert full == ours.conversation(MESSAGES[:3])[0]
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert config["chat_template"] == CHAT_TEMPLATE


def test_cli_writes_folder_and_refuses_to_overwrite(tmp_path, tokenizer_path, capsys):
    _, run = build_checkpoint(tmp_path / "run", tokenizer_path)
    main(["--checkpoint", str(run), "--output-dir", str(tmp_path / "hf"), "--dtype", "bfloat16"])
    names = {path.name for path in (tmp_path / "hf").iterdir()}
    assert names == {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "generation_config.json",
    }
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    with pytest.raises(UserError, match="already exists"):
        main(["--checkpoint", str(run), "--output-dir", str(tmp_path / "hf")])
    with pytest.raises(UserError, match="not found"):
        main(["--checkpoint", str(tmp_path / "nope"), "--output-dir", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_exported_files_follow_the_umask(tmp_path, tokenizer_path, umask):
    """Bug guarded: safetensors wrote model.safetensors readable by its owner only (0600), so
    an export meant to be shared was unreadable for everyone else."""
    import os

    _, run = build_checkpoint(tmp_path / "run", tokenizer_path)
    previous = os.umask(umask)
    try:
        export(run, tmp_path / "hf")
    finally:
        os.umask(previous)
    for path in (tmp_path / "hf").iterdir():
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path.name


def test_model_package_never_imports_transformers_or_llama_cpp():
    """transformers and llama-cpp-python are test-only: no module under model/ (subpackages
    included) may import them (the exports write their files with safetensors and gguf)."""
    for path in (Path(__file__).resolve().parent.parent / "model").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            test_only = {"transformers", "llama_cpp"}
            assert not any(name.split(".")[0] in test_only for name in names), path
