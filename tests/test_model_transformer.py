"""The Transformer and its config: causality, sizes, init, caches, checkpointing, validation."""

import math

import pytest
import torch

from common.errors import UserError
from model.config import PRESETS, ModelConfig, from_preset
from model.kv_cache import KVCache
from model.plan import parameter_counts
from model.transformer import Transformer


def tiny(**overrides) -> Transformer:
    torch.manual_seed(0)
    return Transformer(from_preset("debug", **overrides)).eval()


def test_debug_preset_is_tiny():
    model = tiny()
    assert model.num_parameters(non_embedding=True) < 1_000_000


def test_logits_are_causal():
    """Guards against a missing/wrong causal mask: a later token must not change earlier logits."""
    model = tiny()
    idx = torch.randint(0, 512, (2, 40))
    changed = idx.clone()
    changed[:, 25:] = (changed[:, 25:] + 7) % 512
    with torch.no_grad():
        a, b = model(idx), model(changed)
    assert a.shape == (2, 40, 512)
    torch.testing.assert_close(a[:, :25], b[:, :25])
    assert not torch.allclose(a[:, 25:], b[:, 25:])


def test_parameter_count_matches_hand_formula():
    # debug: d=128, 4 heads, 2 kv heads of 32, mlp 384, 2 layers, vocab 512, untied
    d, kv, m, L, V = 128, 64, 384, 2, 512
    per_layer = 2 * d * d + 2 * d * kv + 3 * d * m + 2 * d
    non_embedding = L * per_layer + d
    model = tiny()
    assert model.num_parameters(non_embedding=True) == non_embedding
    assert model.num_parameters() == non_embedding + 2 * V * d
    tied = tiny(tie_embeddings=True)
    assert tied.num_parameters() == non_embedding + V * d


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_planner_formula_matches_model_for_every_preset(name):
    config = from_preset(name)
    with torch.device("meta"):  # shapes only: no memory, no time
        model = Transformer(config)
    counts = parameter_counts(config)
    assert model.num_parameters() == counts["total"]
    assert model.num_parameters(non_embedding=True) == counts["non_embedding"]


def test_preset_shapes():
    c = from_preset("15m")  # llama2.c stories15M
    assert (c.n_layer, c.n_embd, c.n_head, c.block_size, c.mlp_hidden) == (6, 288, 6, 256, 768)
    c = from_preset("124m")  # GPT-2 small
    assert (c.n_layer, c.n_embd, c.n_head, c.block_size, c.mlp_hidden) == (12, 768, 12, 1024, 2048)
    c = from_preset("170m")
    assert c.head_dim in (64, 128) and c.vocab_size == 32768
    assert 165e6 < parameter_counts(c)["total"] < 175e6


def test_init_statistics():
    torch.manual_seed(0)
    config = from_preset("debug", n_layer=4, n_embd=256, n_head=4, n_kv_head=4)
    model = Transformer(config)
    layer = model.layers[3]
    assert layer.attention.q_proj.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert layer.mlp.up_proj.weight.std().item() == pytest.approx(0.02, rel=0.05)
    residual = 0.02 / math.sqrt(2 * 4)
    assert layer.attention.o_proj.weight.std().item() == pytest.approx(residual, rel=0.05)
    assert layer.mlp.down_proj.weight.std().item() == pytest.approx(residual, rel=0.05)
    assert model.embed_tokens.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert torch.equal(model.norm.weight, torch.ones(256))
    assert torch.equal(layer.attention_norm.weight, torch.ones(256))
    assert all(module.bias is None for module in model.modules() if hasattr(module, "bias"))
    # initial loss is close to uniform: log(vocab) (catches an init that is far too large)
    idx = torch.randint(0, 512, (4, 64))
    with torch.no_grad():
        logits = model(idx)[..., :512]
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 512), idx.reshape(-1))
    assert abs(loss.item() - math.log(512)) < 0.1


def test_tied_embeddings_share_storage():
    model = tiny(tie_embeddings=True)
    assert model.lm_head.weight is model.embed_tokens.weight
    untied = tiny(tie_embeddings=False)
    assert untied.lm_head.weight.data_ptr() != untied.embed_tokens.weight.data_ptr()


def test_kv_cache_chunks_match_full_forward():
    """Prefill, a multi-token chunk after a prefix (explicit mask), then single tokens."""
    model = tiny()
    idx = torch.randint(0, 512, (2, 30))
    cache = KVCache(model.config, batch_size=2)
    with torch.no_grad():
        full = model(idx)
        parts = [model(idx[:, :11], cache), model(idx[:, 11:20], cache)]
        parts += [model(idx[:, t : t + 1], cache) for t in range(20, 30)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)
    assert cache.lengths == [30, 30]


def test_last_only_returns_the_last_position():
    model = tiny()
    idx = torch.randint(0, 512, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(model(idx, last_only=True), model(idx)[:, -1:])


def test_too_long_input_is_rejected():
    model = tiny()
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, model.config.block_size + 1, dtype=torch.long))


def test_gradient_checkpointing_gives_the_same_gradients():
    model = tiny().train()
    idx = torch.randint(0, 512, (2, 32))
    model(idx).float().square().mean().backward()
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.gradient_checkpointing = True
    model(idx).float().square().mean().backward()
    for want, param in zip(expected, model.parameters()):
        torch.testing.assert_close(param.grad, want)


def test_bf16_autocast_forward_and_cached_decode():
    """RoPE tables are fp32; under autocast q/k are bf16 — dtypes must not clash in attention."""
    model = tiny()
    idx = torch.randint(0, 512, (1, 12))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(idx)
        cache = KVCache(model.config, 1)
        model(idx[:, :8], cache)
        step = model(idx[:, 8:9], cache)
    assert torch.isfinite(logits.float()).all() and torch.isfinite(step.float()).all()


def test_compiles_without_graph_breaks():
    model = tiny()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    idx = torch.randint(0, 512, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(compiled(idx), model(idx))


def test_config_derivations_and_round_trip():
    c = ModelConfig(vocab_size=1000, n_embd=96, n_head=3, n_kv_head=1)
    assert c.padded_vocab_size == 1024 and c.head_dim == 32
    assert c.mlp_hidden == 256  # 8/3 * 96 = 256, already a multiple of 64
    assert ModelConfig(n_embd=100, n_head=2).mlp_hidden == 320  # 266 rounded up
    assert ModelConfig(n_head=4).n_kv_head == 4  # 0 means multi-head attention
    again = ModelConfig.from_dict(c.to_dict())
    assert again == c
    # an imported model's heads may be wider or narrower than n_embd / n_head
    wide = ModelConfig(n_embd=96, n_head=3, head_dim=48, rope_scaling=None)
    assert wide.head_dim == 48 and ModelConfig.from_dict(wide.to_dict()) == wide


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n_embd=130, n_head=4), "not divisible by n_head"),
        (dict(n_head=4, n_kv_head=3), "not divisible by n_kv_head"),
        (dict(n_embd=36, n_head=4), "odd"),
        (dict(n_layer=0), "n_layer must be a positive integer"),
        (dict(vocab_size=-5), "vocab_size"),
    ],
)
def test_invalid_sizes_give_one_line_errors(kwargs, message):
    with pytest.raises(UserError, match=message) as error:
        ModelConfig(**kwargs)
    assert "\n" not in str(error.value)


def test_unknown_preset_and_override():
    with pytest.raises(UserError, match="unknown model preset 'huge'"):
        from_preset("huge")
    with pytest.raises(UserError, match="n_layers"):
        from_preset("debug", n_layers=3)
    with pytest.raises(UserError, match="unknown keys"):
        ModelConfig.from_dict({"n_layer": 2, "dropout": 0.1})
    with pytest.raises(UserError, match="disagrees"):
        ModelConfig.from_dict({**ModelConfig().to_dict(), "padded_vocab_size": 7})


def test_sdpa_grouped_heads_match_repeated_heads(monkeypatch):
    """SDPA's enable_gqa path (taken on Ampere+ GPUs in bf16/fp16) must group query heads onto
    key/value heads exactly as our repeat_interleave does (head h reads kv head h // group)."""
    from model import transformer

    model = tiny()  # debug preset: 4 query heads, 2 key/value heads
    assert model.config.n_kv_head < model.config.n_head
    idx = torch.randint(0, 512, (2, 24))
    with torch.no_grad():
        repeated = model(idx)
        monkeypatch.setattr(transformer, "sdpa_can_group_heads", lambda q, mask: True)
        grouped = model(idx)
        cache = KVCache(model.config, batch_size=2)
        chunks = [model(idx[:, :10], cache), model(idx[:, 10:16], cache)]  # masked chunk too
        chunks += [model(idx[:, t : t + 1], cache) for t in range(16, 24)]
    torch.testing.assert_close(grouped, repeated, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.cat(chunks, dim=1), repeated, atol=1e-5, rtol=1e-5)


def test_grouped_heads_stay_in_the_repeat_path_where_no_fused_kernel_has_them():
    """fp32, CPU tensors or an explicit mask would send enable_gqa to SDPA's slow math kernel."""
    from model.transformer import sdpa_can_group_heads

    q = torch.zeros(1, 4, 8, 32)
    assert not sdpa_can_group_heads(q, None)  # CPU
    assert not sdpa_can_group_heads(q.bfloat16(), None)  # CPU, even in bf16


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_bf16_grouped_heads_compile_without_graph_breaks_and_match():
    torch.manual_seed(0)
    config = from_preset("debug", n_head=8, n_kv_head=2, n_embd=256, block_size=256)
    model = Transformer(config).cuda().eval()
    idx = torch.randint(0, 512, (2, 256), device="cuda")
    q = torch.zeros(1, 8, 4, 32, device="cuda", dtype=torch.bfloat16)
    from model.transformer import sdpa_can_group_heads

    major = torch.cuda.get_device_properties(0).major
    assert sdpa_can_group_heads(q, None) == (major >= 8)
    assert not sdpa_can_group_heads(q.float(), None) and not sdpa_can_group_heads(q, q.bool())
    compiled = torch.compile(model, fullgraph=True)  # a graph break would raise here
    with torch.no_grad():
        reference = model(idx)  # fp32: the repeat path
        with torch.autocast("cuda", dtype=torch.bfloat16):
            eager = model(idx).float()  # bf16: SDPA groups the heads itself
            fused = compiled(idx).float()
    torch.testing.assert_close(fused, eager, atol=5e-2, rtol=5e-2)
    torch.testing.assert_close(eager, reference, atol=5e-2, rtol=5e-2)
