"""Continuous batching: requests that join and leave one decoding batch get the tokens of
one-at-a-time decoding; the ragged KV cache it rests on matches a cache per sequence."""

import pytest
import torch

import archlab
from archlab.nn.attention import KVCache, MultiHeadAttention, RaggedKVCache
from archlab.serve.batching import ContinuousBatch, Request


def tiny_gpt(position: str, block: int = 16):
    torch.manual_seed(0)
    return archlab.create_model(
        "gpt", n_layer=2, n_head=2, n_embd=32, vocab_size=50, block_size=block, position=position
    ).eval()


def test_ragged_cache_rows_match_a_cache_per_sequence() -> None:
    attn = MultiHeadAttention(16, 4).eval()
    x = torch.randn(3, 12, 16)
    prompts = (5, 2, 8)  # each row's prompt length, then one token at a time
    ragged = RaggedKVCache(rows=3, capacity=12)
    alone = []
    for r, n in enumerate(prompts):
        cache = KVCache()
        out = [attn(x[r : r + 1, :n], is_causal=True, cache=cache)]
        ragged.load(r, cache)
        alone.append((cache, out))
    for step in range(3):
        new = torch.stack([x[r, n + step] for r, n in enumerate(prompts)])[:, None]
        batched = attn(new, is_causal=True, cache=ragged)
        for r, n in enumerate(prompts):
            cache, _ = alone[r]
            one = attn(x[r : r + 1, n + step : n + step + 1], is_causal=True, cache=cache)
            torch.testing.assert_close(batched[r : r + 1], one, atol=1e-6, rtol=1e-5)
    assert ragged.lengths.tolist() == [n + 3 for n in prompts]


def test_ragged_cache_moves_rows_and_refuses_to_overflow() -> None:
    ragged = RaggedKVCache(rows=2, capacity=4)
    k = torch.randn(2, 1, 3, 2)
    ragged.append(k, k)
    ragged.move(1, 0)
    keys, _, allowed = ragged.append(k[:1, :, :1], k[:1, :, :1])
    torch.testing.assert_close(keys[0, :, :3], k[1])
    assert allowed.shape == (1, 1, 1, 4) and allowed.all()
    with pytest.raises(archlab.errors.ShapeError, match="holds 4"):
        ragged.append(k[:1, :, :1], k[:1, :, :1])


@pytest.mark.parametrize("position", ["learned", "rotary"])
def test_batched_greedy_decoding_equals_one_at_a_time(position: str) -> None:
    """Requests join at different steps, with prompts of different lengths; some outgrow
    the context (16) and continue on their last 16 tokens; rows leave as they finish."""
    model = tiny_gpt(position)
    prompts = [[1, 2, 3], [4] * 7, [5, 6], [7] * 15, [8] * 20, [9, 10, 11, 12], [3]]
    new = [10, 25, 3, 6, 5, 0, 30]
    ended = {}
    requests = [
        Request(p, n, temperature=0, finish=lambda reason, i=i: ended.setdefault(i, reason))
        for i, (p, n) in enumerate(zip(prompts, new, strict=True))
    ]
    batch = ContinuousBatch(model, max_rows=4)  # fewer rows than requests: some wait
    for r in requests[:3]:
        batch.submit(r)
    batch.step()
    batch.step()
    for r in requests[3:]:
        batch.submit(r)
    while batch.step():
        pass
    for prompt, n, r in zip(prompts, new, requests, strict=True):
        alone = model.generate(torch.tensor([prompt]), n, temperature=0)[0].tolist()
        assert r.tokens == alone
    assert ended == dict.fromkeys(range(len(prompts)))
    assert batch.steps < sum(new)  # they shared steps
    assert batch.live() == 0 and batch.pending() == 0


def test_a_seeded_sampled_request_draws_as_it_would_alone() -> None:
    model = tiny_gpt("learned", block=64)
    batch = ContinuousBatch(model, max_rows=4)
    others = [Request([i + 1], 12, temperature=1.0, seed=i) for i in range(3)]
    mine = Request([5, 6, 7], 12, temperature=0.9, top_k=10, seed=42)
    for r in [*others, mine]:
        batch.submit(r)
    while batch.step():
        pass
    g = torch.Generator().manual_seed(42)
    alone = model.generate(torch.tensor([[5, 6, 7]]), 12, temperature=0.9, top_k=10, generator=g)
    assert mine.tokens == alone[0].tolist()


def test_cancelled_and_late_requests_leave_the_batch() -> None:
    model = tiny_gpt("learned")
    reasons = {}
    stay = Request([1], 8, temperature=0, finish=lambda r: reasons.setdefault("stay", r))
    go = Request([2], 8, temperature=0, finish=lambda r: reasons.setdefault("go", r))
    late = Request([3], 8, temperature=0, finish=lambda r: reasons.setdefault("late", r))
    late.deadline = 0.0  # long past
    batch = ContinuousBatch(model, max_rows=4)
    for r in (stay, go, late):
        batch.submit(r)
    batch.step()
    go.cancelled = True
    while batch.step():
        pass
    assert reasons == {"late": "time limit", "go": "cancelled", "stay": None}
    alone = model.generate(torch.tensor([[1]]), 8, temperature=0)[0].tolist()
    assert stay.tokens == alone and len(go.tokens) == 2


def test_bad_sampling_settings_are_refused_at_the_request() -> None:
    with pytest.raises(archlab.errors.ConfigError, match="temperature"):
        Request([1], 4, temperature=-1)
