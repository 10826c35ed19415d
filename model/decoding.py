"""Fast decoding: a model, a KV cache with one row per stream, and a decode step.

    decoder = Decoder(model, batch_size=4)       # compiled=True: see below
    logits = decoder.prefill(row, prompt_ids)    # [V_pad]: row now holds the prompt
    logits = decoder.step(tokens)                # tokens [n] for rows 0..n-1 -> [n, V_pad]

model.generate (one stream) and model.serve (several at once) drive it through
model/streams.py. The prompt's prefill runs eagerly, one stream at a time (its length varies);
the decode step runs every active stream as one batch. Rows are independent: each row's
queries see only that row's keys (model/kv_cache.py), so streams never mix.

With compiled=True the decode step is compiled by torch.compile (Inductor fuses its small
kernels) over a static cache (each step attends with a mask) and always batch_size rows: idle
rows compute and are ignored. The step reads its tokens and positions from buffers of its own
and advances the positions itself, so the host writes only the new tokens before each step, and
the positions only when rows change (a prompt prefilled, a stream moved).
- On a GPU every shape is fixed (all max_length positions) and the step is captured once as a
  CUDA graph, which every token replays: one launch from Python instead of hundreds, and no
  Python at all (no guards, no input copies). Idle rows cost little there.
- On a CPU the compiled step (fused C++ loops) attends over the positions the rows hold, a
  window that grows without compiling again. Idle rows cost as much as busy ones, so it pays
  with one row, or with all rows busy.
- Either way the step decodes a copy of the model whose blocks make q/k/v with one matrix
  product and gate/up with another (4 products a block, not 7: on a GPU each small product costs
  about the same launch-bound time). The copy shares every other tensor with the model; its
  joined weights are taken when the Decoder is made, so a prefill after the weights change
  raises (make a new Decoder).
Compiling takes seconds (a small model on a CPU) to a minute (CUDA graphs): worth it for a
server, not for one reply.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch

from model.checkpoint import unwrap_model
from model.kv_cache import KVCache
from model.transformer import JoinedLinear


def cache_dtype(model: torch.nn.Module, device: torch.device) -> torch.dtype:
    """The dtype the model's keys and values come out in (autocast's, else the weights')."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return next(model.parameters()).dtype


def weights_version(model: torch.nn.Module) -> list[tuple[int, int]]:
    """Changes whenever a weight is written in place (an optimizer step, a load) or replaced
    (model.to(dtype), say): each parameter's storage and in-place write counter."""
    return [(p.data_ptr(), p._version) for p in model.parameters()]


def joined_copy(model: torch.nn.Module) -> torch.nn.Module:
    """model for decoding: the same parameters and buffers (shared, not copied), and in every
    block q/k/v as one matrix product and gate/up as another (7 -> 4 products a block).

    The joined weights are copies, taken now (weights_version tells when they are stale).
    """
    shared = {id(tensor): tensor for tensor in (*model.parameters(), *model.buffers())}
    joined = copy.deepcopy(model, memo=shared)  # new modules around the same tensors
    for layer in joined.layers:
        attention, mlp = layer.attention, layer.mlp
        attention.qkv_proj = JoinedLinear(attention.q_proj, attention.k_proj, attention.v_proj)
        mlp.gate_up_proj = JoinedLinear(mlp.gate_proj, mlp.up_proj)
    return joined


class Decoder:
    def __init__(self, model: torch.nn.Module, batch_size: int = 1, compiled: bool = False):
        self.model = unwrap_model(model)
        self._weights_version = None  # compiled: the weights' version when the copy was taken
        if compiled:  # a step is many small products: fewer, larger ones are faster
            self.model = joined_copy(self.model)
            self._weights_version = weights_version(self.model)
        self.config = self.model.config
        self.device = next(self.model.parameters()).device
        self.batch_size = batch_size
        self.cache = KVCache(self.config, batch_size, static=compiled)
        # A compiled CPU step reads a key window that grows up to max_length; were that ever
        # the whole tensor, the compiler would specialise on it and compile once more.
        spare = 1 if compiled and self.device.type != "cuda" else 0
        self.cache.allocate(self.device, cache_dtype(self.model, self.device), spare)
        self._graph: torch.cuda.CUDAGraph | None = None
        self._run_static_step = None  # compiled: fills self._logits from the static buffers
        self._rows_on_device: int | None = None  # rows the static positions were written for
        if compiled:
            self._make_static_buffers()
            # CUDA graphs need every shape fixed; on a CPU the key window grows with the rows
            on_gpu = self.device.type == "cuda"
            self._compiled_step = torch.compile(
                self._static_step, fullgraph=True, dynamic=False if on_gpu else None
            )
            if on_gpu:
                self._capture_graph()
                self._run_static_step = self._graph.replay
            else:
                self._run_static_step = self._call_compiled_step

    @property
    def compiled(self) -> bool:
        return self._run_static_step is not None

    @property
    def cuda_graphs(self) -> bool:
        return self._graph is not None

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
        if self._weights_version not in (None, weights_version(self.model)):
            raise ValueError("the weights changed since this compiled Decoder copied them")
        self.cache.lengths[row] = 0
        self._rows_on_device = None  # the graph's positions must be written again
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
        if self._run_static_step is not None:
            if self._rows_on_device != n:
                self._write_positions(n)
            self._tokens[:n].copy_(tokens)
            self._run_static_step()
            logits = self._logits[:n].clone()  # ours: the next replay overwrites the graph's
        else:
            rows = self.cache.rows(0, n)  # a view of the active rows
            logits = self.model(tokens[:, None], kv_cache=rows, last_only=True)[:, -1]
        for row in range(n):
            self.cache.lengths[row] += 1
        return logits

    def _make_static_buffers(self) -> None:
        """The static step's inputs, at fixed addresses (a CUDA graph reads them there)."""
        B, device = self.batch_size, self.device
        self._tokens = torch.zeros(B, dtype=torch.long, device=device)  # each row's new token
        self._positions = torch.zeros(B, dtype=torch.long, device=device)  # where it goes
        self._advance = torch.zeros(B, dtype=torch.long, device=device)  # 1 for rows in use

    def _call_compiled_step(self) -> None:
        """CPU: attend over the positions the rows hold, not all max_length (an arange whose
        length is marked dynamic, so a new length does not compile the step again)."""
        window = max(self.cache.lengths) + 1
        key_positions = torch.arange(window, device=self.device)  # [S]
        torch._dynamo.mark_dynamic(key_positions, 0)
        self.cache.key_positions = key_positions
        self._logits = self._compiled_step()  # [B, V_pad]

    def _capture_graph(self) -> None:
        """Warm the compiled step up and capture it as a CUDA graph."""
        device, step = self.device, self._compiled_step
        # Compile, autotune and warm up on a side stream, then capture on that same stream
        # (libraries' per-stream handles and workspaces exist by then): nothing may compile
        # or allocate outside the graph's pool during the capture. (Rows are empty: what the
        # warm-up writes at position 0 a prefill overwrites.)
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side), torch.no_grad():
            for _ in range(3):
                step()
        torch.cuda.current_stream(device).wait_stream(side)
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._graph, stream=side), torch.no_grad():
            self._logits = step()  # [B, V_pad], rewritten in place by every replay

    def profile_graph_step(self, calls: int = 20) -> str:
        """torch.profiler's kernel table for the captured step's kernels, launched one by one
        (the same kernels a replay runs; benchmarks/generation_benchmark.py). Needs empty rows."""
        activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
        profile = torch.profiler.profile(activities=activities)
        with self._idle_rows(), torch.no_grad(), profile:
            for _ in range(calls):
                self._compiled_step()
            torch.cuda.synchronize(self.device)
        return profile.key_averages().table(sort_by="self_device_time_total", row_limit=30)

    def time_graph_step(self, replays: int = 100) -> float:
        """Milliseconds per replay of the captured step: its GPU time, the floor of a token's
        time when the host keeps up (benchmarks/generation_benchmark.py). Needs empty rows."""
        start, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
        stream = torch.cuda.current_stream(self.device)  # where the replays run
        with self._idle_rows():
            start.record(stream)
            for _ in range(replays):
                self._graph.replay()
            end.record(stream)
            end.synchronize()
        return start.elapsed_time(end) / replays

    @contextlib.contextmanager
    def _idle_rows(self) -> Iterator[None]:
        """For measuring the captured step: every row idle (position 0, nothing advances)."""
        if self._graph is None or any(self.cache.lengths):
            raise ValueError("measuring the graph's step needs CUDA graphs and every row empty")
        self._write_positions(0)
        try:
            yield
        finally:
            self._rows_on_device = None  # written again before the next real step

    def _static_step(self) -> torch.Tensor:
        """The graph's step: the buffers' tokens at their positions -> logits [B, V_pad]."""
        tokens, positions = self._tokens[:, None], self._positions  # [B, 1], [B]
        logits = self.model(tokens, self.cache, last_only=True, positions=positions)
        self._positions.add_(self._advance)  # rows in use move on; idle rows stay at 0
        return logits[:, -1]

    def _write_positions(self, n: int) -> None:
        """Rows changed: give the graph rows 0..n-1's lengths; idle rows decode at 0."""
        idle = self.batch_size - n
        lengths = torch.tensor(self.cache.lengths[:n] + [0] * idle)
        self._positions.copy_(lengths)
        self._advance.copy_(torch.tensor([1] * n + [0] * idle))
        self._rows_on_device = n

    def move(self, source: int, target: int) -> None:
        """Row `source`'s stream continues in row `target`; row `source` is left empty."""
        length = self.cache.lengths[source]
        self._rows_on_device = None  # the graph's positions must be written again
        if source != target:
            for tensor in (*self.cache.keys, *self.cache.values):  # each [B, KV, max_len, D]
                tensor[target, :, :length] = tensor[source, :, :length]
            self.cache.lengths[target] = length
        self.cache.lengths[source] = 0
