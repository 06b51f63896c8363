"""Sentence pooling: one vector per sentence from the last hidden states of its tokens.

Sentence-BERT (Reimers & Gurevych 2019) pools a BERT's last hidden states h_t
(t = 1..T) under the attention mask m_t (1 = token, 0 = padding):

    mean            e = sum_t m_t h_t / max(sum_t m_t, 1e-9)
    cls             e = h_1                                ([CLS], the first token)
    max             e_k = max_{t: m_t = 1} h_{t,k}
    mean_sqrt_len   e = sum_t m_t h_t / sqrt(sum_t m_t)

and, where the model says so, L2-normalises: e / max(||e||_2, 1e-12) (its
``Normalize`` module, ``torch.nn.functional.normalize``).  Cosine similarity of
normalised embeddings is their dot product.  A sentence-transformers checkpoint
states its pooling in ``modules.json`` and ``1_Pooling/config.json``
(:func:`archlab.interop.sentence_transformers.read_pooling`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from archlab.errors import CheckpointError, expect

MODES = ("mean", "cls", "max", "mean_sqrt_len")


def masked_mean(hidden: Tensor, mask: Tensor | None) -> Tensor:
    """sum_t m_t h_t / max(sum_t m_t, 1e-9): (batch, time, dim), (batch, time) -> (batch, dim)."""
    if mask is None:
        return hidden.mean(dim=1)
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)


@dataclass(frozen=True)
class SentencePooling:
    """How token states become a sentence embedding: ``mode`` (see the module), then
    L2 normalisation if ``normalize``."""

    mode: str = "mean"
    normalize: bool = True

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise CheckpointError(
                f"sentence pooling {self.mode!r} is not one of {', '.join(MODES)}"
            )

    def __call__(self, hidden: Tensor, mask: Tensor) -> Tensor:
        """Embeddings (batch, dim) of hidden states (batch, time, dim) under mask (batch, time)."""
        expect(
            hidden.dim() == 3 and mask.shape == hidden.shape[:2],
            f"pooling needs hidden (batch, time, dim) and mask (batch, time), got "
            f"{tuple(hidden.shape)} and {tuple(mask.shape)}",
        )
        if self.mode == "mean":
            e = masked_mean(hidden, mask)
        elif self.mode == "cls":
            e = hidden[:, 0]
        elif self.mode == "max":
            e = hidden.masked_fill(mask.unsqueeze(-1) == 0, float("-inf")).amax(dim=1)
        else:
            m = mask.unsqueeze(-1).to(hidden.dtype)
            e = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9).sqrt()
        return F.normalize(e, p=2, dim=-1) if self.normalize else e

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: object) -> SentencePooling:
        if not isinstance(data, dict) or set(data) - {"mode", "normalize"}:
            raise CheckpointError(f"a sentence pooling is {{mode, normalize}}, not {data!r}")
        return cls(str(data.get("mode", "mean")), bool(data.get("normalize", True)))


@torch.no_grad()
def embed_texts(
    hidden_states: Callable[[Tensor, Tensor], Tensor],
    encode: Callable[[str], list[int]],
    texts: Sequence[str],
    pooling: SentencePooling,
    *,
    pad_id: int = 0,
    batch_size: int = 64,
) -> Tensor:
    """Sentence embeddings (len(texts), dim), float32, in the order of ``texts``.

    ``encode`` turns a text into token ids ([CLS] pieces [SEP]); ``hidden_states``
    maps padded ids and their mask (1 = token) to the last hidden states.  Texts
    are batched by length (less padding), which does not change any embedding.
    """
    ids = [encode(text) for text in texts]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out: list[Tensor | None] = [None] * len(ids)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        width = max(len(ids[i]) for i in rows)
        batch = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(batch)
        for r, i in enumerate(rows):
            batch[r, : len(ids[i])] = torch.tensor(ids[i])
            mask[r, : len(ids[i])] = 1
        for i, e in zip(rows, pooling(hidden_states(batch, mask).float(), mask), strict=True):
            out[i] = e
    return torch.stack(out) if out else torch.zeros(0, 0)
