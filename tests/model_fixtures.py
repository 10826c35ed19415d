"""Shared fixtures for tests/test_model_*.py: a tiny byte-level BPE tokenizer and checkpoint.

Built in-test with HF `tokenizers` (special tokens at ids 0..5, as tokenizer.train reserves
them), so the model tests do not depend on the tokenizer trainer.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tiny_tokenizer import train_tiny_tokenizer
from tokenizers import Tokenizer

from model.checkpoint import save_model_files
from model.config import from_preset
from model.transformer import Transformer

SAMPLE_TEXT = (
    "Once upon a time there was a little fox who lived in the forest. "
    "Every morning the fox ran to the river to drink, and every evening it came home. "
    "Tom and Lily like to play with the big red ball in the park near their house. "
    "The sun is shining, the birds are singing: café, naïve, Straße, 東京, 🦊 emoji! "
    "Question: what is 12 + 7? Answer: 19. The capital of France is Paris.\n"
)


def build_tokenizer(path: Path, vocab_size: int = 300) -> Path:
    """Train a byte-level BPE on a few KB of text; write tokenizer.json at `path`."""
    return train_tiny_tokenizer(path, [SAMPLE_TEXT] * 20, vocab_size)


def build_checkpoint(
    run_dir: Path, tokenizer_path: Path, seed: int = 0, **overrides
) -> tuple[Transformer, Path]:
    """A random debug model saved as checkpoints/<run>/step_0000001 with a `latest` pointer."""
    vocab_size = Tokenizer.from_file(str(tokenizer_path)).get_vocab_size()
    torch.manual_seed(seed)
    model = Transformer(from_preset("debug", vocab_size=vocab_size, **overrides)).eval()
    step_dir = run_dir / "step_0000001"
    config = {
        "train": {},
        "stage": "pre_training",
        "step": 1,
        "tokenizer": {"sha256": ""},
        "metrics": {},
    }
    save_model_files(model, step_dir, config, tokenizer_path)
    (run_dir / "latest").write_text("step_0000001\n")
    return model, run_dir
