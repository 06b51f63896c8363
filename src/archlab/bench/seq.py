"""Sequence models: archlab's TCN against the authors' form, its LSTM against ``torch.nn.LSTM``.

Training, on ``tcn-adding``'s problem (T = 600, batch 32, (value, marker) inputs, MSE
on the last step) at the TCN paper's 70K-parameter size, with Adam at lr 2e-3:
- TCN, 8 levels of 24 channels, kernel 8, against :class:`~archlab.interop.locuslab_tcn.
  AuthorsTCN` (padding both sides then chomping, the old-style weight norm) holding the
  same weights;
- ``seq_lstm`` (one layer of 130, 70K parameters like the TCN) against ``torch.nn.LSTM``
  and a ``torch.nn.Linear`` used directly, with the same weights.

Inference, batch 1, T = 1000, under ``torch.inference_mode()``: producing the output
at step t either by :meth:`TCN.step` (a ring of the last k d activations per
convolution, the weights arranged once in :meth:`TCN.init_state`) or by recomputing a
full forward over the t steps so far -- at t = 1000 for the figure (a recomputation
costs more the longer the history, a step does not).  The LSTM's
:meth:`~archlab.models.rnn.RNNSequenceModel.step` is set against ``torch.nn.LSTM``
called one step at a time with its carried (h, c).

Every figure is steps per second (a training step: forward, loss, backward, Adam),
the median of interleaved repeats; ratios are archlab / reference, above 1 when
archlab is faster.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import archlab
from archlab.bench import interleaved_medians, timed
from archlab.interop.locuslab_tcn import AuthorsTCN
from archlab.models.tcn import TCN, TCNConfig

RECIPE = "tcn-adding"  # the figures are on this recipe's problem, at the paper's 70K size
FULL = dict(T=600, batch=32, channels=[24] * 8, kernel=8, hidden=130, infer_T=1000)
QUICK = dict(T=40, batch=4, channels=[8] * 3, kernel=3, hidden=8, infer_T=60)


def tcn_pair(channels: list[int], kernel: int) -> tuple[TCN, AuthorsTCN]:
    """The authors' TCN on adding-problem inputs, and archlab's loaded from its state dict."""
    torch.manual_seed(0)
    theirs = AuthorsTCN(2, 1, channels, kernel)
    config = TCNConfig(in_dim=2, channels=channels, kernel_size=kernel, out_dim=1)
    return TCN.from_authors(theirs.state_dict(), config), theirs


class TorchLSTM(nn.Module):
    """``torch.nn.LSTM`` and a linear layer at every step, nothing else."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.rnn = nn.LSTM(in_dim, hidden, batch_first=True)
        self.out = nn.Linear(hidden, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.rnn(x)[0])


def lstm_pair(hidden: int) -> tuple[nn.Module, TorchLSTM]:
    torch.manual_seed(0)
    ours = archlab.create_model("seq_lstm", in_dim=2, hidden_size=hidden, out_dim=1)
    theirs = TorchLSTM(2, hidden, 1)
    theirs.load_state_dict(ours.state_dict(), strict=False)
    assert set(theirs.state_dict()) <= set(ours.state_dict())
    return ours, theirs


def train_rate(model: nn.Module, batches, steps: int) -> float:
    """Training steps/s: forward, MSE on the last step's output, backward, Adam."""
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()

    def step(i: int) -> None:
        x, y = batches[i % len(batches)]
        loss = F.mse_loss(model(x)[:, -1, 0], y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step(0)  # warm-up
    return steps / timed(lambda: [step(i) for i in range(steps)])


@torch.inference_mode()
def step_rate(model: nn.Module, x: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Steps/s of ``model.step`` over every step of x (1, T, in), and the last output.

    The state is made inside the timing: its cost (for the TCN, the weight norm and
    the arrangement of its taps) counts.
    """
    model.eval()
    y = None

    def run() -> None:
        nonlocal y
        state = model.init_state(x.shape[0])
        for t in range(x.shape[1]):
            y, state = model.step(x[:, t], state)

    return x.shape[1] / timed(run), y


@torch.inference_mode()
def recompute_rate(model: nn.Module, x: torch.Tensor, calls: int) -> tuple[float, torch.Tensor]:
    """Steps/s when each step's output is a full forward over the whole history x."""
    model.eval()
    y = model(x)[:, -1]
    return calls / timed(lambda: [model(x) for _ in range(calls)]), y


@torch.inference_mode()
def torch_lstm_step_rate(model: TorchLSTM, x: torch.Tensor) -> float:
    """Steps/s of ``torch.nn.LSTM`` fed one step at a time, (h, c) carried."""
    model.eval()

    def run() -> None:
        state = None
        for t in range(x.shape[1]):
            h, state = model.rnn(x[:, t : t + 1], state)
            model.out(h[:, 0])

    return x.shape[1] / timed(run)


def _adding_batches(n: int, batch: int, T: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    from archlab.tasks.synthetic import adding_problem

    g = torch.Generator().manual_seed(0)
    return [adding_problem(batch, T, g) for _ in range(n)]


def run(quick: bool = False) -> dict:
    size = QUICK if quick else FULL
    steps, repeats, calls = (2, 1, 2) if quick else (3, 7, 3)
    batches = _adding_batches(4, size["batch"], size["T"])
    ours_tcn, their_tcn = tcn_pair(size["channels"], size["kernel"])
    ours_lstm, torch_lstm = lstm_pair(size["hidden"])

    # each pair in its own rounds, so that the two sides of a ratio follow the same
    # kind of model (a step of the other pair leaves a different heap behind)
    train = interleaved_medians(
        {
            "tcn": lambda: train_rate(ours_tcn, batches, steps),
            "tcn_authors": lambda: train_rate(their_tcn, batches, steps),
        },
        repeats,
    ) | interleaved_medians(
        {
            "seq_lstm": lambda: train_rate(ours_lstm, batches, steps),
            "torch_lstm": lambda: train_rate(torch_lstm, batches, steps),
        },
        repeats,
    )

    x = _adding_batches(1, 1, size["infer_T"])[0][0]
    ours_tcn, their_tcn = tcn_pair(size["channels"], size["kernel"])  # fresh, same weights
    last: dict[str, torch.Tensor] = {}

    def keep(name: str, measured: tuple[float, torch.Tensor]) -> float:
        rate, last[name] = measured
        return rate

    infer = interleaved_medians(
        {
            "tcn_step": lambda: keep("tcn_step", step_rate(ours_tcn, x)),
            "tcn_recompute": lambda: keep("tcn_recompute", recompute_rate(ours_tcn, x, calls)),
            "tcn_authors_recompute": lambda: keep(
                "tcn_authors_recompute", recompute_rate(their_tcn, x, calls)
            ),
            "seq_lstm_step": lambda: keep("seq_lstm_step", step_rate(ours_lstm, x)),
            "torch_lstm_step": lambda: torch_lstm_step_rate(torch_lstm, x),
        },
        repeats,
    )
    same = bool(
        torch.allclose(last["tcn_step"], last["tcn_recompute"], atol=1e-5, rtol=1e-4)
        and torch.allclose(last["tcn_step"], last["tcn_authors_recompute"], atol=1e-5, rtol=1e-4)
    )

    ratios = {
        "tcn_train": train["tcn"] / train["tcn_authors"],
        "lstm_train": train["seq_lstm"] / train["torch_lstm"],
        "tcn_step_vs_recompute": infer["tcn_step"] / infer["tcn_recompute"],
        "tcn_step_vs_authors_recompute": infer["tcn_step"] / infer["tcn_authors_recompute"],
        "lstm_step": infer["seq_lstm_step"] / infer["torch_lstm_step"],
    }
    n_tcn = sum(p.numel() for p in ours_tcn.parameters())
    n_lstm = sum(p.numel() for p in ours_lstm.parameters())
    T, inf_T = size["T"], size["infer_T"]
    result = {
        "train_steps_per_s": train,
        "inference_steps_per_s": infer,
        "ratios": ratios,
        "step_equals_recompute": same,
        "goals": {"tcn_train": 1.0, "lstm_train": 1.0, "tcn_step_vs_recompute": 10.0},
        "config": {
            **size,
            "tcn_parameters": n_tcn,
            "lstm_parameters": n_lstm,
            "train_steps": steps,
            "repeats": repeats,
        },
        "reference": "the TCN authors' form (locuslab/TCN TemporalBlock: both-sided padding, "
        "chomp, old-style weight norm) and torch.nn.LSTM + Linear used directly, same weights "
        "and batches",
        "summary": (
            f"training at T = {T}, batch {size['batch']}: TCN {train['tcn']:.2f} steps/s "
            f"({ratios['tcn_train']:.2f}x the authors' form), LSTM {train['seq_lstm']:.2f} "
            f"steps/s ({ratios['lstm_train']:.2f}x torch.nn.LSTM); TCN step-by-step inference "
            f"at T = {inf_T} {infer['tcn_step']:,.0f} steps/s, "
            f"{ratios['tcn_step_vs_recompute']:.0f}x recomputation"
        ),
    }
    print(f"seq  (TCN {n_tcn:,} and LSTM {n_lstm:,} parameters; {torch.get_num_threads()} threads)")
    print(f"  {'':<36}{'archlab':>10}{'reference':>11}{'ratio':>8}")
    rows = [
        (f"TCN train steps/s (T={T})", train["tcn"], train["tcn_authors"], "tcn_train"),
        (f"LSTM train steps/s (T={T})", train["seq_lstm"], train["torch_lstm"], "lstm_train"),
        (
            f"TCN step vs recompute (T={inf_T})",
            infer["tcn_step"],
            infer["tcn_recompute"],
            "tcn_step_vs_recompute",
        ),
        (
            "  vs the authors' recompute",
            infer["tcn_step"],
            infer["tcn_authors_recompute"],
            "tcn_step_vs_authors_recompute",
        ),
        (
            "LSTM step vs nn.LSTM per step",
            infer["seq_lstm_step"],
            infer["torch_lstm_step"],
            "lstm_step",
        ),
    ]
    for label, a, b, key in rows:
        print(f"  {label:<36}{a:>10,.2f}{b:>11,.2f}{ratios[key]:>7.2f}x")
    print(f"  step-by-step output equals the recomputed one: {same}")
    print("  (ratios are archlab / reference: above 1 means archlab is faster)")
    return result
