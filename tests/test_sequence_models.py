"""Sequence models: TCN against the authors' block, causality, fast step-by-step inference."""

import pytest
import torch
from torch.nn.utils import parametrize

import archlab
from archlab.interop.locuslab_tcn import AuthorsTCN
from archlab.models import TCN, TCNConfig

SEQUENCE_MODELS = {
    "tcn": dict(in_dim=3, channels=[8, 8, 6], kernel_size=3, out_dim=4),
    "seq_lstm": dict(in_dim=3, hidden_size=8, n_layer=2, out_dim=4),
    "seq_gru": dict(in_dim=3, hidden_size=8, n_layer=2, out_dim=4),
    "seq_transformer": dict(in_dim=3, n_embd=16, n_head=2, n_layer=2, max_len=600, out_dim=4),
}


def test_tcn_matches_the_authors_block_on_their_weights() -> None:
    theirs = AuthorsTCN(3, 4, [8, 8, 6], 3).eval()
    with torch.no_grad():  # make g differ from ||v||, so the weight norm matters
        for name, p in theirs.named_parameters():
            if name.endswith("weight_g"):
                p.mul_(torch.rand_like(p) + 0.5)
    state = theirs.state_dict()
    assert any(k.endswith("net.0.weight_g") for k in state)  # the duplicate keys are there
    ours = TCN.from_authors(state, TCNConfig(**SEQUENCE_MODELS["tcn"])).eval()
    x = torch.randn(2, 50, 3)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-6, rtol=1e-5)


def test_from_authors_refuses_a_state_dict_of_another_shape() -> None:
    theirs = AuthorsTCN(3, 4, [8, 8, 6], 3).state_dict()
    with pytest.raises(archlab.ArchlabError, match="has shape"):
        TCN.from_authors(theirs, TCNConfig(in_dim=3, channels=[8, 8, 7], kernel_size=3, out_dim=4))


def test_tcn_receptive_field_is_what_the_formula_says() -> None:
    model = archlab.create_model("tcn", **SEQUENCE_MODELS["tcn"]).eval()
    assert model.receptive_field == 1 + 2 * (3 - 1) * (2**3 - 1) == 29
    x = torch.randn(1, 60, 3, requires_grad=True)
    model(x)[0, 59].sum().backward()
    seen = x.grad[0].abs().sum(dim=1) > 0
    assert seen[60 - 29 :].all() and not seen[: 60 - 29].any()


@pytest.mark.parametrize("name", sorted(SEQUENCE_MODELS))
def test_outputs_are_causal(name: str) -> None:
    """The output at t has zero gradient with respect to every input after t."""
    model = archlab.create_model(name, **SEQUENCE_MODELS[name]).eval()
    x = torch.randn(2, 40, 3, requires_grad=True)
    t = 17
    model(x)[:, t].sum().backward()
    assert (x.grad[:, t + 1 :] == 0).all() and (x.grad[:, : t + 1] != 0).any()


@pytest.mark.parametrize("name", sorted(SEQUENCE_MODELS))
def test_step_by_step_equals_a_full_forward_over_500_steps(name: str) -> None:
    model = archlab.create_model(name, **SEQUENCE_MODELS[name]).eval()
    x = torch.randn(2, 500, 3)
    with torch.no_grad(), parametrize.cached():
        full = model(x)
        state, outputs = model.init_state(2), []
        for t in range(500):
            y, state = model.step(x[:, t], state)
            outputs.append(y)
    torch.testing.assert_close(torch.stack(outputs, dim=1), full, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["seq_lstm", "seq_gru"])
def test_packed_batches_equal_one_sequence_at_a_time(name: str) -> None:
    model = archlab.create_model(name, **SEQUENCE_MODELS[name]).eval()
    lengths = torch.tensor([7, 3, 5])
    x = torch.randn(3, 7, 3)
    with torch.no_grad():
        batched = model(x, lengths)
        for i, n in enumerate(lengths.tolist()):
            alone = model(x[i : i + 1, :n])
            torch.testing.assert_close(batched[i : i + 1, :n], alone, atol=1e-6, rtol=1e-5)


def test_token_inputs_are_embedded() -> None:
    model = archlab.create_model("tcn", in_dim=8, vocab_size=20, channels=[8], out_dim=20)
    assert model(torch.randint(0, 20, (2, 9))).shape == (2, 9, 20)
    with pytest.raises(archlab.ArchlabError, match="token ids"):
        model(torch.randint(0, 21, (2, 9)))
    real = archlab.create_model("tcn", in_dim=3, channels=[8], out_dim=2)
    with pytest.raises(archlab.ArchlabError, match=r"\(batch, time, 3\)"):
        real(torch.randn(2, 9, 4))


def test_lstm_gate_equations_hold_for_the_sequence_model() -> None:
    """One LSTM layer's output at each step, written out from its fused weights."""
    model = archlab.create_model("seq_lstm", in_dim=3, hidden_size=5, out_dim=2).eval()
    rnn, x = model.rnn, torch.randn(1, 6, 3)
    W, U, b = rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0 + rnn.bias_hh_l0
    h, c, ys = torch.zeros(5), torch.zeros(5), []
    for t in range(6):
        i, f, g, o = (W @ x[0, t] + U @ h + b).chunk(4)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        ys.append(model.out(h))
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], torch.stack(ys), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("kernel_size", [2, 4])
def test_step_rings_hold_every_kernel_and_dilation(kernel_size: int) -> None:
    """The rotated taps: kernels 2 and 4, dilations up to 8, over 3 ring turns of the widest."""
    model = archlab.create_model(
        "tcn", in_dim=2, channels=[3, 5, 5, 4], kernel_size=kernel_size, out_dim=2
    ).eval()
    x = torch.randn(3, 3 * kernel_size * 8 + 5, 2)
    with torch.inference_mode():
        full, state, outputs = model(x), model.init_state(3), []
        for t in range(x.shape[1]):
            y, state = model.step(x[:, t], state)
            outputs.append(y)
    torch.testing.assert_close(torch.stack(outputs, dim=1), full, atol=1e-5, rtol=1e-4)
    state, total = model.init_state(3), 0  # with autograd on, gradients flow through the steps
    for t in range(20):
        y, state = model.step(x[:, t], state)
        total = total + y.sum()
    total.backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", sorted(SEQUENCE_MODELS))
def test_greedy_generation_through_step_is_the_argmax_of_a_full_forward(name: str) -> None:
    from archlab.nn.sequence import generate_stream

    config = {**SEQUENCE_MODELS[name], "vocab_size": 7, "out_dim": 7}
    model = archlab.create_model(name, **config).eval()
    ids = torch.randint(0, 7, (2, 5))
    for token in generate_stream(model, ids, 12, temperature=0):
        with torch.no_grad():
            expected = model(ids)[:, -1].argmax(dim=-1, keepdim=True)
        assert torch.equal(token, expected)
        ids = torch.cat((ids, token), dim=1)
    assert ids.shape == (2, 17)


@pytest.mark.parametrize(
    "model",
    [
        ["model.name=tcn", "model.in_dim=8", "model.channels=[8,8]", "model.kernel_size=3"],
        ["model.name=seq_lstm", "model.in_dim=8", "model.hidden_size=16"],
    ],
)
def test_char_lm_trains_a_sequence_model_that_generates(shakespeare, tmp_path, model) -> None:
    from archlab.run import train

    sets = ["data.block_size=16", "trainer.batch_size=4", "trainer.max_steps=2"]
    run_dir, _ = train(
        "gpt-shakespeare-char",
        [*sets, "trainer.precision=fp32", "trainer.eval_every=2", *model],
        out=str(tmp_path / "run"),
        progress=False,
    )
    run = archlab.load(run_dir)
    assert run.model.config.out_dim == run.model.config.vocab_size == 65
    text = run.task.generate(run.model, "ROMEO:", max_new_tokens=20, seed=0)
    assert text.startswith("ROMEO:") and len(text) == 26
    with pytest.raises(archlab.ArchlabError, match="model.out_dim comes from the data"):
        train("gpt-shakespeare-char", [*sets, *model, "model.out_dim=3"], out=str(tmp_path / "x"))
