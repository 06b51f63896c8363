"""LSTM and GRU classifiers: the equations in the docstring, step by step, give their states."""

import pytest
import torch

import archlab


def lstm_steps(x, W, U, b):
    """h_t for x (time, in) by the LSTM equations; gates stacked i, f, g, o."""
    h = c = torch.zeros(U.shape[1])
    out = []
    for x_t in x:
        i, f, g, o = (W @ x_t + U @ h + b).chunk(4)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        out.append(h)
    return torch.stack(out)


def gru_steps(x, W, U, b_i, b_h):
    """h_t for x (time, in) by the GRU equations; gates stacked r, z, n."""
    h = torch.zeros(U.shape[1])
    out = []
    for x_t in x:
        xr, xz, xn = (W @ x_t + b_i).chunk(3)
        hr, hz, hn = (U @ h + b_h).chunk(3)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        h = (1 - z) * n + z * h
        out.append(h)
    return torch.stack(out)


def by_equations(model, ids_row, length):
    rnn = model.rnn
    x = model.embed(ids_row[:length])
    outs = []
    for suffix, reverse in [("l0", False), ("l0_reverse", True)][: 2 if rnn.bidirectional else 1]:
        W, U = getattr(rnn, f"weight_ih_{suffix}"), getattr(rnn, f"weight_hh_{suffix}")
        b_i, b_h = getattr(rnn, f"bias_ih_{suffix}"), getattr(rnn, f"bias_hh_{suffix}")
        seq = x.flip(0) if reverse else x
        h = (
            lstm_steps(seq, W, U, b_i + b_h)
            if model.config.cell == "lstm"
            else gru_steps(seq, W, U, b_i, b_h)
        )
        outs.append(h.flip(0) if reverse else h)
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("name", ["lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_states_follow_the_equations_with_padding(name, bidirectional) -> None:
    model = archlab.create_model(
        name, vocab_size=30, embed_dim=6, hidden_size=5, bidirectional=bidirectional, dropout=0.0
    ).eval()
    ids = torch.tensor([[3, 4, 5, 6, 7], [8, 9, 0, 0, 0], [10, 11, 12, 13, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        states = model.states(ids, mask)
        for row, length in enumerate(mask.sum(1).tolist()):
            expected = by_equations(model, ids[row], length)
            torch.testing.assert_close(states[row, :length], expected, atol=1e-5, rtol=1e-5)
            assert states[row, length:].abs().sum() == 0


def test_lstm_classifier_learns_a_keyword_rule() -> None:
    torch.manual_seed(0)
    model = archlab.create_model("lstm", vocab_size=20, embed_dim=16, hidden_size=16, dropout=0.0)
    ids = torch.randint(3, 20, (64, 9))
    labels = (ids == 5).any(dim=1).long()  # is the word 5 anywhere in the sentence?
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(model(ids), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (model(ids).argmax(1) == labels).float().mean() > 0.95
