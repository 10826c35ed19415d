"""Fast decoding: a model, a KV cache with one row per stream, and a decode step.

    decoder = Decoder(model, batch_size=4)       # cuda_graphs=True on a GPU: see below
    logits = decoder.prefill(row, prompt_ids)    # [V_pad]: row now holds the prompt
    logits = decoder.step(tokens)                # tokens [n] for rows 0..n-1 -> [n, V_pad]

model.generate (one stream) and model.serve (several at once) drive it through
model/streams.py. The prompt's prefill runs eagerly, one stream at a time (its length varies);
the decode step runs every active stream as one batch. Rows are independent: each row's
queries see only that row's keys (model/kv_cache.py), so streams never mix.

With cuda_graphs=True the decode step is compiled by torch.compile in "reduce-overhead" mode:
Inductor fuses the small kernels and the step is recorded once as a CUDA graph and replayed for
every token, so a token costs one graph launch instead of hundreds of kernel launches from
Python. That needs fixed shapes: a static cache (every step attends over all block_size
positions with a mask) and always batch_size rows (idle rows compute and are ignored). The
cache tensors are marked as static addresses, so the graph writes into them in place.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from model.checkpoint import unwrap_model
from model.kv_cache import KVCache


def cache_dtype(model: torch.nn.Module, device: torch.device) -> torch.dtype:
    """The dtype the model's keys and values come out in (autocast's, else the weights')."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return next(model.parameters()).dtype


class Decoder:
    def __init__(self, model: torch.nn.Module, batch_size: int = 1, cuda_graphs: bool = False):
        self.model = unwrap_model(model)
        self.config = self.model.config
        self.device = next(self.model.parameters()).device
        if cuda_graphs and self.device.type != "cuda":
            raise ValueError("cuda_graphs=True needs the model on a CUDA device")
        self.batch_size = batch_size
        self.cache = KVCache(self.config, batch_size, static=cuda_graphs)
        self.cache.allocate(self.device, cache_dtype(self.model, self.device))
        self._graph_step = None
        if cuda_graphs:
            # The graph writes the new keys/values into these tensors in place: their
            # addresses must never change (and they must not be copied in at each replay).
            torch._dynamo.mark_static_address(self.cache.keys)
            torch._dynamo.mark_static_address(self.cache.values)
            self._graph_step = torch.compile(
                self._static_step, mode="reduce-overhead", fullgraph=True, dynamic=False
            )

    @property
    def max_length(self) -> int:
        return self.cache.max_length

    def length(self, row: int) -> int:
        """Tokens row `row` holds."""
        return self.cache.lengths[row]

    @torch.no_grad()
    def prefill(self, row: int, ids: list[int]) -> torch.Tensor | None:
        """Encode ids into row `row`, replacing what it held; logits [V_pad] for the next token.

        An empty ids just empties the row.
        """
        if len(ids) > self.max_length:
            raise ValueError(f"{len(ids)} tokens do not fit a cache of {self.max_length}")
        self.cache.lengths[row] = 0
        if not ids:
            return None
        rows = self.cache.rows(row, row + 1)  # a view of row `row`, length 0
        idx = torch.tensor([ids], dtype=torch.long, device=self.device)  # [1, T]
        logits = self.model(idx, kv_cache=rows, last_only=True)  # [1, 1, V_pad]
        self.cache.lengths[row] = len(ids)
        return logits[0, -1]

    @torch.no_grad()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """One new token for each of rows 0..n-1 (tokens [n]); logits [n, V_pad] after it."""
        n = tokens.shape[0]
        if max(self.cache.lengths[:n]) >= self.max_length:
            raise ValueError(f"a row of the KV cache is full ({self.max_length} tokens)")
        if self._graph_step is not None:
            idle = self.batch_size - n  # idle rows decode token 0 at position 0 of their row
            positions = torch.tensor(self.cache.lengths[:n] + [0] * idle, device=self.device)
            torch.compiler.cudagraph_mark_step_begin()  # the last step's outputs are consumed
            logits = self._graph_step(F.pad(tokens, (0, idle)), positions)  # [B, V_pad]
            logits = logits[:n].clone()  # ours: the graph overwrites its outputs at each replay
        else:
            rows = self.cache.rows(0, n)  # a view of the active rows
            logits = self.model(tokens[:, None], kv_cache=rows, last_only=True)[:, -1]
        for row in range(n):
            self.cache.lengths[row] += 1
        return logits

    def _static_step(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """tokens, positions [batch_size] -> logits [batch_size, V_pad]; fixed shapes."""
        logits = self.model(tokens[:, None], self.cache, last_only=True, positions=positions)
        return logits[:, -1]

    def move(self, source: int, target: int) -> None:
        """Row `source`'s stream continues in row `target`; row `source` is left empty."""
        length = self.cache.lengths[source]
        if source != target:
            for tensor in (self.cache.keys, self.cache.values):
                tensor[:, target, :, :length] = tensor[:, source, :, :length]
            self.cache.lengths[target] = length
        self.cache.lengths[source] = 0
