"""GPT against Hugging Face GPT-2, KV-cache generation, sampling filters, bad checkpoints."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from archlab.errors import CheckpointError, ConfigError, ShapeError
from archlab.models import GPT, GPTConfig

transformers = pytest.importorskip("transformers", reason="transformers is a test extra")


def tiny_hf_gpt2(tmp_path, **overrides):
    config = transformers.GPT2Config(
        vocab_size=97, n_positions=32, n_embd=48, n_layer=2, n_head=4, **overrides
    )
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # random LayerNorm affine params and biases, so every tensor matters
        for name, p in model.named_parameters():
            if name.endswith("bias") or "ln" in name:
                p.normal_(0, 0.5 if "ln" in name else 0.02)
    model.save_pretrained(tmp_path)
    return model


def test_against_hf_gpt2_logits(tmp_path) -> None:
    ref = tiny_hf_gpt2(tmp_path)
    ours = GPT.from_hf(tmp_path).eval()
    idx = torch.randint(0, 97, (3, 19))
    with torch.no_grad():
        expected = ref(idx).logits
    torch.testing.assert_close(ours(idx), expected, atol=1e-4, rtol=1e-4)


def test_against_hf_gpt2_untied_head_and_n_inner(tmp_path) -> None:
    ref = tiny_hf_gpt2(tmp_path, n_inner=72, tie_word_embeddings=False, activation_function="relu")
    ours = GPT.from_hf(tmp_path).eval()
    assert not ours.config.tie_weights and ours.config.d_ff == 72
    idx = torch.randint(0, 97, (2, 8))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx), ref(idx).logits, atol=1e-4, rtol=1e-4)


def test_against_hf_gpt2_round_trip(tmp_path) -> None:
    torch.manual_seed(1)
    ours = GPT(GPTConfig(vocab_size=61, block_size=24, n_layer=2, n_head=2, n_embd=32)).eval()
    ours.to_hf(tmp_path / "out")
    ref = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "out").eval()
    idx = torch.randint(0, 61, (2, 24))
    with torch.no_grad():
        torch.testing.assert_close(ref(idx).logits, ours(idx), atol=1e-4, rtol=1e-4)
    again = GPT.from_hf(tmp_path / "out").eval()
    torch.testing.assert_close(again(idx), ours(idx), atol=0, rtol=0)


def small_gpt(**overrides) -> GPT:
    torch.manual_seed(0)
    config = dict(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=32)
    return GPT(GPTConfig(**{**config, **overrides})).eval()


@pytest.mark.parametrize("position", ["learned", "rotary"])
def test_cached_generation_gives_the_uncached_tokens(position: str) -> None:
    model = small_gpt(position=position).double()
    prompt = torch.randint(0, 40, (2, 5))
    kwargs = dict(temperature=0.9, top_k=20, top_p=0.95)
    # 30 new tokens run past block_size=16, where the window slides
    cached = model.generate(prompt, 30, generator=torch.Generator().manual_seed(3), **kwargs)
    plain = model.generate(
        prompt, 30, use_cache=False, generator=torch.Generator().manual_seed(3), **kwargs
    )
    assert cached.shape == (2, 35)
    assert torch.equal(cached, plain)


def test_greedy_generation_follows_the_argmax() -> None:
    model = small_gpt()
    prompt = torch.randint(0, 40, (1, 4))
    out = model.generate(prompt, 6, temperature=0)
    for t in range(4, 10):
        assert out[0, t] == model(out[:, :t])[0, -1].argmax()


def test_weights_are_tied() -> None:
    model = small_gpt()
    assert model.lm_head.weight is model.wte.weight
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == sum(
        t.numel() for k, t in model.state_dict().items() if k != "lm_head.weight"
    )


def test_training_steps_lower_the_loss() -> None:
    model = small_gpt().train()
    data = torch.arange(16).repeat(4, 2)[:, :17] % 40  # a pattern to memorise
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        logits = model(data[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 40), data[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]


@pytest.mark.parametrize(("top_k", "top_p"), [(5, None), (None, 0.8), (7, 0.5), (None, 0.999)])
def test_sampling_filters_match_hf_warpers(top_k, top_p) -> None:
    from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

    from archlab.nn.sampling import filter_logits

    logits = torch.randn(4, 50)
    expected = logits.clone()
    if top_k:
        expected = TopKLogitsWarper(top_k)(None, expected)
    if top_p:
        expected = TopPLogitsWarper(top_p)(None, expected)
    got = filter_logits(logits, top_k, top_p)
    assert torch.equal(torch.isinf(got), torch.isinf(expected))
    torch.testing.assert_close(got[~torch.isinf(got)], expected[~torch.isinf(expected)])


def test_bad_inputs_raise_clear_errors() -> None:
    model = small_gpt()
    with pytest.raises(ShapeError, match="exceeds the context of 16"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ShapeError, match=r"in \[0, 40\) \(the vocabulary size\), found 40"):
        model(torch.full((1, 3), 40))
    with pytest.raises(ShapeError, match="integer tensor"):
        model(torch.zeros(1, 3))
    with pytest.raises(ShapeError, match="at least one token"):
        model.generate(torch.zeros(1, 0, dtype=torch.long), 3)
    with pytest.raises(ConfigError, match="temperature"):
        model.generate(torch.zeros(1, 2, dtype=torch.long), 3, temperature=-1)
    with pytest.raises(ConfigError, match="divisible"):
        GPTConfig(n_embd=30, n_head=4)


def test_bad_checkpoints_raise_clear_errors(tmp_path) -> None:
    tiny_hf_gpt2(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        GPT.from_hf(tmp_path / "nowhere")

    state = load_file(tmp_path / "model.safetensors")
    state["transformer.h.1.mlp.c_fc.weight"] = torch.zeros(48, 10)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"h\.1\.mlp\.c_fc\.weight.*\(48, 10\).*\(48, 192\)"):
        GPT.from_hf(tmp_path)

    del state["transformer.h.1.mlp.c_fc.weight"]
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="lacks tensor 'h.1.mlp.c_fc.weight'"):
        GPT.from_hf(tmp_path)

    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot be read as safetensors"):
        GPT.from_hf(tmp_path)

    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="lacks model.safetensors"):
        GPT.from_hf(tmp_path)

    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    save_file({}, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="model_type 'bert', expected 'gpt2'"):
        GPT.from_hf(tmp_path)
