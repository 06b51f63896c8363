"""Knowledge-graph embeddings: TransE, DistMult, ComplEx and RotatE.

Every entity has a vector e in R^d (TransE, DistMult) or C^d (ComplEx, RotatE), every
relation one in the same space, and a triple (h, r, t) gets a score, larger meaning
more plausible:

    TransE   (Bordes et al. 2013)       f(h, r, t) = -||h + r - t||_p             p = 1 or 2
    DistMult (Yang et al. 2015)         f(h, r, t) = sum_i h_i r_i t_i
    ComplEx  (Trouillon et al. 2016)    f(h, r, t) = Re(sum_i h_i r_i conj(t_i))
    RotatE   (Sun et al. 2019)          relations are rotations, r_i = e^{i theta_i}, |r_i| = 1:
        form "pykeen"                   f(h, r, t) = -||h o r - t||_2              (PyKEEN)
        form "paper"                    f(h, r, t) = gamma - sum_i |h_i r_i - t_i| (the paper's
                                        eq. 4, as the authors' KnowledgeGraphEmbedding code)

Each score is a comparison of a *query* built from two of the three with the third,
from either side, which is what makes scoring against every entity one matrix
operation ("1-to-all", PyKEEN's ``score_t`` / ``score_h``):

    model      tail query q(h, r)   head query q'(r, t)   compare(q, e)
    TransE     h + r                t - r                 -||q - e||_p
    DistMult   h o r                r o t                 <q, e>
    ComplEx    h o r                conj(r) o t           Re <q, conj(e)>  (a real dot product)
    RotatE     h o r                conj(r) o t           -||q - e||_2  or  gamma - sum|q_i - e_i|

(ComplEx: Re(h r conj(t)) = Re(conj(r) t conj(h)), the conjugate of the same number;
RotatE: |h_i r_i - t_i| = |h_i - conj(r_i) t_i| because |r_i| = 1.)  Against all N
entities the dot products are one matmul, the L2 and L1 distances ``torch.cdist``, and
the paper's RotatE distance (L2 within each complex coordinate, L1 across them) a
difference over chunks of entities, the chunk sized to bound the memory, or (for
evaluation) one kernel fused by ``torch.compile``.

Complex vectors are stored as real ones, [Re | Im] (length 2d), so that the real and
imaginary parts are contiguous halves.  Initialisation and constraints are PyKEEN's
model defaults, the constraints applied at construction and by :meth:`constrain_`
after every optimizer step (the link-prediction task calls it):

    TransE    entities U(+-sqrt(6/d)), then unit L2 norm (constraint); relations Glorot
              uniform, then unit L2 norm (once)
    DistMult  entities as TransE's (unit L2 norm, constraint); relations Glorot normal,
              then unit L2 norm (once)
    ComplEx   every real and imaginary part N(0, 1); no constraint
    RotatE    pykeen: entities U(+-sqrt(3/d)) in each part, relations e^{i theta} with
              theta ~ U[0, 2 pi), projected back to |r_i| = 1 (constraint);
              paper: entities U(+-(gamma + epsilon)/d), relations stored as phases
              theta ~ U(-pi, pi), so |r_i| = 1 by construction, as the authors' code
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archlab.config import Config, NonNegativeFloat, OneOf, PositiveFloat, Size
from archlab.errors import ShapeError
from archlab.models import roles
from archlab.registry import register_model

# elements of the (queries, entities, dimension) difference the paper's RotatE builds at
# once when scoring against every entity: 2**22 floats, 16 MB a temporary
CHUNK_ELEMENTS = 1 << 22
# above this many multiply-adds, the paper's RotatE scores every entity with a compiled
# kernel (when no gradient is needed)
COMPILE_ABOVE = 1 << 27


@dataclass
class KGEConfig(Config):
    num_entities: Size = 14  # the task sets both from the data
    num_relations: Size = 55
    dim: Size = 50  # d: real dimensions, or complex ones for ComplEx and RotatE


@dataclass
class TransEConfig(KGEConfig):
    p: Annotated[int, OneOf((1, 2))] = 1  # the norm of -||h + r - t||_p (PyKEEN's default: 1)


@dataclass
class RotatEConfig(KGEConfig):
    dim: Size = 200
    # pykeen: -||h o r - t||_2; paper: gamma - sum_i |h_i r_i - t_i|
    form: Annotated[str, OneOf(("pykeen", "paper"))] = "pykeen"
    gamma: PositiveFloat = 12.0  # paper form: the margin in the score, and the init range
    epsilon: NonNegativeFloat = 2.0  # paper form: entities start in U(+-(gamma + epsilon)/d)


def as_complex(x: Tensor) -> Tensor:
    """A [Re | Im] real tensor (..., 2d) as a complex one (..., d)."""
    re, im = x.chunk(2, dim=-1)
    return torch.complex(re, im)


def complex_mul(a: Tensor, b: Tensor, conj_a: bool = False) -> Tensor:
    """a o b (or conj(a) o b) of two [Re | Im] tensors, broadcast."""
    a_re, a_im = a.chunk(2, dim=-1)
    b_re, b_im = b.chunk(2, dim=-1)
    if conj_a:
        a_im = -a_im
    return torch.cat([a_re * b_re - a_im * b_im, a_re * b_im + a_im * b_re], dim=-1)


def _one_to_k(q: Tensor, e: Tensor) -> bool:
    """Whether q is (B, 1, D) and e (B, K, D): one query against K candidates per row."""
    return q.dim() == e.dim() == 3 and q.shape[0] == e.shape[0] and q.shape[1] == 1


def pairwise_dot(q: Tensor, e: Tensor) -> Tensor:
    """<q, e> over the last axis, broadcast: (..., D) x (..., D) -> (...)."""
    if _one_to_k(q, e):  # a batched matmul
        return torch.bmm(e, q.transpose(1, 2)).squeeze(2)
    return (q * e).sum(-1)


def pairwise_distance(q: Tensor, e: Tensor, p: int) -> Tensor:
    """||q - e||_p over the last axis, broadcast; ``torch.cdist`` (exact, not through a
    matmul) for one query against K candidates per row."""
    if _one_to_k(q, e):
        mode = "donot_use_mm_for_euclid_dist"
        return torch.cdist(q, e, p=p, compute_mode=mode).squeeze(1)
    return torch.linalg.vector_norm(q - e, ord=p, dim=-1)


class KGE(nn.Module):
    """Shared machinery: embeddings, 1-to-all scoring, broadcasting; subclasses give the
    queries, the comparison, the initialisation and the constraints."""

    role = roles.KGEModel
    is_complex: ClassVar[bool] = False  # vectors in C^d, stored as [Re | Im]

    def __init__(self, config: KGEConfig, relation_width: int | None = None) -> None:
        super().__init__()
        self.config = config
        self.num_entities, self.num_relations = config.num_entities, config.num_relations
        width = 2 * config.dim if self.is_complex else config.dim
        self.entity = nn.Parameter(torch.empty(config.num_entities, width))
        self.relation = nn.Parameter(torch.empty(config.num_relations, relation_width or width))
        with torch.no_grad():
            self.reset_parameters()
            self.constrain_()

    # ----- what a model defines -----

    def reset_parameters(self) -> None:
        raise NotImplementedError

    def constrain_(self) -> None:
        """Project the weights onto the model's constraints (none by default)."""

    def query_t(self, h: Tensor, r: Tensor) -> Tensor:
        """q(h, r): compared with a tail's vector."""
        raise NotImplementedError

    def query_h(self, r: Tensor, t: Tensor) -> Tensor:
        """q'(r, t): compared with a head's vector."""
        raise NotImplementedError

    def compare(self, q: Tensor, e: Tensor) -> Tensor:
        """The score of queries ``q`` against entity vectors ``e``, broadcast over (...)."""
        raise NotImplementedError

    def compare_all(self, q: Tensor, entities: Tensor) -> Tensor:
        """Queries (M, D) against every entity (N, D): (M, N)."""
        raise NotImplementedError

    # ----- shared -----

    def relation_vectors(self, r: Tensor | None = None) -> Tensor:
        """Relation ``r``'s vectors as the formula uses them ([Re | Im] when complex)."""
        return self.relation if r is None else F.embedding(r, self.relation)

    def entity_vectors(self, e: Tensor | None = None) -> Tensor:
        return self.entity if e is None else F.embedding(e, self.entity)

    def representations(self) -> tuple[Tensor, Tensor]:
        """Every entity's and every relation's vector, complex for complex models."""
        e, r = self.entity_vectors(), self.relation_vectors()
        return (as_complex(e), as_complex(r)) if self.is_complex else (e, r)

    def forward(self, h: Tensor | None, r: Tensor, t: Tensor | None) -> Tensor:
        """Scores of (h, r, t) id tensors that broadcast; h or t None: every entity.

        ``model(h, r, None)`` is (*batch, N), the scores of every tail;
        ``model(None, r, t)`` those of every head.  Otherwise the query is built on the
        side whose broadcast shape is smaller (h o r once for K candidate tails).
        """
        if h is None or t is None:
            if h is None and t is None:
                raise ShapeError("give h or t (or both); None stands for every entity")
            if t is None:
                q = self.query_t(self.entity_vectors(h), self.relation_vectors(r))
            else:
                q = self.query_h(self.relation_vectors(r), self.entity_vectors(t))
            shape = q.shape[:-1]
            scores = self.compare_all(q.reshape(-1, q.shape[-1]), self.entity_vectors())
            return scores.view(*shape, self.num_entities)
        hr = torch.broadcast_shapes(h.shape, r.shape).numel()
        rt = torch.broadcast_shapes(r.shape, t.shape).numel()
        if hr <= rt:
            q = self.query_t(self.entity_vectors(h), self.relation_vectors(r))
            return self.compare(q, self.entity_vectors(t))
        q = self.query_h(self.relation_vectors(r), self.entity_vectors(t))
        return self.compare(q, self.entity_vectors(h))


def _uniform_(x: Tensor, bound: float) -> None:
    nn.init.uniform_(x, -bound, bound)


def _unit_rows_(x: Tensor) -> None:
    x.copy_(F.normalize(x, p=2, dim=-1))


def _lp_distance_all(q: Tensor, entities: Tensor, p: int) -> Tensor:
    return -torch.cdist(q, entities, p=p)


@register_model("transe", TransEConfig)
class TransE(KGE):
    """TransE (Bordes et al. 2013): relations as translations, f = -||h + r - t||_p."""

    def reset_parameters(self) -> None:
        d = self.config.dim
        _uniform_(self.entity, math.sqrt(6 / d))
        nn.init.xavier_uniform_(self.relation)
        _unit_rows_(self.relation)

    @torch.no_grad()
    def constrain_(self) -> None:
        _unit_rows_(self.entity)

    def query_t(self, h: Tensor, r: Tensor) -> Tensor:
        return h + r

    def query_h(self, r: Tensor, t: Tensor) -> Tensor:
        return t - r

    def compare(self, q: Tensor, e: Tensor) -> Tensor:
        return -pairwise_distance(q, e, self.config.p)

    def compare_all(self, q: Tensor, entities: Tensor) -> Tensor:
        return _lp_distance_all(q, entities, self.config.p)


@register_model("distmult", KGEConfig)
class DistMult(KGE):
    """DistMult (Yang et al. 2015): a diagonal bilinear form, f = sum_i h_i r_i t_i."""

    def reset_parameters(self) -> None:
        _uniform_(self.entity, math.sqrt(6 / self.config.dim))
        nn.init.xavier_normal_(self.relation)
        _unit_rows_(self.relation)

    @torch.no_grad()
    def constrain_(self) -> None:
        _unit_rows_(self.entity)

    def query_t(self, h: Tensor, r: Tensor) -> Tensor:
        return h * r

    def query_h(self, r: Tensor, t: Tensor) -> Tensor:
        return r * t

    def compare(self, q: Tensor, e: Tensor) -> Tensor:
        return pairwise_dot(q, e)

    def compare_all(self, q: Tensor, entities: Tensor) -> Tensor:
        return q @ entities.T


@register_model("complex", KGEConfig, defaults={"dim": 200})
class ComplEx(KGE):
    """ComplEx (Trouillon et al. 2016): f = Re(sum_i h_i r_i conj(t_i)) in C^d."""

    is_complex = True

    def reset_parameters(self) -> None:
        nn.init.normal_(self.entity)
        nn.init.normal_(self.relation)

    def query_t(self, h: Tensor, r: Tensor) -> Tensor:
        return complex_mul(h, r)

    def query_h(self, r: Tensor, t: Tensor) -> Tensor:
        return complex_mul(r, t, conj_a=True)

    def compare(self, q: Tensor, e: Tensor) -> Tensor:
        return pairwise_dot(q, e)  # Re <q, conj(e)> is the dot product of [Re | Im] layouts

    def compare_all(self, q: Tensor, entities: Tensor) -> Tensor:
        return q @ entities.T


@register_model("rotate", RotatEConfig)
class RotatE(KGE):
    """RotatE (Sun et al. 2019): relations rotate entities in C^d, |r_i| = 1."""

    is_complex = True

    def __init__(self, config: RotatEConfig) -> None:
        # the paper form stores each relation as its d phases theta, r_i = e^{i theta_i}
        super().__init__(config, relation_width=config.dim if config.form == "paper" else None)

    def reset_parameters(self) -> None:
        c = self.config
        if c.form == "paper":
            _uniform_(self.entity, (c.gamma + c.epsilon) / c.dim)
            _uniform_(self.relation, math.pi)
            return
        _uniform_(self.entity, math.sqrt(3 / c.dim))  # PyKEEN's Glorot: 6 / fan-out, 2d
        theta = 2 * math.pi * torch.rand(self.num_relations, c.dim)
        self.relation.copy_(torch.cat([theta.cos(), theta.sin()], dim=-1))

    @torch.no_grad()
    def constrain_(self) -> None:
        if self.config.form == "pykeen":  # r_i / |r_i|, as PyKEEN's complex_normalize
            re, im = self.relation.chunk(2, dim=-1)
            modulus = torch.sqrt(re * re + im * im).clamp_min(torch.finfo(re.dtype).eps)
            self.relation.div_(torch.cat([modulus, modulus], dim=-1))

    def relation_vectors(self, r: Tensor | None = None) -> Tensor:
        x = super().relation_vectors(r)
        if self.config.form == "paper":
            return torch.cat([x.cos(), x.sin()], dim=-1)
        return x

    def query_t(self, h: Tensor, r: Tensor) -> Tensor:
        return complex_mul(h, r)

    def query_h(self, r: Tensor, t: Tensor) -> Tensor:
        return complex_mul(r, t, conj_a=True)

    def compare(self, q: Tensor, e: Tensor) -> Tensor:
        if self.config.form == "pykeen":
            return -pairwise_distance(q, e, 2)
        return self.config.gamma - ModuliSum.apply(q, e)

    def compare_all(self, q: Tensor, entities: Tensor) -> Tensor:
        if self.config.form == "pykeen":
            return _lp_distance_all(q, entities, 2)
        return self.config.gamma - moduli_sum_all(q, entities)


class ModuliSum(torch.autograd.Function):
    """sum_i |q_i - e_i| of [Re | Im] tensors (..., 2d) that broadcast, with its gradient
    written out: d/dq_i = (q_i - e_i) / |q_i - e_i| (0 where they are equal), the same for
    e_i with the opposite sign.  Keeping q - e and the moduli from the forward makes it
    about twice as fast as autograd through the elementwise steps."""

    @staticmethod
    def forward(ctx, q: Tensor, e: Tensor) -> Tensor:
        diff = q - e
        re, im = diff.chunk(2, dim=-1)
        moduli = torch.hypot(re, im)
        ctx.save_for_backward(diff, moduli)
        ctx.shapes = (q.shape, e.shape)
        return moduli.sum(-1)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        diff, moduli = ctx.saved_tensors
        scale = torch.where(moduli > 0, grad.unsqueeze(-1) / moduli, 0.0)
        unit = (diff.unflatten(-1, (2, -1)) * scale.unsqueeze(-2)).flatten(-2)
        q_shape, e_shape = ctx.shapes
        grad_q = unit.sum_to_size(q_shape) if ctx.needs_input_grad[0] else None
        grad_e = (-unit).sum_to_size(e_shape) if ctx.needs_input_grad[1] else None
        return grad_q, grad_e


def _moduli_sum(q_re: Tensor, q_im: Tensor, e_re: Tensor, e_im: Tensor) -> Tensor:
    """sum_i |q_i - e_i| of every query (M, d) against every entity (n, d): (M, n)."""
    a = q_re.unsqueeze(1) - e_re.unsqueeze(0)
    b = q_im.unsqueeze(1) - e_im.unsqueeze(0)
    return (a * a + b * b).clamp_min(torch.finfo(a.dtype).tiny).sqrt().sum(-1)


_compiled: dict[str, object] = {}


def moduli_sum_all(q: Tensor, entities: Tensor) -> Tensor:
    """sum_i |q_i - e_i| of [Re | Im] queries (M, 2d) against every entity (N, 2d): (M, N).

    Without gradients and above ``COMPILE_ABOVE`` multiply-adds, one fused kernel from
    ``torch.compile`` (no (M, n, d) temporaries: some 50 times faster on a CPU); else the
    differences over chunks of entities, each of at most ``CHUNK_ELEMENTS``.
    """
    m, n, width = q.shape[0], entities.shape[0], q.shape[1]
    needs_grad = torch.is_grad_enabled() and (q.requires_grad or entities.requires_grad)
    if not needs_grad and m * n * width >= COMPILE_ABOVE:
        kernel = _compiled_moduli_sum()
        if kernel is not None:
            q_re, q_im = (x.contiguous() for x in q.chunk(2, dim=-1))
            e_re, e_im = (x.contiguous() for x in entities.chunk(2, dim=-1))
            step = 4096
            parts = [
                kernel(q_re, q_im, e_re[i : i + step], e_im[i : i + step])
                for i in range(0, n, step)
            ]
            return torch.cat(parts, dim=1)
    chunk = max(1, CHUNK_ELEMENTS // max(1, m * width))
    parts = [
        _complex_moduli(q.unsqueeze(1) - entities[i : i + chunk].unsqueeze(0)).sum(-1)
        for i in range(0, n, chunk)
    ]
    return torch.cat(parts, dim=1)


def _compiled_moduli_sum():
    """:func:`_moduli_sum` compiled once (None where ``torch.compile`` does not work)."""
    if "kernel" not in _compiled:
        try:
            kernel = torch.compile(_moduli_sum, dynamic=True)
            x = torch.zeros(2, 3)
            kernel(x, x, x, x)  # compiles now, so that a failure shows here
            _compiled["kernel"] = kernel
        except Exception as error:  # no C++ compiler, an unsupported platform
            from archlab.console import note

            note(
                f"torch.compile is unavailable ({type(error).__name__}); RotatE's paper form "
                "scores every entity without it, more slowly"
            )
            _compiled["kernel"] = None
    return _compiled["kernel"]


def _complex_moduli(x: Tensor) -> Tensor:
    """|x_i| of a [Re | Im] tensor (..., 2d) -> (..., d).

    sqrt(Re^2 + Im^2), the square clamped at the smallest normal float, so that the
    gradient is 0 (not NaN) where x_i = 0, as the authors' ``norm`` gives it; ten times
    faster here than a ``vector_norm`` over the re/im pairs.
    """
    re, im = x.chunk(2, dim=-1)
    return (re * re + im * im).clamp_min(torch.finfo(x.dtype).tiny).sqrt()
