"""Our checkpoints as an lm-evaluation-harness model: `lm_eval.api.model.LM` "simple-transformer".

    python3 -m evaluation.lm --model simple-transformer --model_args checkpoint=checkpoints/sft \
        --tasks hellaswag --include_path dataset/evaluation/tasks [--data-dir data/evaluation]

is lm-eval's own command line with this model registered, its tasks reading the copies in
--data-dir. Requests become token ids as lm-eval's `hf` model makes them on the exported folder of
the same checkpoint (BOS in front of a text that does not start with it, special tokens written in
a text matched), so both score the same. The choices of one question continue one pass over it (a
KV cache), batches run longest first, generate_until uses our generation; bf16 autocast on asking.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections import defaultdict

import torch
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models import utils as lm_eval_utils
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window, simple_parse_args_string
from tqdm import tqdm

from common.errors import UserError, run_cli
from dataset.evaluation.download_dataset import DEFAULT_OUTPUT, MODULE, MissingCopy, local_copies
from model.checkpoint import unwrap_model
from model.generate import Generator, Sampling, Stream, load_for_generation
from model.kv_cache import KVCache
from tokenizer.encoding import ChatTokenizer

CHAT_STAGES = ("sft", "dpo")  # checkpoints of these stages are scored as chat models by default


def use_bf16(precision: str, device: torch.device) -> bool:
    if precision == "auto":
        return device.type == "cuda" and torch.cuda.is_bf16_supported()
    return precision == "bf16"


@register_model("simple-transformer")
class SimpleTransformerLM(TemplateLM):
    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: ChatTokenizer,
        batch_size: int = 32,
        bf16: bool = False,
        stage: str = "pre_training",
    ):
        super().__init__()
        self.model = unwrap_model(model)
        self._device = next(self.model.parameters()).device
        self.tokenizer, self.vocab_size = tokenizer, tokenizer.get_vocab_size()
        self.batch_size, self.bf16, self.stage = batch_size, bf16, stage

    @classmethod
    def from_checkpoint(
        cls, checkpoint, tokenizer=None, device=None, batch_size=32, precision="auto"
    ):
        """One of our run or step folders (model.generate.load_for_generation loads it)."""
        model, loaded, config = load_for_generation(checkpoint, device, tokenizer)
        bf16 = use_bf16(precision, next(model.parameters()).device)
        size = int(batch_size) if str(batch_size).isdigit() else 32  # lm-eval may say "auto"
        return cls(model, loaded, size, bf16, str(config.get("stage") or "pre_training"))

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None):
        """lm-eval's `--model_args checkpoint=DIR[,tokenizer=PATH,precision=bf16]`; its
        `--device cuda:0` (its default) means the CPU where there is no GPU, as for its hf."""
        extra = {k: (additional_config or {}).get(k) for k in ("batch_size", "device")}
        if not torch.cuda.is_available() or not extra["device"]:
            extra.pop("device")
        return cls.from_checkpoint(**arg_dict, **extra)

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None):
        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    # ---------------------------------------------------------------- lm-eval's model interface
    @property
    def eot_token_id(self) -> int:  # the exported tokenizer's eos_token
        return self.tokenizer.eos_id

    @property
    def prefix_token_id(self) -> int:  # the context of a continuation that has none
        bos = self.tokenizer.bos_id
        return self.eot_token_id if bos is None else bos

    max_gen_toks = 256  # lm-eval's HF model's default

    @property
    def max_length(self) -> int:
        return self.model.config.block_size

    @property
    def tokenizer_name(self) -> str:  # lm-eval asks for it when it renders chats
        return "simple-transformer"

    def apply_chat_template(self, chat_history: list[dict], add_generation_prompt=True) -> str:
        """The chat template's text (tokenizer/encoding.py); without a generation prompt the
        last message stays open (transformers' continue_final_message, as lm-eval asks)."""
        pieces = self.tokenizer.chat_pieces(chat_history, add_generation_prompt)
        if not add_generation_prompt:
            pieces = pieces[: max(k for k, piece in enumerate(pieces) if piece.content) + 1]
        return "".join(piece.text for piece in pieces)

    def tok_encode(self, string: str, add_special_tokens=None, left_truncate_len=None, **kwargs):
        """lm-eval's HF rule: BOS first, unless told not to or already there; special tokens
        written in the text matched (lm-eval renders a chat as text)."""
        bos = self.tokenizer.document("")  # [BOS], or nothing
        if add_special_tokens is None:
            add_special_tokens = not string.startswith(self.tokenizer.tokens.get("bos_token", ""))
        ids = self.tokenizer.encode_with_special_tokens(string)
        ids = [*bos, *ids] if add_special_tokens else ids
        return ids[-left_truncate_len:] if left_truncate_len else ids

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs):
        """(log-likelihood, is greedy) of each ((context, continuation), context ids,
        continuation ids), as lm-eval's HF model computes it."""
        by_context = defaultdict(list)  # context ids -> [(request index, continuation ids)]
        for i, (_, context, continuation) in enumerate(requests):
            # lm-eval's left truncation: the model reads the last max_length + 1 tokens, less
            # the last one (of a continuation longer than that, the last max_length are scored)
            whole, scored = (context + continuation)[-(self.max_length + 1) :], len(continuation)
            scored = min(scored, self.max_length)
            by_context[tuple(whole[:-scored])].append((i, whole[-scored:]))
        results = [None] * len(requests)
        bar = tqdm(total=len(requests), desc="loglikelihood", disable=disable_tqdm)
        for batch in self._batches(list(by_context.items())):
            scores = self._score(batch)
            for (i, _), score in zip((c for _, conts in batch for c in conts), scores):
                results[i] = score
            bar.update(len(scores))
        bar.close()
        return results

    def _batches(self, groups: list):
        """Longest first; up to batch_size continuations, within the model's positions."""
        groups.sort(key=lambda g: -(len(g[0]) + max(len(c) for _, c in g[1])))
        batch, rows, prefix, width = [], 0, 0, 0
        for context, continuations in groups:
            longest = max(len(c) for _, c in continuations)
            too_many = rows + len(continuations) > self.batch_size
            too_long = max(prefix, len(context) - 1) + max(width, longest) > self.max_length
            if batch and (too_many or too_long):
                yield batch
                batch, rows, prefix, width = [], 0, 0, 0
            batch.append((context, continuations))
            rows, prefix = rows + len(continuations), max(prefix, len(context) - 1)
            width = max(width, longest)
        if batch:
            yield batch

    @torch.no_grad()
    def _score(self, batch: list) -> list[tuple[float, bool]]:
        """Each context less its last token runs once; then each continuation in a row of its
        own: [last context token, continuation less its last token], predicting the continuation."""
        prefixes = [list(context[:-1]) for context, _ in batch]
        rows = [k for k, (_, conts) in enumerate(batch) for _ in conts]
        targets = [c for _, conts in batch for _, c in conts]
        inputs = [[batch[k][0][-1], *c[:-1]] for k, c in zip(rows, targets)]
        with self._autocast():
            logits = self._forward_after_prefixes(prefixes, rows, inputs)  # [R, T, V]
        lengths = torch.tensor([len(c) for c in targets], device=logits.device)  # [R]
        scored = torch.arange(logits.shape[1], device=logits.device) < lengths[:, None]  # [R, T]
        log_probs = logits[scored].float().log_softmax(-1)  # [N, V]: the scored positions only
        target = self._padded(targets, logits.shape[1])[scored]  # [N]
        token_scores = log_probs.gather(-1, target[:, None])[:, 0]  # [N]
        row = torch.repeat_interleave(torch.arange(len(targets), device=logits.device), lengths)
        totals = torch.zeros(len(targets), device=logits.device).index_add_(0, row, token_scores)
        wrong = (log_probs.argmax(-1) != target).float()  # [N]: 1 where greedy differs
        misses = torch.zeros_like(totals).index_add_(0, row, wrong)
        return list(zip(totals.tolist(), (misses == 0).tolist()))

    # ---- The model's KV cache (model/kv_cache.py): its only use in this class.
    def _forward_after_prefixes(self, prefixes: list, rows: list[int], inputs: list):
        """Logits [R, T, V] of inputs[r] continuing prefixes[rows[r]]: each prefix runs once
        into a KV cache, whose row is repeated for every input that continues it."""
        P, T = max(map(len, prefixes)), max(map(len, inputs))
        config, lengths = self.model.config, [len(prefixes[r]) for r in rows]
        cache = KVCache(config, batch_size=len(prefixes), max_length=P + T)
        if P:
            self.model(self._padded(prefixes, P), kv_cache=cache, last_only=True)
        if rows != list(range(len(prefixes))):  # prefixes continued several times: copies
            index = torch.tensor(rows, device=self.device)
            cache = cache.select(index, lengths, P + T) if P else KVCache(config, len(rows), T)
        cache.lengths = lengths  # each row continues its own prefix
        return self.model(self._padded(inputs, T), kv_cache=cache)

    def _padded(self, rows: list[list[int]], width: int) -> torch.Tensor:
        idx = torch.full((len(rows), width), self.tokenizer.pad_id, dtype=torch.long)  # [B, width]
        for r, ids in enumerate(rows):
            idx[r, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return idx.to(self.device)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """A whole text's log-likelihood (perplexity tasks), in lm-eval's windows."""
        windows, owners = [], []
        for i, (text,) in enumerate(request.args for request in requests):
            ids = self.tok_encode(text)
            for window in get_rolling_token_windows(ids, self.prefix_token_id, self.max_length, 1):
                windows.append((None, *make_disjoint_window(window)))
                owners.append(i)
        totals = [0.0] * len(requests)
        for i, (loglikelihood, _) in zip(owners, self._loglikelihood_tokens(windows, disable_tqdm)):
            totals[i] += loglikelihood
        return totals

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Each request's continuation, cut at the first of its stop strings."""
        eos = self.tokenizer.decode([self.eot_token_id], skip_special_tokens=False)
        out = []
        for request in tqdm(requests, "generate_until", disable=disable_tqdm):
            context, gen_kwargs = request.args
            kwargs = lm_eval_utils.normalize_gen_kwargs(gen_kwargs, self.max_gen_toks)
            until = lm_eval_utils.handle_stop_sequences(kwargs.pop("until"), eos=eos)
            max_new = kwargs.pop("max_gen_toks")
            if max_new >= self.max_length:
                raise UserError(
                    f"{request.task_name} generates up to {max_new} tokens; this "
                    f"model reads only {self.max_length}"
                )
            prompt = self.tok_encode(context, left_truncate_len=self.max_length - max_new)
            with self._autocast():
                text = self._generate(prompt, max_new, until, kwargs)
            out.append(lm_eval_utils.postprocess_generated_text(text, until, None))
        return out

    # ---- The model's generation (model/generate.py): its only use in this class.
    def _generate(self, prompt: list[int], max_new: int, until: list[str], kwargs: dict) -> str:
        """The text after prompt until a stop string shows in it (or a stop token, or max_new
        tokens): greedy unless the task samples; padded vocabulary ids never come out."""
        temperature = kwargs.get("temperature") or 0.0
        sampling = Sampling(temperature, kwargs.get("top_k"), kwargs.get("top_p"))
        stream = Stream(prompt, max_new, sampling, self.tokenizer.stop_ids)
        for _ in Generator(self.model, vocab_size=self.vocab_size).run([stream]):
            if any(stop in self.tokenizer.decode(stream.generated) for stop in until):
                break
        return self.tokenizer.decode(stream.generated)

    def _autocast(self):
        if self.bf16:  # on a CPU too: --precision bf16 means the same for HF folders
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


def main() -> None:
    """lm-eval's command line; --data-dir (ours) is taken out before lm-eval reads the rest."""
    from lm_eval.__main__ import cli_evaluate

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--data-dir", default=DEFAULT_OUTPUT)
    parser.add_argument("--tasks", "-t", nargs="+", default=[])
    ours, rest = parser.parse_known_args()
    if {"-h", "--help"} & set(rest):
        print(f"--data-dir DIR: the copies of `python3 -m {MODULE}` (default: {DEFAULT_OUTPUT})")
    sys.argv[1:] = [*rest, *(["--tasks", *ours.tasks] if ours.tasks else [])]
    try:
        with local_copies(ours.data_dir):
            cli_evaluate()
    except MissingCopy as missing:
        raise missing.naming(",".join(ours.tasks), ours.data_dir) from None


if __name__ == "__main__":
    run_cli(main)
