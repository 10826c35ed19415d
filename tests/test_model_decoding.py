"""model/generate.py's Generator and model/kv_cache.py: several streams decoded as one batch.

Every check compares against a stream decoded alone (or the full forward pass), so a row that
reads another row's keys, a wrong position, or a lost stream fails here.
"""

import pytest
import torch

from model.config import from_preset
from model.generate import Generator, Sampling, Stream, generate
from model.kv_cache import KVCache
from model.transformer import Transformer


def tiny(**overrides) -> Transformer:
    torch.manual_seed(0)
    return Transformer(from_preset("debug", vocab_size=300, **overrides)).eval()


PROMPTS = [[0, 5, 9], [0, 7, 7, 7, 7, 7, 7, 21, 30, 31, 32], [0, 44]]
MAX_NEW = [40, 12, 25]  # they finish at different times; the first runs past block_size (32)


def decode_together(generator, sampling, join_after=5, stop_ids=()) -> list[list[int]]:
    """Streams 0 and 1 start together; stream 2 joins after join_after steps."""
    streams = [Stream(p, n, s, stop_ids) for p, n, s in zip(PROMPTS, MAX_NEW, sampling)]
    generator.add(streams[0])
    generator.add(streams[1])
    steps = 0
    while generator.streams:
        generator.step()
        steps += 1
        if steps == join_after:
            generator.add(streams[2])
    assert all(stream.finish_reason for stream in streams) and not generator.streams
    return [stream.generated for stream in streams]


def alone(model, sampling) -> list[list[int]]:
    return [
        list(generate(model, p, n, s.temperature, s.top_k, s.top_p, (), s.seed))
        for p, n, s in zip(PROMPTS, MAX_NEW, sampling)
    ]


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_streams_decoded_together_give_what_each_gives_alone(compiled):
    """Greedy, then seeded sampling with top-k and top-p, through one generator (compiled:
    the static step over every row and position, compiled once); rows join and leave."""
    model = tiny(block_size=32)
    generator = Generator(model, batch_size=3, compile=compiled)
    for temperature in (0.0, 1.0):
        sampling = [Sampling(temperature, top_k=50, top_p=0.9, seed=seed) for seed in range(3)]
        expected = alone(model, sampling)
        assert decode_together(generator, sampling) == expected
        assert [len(tokens) for tokens in expected] == MAX_NEW


def test_rows_that_sample_differently_keep_their_own_settings():
    """Greedy, top_k=1 (only the most likely token) and unseeded temperature-1 rows side by
    side: the first two must give their greedy tokens whatever the third row does."""
    model = tiny(block_size=32)
    greedy = alone(model, [Sampling(0.0)] * 3)
    sampling = [Sampling(0.0), Sampling(1.0, top_k=1), Sampling(1.0)]
    together = decode_together(Generator(model, batch_size=3), sampling)
    assert together[:2] == greedy[:2] and together[2] != greedy[2]


def test_streams_that_stop_early_leave_the_others_as_they_were():
    model = tiny(block_size=32)
    greedy = [Sampling(0.0)] * 3
    expected = alone(model, greedy)
    stop = expected[1][4]  # stream 1 stops at its fifth token
    expected = [tokens[: tokens.index(stop)] if stop in tokens else tokens for tokens in expected]
    together = decode_together(Generator(model, batch_size=3), greedy, stop_ids=[stop])
    assert together == expected and len(expected[1]) == 4


def test_a_freed_row_is_taken_by_the_next_stream():
    """Six streams through two rows: each finished stream's row serves a waiting one, and
    every stream still gives what it gives alone."""
    model = tiny(block_size=32)
    prompts = PROMPTS + [[0, 1, 2, 3], [0, 99], [0, 8, 8]]
    lengths = [9, 3, 14, 6, 20, 2]
    streams = [Stream(p, n, Sampling(0.0), ()) for p, n in zip(prompts, lengths)]
    generator = Generator(model, batch_size=2)
    busy = [len(generator.streams) for _ in generator.run(streams)]
    assert max(busy) == 2
    for stream, prompt, n in zip(streams, prompts, lengths):
        assert stream.generated == list(generate(model, prompt, n, 0.0, stop_ids=()))
        assert stream.finish_reason == "length" and stream.row is None


def test_a_stream_removed_mid_way_leaves_the_others_intact():
    """What a caller does on a stop string or a client that left: the row is freed at once."""
    model = tiny(block_size=32)
    expected = list(generate(model, PROMPTS[2], 20, 0.0, stop_ids=()))
    generator = Generator(model, batch_size=3)
    streams = [Stream(p, 20, Sampling(0.0), ()) for p in PROMPTS]
    for stream in streams:
        generator.add(stream)
    for _ in range(4):
        generator.step()
    generator.remove(streams[0])
    assert generator.streams == streams[1:] and None in generator.rows
    while generator.streams:
        generator.step()
    assert streams[2].generated == expected and len(streams[0].generated) == 4


def test_a_stream_stops_at_a_stop_id_and_frees_its_row():
    model = tiny()
    greedy = list(generate(model, PROMPTS[0], 10, temperature=0.0, stop_ids=()))
    stop = greedy[3]
    generator = Generator(model)
    stream = Stream(PROMPTS[0], 10, Sampling(0.0), stop_ids=[stop])
    events = list(generator.run([stream]))
    assert stream.generated == greedy[: greedy.index(stop)] and events[-1] == (stream, None)
    assert stream.finish_reason == "stop" and None in generator.rows
    assert generator.cache.lengths == [0]


def test_rows_at_different_lengths_in_one_pass_match_the_full_forward():
    """The compiled step's path: explicit per-row positions, every cache position read."""
    model = tiny()
    ids = torch.randint(6, 300, (2, 24))
    cache = KVCache(model.config, batch_size=2)
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


def test_a_prefilled_context_continues_in_copied_rows():
    """Evaluation's use: prefill contexts of different lengths (right-padded) once, then
    continue each from copies of its row with its own continuation."""
    model = tiny()
    contexts = [torch.randint(6, 300, (9,)), torch.randint(6, 300, (5,))]
    continuations = torch.randint(6, 300, (3, 4))  # rows: context 0, 1, 0
    sources, lengths = torch.tensor([0, 1, 0]), [9, 5, 9]
    padded = torch.zeros(2, 9, dtype=torch.long)
    padded[0], padded[1, :5] = contexts[0], contexts[1]
    with torch.no_grad():
        cache = KVCache(model.config, batch_size=2, max_length=9)
        model(padded, cache, last_only=True)
        wide = cache.select(sources, lengths, max_length=13)
        logits = model(continuations, wide)  # [3, 4, V]
        for row, source in enumerate(sources.tolist()):
            whole = torch.cat((contexts[source], continuations[row]))[None]
            expected = model(whole)[0, -4:]
            torch.testing.assert_close(logits[row], expected, atol=1e-5, rtol=1e-5)
    assert wide.lengths == [13, 9, 13]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_cuda_graph_decoding_matches_eager_decoding():
    """fp32: the compiled step (reduce-overhead: CUDA graphs) gives the eager greedy tokens."""
    model = tiny(block_size=64).cuda()
    greedy = [Sampling(0.0)] * 3
    eager = decode_together(Generator(model, batch_size=3), greedy)
    assert decode_together(Generator(model, batch_size=3, compile=True), greedy) == eager


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_bf16_compiled_logits_match_the_full_forward():
    model = tiny(block_size=64, n_head=4, n_kv_head=2).cuda().to(torch.bfloat16)
    ids = torch.randint(6, 300, (1, 40), device="cuda")
    generator = Generator(model, batch_size=2, compile=True)
    generator.add(Stream(ids[0, :20].tolist(), 30, Sampling(0.0)))
    with torch.no_grad():
        full = model(ids)[0].float()  # [40, V]
        steps = []
        for t in range(20, 39):
            generator.rows[0].tokens.append(int(ids[0, t]))
            steps.append(generator._decode(generator.streams)[0].float().clone())
    cached = torch.stack(steps)  # [19, V]: logits after positions 20..38
    error = (cached - full[20:39]).norm() / full[20:39].norm()
    assert error < 2e-2
