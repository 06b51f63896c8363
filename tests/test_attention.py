"""Multi-head attention and positional encodings against PyTorch and Hugging Face."""

import math

import pytest
import torch
from torch import nn

from archlab.errors import ShapeError
from archlab.nn import (
    KVCache,
    MultiHeadAttention,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
)

D, H = 32, 4


def pair(seed: int = 0, bias: bool = True) -> tuple[MultiHeadAttention, nn.MultiheadAttention]:
    """An archlab attention layer and torch's, with the same random weights."""
    torch.manual_seed(seed)
    ref = nn.MultiheadAttention(D, H, bias=bias, batch_first=True).eval()
    if bias:  # torch initialises biases to zero; make them count
        nn.init.normal_(ref.in_proj_bias)
        nn.init.normal_(ref.out_proj.bias)
    ours = MultiHeadAttention(D, H, bias=bias).eval()
    with torch.no_grad():
        ours.W_qkv.weight.copy_(ref.in_proj_weight)
        ours.W_o.weight.copy_(ref.out_proj.weight)
        if bias:
            ours.W_qkv.bias.copy_(ref.in_proj_bias)
            ours.W_o.bias.copy_(ref.out_proj.bias)
    return ours, ref


def padding(lengths: list[int], total: int) -> torch.Tensor:
    """key_padding_mask with True past each row's length."""
    return torch.arange(total)[None, :] >= torch.tensor(lengths)[:, None]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("t", [1, 7, 13])
def test_self_attention_matches_torch(t: int, bias: bool) -> None:
    ours, ref = pair(bias=bias)
    x = torch.randn(3, t, D)
    expected, _ = ref(x, x, x, need_weights=False)
    torch.testing.assert_close(ours(x), expected, atol=1e-5, rtol=1e-5)


def test_self_attention_with_padding_and_causal_masks_matches_torch() -> None:
    ours, ref = pair()
    t = 9
    x = torch.randn(3, t, D)
    kpm = padding([9, 5, 2], t)
    causal = nn.Transformer.generate_square_subsequent_mask(t)
    expected, _ = ref(x, x, x, key_padding_mask=kpm, attn_mask=causal, need_weights=False)
    got = ours(x, key_padding_mask=kpm, is_causal=True)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # the same causal mask given explicitly, as bool and as float
    got_bool = ours(x, key_padding_mask=kpm, attn_mask=torch.isinf(causal))
    got_float = ours(x, key_padding_mask=kpm, attn_mask=causal)
    torch.testing.assert_close(got_bool, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_float, expected, atol=1e-5, rtol=1e-5)


def test_cross_attention_matches_torch() -> None:
    ours, ref = pair(seed=1)
    x, memory = torch.randn(2, 5, D), torch.randn(2, 11, D)
    kpm = padding([11, 4], 11)
    expected, _ = ref(x, memory, memory, key_padding_mask=kpm, need_weights=False)
    torch.testing.assert_close(
        ours(x, memory, key_padding_mask=kpm), expected, atol=1e-5, rtol=1e-5
    )


def test_per_batch_float_mask_matches_torch() -> None:
    ours, ref = pair(seed=2)
    x = torch.randn(2, 6, D)
    mask = torch.randn(2, 6, 6)
    # torch takes a 3-D mask per (batch * head); ours per batch, shared by heads
    expected, _ = ref(x, x, x, attn_mask=mask.repeat_interleave(H, dim=0), need_weights=False)
    torch.testing.assert_close(ours(x, attn_mask=mask), expected, atol=1e-5, rtol=1e-5)


def test_kv_cache_decoding_equals_full_causal_pass() -> None:
    ours, _ = pair(seed=3)
    x = torch.randn(2, 10, D)
    full = ours(x, is_causal=True)
    cache = KVCache()
    prefix = ours(x[:, :4], is_causal=True, cache=cache)  # a prompt, then one token at a time
    steps = [ours(x[:, i : i + 1], is_causal=True, cache=cache) for i in range(4, 10)]
    torch.testing.assert_close(torch.cat([prefix, *steps], dim=1), full, atol=1e-5, rtol=1e-5)


def test_kv_cache_chunked_prefill_uses_offset_causal_mask() -> None:
    ours, _ = pair(seed=4)
    x = torch.randn(1, 12, D)
    full = ours(x, is_causal=True)
    cache = KVCache()
    chunks = [ours(x[:, a:b], is_causal=True, cache=cache) for a, b in ((0, 3), (3, 8), (8, 12))]
    torch.testing.assert_close(torch.cat(chunks, dim=1), full, atol=1e-5, rtol=1e-5)


def test_cross_attention_cache_reuses_memory() -> None:
    ours, _ = pair(seed=5)
    x, memory = torch.randn(2, 3, D), torch.randn(2, 7, D)
    cache = KVCache()
    first = ours(x, memory, cache=cache)
    again = ours(x, None, cache=cache)  # memory no longer needed
    torch.testing.assert_close(first, again)
    cache.reorder(torch.tensor([1, 1]))
    torch.testing.assert_close(ours(x[[1, 1]], None, cache=cache), first[[1, 1]])


def test_dropout_is_active_only_in_training() -> None:
    attn = MultiHeadAttention(D, H, dropout=0.5)
    x = torch.randn(2, 8, D)
    attn.eval()
    torch.testing.assert_close(attn(x), attn(x))
    attn.train()
    assert not torch.allclose(attn(x), attn(x))


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda a: a(torch.randn(2, 5, D + 1)), "x must have shape"),
        (lambda a: a(torch.randn(5, D)), "x must have shape"),
        (
            lambda a: a(torch.randn(2, 5, D), key_padding_mask=torch.zeros(2, 4, dtype=torch.bool)),
            "key_padding_mask",
        ),
        (lambda a: a(torch.randn(2, 5, D), attn_mask=torch.zeros(5, 6)), "attn_mask"),
        (lambda a: a(torch.randn(2, 5, D), torch.randn(3, 4, D)), "batch size"),
    ],
)
def test_bad_shapes_raise_clear_errors(call, needle: str) -> None:
    with pytest.raises(ShapeError, match=needle):
        call(MultiHeadAttention(D, H))


def test_sinusoidal_encoding_formula() -> None:
    d = 16
    pe = SinusoidalPositionalEncoding(d, max_len=50)(50)
    pos, i = 37, 3
    assert pe[pos, 2 * i].item() == pytest.approx(math.sin(pos / 10000 ** (2 * i / d)), abs=1e-6)
    assert pe[pos, 2 * i + 1].item() == pytest.approx(
        math.cos(pos / 10000 ** (2 * i / d)), abs=1e-6
    )
    with pytest.raises(ShapeError, match="context of 50"):
        SinusoidalPositionalEncoding(d, max_len=50)(10, offset=45)


def test_rotary_matches_hugging_face_llama() -> None:
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    d_head, t = 16, 11
    q, k = torch.randn(2, 3, t, d_head), torch.randn(2, 3, t, d_head)
    config = LlamaConfig(hidden_size=48, num_attention_heads=3, max_position_embeddings=64)
    rope_ref = LlamaRotaryEmbedding(config)
    positions = torch.arange(5, 5 + t)[None]
    cos, sin = rope_ref(q, positions)
    q_ref, k_ref = apply_rotary_pos_emb(q, k, cos, sin)
    rope = RotaryEmbedding(d_head, max_len=64)
    torch.testing.assert_close(rope(q, offset=5), q_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rope(k, offset=5), k_ref, atol=1e-5, rtol=1e-5)


def test_rotary_scores_depend_only_on_relative_position() -> None:
    rope = RotaryEmbedding(8, max_len=64)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    s1 = (rope(q, offset=10) * rope(k, offset=3)).sum()
    s2 = (rope(q, offset=40) * rope(k, offset=33)).sum()
    assert s1.item() == pytest.approx(s2.item(), abs=1e-5)


@pytest.mark.parametrize("cross", [False, True])
def test_attention_weights_match_torch(cross: bool) -> None:
    ours, ref = pair()
    x, memory = torch.randn(3, 5, D), torch.randn(3, 7, D)
    kv = memory if cross else x
    kpm = padding([7, 4, 2], 7) if cross else padding([5, 3, 1], 5)
    _, expected = ref(x, kv, kv, key_padding_mask=kpm, average_attn_weights=False)
    got = ours.attention_weights(x, memory if cross else None, key_padding_mask=kpm)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
