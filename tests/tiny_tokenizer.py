"""One way for every test to build a tiny tokenizer.json: byte-level BPE, our special tokens.

Real tokenizers come from `python3 -m tokenizer.train`; tests that are not about training a
tokenizer need one in milliseconds, trained on a few KB of their own text.
"""

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from tokenizer.encoding import SPECIAL_TOKENS


def train_tiny_tokenizer(path: Path, texts: Iterable[str], vocab_size: int = 300) -> Path:
    """Train on `texts` and write tokenizer.json at `path` (special tokens at ids 0..5)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(path))
    return path
