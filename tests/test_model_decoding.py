"""model/decoding.py, model/streams.py, model/kv_cache.py: several streams decoded as one batch.

Every check compares against a stream decoded alone (or the full forward pass), so a row that
reads another row's keys, a wrong position, or a lost stream fails here.
"""

import pytest
import torch

from model.config import from_preset
from model.decoding import Decoder
from model.generate import generate
from model.kv_cache import KVCache
from model.streams import Sampling, Stream, StreamBatch
from model.transformer import Transformer


def tiny(**overrides) -> Transformer:
    torch.manual_seed(0)
    return Transformer(from_preset("debug", vocab_size=300, **overrides)).eval()


PROMPTS = [[0, 5, 9], [0, 7, 7, 7, 7, 7, 7, 21, 30, 31, 32], [0, 44]]
MAX_NEW = [40, 12, 25]  # they finish at different times; the first runs past block_size (32)


def decode_together(
    model, sampling: list[Sampling], join_after: int = 5, stop_ids=(), compiled: bool = False
) -> list[list[int]]:
    """Streams 0 and 1 start together; stream 2 joins after join_after steps."""
    batch = StreamBatch(Decoder(model, batch_size=3, compiled=compiled))
    streams = [Stream(p, n, s, stop_ids) for p, n, s in zip(PROMPTS, MAX_NEW, sampling)]
    batch.add(streams[0])
    batch.add(streams[1])
    steps = 0
    while batch.streams:
        batch.step()
        steps += 1
        if steps == join_after:
            batch.add(streams[2])
    assert all(stream.finish_reason for stream in streams)
    return [stream.generated for stream in streams]


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("temperature", [0.0, 1.0], ids=["greedy", "sampled"])
def test_streams_decoded_together_give_what_each_gives_alone(temperature, compiled):
    """compiled: the static cache, the step's own token and position buffers, and (on a CPU)
    the key window that grows without compiling again; rows join, leave and move."""
    model = tiny(block_size=32)
    sampling = [Sampling(temperature, top_k=50, seed=seed) for seed in range(3)]
    alone = [
        list(generate(model, p, n, temperature, top_k=50, seed=s.seed, stop_ids=()))
        for p, n, s in zip(PROMPTS, MAX_NEW, sampling)
    ]
    assert decode_together(model, sampling, compiled=compiled) == alone
    assert [len(tokens) for tokens in alone] == MAX_NEW


def test_unseeded_rows_that_sample_alike_are_sampled_in_one_call_with_their_settings():
    """Rows with the same unseeded settings sample together, still with those settings: top_k=1
    at temperature 1 can only pick the most likely token, so every stream gives its greedy
    tokens."""
    model = tiny(block_size=32)
    greedy = [list(generate(model, p, n, 0.0, stop_ids=())) for p, n in zip(PROMPTS, MAX_NEW)]
    assert decode_together(model, [Sampling(1.0, top_k=1)] * 3) == greedy


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_streams_that_stop_early_leave_the_others_as_they_were(compiled):
    """A stream ending at a stop id was already decoded one step further (the decode runs
    before its token is read); its row is freed and the others' tokens do not change."""
    model = tiny(block_size=32)
    greedy = [Sampling(0.0)] * 3
    alone = [list(generate(model, p, n, 0.0, stop_ids=())) for p, n in zip(PROMPTS, MAX_NEW)]
    stop = alone[1][4]  # stream 1 stops at its fifth token
    expected = [tokens[: tokens.index(stop)] if stop in tokens else tokens for tokens in alone]
    assert decode_together(model, greedy, stop_ids=[stop], compiled=compiled) == expected
    assert len(expected[1]) == 4


def matrix_products_per_step(decoder: Decoder) -> int:
    """Matrix products one decode step runs (on a CPU, where the profiler names them)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        decoder.step(torch.tensor([5]))
    return sum(event.count for event in profile.key_averages() if event.key == "aten::mm")


def double_up_proj(model):
    with torch.no_grad():
        model.layers[0].mlp.up_proj.weight.mul_(2)  # an optimizer step, say


@pytest.mark.parametrize("change", [double_up_proj, torch.nn.Module.double], ids=["in_place", "to"])
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_the_compiled_step_joins_the_products_of_a_copy_and_refuses_changed_weights(
    compiled, change
):
    """Compiled: q/k/v as one product and gate/up as another (7 -> 4 a block), in a copy that
    shares the model's tensors and leaves the model as it was; its joined weights are a
    snapshot, so a prefill after the weights change must raise, not decode stale weights."""
    model = tiny()
    decoder = Decoder(model, compiled=compiled)
    decoder.prefill(0, [0, 5, 9])
    decoder.step(torch.tensor([3]))  # compiles
    per_block = 4 if compiled else 7
    assert matrix_products_per_step(decoder) == per_block * model.config.n_layer + 1  # + head
    ours, theirs = model.layers[0].attention, decoder.model.layers[0].attention
    assert ours.qkv_proj is None  # the model itself is not joined
    assert theirs.q_proj.weight is ours.q_proj.weight  # shared, not copied
    change(model)
    if compiled:
        with pytest.raises(ValueError, match="weights changed"):
            decoder.prefill(0, [0, 5])
    elif change is double_up_proj:  # eager decoding reads the weights as they are
        decoder.prefill(0, [0, 5])


def test_a_stream_stops_at_a_stop_id_and_frees_its_row():
    model = tiny()
    greedy = list(generate(model, PROMPTS[0], 10, temperature=0.0, stop_ids=()))
    stop = greedy[3]
    batch = StreamBatch(Decoder(model, batch_size=1))
    stream = Stream(PROMPTS[0], 10, Sampling(0.0), stop_ids=[stop])
    batch.add(stream)
    while batch.streams:
        events = batch.step()
    assert stream.generated == greedy[: greedy.index(stop)]
    assert stream.finish_reason == "stop" and events == [(stream, None)]
    assert batch.has_room() and batch.decoder.length(0) == 0


def test_removing_a_stream_keeps_the_others_intact():
    """A cancelled stream leaves mid-way; the last row moves into its place."""
    model = tiny(block_size=32)
    alone = list(generate(model, PROMPTS[2], 20, temperature=0.0, stop_ids=()))
    batch = StreamBatch(Decoder(model, batch_size=3))
    streams = [Stream(p, 20, Sampling(0.0)) for p in PROMPTS]
    for stream in streams:
        batch.add(stream)
    for _ in range(4):
        batch.step()
    batch.remove(streams[0])  # row 0 is taken over by stream 2
    assert batch.streams == [streams[2], streams[1]]
    while batch.streams:
        batch.step()
    assert streams[2].generated == alone


def test_static_cache_rows_at_different_lengths_match_the_full_forward():
    """The CUDA-graph path's cache: all positions every step, explicit per-row positions."""
    model = tiny()
    ids = torch.randint(6, 300, (2, 24))
    cache = KVCache(model.config, batch_size=2, static=True)
    cache.allocate("cpu", torch.float32)
    starts = [7, 15]  # row 0 holds 7 tokens, row 1 holds 15
    with torch.no_grad():
        full = model(ids)  # [2, 24, V]
        for row, start in enumerate(starts):
            model(ids[row : row + 1, :start], kv_cache=cache.rows(row, row + 1))
        for step in range(6):
            positions = torch.tensor(starts) + step
            tokens = ids[torch.arange(2), positions][:, None]  # [2, 1]
            logits = model(tokens, kv_cache=cache, positions=positions)  # [2, 1, V]
            for row in range(2):
                expected = full[row, positions[row]]
                torch.testing.assert_close(logits[row, 0], expected, atol=1e-5, rtol=1e-5)


def test_the_static_decode_step_traces_as_one_graph():
    """torch.compile(fullgraph=True) raises on a graph break: the step CUDA graphs will capture
    (Decoder._static_step) must be one graph. backend="eager" checks the tracing only."""
    model = tiny()
    cache = KVCache(model.config, batch_size=2, static=True)
    cache.allocate("cpu", torch.float32)

    def step(tokens, positions):
        return model(tokens[:, None], cache, last_only=True, positions=positions)[:, -1]

    compiled = torch.compile(step, backend="eager", fullgraph=True, dynamic=False)
    tokens, positions = torch.tensor([5, 9]), torch.tensor([0, 3])
    with torch.no_grad():
        torch.testing.assert_close(compiled(tokens, positions), step(tokens, positions))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_cuda_graph_decoding_matches_eager_decoding():
    """fp32: the graph-replayed step gives the eager path's greedy tokens, one stream and a
    batch of streams joining and leaving; bf16: the logits stay close to the full forward."""
    model = tiny(block_size=64).cuda()
    sampling = [Sampling(0.0)] * 3
    eager = decode_together(model, sampling)
    graphs = StreamBatch(Decoder(model, batch_size=3, compiled=True))
    streams = [Stream(p, n, Sampling(0.0)) for p, n in zip(PROMPTS, MAX_NEW)]
    for stream in streams[:2]:
        graphs.add(stream)
    steps = 0
    while graphs.streams:
        graphs.step()
        steps += 1
        if steps == 5:
            graphs.add(streams[2])
    assert [stream.generated for stream in streams] == eager


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_bf16_cuda_graph_logits_match_the_full_forward():
    model = tiny(block_size=64, n_head=4, n_kv_head=2).cuda().to(torch.bfloat16)
    ids = torch.randint(6, 300, (1, 40), device="cuda")
    decoder = Decoder(model, batch_size=2, compiled=True)
    with torch.no_grad():
        full = model(ids)[0].float()  # [40, V]
        steps = [decoder.prefill(0, ids[0, :20].tolist())[None]]
        steps += [decoder.step(ids[:, t]) for t in range(20, 39)]
    cached = torch.cat(steps).float()  # [20, V]: logits after positions 19..38
    error = (cached - full[19:39]).norm() / full[19:39].norm()
    assert error < 2e-2
