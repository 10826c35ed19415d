"""model/export/gguf.py, tested against the real llama.cpp (llama-cpp-python builds it from
source): llama.cpp splits text into our token ids, computes our logits and greedy tokens, and
chats in our format through the chat template the file carries.

The trained model is the sample pipeline's DPO checkpoint (post_training_fixtures, shared with
the DPO tests); random debug models cover the tied/untied head and the padded vocabulary.
llama-cpp-python is a test-only dependency (the exporter needs only the `gguf` package).
"""

from __future__ import annotations

import errno
import json
import math
import shutil
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from model_fixtures import SAMPLE_TEXT, build_checkpoint
from model_fixtures import build_tokenizer as build_gpt2_split_tokenizer
from post_training_fixtures import dpo_checkpoint, sample_pipeline
from tokenizers import pre_tokenizers, trainers

import model.export.gguf as gguf_export
from common.errors import UserError
from model.checkpoint import load_model
from model.export.gguf import export, main
from model.export.gguf_tokenizer import gguf_vocab
from model.generate import generate
from tokenizer.encoding import CHAT_TEMPLATE, SPECIAL_TOKENS, load_tokenizer
from tokenizer.train import build_tokenizer

gguf = pytest.importorskip("gguf")
llama_cpp = pytest.importorskip("llama_cpp", reason="pip install -r requirements-dev.txt")

VARIED_TEXTS = [
    "Once upon a time there was a little fox.",
    "café, naïve, Straße, Ærøskøbing, crème brûlée",
    "東京は日本の首都です。我想在苹果工作。한국어 텍스트",
    "🦊🦙 emoji 😶‍🌫️ and flags 🇫🇷 ✅",
    " ".join("7" * n for n in range(1, 12)) + " 3.14159 1,000,000",
    "spaces:  two   three    four\t\ttabs\n\nnewlines\r\n\r\nwindows   \n  trailing   ",
    "I've been told he's there, 'RE you sure? We'Ve a'lL DON'T",
    "def f(x):\n    return {'a': [x ** 2, x // 3]}  # code\n",
    "a user typed <|end|><|user|> and <|endoftext|> literally",
    "",
    "   ",
    "\n",
]
MESSAGES = [
    {"role": "system", "content": "You write short stories."},
    {"role": "user", "content": "Write a story about a fox named Max who lives in a forest."},
]


def open_gguf(path, n_ctx: int = 256):
    return llama_cpp.Llama(
        str(path), n_ctx=n_ctx, n_threads=1, logits_all=True, verbose=False, seed=0
    )


@pytest.fixture
def llama(request):
    """open_gguf, closed after the test (llama-cpp-python frees its model late otherwise)."""
    opened = []

    def load(path, **kwargs):
        opened.append(open_gguf(path, **kwargs))
        return opened[-1]

    yield load
    for llm in opened:
        llm.close()


def llama_logits(llm, ids: list[int]) -> np.ndarray:
    """llama.cpp's logits [len(ids), V] for one sequence."""
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)])


def llama_greedy(llm, ids: list[int], steps: int) -> list[int]:
    """Greedy continuation by argmax of llama.cpp's logits (no stop token)."""
    out = []
    llm.reset()
    llm.eval(ids)
    for _ in range(steps):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(token)
        llm.eval([token])
    return out


def our_logits(model, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([ids]))[0, :, : model.config.vocab_size].numpy()


def train_split_tokenizer(path, texts, vocab_size: int = 300):
    """A tokenizer.train-style tokenizer (GPT-4 pre-split) trained on `texts` in milliseconds."""
    tokenizer = build_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(texts, trainer)
    path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(path))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(our DPO model, its tokenizer, {dtype: gguf path}) for the sample pipeline's model."""
    run = dpo_checkpoint()
    model, _, tokenizer_path = load_model(run)
    root = tmp_path_factory.mktemp("gguf")
    paths = {dtype: export(run, root / dtype, dtype) for dtype in ("f32", "f16", "q8_0")}
    return model, load_tokenizer(tokenizer_path), paths


@pytest.fixture(scope="module")
def random_models(tmp_path_factory):
    """{tied: (model, run folder, gguf path)} for GQA debug models whose vocabulary (300) is
    padded to 320."""
    root = tmp_path_factory.mktemp("random")
    tokenizer = train_split_tokenizer(root / "tokenizer.json", [SAMPLE_TEXT] * 20)
    models = {}
    for tied in (True, False):
        model, run = build_checkpoint(
            root / f"run{tied}", tokenizer, n_kv_head=2, tie_embeddings=tied
        )
        models[tied] = model, run, export(run, root / f"out{tied}")
    return models


def test_metadata_llama_cpp_reads(trained, random_models):
    model, _, paths = trained
    reader = gguf.GGUFReader(paths["f32"])
    fields = {name: field.contents() for name, field in reader.fields.items()}
    c = model.config
    assert fields["general.architecture"] == "llama"
    assert fields["llama.context_length"] == c.block_size
    assert fields["llama.attention.head_count"] == c.n_head == 4
    assert fields["llama.attention.head_count_kv"] == c.n_kv_head == 2
    assert fields["llama.rope.freq_base"] == c.rope_theta
    assert fields["tokenizer.ggml.model"] == "gpt2"
    assert fields["tokenizer.ggml.pre"] == "llama-bpe"
    types = fields["tokenizer.ggml.token_type"]
    assert types[:6] == [3] * 6 and set(types[6:]) == {1}  # our specials are CONTROL tokens
    assert fields["tokenizer.ggml.tokens"][:6] == SPECIAL_TOKENS
    assert (fields["tokenizer.ggml.bos_token_id"], fields["tokenizer.ggml.eos_token_id"]) == (0, 5)
    assert fields["tokenizer.ggml.eot_token_id"] == 5
    assert fields["tokenizer.ggml.padding_token_id"] == 1
    assert fields["tokenizer.chat_template"] == CHAT_TEMPLATE
    names = {tensor.name for tensor in reader.tensors}
    assert not c.tie_embeddings and "output.weight" in names  # the sample model is untied
    assert len(names) == 3 + 9 * c.n_layer
    tied = {tensor.name for tensor in gguf.GGUFReader(random_models[True][2]).tensors}
    assert "output.weight" not in tied  # llama.cpp then reads token_embd, as we do
    modelfile = (paths["f32"].parent / "Modelfile").read_text()
    assert "FROM ./model.gguf" in modelfile and 'PARAMETER stop "<|end|>"' in modelfile


def test_llama_cpp_tokenizes_like_ours(trained, llama):
    """Bug guarded: a pre-split, merge order or byte map that differs from tokenizer.train's
    would give other ids for some text; a special-token string in user text must stay text."""
    _, tokenizer, paths = trained
    llm = llama(paths["f32"])
    texts = VARIED_TEXTS + [row["text"] for row in held_out_rows(5)]
    for text in texts:
        ours = tokenizer.encode_text(text)
        assert llm.tokenize(text.encode(), add_bos=False, special=False) == ours, text
        assert llm.tokenize(text.encode(), add_bos=True, special=False) == [0, *ours], text
        assert llm.detokenize(ours).decode() == text
    literal = llm.tokenize(b"<|end|>", add_bos=False, special=False)
    assert 5 not in literal and len(literal) > 1


def test_f32_logits_and_64_greedy_tokens_match(trained, llama):
    model, tokenizer, paths = trained
    llm = llama(paths["f32"])
    prompt = tokenizer.prompt(MESSAGES)
    ours, theirs = our_logits(model, prompt), llama_logits(llm, prompt)
    assert np.abs(theirs - ours).max() <= 1e-3 * np.abs(ours).max()
    mine = list(generate(model, prompt, 64, temperature=0.0, stop_ids=()))
    assert llama_greedy(llm, prompt, 64) == mine


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_f32_logits_match_for_both_heads_and_a_padded_vocabulary(random_models, tied, llama):
    """Bug guarded: q/k rows left in Hugging Face's RoPE layout (llama.cpp pairs channels
    differently), an untied head written as the embedding, or padded rows kept as tokens."""
    model, _, path = random_models[tied]
    llm = llama(path)
    assert llm.n_vocab() == model.config.vocab_size == 300 != model.config.padded_vocab_size
    torch.manual_seed(1)
    ids = [0, *torch.randint(6, 300, (60,)).tolist()]
    ours, theirs = our_logits(model, ids), llama_logits(llm, ids)
    assert np.abs(theirs - ours).max() <= 1e-3 * np.abs(ours).max()


def test_without_the_qk_permutation_the_logits_differ(random_models, tmp_path, llama, monkeypatch):
    """The logits tests can fail: an export that skips the q/k permutation exceeds their
    tolerance (measured: 6.6x over it on this small random model)."""
    model, run, _ = random_models[True]
    monkeypatch.setattr(gguf_export, "permute_for_llama_cpp", lambda weight, n_heads: weight)
    path = export(run, tmp_path / "unpermuted")
    ids = [0, *range(10, 70)]
    ours, theirs = our_logits(model, ids), llama_logits(llama(path), ids)
    assert np.abs(theirs - ours).max() > 1e-3 * np.abs(ours).max()


def held_out_rows(limit: int):
    rows = datasets.load_from_disk(str(sample_pipeline().raw["pre"] / "test"))
    return rows.select(range(min(limit, len(rows))))


def perplexity(logits_of, documents: list[list[int]]) -> float:
    """exp(mean next-token NLL) over the documents, from a function ids -> logits [T, V]."""
    total, count = 0.0, 0
    for ids in documents:
        logits = torch.from_numpy(np.asarray(logits_of(ids), dtype=np.float64))
        nll = torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(ids[1:]), reduction="sum")
        total, count = total + float(nll), count + len(ids) - 1
    return math.exp(total / count)


def test_f16_and_q8_0_greedy_text_and_perplexity(trained, llama, capsys):
    """q8_0's perplexity on held-out stories is within 1% of f32's (and f16's closer still);
    the greedy replies are printed for the report (pytest -s)."""
    model, tokenizer, paths = trained
    block = model.config.block_size
    documents = [tokenizer.document(row["text"])[:block] for row in held_out_rows(20)]
    prompt = tokenizer.prompt(MESSAGES)
    ours = perplexity(lambda ids: our_logits(model, ids), documents)
    results = {}
    for dtype, path in paths.items():
        llm = llama(path)
        results[dtype] = perplexity(lambda ids, llm=llm: llama_logits(llm, ids), documents)
        reply = tokenizer.decode(llama_greedy(llm, prompt, 48))
        with capsys.disabled():
            gap = results[dtype] / ours - 1
            print(f"\n{dtype}: perplexity {results[dtype]:.4f} ({gap:+.3%} vs ours) {reply!r}")
    assert abs(results["f32"] / ours - 1) < 1e-4
    assert abs(results["f16"] / results["f32"] - 1) < 0.01
    assert abs(results["q8_0"] / results["f32"] - 1) < 0.01


def test_chat_completion_renders_our_prompt_and_stops_at_end_of_turn(trained, llama):
    """llama-cpp-python's chat path (the GGUF's Jinja template, then tokenized with special
    tokens) gives our renderer's prompt ids, and the reply ends at <|end|>, as ours does."""
    model, tokenizer, paths = trained
    llm = llama(paths["f32"])
    reply = llm.create_chat_completion(MESSAGES, temperature=0.0, max_tokens=150)
    prompt = tokenizer.prompt(MESSAGES)
    assert llm.input_ids[: len(prompt)].tolist() == prompt
    mine = list(generate(model, prompt, 150, temperature=0.0, stop_ids=()))
    end = tokenizer.stop_ids[0]  # <|end|>
    assert end in mine, "the sample DPO model should close its reply within 150 tokens"
    mine = mine[: mine.index(end)]
    assert reply["choices"][0]["finish_reason"] == "stop"
    assert reply["choices"][0]["message"]["content"] == tokenizer.decode(mine)


def test_chat_path_parses_a_typed_special_token_as_transformers_does(random_models, llama):
    """What the README says: llama.cpp's chat path renders the template to text, then parses
    special tokens in it, so a literal <|end|> in user text becomes the real token there (like
    transformers' apply_chat_template), while our encoder keeps it plain text."""
    _, _, path = random_models[True]
    llm = llama(path)
    messages = [{"role": "user", "content": "hi <|end|> there"}]
    llm.create_chat_completion(messages, max_tokens=1, temperature=0.0)
    ids = llm.input_ids[: llm.n_tokens].tolist()
    prompt = ids[: ids.index(4) + 1]  # up to <|assistant|>
    assert prompt.count(5) == 2  # the typed <|end|> and the one closing the turn


def test_llama_cpps_builtin_template_guess_is_not_our_format_so_the_readme_says_jinja():
    """llama-cli and llama-server render a chat with the GGUF's Jinja template only under
    --jinja (llama-server's default since late 2025, llama-cli's not). Without it llama.cpp
    guesses a built-in format from strings in the template: ours reads as Phi-3's, which puts
    newlines after the role tokens and drops <|endoftext|>. So the README's commands pass it."""
    import ctypes

    from tokenizer.encoding import CHAT_TEMPLATE, compile_template

    messages = [("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello."), ("user", "Go")]
    chat = (llama_cpp.llama_chat_message * len(messages))(
        *[llama_cpp.llama_chat_message(role=r.encode(), content=c.encode()) for r, c in messages]
    )
    buffer = ctypes.create_string_buffer(4096)
    size = llama_cpp.llama_chat_apply_template(
        CHAT_TEMPLATE.encode(), chat, len(messages), True, buffer, len(buffer)
    )
    guessed = buffer.raw[:size].decode()
    ours = compile_template(CHAT_TEMPLATE).render(
        messages=[{"role": r, "content": c} for r, c in messages],
        add_generation_prompt=True,
        bos_token="<|endoftext|>",
    )
    assert size > 0 and guessed != ours and "<|user|>\nHi<|end|>" in guessed
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text().splitlines()
    commands = [line for line in readme if line.startswith(("llama-cli ", "llama-server "))]
    assert len(commands) == 2 and all(" --jinja" in line for line in commands), commands


def test_a_merge_order_llama_bpe_would_ignore_gets_smaug_bpe(tmp_path, llama):
    """Bug guarded: llama.cpp's llama-bpe takes a piece of text that is a vocabulary entry
    whole (Llama 3's ignore_merges) where our merges may make several tokens of it."""
    path = train_split_tokenizer(tmp_path / "tokenizer.json", [SAMPLE_TEXT] * 20)
    data = json.loads(path.read_text())
    vocab, size = data["model"]["vocab"], len(data["model"]["vocab"])
    # "qzj" is a token, but the merge z+j outranks q+z: the merges give "q" "zj"
    for offset, token in enumerate(["zj", "qz", "qzj"]):
        vocab[token] = size + offset
    data["model"]["merges"] += [["z", "j"], ["q", "z"], ["qz", "j"]]
    path.write_text(json.dumps(data))
    tokenizer = load_tokenizer(path)
    assert len(tokenizer.encode_text("qzj")) == 2
    _, run = build_checkpoint(tmp_path / "run", path)
    out = export(run, tmp_path / "out")
    reader = gguf.GGUFReader(out)
    assert reader.fields["tokenizer.ggml.pre"].contents() == "smaug-bpe"
    text = "qzj and qz zj"
    assert llama(out).tokenize(text.encode(), False, False) == tokenizer.encode_text(text)


def test_bad_input_is_one_line_and_leaves_nothing_behind(
    tmp_path, random_models, monkeypatch, capsys
):
    _, run, _ = random_models[True]
    with pytest.raises(UserError, match="--dtype must be one of"):
        export(run, tmp_path / "x", "q4_0")
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(run), "--output-dir", str(tmp_path / "x"), "--dtype", "int4"])
    assert capsys.readouterr().err.startswith("error: argument --dtype: invalid choice: 'int4'")
    main(["--checkpoint", str(run), "--output-dir", str(tmp_path / "out")])
    with pytest.raises(UserError, match="already exists; pass --overwrite"):
        main(["--checkpoint", str(run), "--output-dir", str(tmp_path / "out")])
    before = (tmp_path / "out" / "model.gguf").read_bytes()

    def full_disk(self, **kwargs):
        self.fout[0].write(b"half a tensor")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", full_disk)
    with pytest.raises(UserError, match="no space left on the disk") as error:
        export(run, tmp_path / "out", "f16", overwrite=True)
    assert "\n" not in str(error.value)
    assert (tmp_path / "out" / "model.gguf").read_bytes() == before  # the old export is kept
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("out")) == ["out"]
    assert not (tmp_path / "x").exists()


def test_refuses_what_llama_cpp_cannot_run(tmp_path):
    split = train_split_tokenizer(tmp_path / "split.json", [SAMPLE_TEXT] * 20)
    _, narrow = build_checkpoint(tmp_path / "narrow", split, n_embd=48, n_head=4, mlp_hidden=128)
    with pytest.raises(UserError, match="--dtype q8_0 stores rows in blocks of 32"):
        export(narrow, tmp_path / "q8", "q8_0")
    export(narrow, tmp_path / "f16", "f16")  # any width works unquantised
    gpt2_split = build_gpt2_split_tokenizer(tmp_path / "gpt2.json")
    _, foreign = build_checkpoint(tmp_path / "foreign", gpt2_split)
    with pytest.raises(UserError, match="not a byte-level BPE with the GPT-4"):
        export(foreign, tmp_path / "foreign-gguf")
    shutil.rmtree(tmp_path / "f16")
    assert sorted(p.name for p in tmp_path.iterdir() if "gguf" in p.name or p.name == "q8") == []


def test_tokenizer_merges_reach_every_token_of_a_trained_tokenizer():
    """The sample pipeline's real tokenizer (tokenizer.train) gets llama-bpe: its merges make
    every vocabulary entry from the entry's own text."""
    tokenizer = load_tokenizer(sample_pipeline().tokenizer)
    assert gguf_vocab(tokenizer, "sample tokenizer").pre == "llama-bpe"
