"""tokenizer.encoding: special ids, the SFT loss mask and the HF chat template agree."""

import jinja2
import pytest
import tokenizers
from tiny_tokenizer import train_tiny_tokenizer

from common.errors import UserError
from tokenizer import encoding


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    path = train_tiny_tokenizer(
        tmp_path_factory.mktemp("tok") / "tokenizer.json",
        ["Max the dog lives in the forest."] * 20,
        vocab_size=400,
    )
    return encoding.load_tokenizer(path)


def test_literal_special_text_is_plain_bytes(tokenizer):
    ids = tokenizer.document("a <|end|> b <|user|>")
    assert ids[0] == 0
    assert tokenizer.special_ids == set(range(len(encoding.SPECIAL_TOKENS)))
    assert not set(ids[1:]) & tokenizer.special_ids
    assert tokenizer.decode(ids[1:], skip_special_tokens=False) == "a <|end|> b <|user|>"


def test_mask_covers_exactly_assistant_content_and_turn_end(tokenizer):
    messages = [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello Max"},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Bye"},
    ]
    ids, mask = tokenizer.conversation(messages)
    trained = [i for i, m in zip(ids, mask) if m]
    expected = tokenizer.reply(messages[:2], "Hello Max") + tokenizer.reply(messages[:4], "Bye")
    assert trained == expected
    assert tokenizer.reply([], "Bye") == tokenizer.encode_text("Bye") + [5]  # content + <|end|>
    assert ids[:2] == [0, 2]


def test_prompt_is_the_conversation_prefix(tokenizer):
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]
    ids, _ = tokenizer.conversation(messages)
    prompt = tokenizer.prompt(messages[:1])
    assert ids[: len(prompt)] == prompt and prompt[-1] == 4
    assert ids[len(prompt) :] == tokenizer.reply(messages[:1], "Yo")


def test_chat_template_renders_the_same_text(tokenizer):
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]
    rendered = jinja2.Template(encoding.CHAT_TEMPLATE).render(
        messages=messages, bos_token="<|endoftext|>", add_generation_prompt=True
    )
    assert rendered == "<|endoftext|><|user|>Hi<|end|><|assistant|>Yo<|end|><|assistant|>"


CONVERSATIONS = [
    [{"role": "user", "content": "Hi"}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Où est Max? 🦊 {{ not jinja }} {% raw %}"},
        {"role": "assistant", "content": "In the forest.\n\nTabs\there."},
        {"role": "user", "content": "<|end|> typed by a user"},
        {"role": "assistant", "content": ""},
    ],
]


@pytest.mark.parametrize("messages", CONVERSATIONS)
@pytest.mark.parametrize("add_generation_prompt", [False, True])
def test_the_pieces_are_the_template_rendered(tokenizer, messages, add_generation_prompt):
    pieces = tokenizer.chat_pieces(messages, add_generation_prompt)
    rendered = jinja2.Template(encoding.CHAT_TEMPLATE).render(
        messages=messages, bos_token="<|endoftext|>", add_generation_prompt=add_generation_prompt
    )
    assert rendered == "".join(piece.text for piece in pieces)


@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_every_encoder_is_the_renderer(tokenizer, messages):
    # Encoding the rendered pieces gives what decoding must give back: the rendered text.
    ids, mask = tokenizer.conversation(messages)
    assert tokenizer.decode(ids, skip_special_tokens=False) == tokenizer.render(messages)
    assert len(mask) == len(ids)
    prompt = tokenizer.prompt(messages)
    assert prompt == ids + [4]  # <|assistant|>
    reply = tokenizer.reply(messages, "A reply.")
    answered = [*messages, {"role": "assistant", "content": "A reply."}]
    assert prompt + reply == tokenizer.conversation(answered)[0]


def test_our_special_ids_are_todays(tokenizer):
    assert [tokenizer.token_to_id(t) for t in encoding.SPECIAL_TOKENS] == list(range(6))
    assert (tokenizer.bos_id, tokenizer.pad_id, tokenizer.eos_id) == (0, 1, 5)
    assert tokenizer.end_of_turn == "<|end|>" and tokenizer.stop_ids == (5, 0)


def test_bad_inputs(tmp_path, tokenizer):
    with pytest.raises(UserError, match="role"):
        tokenizer.conversation([{"role": "robot", "content": "x"}])
    with pytest.raises(UserError, match="content"):
        tokenizer.conversation([{"role": "user", "content": 3}])
    plain = tokenizers.Tokenizer(tokenizers.models.BPE())
    plain.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(UserError, match="does not reserve"):  # not ours, and no config beside
        encoding.load_tokenizer(tmp_path / "tokenizer.json")
    not_json = tmp_path / "tokenizer.json"
    not_json.write_text("hello")
    with pytest.raises(UserError, match="not a Hugging Face tokenizer"):
        encoding.load_tokenizer(not_json)
    with pytest.raises(UserError, match="not found"):
        encoding.load_tokenizer(tmp_path / "missing.json")
