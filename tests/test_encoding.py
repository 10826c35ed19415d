"""tokenizer.encoding: special ids, the SFT loss mask and the HF chat template agree."""

import jinja2
import pytest
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
    ids = encoding.encode_document(tokenizer, "a <|end|> b <|user|>")
    assert ids[0] == 0
    assert not set(ids[1:]) & set(range(len(encoding.SPECIAL_TOKENS)))
    assert tokenizer.decode(ids[1:], skip_special_tokens=False) == "a <|end|> b <|user|>"


def test_mask_covers_exactly_assistant_content_and_turn_end(tokenizer):
    messages = [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello Max"},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Bye"},
    ]
    ids, mask = encoding.encode_conversation(tokenizer, messages)
    trained = [i for i, m in zip(ids, mask) if m]
    expected = encoding.encode_response(tokenizer, "Hello Max") + encoding.encode_response(
        tokenizer, "Bye"
    )
    assert trained == expected
    assert ids[:2] == [0, 2]


def test_prompt_is_the_conversation_prefix(tokenizer):
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]
    ids, _ = encoding.encode_conversation(tokenizer, messages)
    prompt = encoding.encode_prompt(tokenizer, messages[:1])
    assert ids[: len(prompt)] == prompt and prompt[-1] == 4
    assert ids[len(prompt) :] == encoding.encode_response(tokenizer, "Yo")


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
def test_chat_template_follows_the_renderer(messages, add_generation_prompt):
    pieces = encoding.chat_pieces(messages, add_generation_prompt)
    rendered = jinja2.Template(encoding.CHAT_TEMPLATE).render(
        messages=messages, bos_token="<|endoftext|>", add_generation_prompt=add_generation_prompt
    )
    assert rendered == encoding.render_text(pieces)


@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_every_encoder_is_the_renderer(tokenizer, messages):
    # Encoding the rendered pieces gives what decoding must give back: the rendered text.
    ids, mask = encoding.encode_conversation(tokenizer, messages)
    text = encoding.render_text(encoding.chat_pieces(messages))
    assert tokenizer.decode(ids, skip_special_tokens=False) == text
    assert len(mask) == len(ids)
    prompt = encoding.encode_prompt(tokenizer, messages)
    assert prompt == ids + [encoding.ASSISTANT_ID]
    reply = encoding.encode_response(tokenizer, "A reply.")
    assert tokenizer.decode(prompt + reply, skip_special_tokens=False) == encoding.render_text(
        encoding.chat_pieces(messages, True) + encoding.response_pieces("A reply.")
    )


def test_named_ids_are_the_reserved_ids(tokenizer):
    names = {
        "<|endoftext|>": encoding.BOS_ID,
        "<|pad|>": encoding.PAD_ID,
        "<|assistant|>": encoding.ASSISTANT_ID,
        "<|end|>": encoding.END_OF_TURN_ID,
    }
    for token, token_id in names.items():
        assert tokenizer.token_to_id(token) == token_id
    assert (tokenizer.token_to_id("<|end|>"), 0) == encoding.STOP_IDS


def test_bad_inputs(tmp_path, tokenizer):
    with pytest.raises(UserError, match="role"):
        encoding.encode_conversation(tokenizer, [{"role": "robot", "content": "x"}])
    with pytest.raises(UserError, match="content"):
        encoding.encode_conversation(tokenizer, [{"role": "user", "content": 3}])
    not_json = tmp_path / "tokenizer.json"
    not_json.write_text("hello")
    with pytest.raises(UserError, match="not a Hugging Face tokenizer"):
        encoding.load_tokenizer(not_json)
    with pytest.raises(UserError, match="not found"):
        encoding.load_tokenizer(tmp_path / "missing.json")
