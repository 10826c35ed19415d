"""A byte-level BPE tokenizer as GGUF metadata, so that llama.cpp splits text into the same ids.

tokenizer.train makes a byte-level BPE (GPT-2's byte-to-character map) that splits text with
Llama 3's pre-tokenizer regex (the GPT-4 one) and honours its merges in rank order. llama.cpp
knows that tokenizer as model `gpt2` with one of its pre-tokenizer names:

- `llama-bpe`: that regex, but a piece of text that is itself a vocabulary entry becomes that
  token without running the merges (Llama 3's `ignore_merges`). For most vocabularies the merges
  reach every entry anyway, so the two agree: we check every entry, and then write `llama-bpe`,
  the name every llama.cpp-based tool knows.
- `smaug-bpe`: the same regex with the merges always run: exactly our tokenizer. Written when
  some entry is NOT what the merges make of its own text, where `llama-bpe` would differ.

An imported tokenizer with Llama 3's split is written the same way, and SmolLM's (single digits,
then GPT-2's split) as `smollm`. The special tokens are CONTROL tokens: llama.cpp matches them in
text only when asked to parse special tokens (a chat template's output), never in plain user
text, as our encoder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from gguf import TokenType
from tokenizers import Tokenizer, pre_tokenizers

from common.errors import UserError
from tokenizer.encoding import ChatTokenizer
from tokenizer.train import build_tokenizer

SMOLLM_SPLIT = pre_tokenizers.Sequence(
    [
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ]
)


@dataclass
class GGUFVocab:
    tokens: list[str]  # id order, in the byte-level alphabet (as in tokenizer.json)
    token_types: list[int]
    merges: list[str]  # "left right", in rank order
    pre: str  # llama.cpp's pre-tokenizer name


def check_llama_cpp_can_split(tokenizer: Tokenizer, where: str) -> tuple[dict, bool]:
    """(tokenizer.json as a dict, whether it splits as SmolLM's); UserError unless llama.cpp
    can split text as it does (tokenizer.train's split, Llama 3's, or SmolLM's)."""
    ours, reference = json.loads(tokenizer.to_str()), build_tokenizer()
    model, split = ours["model"], ours.get("pre_tokenizer")
    ours_split = json.loads(reference.to_str())["pre_tokenizer"]
    reference.pre_tokenizer = SMOLLM_SPLIT
    smollm = split == json.loads(reference.to_str())["pre_tokenizer"]
    extras = ("continuing_subword_prefix", "end_of_word_suffix", "byte_fallback")
    plain_bpe = model.get("type") == "BPE" and not any(model.get(key) for key in extras)
    if not ((split == ours_split or smollm) and plain_bpe and ours.get("normalizer") is None):
        raise UserError(
            f"{where} is not a byte-level BPE with the GPT-4 (Llama 3) or SmolLM pre-split and "
            "no normalizer, so llama.cpp could not split text the same way; export it with "
            "model.export.hf and convert that folder with llama.cpp's convert_hf_to_gguf.py"
        )
    return ours, smollm


def merges_reach_every_token(tokenizer: ChatTokenizer, tokens: list[str]) -> list[str]:
    """The vocabulary entries that our merges do NOT produce from their own text (llama-bpe
    would give them as one token where our tokenizer gives several)."""
    special = {tokenizer.id_to_token(i) for i in tokenizer.special_ids}
    unreached = []
    for token in tokens:
        if token in special:
            continue
        pieces = [piece.value for piece in tokenizer.model.tokenize(token)]
        if pieces != [token]:
            unreached.append(token)
    return unreached


def gguf_vocab(tokenizer: ChatTokenizer, where: str) -> GGUFVocab:
    """The token list, types, merges and pre-tokenizer name for `tokenizer` (read from `where`)."""
    data, smollm = check_llama_cpp_can_split(tokenizer, where)
    by_id = {token_id: token for token, token_id in tokenizer.get_vocab(True).items()}
    size = tokenizer.get_vocab_size(True)
    if sorted(by_id) != list(range(size)):
        raise UserError(f"{where}: token ids are not 0..{size - 1} without gaps; cannot export")
    tokens = [by_id[i] for i in range(size)]
    types = [
        int(TokenType.CONTROL if i in tokenizer.special_ids else TokenType.NORMAL)
        for i in range(size)
    ]
    # tokenizers >= 0.20 saves a merge as [left, right]; older files as "left right"
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    pre = "smaug-bpe" if merges_reach_every_token(tokenizer, tokens) else "llama-bpe"
    pre = "smollm" if smollm else pre
    return GGUFVocab(tokens, types, merges, pre)
