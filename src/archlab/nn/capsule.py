"""Capsules: the squash non-linearity and routing by agreement (Sabour, Frosst & Hinton 2017).

    v_j = ||s_j||^2 / (1 + ||s_j||^2) * s_j / ||s_j||                   squash (eq. 1)
    u_hat_{j|i} = W_ij u_i                                               prediction vectors
    c_ij = exp(b_ij) / sum_k exp(b_ik)                                   softmax over parents j
    s_j = sum_i c_ij u_hat_{j|i}                                         (eq. 2)
    b_ij <- b_ij + u_hat_{j|i} . v_j                                     agreement (Procedure 1)
    L_k = T_k max(0, m+ - ||v_k||)^2 + lambda (1 - T_k) max(0, ||v_k|| - m-)^2   margin loss (eq. 4)

:func:`routing_by_agreement` runs Procedure 1 for a whole batch at once: the only
Python loop is over the iterations (3 in the paper); every child i and parent j
is handled by one batched matmul.  Prediction vectors are laid out
(batch, parents, children, dim), so that the weighted sum over children and the
agreement are batched matrix products without copies.

Gradients flow through every iteration, as in the authors' code (no stop-gradient
on the routing logits), but by a hand-written backward: autograd would save and
write a (batch, parents, children, dim) tensor for every product of every
iteration (94 MB each at batch 128), while the backward below reads u_hat twice
per iteration and writes its gradient once, as one batched matmul:

    dL/du_hat_{j|i} = sum_r c^r_ij dL/ds^r_j + sum_{r<R} dL/db^{r+1}_ij v^r_j

Routing runs in float32 even under bf16 autocast: the logits b accumulate small
dot products and the softmax and squash divide by norms, which bf16's 8-bit
mantissa makes coarse.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


def squash(s: Tensor, dim: int = -1) -> Tensor:
    """Shrink each vector along ``dim`` to a length in [0, 1), keeping its direction (eq. 1).

    Computed as s * ||s|| / (1 + ||s||^2), which equals eq. 1 without dividing by
    ||s||: it is 0 at s = 0, with a finite gradient there.
    """
    norm = torch.linalg.vector_norm(s, dim=dim, keepdim=True)
    return s * (norm / (1 + norm * norm))


def capsule_lengths(v: Tensor) -> Tensor:
    """||v_j|| of capsules v (..., dim), in float32: the probability that entity j is present."""
    return v.float().norm(dim=-1)


def margin_loss(
    v: Tensor, labels: Tensor, m_plus: float = 0.9, m_minus: float = 0.1, lam: float = 0.5
) -> Tensor:
    """Eq. 4 summed over the classes of capsules v (batch, classes, dim), averaged over the batch.

    T_k = 1 for the true class; ``lam`` down-weights the loss of the absent classes.
    """
    lengths = capsule_lengths(v)
    T = F.one_hot(labels, lengths.shape[1]).to(lengths.dtype)
    present = T * F.relu(m_plus - lengths).pow(2)
    absent = lam * (1 - T) * F.relu(lengths - m_minus).pow(2)
    return (present + absent).sum(dim=1).mean()


class Routing(NamedTuple):
    v: Tensor  # parent capsules (batch, parents, dim)
    c: Tensor  # coupling coefficients of the last iteration (batch, parents, children)


def routing_by_agreement(u_hat: Tensor, iterations: int = 3) -> Routing:
    """Procedure 1 on prediction vectors u_hat (batch, parents, children, dim).

    u_hat[:, j, i] = W_ij u_i.  Returns the parent capsules v (differentiable) and
    the coupling coefficients c used to compute them (not differentiable), which
    sum to 1 over the parents of each child.
    """
    if iterations < 1:
        raise ValueError(f"routing needs at least one iteration, got {iterations}")
    with torch.autocast(u_hat.device.type, enabled=False):
        v, c = _Routing.apply(u_hat.to(torch.promote_types(u_hat.dtype, torch.float32)), iterations)
    return Routing(v, c)


class _Routing(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u_hat: Tensor, iterations: int) -> tuple[Tensor, Tensor]:
        batch, parents, children, _ = u_hat.shape
        b = u_hat.new_zeros(batch, parents, children)
        couplings, preactivations, outputs = [], [], []
        for r in range(iterations):
            c = b.softmax(dim=1)  # each child spreads its output over the parents
            s = (c.unsqueeze(2) @ u_hat).squeeze(2)  # s_j = sum_i c_ij u_hat_{j|i}
            v = squash(s)
            couplings.append(c), preactivations.append(s), outputs.append(v)
            if r < iterations - 1:
                b = b + (u_hat @ v.unsqueeze(3)).squeeze(3)  # b_ij += u_hat_{j|i} . v_j
        ctx.save_for_backward(u_hat, *couplings, *preactivations, *outputs)
        ctx.iterations = iterations
        ctx.mark_non_differentiable(c)
        return v, c

    @staticmethod
    def backward(ctx, grad_v: Tensor, _grad_c: Tensor | None) -> tuple[Tensor, None]:
        R = ctx.iterations
        u_hat, *saved = ctx.saved_tensors
        couplings, preactivations, outputs = saved[:R], saved[R : 2 * R], saved[2 * R :]
        grad_b = torch.zeros_like(couplings[0])  # dL/db^{r+1}: the agreement of iteration r
        left, right = [], []  # dL/du_hat = sum of left (x) right outer products
        for r in reversed(range(R)):
            c, s, v = couplings[r], preactivations[r], outputs[r]
            if r == R - 1:
                g_v = grad_v
            else:  # v^r entered b^{r+1} through the agreement u_hat . v^r
                g_v = (grad_b.unsqueeze(2) @ u_hat).squeeze(2)
                left.append(grad_b.clone()), right.append(v)
            with torch.enable_grad():
                s_ = s.detach().requires_grad_()
                (g_s,) = torch.autograd.grad(squash(s_), s_, g_v)
            left.append(c), right.append(g_s)
            g_c = (u_hat @ g_s.unsqueeze(3)).squeeze(3)
            grad_b += c * (g_c - (c * g_c).sum(dim=1, keepdim=True))  # softmax backward
        grad_u_hat = torch.stack(left, dim=3) @ torch.stack(right, dim=2)
        return grad_u_hat, None
