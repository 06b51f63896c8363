"""Greedy and beam search for sequence-to-sequence models, independent of the model.

The model is seen through two callbacks and keeps its own state (KV caches, the
encoder output and its padding mask):

    step(last_tokens)  (rows,) -> (rows, vocab) log-probabilities log p(y_t | y_<t, x),
                       advancing the model one position
    reorder(index)     keep state rows ``index`` (in that order); rows not named are
                       dropped, which is how finished sentences leave the batch

Decoding starts from one start token (BOS) per source sentence and stops a
hypothesis at EOS, or after ``max_len`` generated tokens.  The length |y| of a
hypothesis counts every generated token, EOS included.

Greedy search takes y_t = argmax_v log p(v | y_<t, x); its score is sum_t log p(y_t | ...).

Beam search keeps the ``beam`` best unfinished prefixes of each sentence, rows
flattened batch-major (row b * beam + k is hypothesis k of sentence b).  At each
step it extends every prefix by every token, keeps the 2 * beam best extensions by
log-probability (so that ``beam`` of them are not EOS), finishes those among the best
``beam`` that end in EOS, and carries the best ``beam`` that do not on.  A finished
hypothesis is ranked by the length-normalised score of Wu et al. (2016, GNMT):

    score(y) = log p(y | x) / lp(y),    lp(y) = ((5 + |y|) / 6) ** alpha

alpha = 0 ranks by plain log-probability; larger alpha favours longer outputs.
Prefixes still running when ``max_len`` is reached finish as they are, without EOS.
Since log-probabilities are <= 0 and lp grows with length, a prefix with log-probability
s can at best reach s / lp(max_len).  A sentence is done as soon as its best finished
hypothesis is at least that good for every live prefix, which is exact: running on to
max_len could not change the result.  Done sentences leave the batch (``reorder``).
Both searches return, per sentence, the best tokens (without BOS and EOS) and their score.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from archlab.errors import ConfigError, expect

StepFn = Callable[[Tensor], Tensor]
ReorderFn = Callable[[Tensor], None]


class Decoded(NamedTuple):
    """Best output per source sentence: token ids without BOS/EOS, and its score (batch,)."""

    tokens: list[list[int]]
    scores: Tensor


def gnmt_length_penalty(length: int, alpha: float) -> float:
    """lp = ((5 + length) / 6) ** alpha (Wu et al. 2016, eq. 14)."""
    return ((5 + length) / 6) ** alpha


def _check_max_len(max_len: int) -> None:
    expect(max_len >= 1, f"max_len must be at least 1, got {max_len}", ConfigError)


def greedy_search(
    step: StepFn, reorder: ReorderFn, start: Tensor, *, eos_id: int, max_len: int
) -> Decoded:
    """Pick the most probable token at each step; ``start`` (batch,) holds each row's BOS."""
    _check_max_len(max_len)
    batch = start.shape[0]
    tokens = start.new_full((batch, max_len), eos_id)
    lengths = start.new_full((batch,), max_len)
    scores = torch.zeros(batch, device=start.device)
    active = torch.arange(batch, device=start.device)  # sentence of each state row
    last = start
    for t in range(max_len):
        log_p, last = step(last).max(dim=-1)
        tokens[active, t] = last
        scores[active] += log_p
        ended = last == eos_id
        lengths[active[ended]] = t
        running = ~ended
        if t == max_len - 1 or not running.any():
            break
        if not running.all():
            keep = running.nonzero().squeeze(1)
            active, last = active[keep], last[keep]
            reorder(keep)
    rows, ends = tokens.tolist(), lengths.tolist()
    return Decoded([row[:end] for row, end in zip(rows, ends, strict=True)], scores)


def beam_search(
    step: StepFn,
    reorder: ReorderFn,
    start: Tensor,
    *,
    beam: int,
    eos_id: int,
    max_len: int,
    length_penalty: float = 0.6,
) -> Decoded:
    """Beam search with GNMT length penalty alpha = ``length_penalty``.

    ``start`` (batch,) holds each sentence's BOS; the model state must already hold
    ``beam`` copies of each sentence, batch-major, so ``step`` sees batch * beam rows.
    """
    _check_max_len(max_len)
    expect(beam >= 1, f"beam must be at least 1, got {beam}", ConfigError)
    expect(
        length_penalty >= 0,
        f"length_penalty (alpha) must be >= 0, got {length_penalty}",
        ConfigError,
    )
    batch, device = start.shape[0], start.device
    lp_max = gnmt_length_penalty(max_len, length_penalty)
    rank = torch.arange(2 * beam, device=device)
    active = torch.arange(batch, device=device)  # sentence of each group of beam rows
    # The beam copies start identical: only the first may be extended at step 0.
    log_p_prefix = torch.full((batch, beam), float("-inf"), device=device)
    log_p_prefix[:, 0] = 0.0
    prefixes = start.new_empty(batch, beam, 0)
    best_score = torch.full((batch,), float("-inf"), device=device)
    best_tokens = start.new_zeros(batch, max_len)
    best_len = start.new_zeros(batch)
    last = start.repeat_interleave(beam)
    for t in range(max_len):
        n = active.shape[0]
        log_p = step(last).view(n, beam, -1)
        vocab = log_p.shape[-1]
        cand, flat = (log_p_prefix[:, :, None] + log_p).view(n, -1).topk(2 * beam, dim=1)
        origin, token = flat // vocab, flat % vocab  # prefix extended, token appended
        seqs = torch.cat(
            (prefixes.gather(1, origin[:, :, None].expand(-1, -1, t)), token[:, :, None]), dim=2
        )
        is_eos = token == eos_id
        # The first beam candidates that are not EOS carry on (topk of ranks, EOS pushed last).
        carry = torch.where(is_eos, rank + 2 * beam, rank).topk(beam, largest=False).indices
        ending = is_eos & (rank < beam)
        if t == max_len - 1:
            ending.scatter_(1, carry, True)
        final = torch.where(
            ending & cand.isfinite(),
            cand / gnmt_length_penalty(t + 1, length_penalty),
            float("-inf"),
        )
        top, j = final.max(dim=1)
        better = (top > best_score[active]).nonzero().squeeze(1)
        improved, j = active[better], j[better]
        best_score[improved] = top[better]
        best_tokens[improved, : t + 1] = seqs[better, j]
        best_len[improved] = t + 1 - is_eos[better, j].long()
        if t == max_len - 1:
            break
        log_p_prefix = cand.gather(1, carry)
        prefixes = seqs.gather(1, carry[:, :, None].expand(-1, -1, t + 1))
        last = token.gather(1, carry)
        index = torch.arange(n, device=device)[:, None] * beam + origin.gather(1, carry)
        reachable = log_p_prefix.max(dim=1).values / lp_max
        running = best_score[active] < reachable
        if not running.any():
            break
        if not running.all():
            active, log_p_prefix, prefixes, last, index = (
                x[running] for x in (active, log_p_prefix, prefixes, last, index)
            )
        last = last.view(-1)
        reorder(index.view(-1))
    rows, ends = best_tokens.tolist(), best_len.tolist()
    return Decoded([row[:end] for row, end in zip(rows, ends, strict=True)], best_score)
