"""Tokenizer profiles: special ids, the SFT loss mask and the HF chat template agree."""

import jinja2
import pytest
from tiny_tokenizer import train_tiny_tokenizer

from common.errors import UserError
from tokenizer import profiles


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    path = train_tiny_tokenizer(
        tmp_path_factory.mktemp("tok") / "tokenizer.json",
        ["Max the dog lives in the forest."] * 20,
        vocab_size=400,
    )
    return profiles.load_tokenizer(path)


def test_literal_special_text_is_plain_bytes(tokenizer):
    ids = profiles.encode_document(tokenizer, "a <|end|> b <|user|>")
    assert ids[0] == 0
    assert not set(ids[1:]) & set(range(len(profiles.SPECIAL_TOKENS)))
    assert tokenizer.decode(ids[1:], skip_special_tokens=False) == "a <|end|> b <|user|>"


def test_mask_covers_exactly_assistant_content_and_turn_end(tokenizer):
    messages = [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello Max"},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Bye"},
    ]
    ids, mask = profiles.encode_conversation(tokenizer, messages)
    trained = [i for i, m in zip(ids, mask) if m]
    expected = profiles.encode_response(tokenizer, "Hello Max") + profiles.encode_response(
        tokenizer, "Bye"
    )
    assert trained == expected
    assert ids[:2] == [0, 2]


def test_prompt_is_the_conversation_prefix(tokenizer):
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]
    ids, _ = profiles.encode_conversation(tokenizer, messages)
    prompt = profiles.encode_prompt(tokenizer, messages[:1])
    assert ids[: len(prompt)] == prompt and prompt[-1] == 4
    assert ids[len(prompt) :] == profiles.encode_response(tokenizer, "Yo")


def test_chat_template_renders_the_same_text(tokenizer):
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]
    rendered = jinja2.Template(profiles.CHAT_TEMPLATE).render(
        messages=messages, bos_token="<|endoftext|>", add_generation_prompt=True
    )
    assert rendered == "<|endoftext|><|user|>Hi<|end|><|assistant|>Yo<|end|><|assistant|>"


def test_bad_inputs(tmp_path, tokenizer):
    with pytest.raises(UserError, match="role"):
        profiles.encode_conversation(tokenizer, [{"role": "robot", "content": "x"}])
    with pytest.raises(UserError, match="content"):
        profiles.encode_conversation(tokenizer, [{"role": "user", "content": 3}])
    not_json = tmp_path / "tokenizer.json"
    not_json.write_text("hello")
    with pytest.raises(UserError, match="not a Hugging Face tokenizer"):
        profiles.load_tokenizer(not_json)
    with pytest.raises(UserError, match="not found"):
        profiles.load_tokenizer(tmp_path / "missing.json")
