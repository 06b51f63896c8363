"""Logistic regression on fixed features: the linear probe of a frozen encoder.

For features x_i (n, d) and labels y_i in {0..K-1}, with the L2 penalty on the
weights only (not the intercept), as scikit-learn's ``LogisticRegression(C=C)``:

    K = 2:   min_{w, b}  C sum_i log(1 + exp(-s_i (w . x_i + b))) + ||w||^2 / 2,
             s_i = +1 if y_i = 1 else -1;   p(y = 1 | x) = sigmoid(w . x + b)
    K > 2:   min_{W, b}  C sum_i -log softmax(W x_i + b)_{y_i} + ||W||_F^2 / 2

Both are convex; L-BFGS with a strong-Wolfe line search, in float64, reaches the
optimum scikit-learn's ``lbfgs`` solver reaches (tests/test_pretrained.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class LogisticRegression:
    """A fitted probe: ``coef`` (1, d) for two classes, else (K, d); ``intercept``."""

    coef: Tensor
    intercept: Tensor

    def log_proba(self, x: Tensor) -> Tensor:
        """log p(y | x), (n, K), for features (n, d)."""
        z = x.to(self.coef.dtype) @ self.coef.T + self.intercept
        if self.coef.shape[0] == 1:  # two classes: p(1) = sigmoid(z)
            return torch.cat([F.logsigmoid(-z), F.logsigmoid(z)], dim=1)
        return z.log_softmax(dim=1)


def fit_logistic_regression(
    x: Tensor, y: Tensor, C: float, num_classes: int | None = None, max_iter: int = 1000
) -> LogisticRegression:
    """Minimise the penalised log-loss of the module docstring; x (n, d), y (n,) class ids."""
    x = x.double()
    K = int(num_classes or int(y.max()) + 1)
    rows = 1 if K == 2 else K
    W = torch.zeros(rows, x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(rows, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [W, b],
        lr=1,
        max_iter=max_iter,
        history_size=20,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )

    def objective() -> Tensor:
        optimizer.zero_grad()
        z = x @ W.T + b
        if K == 2:
            data = F.binary_cross_entropy_with_logits(z[:, 0], y.double(), reduction="sum")
        else:
            data = F.cross_entropy(z, y, reduction="sum")
        loss = C * data + 0.5 * (W * W).sum()
        loss.backward()
        return loss

    optimizer.step(objective)
    return LogisticRegression(W.detach(), b.detach())
