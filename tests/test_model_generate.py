"""model/generate.py: KV-cache decoding, sampling, streaming UTF-8, chat prompts, the CLI."""

import io
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from model_fixtures import build_checkpoint, build_tokenizer

from common.errors import UserError
from common.errors import run_cli as common_run_cli
from model import generate as generation
from model.checkpoint import load_model
from model.config import from_preset
from model.generate import Sampling, StreamDecoder, generate, generate_text, sample
from model.transformer import Transformer
from tokenizer.encoding import load_tokenizer

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory):
    return build_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer.json")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tokenizer_path):
    _, run = build_checkpoint(tmp_path_factory.mktemp("ckpt") / "run", tokenizer_path)
    return run


def model_with_vocab(vocab_size=300, **overrides) -> Transformer:
    torch.manual_seed(0)
    return Transformer(from_preset("debug", vocab_size=vocab_size, **overrides)).eval()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("n_kv_head", [4, 2])
def test_gpu_bf16_cached_logits_match_the_full_forward(n_kv_head):
    """The decoding kernels (cuDNN left out; one query, or a chunk after a prefix with a mask)
    compute what the training forward computes, with and without grouped key/value heads."""
    from model.kv_cache import KVCache

    model = model_with_vocab(n_head=4, n_kv_head=n_kv_head).cuda().to(torch.bfloat16)
    ids = torch.randint(6, 300, (1, 40), device="cuda")
    with torch.no_grad():
        full = model(ids)  # [1, 40, V]
        cache = KVCache(model.config, batch_size=1)
        steps = [model(ids[:, :20], kv_cache=cache), model(ids[:, 20:30], kv_cache=cache)]
        steps += [model(ids[:, t : t + 1], kv_cache=cache) for t in range(30, 40)]
        cached = torch.cat(steps, dim=1)  # [1, 40, V]
    error = (cached.float() - full.float()).norm() / full.float().norm()
    assert error < 2e-2


def greedy_with_context_refill(model, prompt: list[int], new_tokens: int, stop_ids=()) -> list:
    """What cached generation must produce, from full forward passes: the model sees the
    prompt's last block_size tokens; once the context outgrows the cache, it restarts from the
    most recent block_size // 2 tokens and grows again. A stop id ends it (not included)."""
    block, tokens = model.config.block_size, list(prompt)
    start = max(0, len(tokens) - block)
    for _ in range(new_tokens):
        if len(tokens) - start > block:
            start = len(tokens) - block // 2
        with torch.no_grad():
            logits = model(torch.tensor([tokens[start:]]))[0, -1, : model.config.vocab_size]
        if int(logits.argmax()) in stop_ids:
            break
        tokens.append(int(logits.argmax()))
    return tokens[len(prompt) :]


def test_cached_and_uncached_greedy_decoding_agree():
    """The KV cache on (generate) and off (the whole context through the model every token)."""
    model = model_with_vocab()
    prompt = [0, 17, 42, 99, 7]
    cached = list(generate(model, prompt, 60, temperature=0.0, stop_ids=()))
    assert len(cached) == 60 and cached == greedy_with_context_refill(model, prompt, 60)


@pytest.mark.parametrize("prompt_length", [3, 20], ids=["short_prompt", "prompt_over_block"])
def test_a_full_cache_is_refilled_with_the_recent_half_of_the_context(prompt_length):
    """40 tokens through a 16-token cache: three refills, each must re-encode the last 8 tokens
    (re-encoding only the newest token would still give 40 tokens, different ones)."""
    model = model_with_vocab(block_size=16)
    prompt = [0] + list(range(40, 40 + prompt_length - 1))
    tokens = list(generate(model, prompt, 40, temperature=0.0, stop_ids=()))
    assert tokens == greedy_with_context_refill(model, prompt, 40)


def test_sampling_with_a_seed_is_reproducible():
    model = model_with_vocab()
    kwargs = dict(max_new_tokens=20, temperature=1.0, top_k=50, top_p=0.9, stop_ids=())
    first = list(generate(model, [0, 5], seed=123, **kwargs))
    again = list(generate(model, [0, 5], seed=123, **kwargs))
    other = list(generate(model, [0, 5], seed=124, **kwargs))
    assert first == again and first != other


def test_stop_token_ends_generation_and_is_not_yielded():
    model = model_with_vocab()
    with torch.no_grad():
        logits = model(torch.tensor([[0, 5]]))[0, -1, :300]
    greedy_first = int(logits.argmax())
    assert list(generate(model, [0, 5], 10, temperature=0.0, stop_ids=(greedy_first,))) == []


def test_padded_vocab_ids_are_never_sampled():
    logits = torch.zeros(4, 320)
    logits[:, 300:] = 100.0  # the padded ids are by far the most likely
    for temperature in (0.0, 1.0):
        ids = sample(logits, [Sampling(temperature)] * 4, [None] * 4, 300)
        assert (ids < 300).all()


def draws(logits, sampling: Sampling, times=300) -> set[int]:
    """The ids a row samples; every draw in a batch with a greedy row and a top-k-1 row that
    must not change it (each row keeps its own settings)."""
    rows = [Sampling(0.0), sampling, Sampling(1.0, top_k=1)]
    generators = [None, torch.Generator().manual_seed(0), None]
    batch = logits.expand(3, -1)
    picked = [sample(batch, rows, generators, 5).tolist() for _ in range(times)]
    assert {(first, last) for first, _, last in picked} == {(4, 4)}
    return {ids[1] for ids in picked}


def test_top_k_and_top_p_filtering():
    logits = torch.tensor([[-1.0, 0.0, 1.0, 2.0, 3.0]])  # the most likely last
    assert draws(logits, Sampling(1.0)) == {0, 1, 2, 3, 4}
    assert draws(logits, Sampling(1.0, top_k=2)) == {3, 4}
    # probabilities ~ .64 .23 .09 .03 .01: top_p=0.8 keeps the first two (.64 < .8 <= .87)
    assert draws(logits, Sampling(1.0, top_p=0.8)) == {3, 4}
    assert draws(logits, Sampling(1.0, top_k=3, top_p=0.99)) == {2, 3, 4}
    assert draws(logits, Sampling(1.0, top_p=0.01)) == {4}
    assert draws(logits, Sampling(1.0, top_p=1e-300)) == {4}  # 0 in float32: keep the first
    assert draws(logits, Sampling(1e-45)) == {4}  # a tiny temperature is greedy, not nan


def test_sampled_frequencies_follow_the_probabilities():
    """argmax(probs / Exponential noise) must draw token i with probability probs[i]."""
    logits = torch.tensor([[0.0, 1.0, 2.0]]).log_softmax(-1).expand(20000, -1)
    ids = sample(logits, [Sampling(1.0)] * 20000, [None] * 20000, 3)
    torch.testing.assert_close(
        torch.bincount(ids, minlength=3) / 20000, logits[0].exp(), atol=0.015, rtol=0
    )


def test_stream_decoder_never_splits_a_utf8_character(tokenizer_path):
    tokenizer = load_tokenizer(tokenizer_path)
    text = "naïve café 🦊 東京 — Straße"
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    assert len(ids) > len(text) // 2  # the emoji and CJK span several byte tokens
    decoder = StreamDecoder(tokenizer)
    pieces = [decoder.push(i) for i in ids] + [decoder.finish()]
    assert "".join(pieces) == text
    assert not any("\ufffd" in piece for piece in pieces)


def test_stream_decoder_decodes_each_token_once_and_equals_the_whole_decode(tokenizer_path):
    """Random ids (partial characters, special tokens): the pieces join to decode(all), and no
    push decodes more than the few ids of one unfinished character (no quadratic cost)."""
    tokenizer = load_tokenizer(tokenizer_path)
    decoded_lengths = []
    real_decode = tokenizer.decode

    class Spy:  # tokenizers.Tokenizer's methods cannot be patched on the instance
        def decode(self, ids):
            decoded_lengths.append(len(ids))
            return real_decode(ids)

    ids = torch.randint(
        0, tokenizer.get_vocab_size(), (500,), generator=torch.Generator().manual_seed(0)
    ).tolist()
    decoder = StreamDecoder(Spy())
    pieces = [decoder.push(i) for i in ids] + [decoder.finish()]
    assert "".join(pieces) == real_decode(ids)
    assert max(decoded_lengths) <= 8, max(decoded_lengths)


def test_generate_text_returns_only_the_continuation(tokenizer_path):
    tokenizer = load_tokenizer(tokenizer_path)
    model = model_with_vocab(tokenizer.get_vocab_size())
    text = generate_text(model, tokenizer, "Once upon", 8, temperature=0.0)
    prompt = tokenizer.document("Once upon")
    ids = greedy_with_context_refill(model, prompt, 8, tokenizer.stop_ids)
    assert text == tokenizer.decode(ids)


def test_chat_prompts_render_exactly_as_the_sft_data(tokenizer_path, monkeypatch):
    """Each turn's prompt must equal encode_conversation of the history + <|assistant|>, i.e. the
    exact prefix the SFT data trained the model to continue."""
    tokenizer = load_tokenizer(tokenizer_path)
    replies = iter(["Hello there!", "It is 4."])
    prompts = []

    def fake_generate(model, prompt_ids, **kwargs):
        prompts.append(list(prompt_ids))
        yield from tokenizer.encode(next(replies), add_special_tokens=False).ids

    monkeypatch.setattr(generation, "generate", fake_generate)
    user_turns = iter(["Hi fox", "what is 2+2?", "/quit"])
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    generation.chat(
        model_with_vocab(), tokenizer, {}, "Be brief.", input_fn=lambda _: next(user_turns)
    )
    history = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi fox"},
        {"role": "assistant", "content": "Hello there!"},
        {"role": "user", "content": "what is 2+2?"},
        {"role": "assistant", "content": "It is 4."},
    ]
    assert prompts[0] == tokenizer.prompt(history[:2])
    assert prompts[1] == tokenizer.prompt(history[:4])
    sft_ids, sft_mask = tokenizer.conversation(history)
    first_reply_start = sft_mask.index(1)
    assert sft_ids[:first_reply_start] == prompts[0]  # prompt = SFT tokens before the reply
    assert "Hello there!" in out.getvalue() and "It is 4." in out.getvalue()


def test_cli_prompt_end_to_end(run_dir):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "model.generate",
            "--checkpoint",
            str(run_dir),
            "--prompt",
            "Once upon",
            "--max-new-tokens",
            "5",
            "--temperature",
            "0",
            "--device",
            "cpu",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    model, _, tokenizer_path = load_model(run_dir)
    tokenizer = load_tokenizer(tokenizer_path)
    ids = greedy_with_context_refill(model, tokenizer.document("Once upon"), 5, tokenizer.stop_ids)
    assert result.stdout == "Once upon" + tokenizer.decode(ids) + "\n"


def test_cli_chat_reads_turns_until_eof(run_dir, monkeypatch, capsys):
    """An empty line is skipped (it used to end the chat without a word)."""
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello\n\nhow are you?\n"))
    generation.main(
        [
            "--checkpoint",
            str(run_dir),
            "--chat",
            "--max-new-tokens",
            "4",
            "--seed",
            "1",
            "--device",
            "cpu",
        ]
    )
    out = capsys.readouterr().out
    assert out.count("assistant> ") == 2
    # each reply is what generate() samples (same seed) for the conversation so far
    model, _, tokenizer_path = load_model(run_dir)
    tokenizer = load_tokenizer(tokenizer_path)
    sampling = dict(
        temperature=0.8, seed=1, vocab_size=tokenizer.get_vocab_size(), stop_ids=tokenizer.stop_ids
    )
    history = []
    for user_text in ("hello", "how are you?"):
        history.append({"role": "user", "content": user_text})
        ids = generate(model, tokenizer.prompt(history), 4, **sampling)
        reply = tokenizer.decode(list(ids))
        assert f"assistant> {reply}\n" in out
        history.append({"role": "assistant", "content": reply})


@pytest.mark.parametrize(
    "args, message",
    [
        (["--prompt", "x", "--temperature", "-1"], "--temperature must be >= 0"),
        (["--prompt", "x", "--top-p", "1.5"], "--top-p must be in (0, 1]"),
        (["--prompt", "x", "--top-k", "0"], "--top-k must be >= 1"),
        (["--prompt", "x", "--max-new-tokens", "0"], "--max-new-tokens must be >= 1"),
        (["--prompt", "x", "--checkpoint", "missing/run"], "checkpoint missing/run not found"),
        (["--prompt", "x", "--temperature", "nan"], "--temperature must be >= 0"),
        (["--prompt", "x", "--seed", str(10**20)], "--seed must fit in 64 bits"),
        (["--prompt", "x", "--device", "bogus"], "not a device"),
        (["--prompt", "x", "--device", "meta"], "meta is not available here"),
    ],
)
def test_bad_input_is_a_one_line_error(run_dir, args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        common_run_cli(lambda: generation.main(["--checkpoint", str(run_dir), *args]))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_pick_device_is_one_rule_for_every_command():
    """model.generate, model.serve and the evaluation read --device through pick_device: None
    and "auto" mean cuda when there is one; a device that is not here is one line."""
    here = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert generation.pick_device(None) == generation.pick_device("auto") == here
    assert generation.pick_device("cpu") == torch.device("cpu")
    for name, message in (("bogus", "not a device"), ("meta", "meta is not available here")):
        with pytest.raises(UserError, match=f"--device {name}: {message}"):
            generation.pick_device(name)
    with pytest.raises(UserError, match="--device cuda:99: "):  # no CUDA, or no 100th GPU
        generation.pick_device("cuda:99")
