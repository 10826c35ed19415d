"""The models a run scores: one of our checkpoints, or a transformers causal-LM folder.

Both turn requests into token ids as lm-eval's `HFLM` does:
- `encode`: a string's ids as the model's tokenizer gives them by default (ours: `<|endoftext|>`
  then the text, which is what the exported tokenizer gives too);
- `encode_pairs`: spaces at the end of a context move to the front of its continuation; the
  continuation's ids are those of `encode(context + continuation)` after the first
  `len(encode(context))` (so a token spanning the boundary is scored as the model would read it);
  an empty context is the BOS token alone;
- chat (`--chat`): the context is the conversation rendered with a generation prompt (ours:
  tokenizer/profiles.py, the one chat renderer; a transformers folder: its chat template).

`logits(idx)` runs the model over right-padded rows [B, T] (in bf16 where --precision says so:
autocast for ours, bf16 weights for a transformers folder); only our checkpoints have
`prefix_cache`, which lets the scorer compute a context shared by all choices once
(evaluation/scoring.py).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tokenizers import Tokenizer

from common.atomic import sha256_file
from common.errors import UserError
from model.checkpoint import load_model, resolve_checkpoint, unwrap_model
from model.kv_cache import KVCache
from tokenizer.profiles import BOS_ID, PAD_ID, encode_prompt, load_tokenizer

CHAT_STAGES = ("sft", "dpo")  # checkpoints of these stages are scored as chat models by default
PAD = PAD_ID  # the id right-padding uses (never read: padded positions are not scored)


def pick_device(device: str | None) -> torch.device:
    """`device`, or cuda when there is one; a one-line error for a device that is not here."""
    name = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name}: not a device (cpu, cuda, cuda:1 ...)") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available here; use --device cpu")
    if chosen.type not in ("cpu", "cuda"):
        raise UserError(f"--device {name}: use cpu or cuda")
    return chosen


def use_bf16(precision: str, device: torch.device) -> bool:
    if precision == "auto":
        return device.type == "cuda" and torch.cuda.is_bf16_supported()
    return precision == "bf16"


def split_pair(context: str, continuation: str) -> tuple[str, str]:
    """lm-eval's rule: trailing spaces of the context belong to the continuation."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        return context[:-spaces], context[-spaces:] + continuation
    return context, continuation


@dataclass
class ScoredModel:
    """What the scorer needs of a model; subclasses fill in the tokenizer and the forward."""

    name: str  # shown in the table and the JSON
    kind: str  # "checkpoint" | "hf"
    stage: str  # "pre_training", "sft", "dpo", or "hf"
    max_length: int  # the longest input (lm-eval's max_length: block size / max positions)
    device: torch.device
    bf16: bool
    source: str = ""  # the path given on the command line
    details: dict = field(default_factory=dict)  # for the JSON's config

    @property
    def default_chat(self) -> bool:
        return self.stage in CHAT_STAGES

    # ---- tokenization (subclasses)
    def encode(self, texts: list[str]) -> list[list[int]]:
        raise NotImplementedError

    def encode_plain(self, texts: list[str]) -> list[list[int]]:
        """Ids without any special token added (a continuation of an empty context)."""
        raise NotImplementedError

    @property
    def prefix_id(self) -> int:
        return BOS_ID

    def encode_pairs(self, pairs: list[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
        """(context ids, continuation ids) per (context, continuation), as lm-eval encodes them."""
        split = [split_pair(c, x) if c else (c, x) for c, x in pairs]
        full = [i for i, (context, _) in enumerate(split) if context]
        wholes = self.encode([split[i][0] + split[i][1] for i in full])
        contexts = self.encode([split[i][0] for i in full])
        out: list = [None] * len(pairs)
        for i, whole, context in zip(full, wholes, contexts):
            out[i] = (context, whole[len(context) :])
        empty = [i for i, (context, _) in enumerate(split) if not context]
        for i, ids in zip(empty, self.encode_plain([split[i][1] for i in empty])):
            out[i] = ([self.prefix_id], ids) if ids[:1] != [self.prefix_id] else (ids[:1], ids[1:])
        return out

    def encode_chat_pairs(
        self, conversations: list[list[dict]], continuations: list[str]
    ) -> list[tuple[list[int], list[int]]]:
        """(the conversation with a generation prompt, the reply) per pair, as ids."""
        raise NotImplementedError

    # ---- the forward pass (subclasses)
    def logits(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits [B, T, V] for right-padded ids idx [B, T]."""
        raise NotImplementedError

    prefix_cache = False  # whether `prefill`/`continue_from` exist (our checkpoints)

    def autocast(self):
        # on a CPU too: --precision bf16 must mean the same for our checkpoints and HF folders
        if self.bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


class CheckpointModel(ScoredModel):
    """One of our Transformers with its tokenizer (a checkpoint folder, or a model in memory)."""

    prefix_cache = True

    def __init__(self, model, tokenizer: Tokenizer, name: str, stage: str, device, bf16: bool,
                 source: str = "", details: dict | None = None):  # fmt: skip
        self.model = unwrap_model(model)
        self.tokenizer = tokenizer
        super().__init__(
            name=name,
            kind="checkpoint",
            stage=stage,
            max_length=self.model.config.block_size,
            device=device,
            bf16=bf16,
            source=source,
            details=details or {},
        )

    def encode(self, texts):
        encodings = self.tokenizer.encode_batch(texts, add_special_tokens=False)
        return [[BOS_ID] + encoding.ids for encoding in encodings]

    def encode_plain(self, texts):
        return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def encode_chat_pairs(self, conversations, continuations):
        """Through the one chat renderer (tokenizer/profiles.py); the prompt ends with the
        <|assistant|> token, so the reply's ids are its own encoding."""
        contexts = [encode_prompt(self.tokenizer, messages) for messages in conversations]
        return list(zip(contexts, self.encode_plain(continuations)))

    @torch.no_grad()
    def logits(self, idx):
        with self.autocast():
            return self.model(idx.to(self.device))

    @torch.no_grad()
    def prefill(self, idx: torch.Tensor) -> KVCache:
        """A cache holding idx [B, T] (right-padded; the caller sets each row's length)."""
        cache = KVCache(self.model.config, batch_size=idx.shape[0], max_length=idx.shape[1])
        with self.autocast():
            self.model(idx.to(self.device), kv_cache=cache, last_only=True)
        return cache

    @torch.no_grad()
    def continue_from(
        self, cache: KVCache | None, rows: torch.Tensor, lengths: list[int], idx: torch.Tensor
    ) -> torch.Tensor:
        """Logits [R, T, V] of idx [R, T], row r continuing after the first lengths[r] tokens of
        cache row rows[r] (one cached context serves all the choices of its example)."""
        R, T = idx.shape
        expanded = KVCache(self.model.config, batch_size=R, max_length=max(lengths) + T)
        if cache is not None:  # row r copies the first lengths[r] positions of row rows[r]
            expanded = cache.select(rows, lengths, max_length=max(lengths) + T)
        with self.autocast():
            return self.model(idx.to(self.device), kv_cache=expanded)


def load_checkpoint_model(
    path: str, device: torch.device, bf16: bool, tokenizer_path: str | None = None
) -> CheckpointModel:
    """Our checkpoint (run or step folder) with its own tokenizer.json, or `tokenizer_path`
    when it is the one the run used (its sha256 is in the checkpoint's config.json)."""
    step_dir = resolve_checkpoint(path)
    model, config, own_tokenizer = load_model(step_dir, device=device)
    recorded = (config.get("tokenizer") or {}).get("sha256") or ""
    if tokenizer_path is not None:
        if not Path(tokenizer_path).is_file():
            raise UserError(f"--tokenizer {tokenizer_path} not found")
        if recorded and sha256_file(tokenizer_path) != recorded:
            raise UserError(
                f"--tokenizer {tokenizer_path} is not the tokenizer {path} was trained with "
                f"(its sha256 differs from the checkpoint's {recorded[:12]}...); leave "
                "--tokenizer out to use the checkpoint's own tokenizer.json"
            )
        own_tokenizer = Path(tokenizer_path)
    if own_tokenizer is None:
        raise UserError(
            f"{path} has no tokenizer.json next to its weights; pass --tokenizer with the "
            "tokenizer.json the run was trained with"
        )
    tokenizer = load_tokenizer(own_tokenizer)
    if tokenizer.get_vocab_size() > model.config.vocab_size:
        raise UserError(
            f"{own_tokenizer} has {tokenizer.get_vocab_size()} tokens but the model of {path} "
            f"only {model.config.vocab_size}; the tokenizer does not match the checkpoint"
        )
    stage = str(config.get("stage") or "pre_training")
    return CheckpointModel(
        model,
        tokenizer,
        name=_short_name(path),
        stage=stage,
        device=device,
        bf16=bf16,
        source=str(path),
        details={"step_dir": str(step_dir), "step": config.get("step")},
    )


class HFModel(ScoredModel):
    """A transformers causal LM folder (AutoModelForCausalLM + AutoTokenizer), as lm-eval's
    `--model hf --model_args pretrained=DIR` loads it."""

    def __init__(self, path: str, device: torch.device, bf16: bool):
        folder = Path(path)
        if not (folder / "config.json").is_file():
            raise UserError(
                f"--hf {path}: no config.json there; give a transformers model folder (e.g. "
                "one written by python3 -m model.export.hf)"
            )
        try:
            import transformers
        except ImportError:
            raise UserError("--hf needs transformers: pip install transformers") from None
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        try:
            config = transformers.AutoConfig.from_pretrained(folder)
        except (ValueError, OSError, KeyError, json.JSONDecodeError) as error:
            first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
            raise UserError(f"--hf {path}: unreadable config.json ({first})") from None
        if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
            raise UserError(
                f"--hf {path} is a {config.model_type!r} model, not a causal language model; "
                "give a folder that AutoModelForCausalLM loads (Llama, GPT-2, ...)"
            )
        try:
            self.hf_tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
            dtype = torch.bfloat16 if bf16 else torch.float32
            self.hf_model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
        except (ValueError, OSError, KeyError, json.JSONDecodeError) as error:
            first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
            raise UserError(
                f"--hf {path} is not a causal language model folder ({first})"
            ) from None
        self.hf_model.to(device).eval()
        names = ("n_positions", "max_position_embeddings", "n_ctx")  # lm-eval looks for these
        limits = [getattr(config, name, None) for name in names]
        max_length = next((n for n in limits if n), None) or 2048  # lm-eval's default
        super().__init__(
            name=_short_name(path),
            kind="hf",
            stage="hf",
            max_length=int(max_length),
            device=device,
            bf16=bf16,
            source=str(path),
            details={"model_type": getattr(config, "model_type", None)},
        )

    @property
    def prefix_id(self) -> int:
        tokenizer = self.hf_tokenizer
        return (
            tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        )

    def encode(self, texts):
        bos = self.hf_tokenizer.bos_token
        out = []
        for text in texts:  # a text that starts with the BOS token gets no second one (lm-eval)
            special = not (bos and text.startswith(bos))
            out.append(self.hf_tokenizer.encode(text, add_special_tokens=special))
        return out

    def encode_plain(self, texts):
        return [self.hf_tokenizer.encode(text, add_special_tokens=False) for text in texts]

    def encode_chat_pairs(self, conversations, continuations):
        """As lm-eval does: the chat template rendered to text, then encoded as a plain pair."""
        if not self.hf_tokenizer.chat_template:
            raise UserError(f"--hf {self.source} has no chat template; score it without --chat")
        template = self.hf_tokenizer.apply_chat_template
        contexts = [template(m, tokenize=False, add_generation_prompt=True) for m in conversations]
        return self.encode_pairs(list(zip(contexts, continuations)))

    @torch.no_grad()
    def logits(self, idx):
        return self.hf_model(input_ids=idx.to(self.device)).logits


def _short_name(path: str) -> str:
    """checkpoints/sample_sft -> sample_sft; checkpoints/run/step_0000100 -> run/step_0000100."""
    parts = Path(path).resolve().parts
    if parts and parts[-1].startswith("step_") and len(parts) > 1:
        return f"{parts[-2]}/{parts[-1]}"
    return parts[-1] if parts else str(path)
