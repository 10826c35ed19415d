"""Bits per byte: the byte length behind each token id, and val/bpb as a run logs it."""

import math

import pytest
import torch
from tiny_tokenizer import train_tiny_tokenizer
from training_fixtures import logged_scalars, make_inputs, tiny_config

from tokenizer.encoding import SPECIAL_TOKENS, load_tokenizer
from tokenizer.token_bytes import token_byte_lengths
from training.pretraining_stage import PretrainingStage
from training.stage import language_model_scalars
from training.trainer import train

TEXTS = ["Max the dog ran. Café, naïve, 日本語, emoji 🙂!", "Lily saw a kite over the river."]


def test_token_bytes_add_up_to_the_utf8_length_of_any_text(tmp_path):
    """Bug guarded: counting characters (or decoded single tokens, which may be half a
    character) instead of bytes would make bpb wrong for any non-ASCII text."""
    tokenizer = load_tokenizer(train_tiny_tokenizer(tmp_path / "t.json", TEXTS * 20, 320))
    lengths = token_byte_lengths(tokenizer)
    assert lengths.shape == (tokenizer.get_vocab_size(),)
    assert lengths[: len(SPECIAL_TOKENS)].tolist() == [0] * len(SPECIAL_TOKENS)
    for text in [*TEXTS, "unseen words: Ωmega ∑ ☃ and a very long tail " * 3]:
        ids = tokenizer.document(text)  # <|endoftext|> first: 0 bytes
        assert int(lengths[ids].sum()) == len(text.encode("utf-8")), text


def test_bpb_is_nats_on_text_over_bytes_and_leaves_no_raw_sums():
    scalars = language_model_scalars({"loss": 2.0, "text_nats": 3.0, "text_bytes": 4.0})
    assert scalars == pytest.approx(
        {"loss": 2.0, "ppl": math.exp(2.0), "bpb": 3.0 / (4.0 * math.log(2))}
    )


def test_a_run_logs_the_bits_per_byte_of_its_validation_text(tmp_path):
    """val/bpb against an independent count: the float64 loss on every validation target that
    is not a special token, over the UTF-8 bytes those targets decode to (ASCII text here)."""
    config = tiny_config(tmp_path, *make_inputs(tmp_path), max_steps=4, eval_interval=4)
    result = train(config, PretrainingStage)
    tokenizer, model = result.tokenizer, result.model
    nats, text_bytes = 0.0, 0
    with torch.no_grad():
        for batch in result.stage.validation_batches():
            log_probs = torch.log_softmax(model(batch["inputs"]).double(), dim=-1)  # [B, T, V]
            for row, targets in enumerate(batch["targets"].tolist()):
                for position, target in enumerate(targets):
                    if target >= len(SPECIAL_TOKENS):
                        nats -= log_probs[row, position, target].item()
                        text_bytes += len(tokenizer.decode([target]).encode("utf-8"))
    expected = nats / (text_bytes * math.log(2))
    assert logged_scalars(result.run_dir, "val/bpb") == [pytest.approx(expected, rel=1e-4)]
    assert result.val_metrics["bpb"] == pytest.approx(expected, rel=1e-5)
    assert "val/text_nats" not in result.val_metrics and "text_nats" not in result.val_metrics
