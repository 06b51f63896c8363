"""Epoch-based batches that are a pure function of (seed, step).

Each epoch draws a seeded permutation of the examples.  With ``lengths``, the
permutation is cut into chunks of 100 batches and each chunk is sorted by length,
so that a batch holds examples of similar length (less padding); the batches are
then shuffled.  Resuming at step s therefore draws exactly the batch an
uninterrupted run draws at step s.
"""

from __future__ import annotations

import torch

SEED_STRIDE = 1_000_003  # a prime: runs seeded s and s + 1 draw from far-apart seeds


def stream_seed(seed: int, index: int, stream: int = 0) -> int:
    """The generator seed of draw ``index`` (a step, an epoch) of a run seeded ``seed``.

    stream * 2**40 + seed * SEED_STRIDE + index: each ``stream`` (epoch permutations,
    image shifts, ...) draws from its own range of seeds.
    """
    return stream * 2**40 + seed * SEED_STRIDE + index


class EpochBatches:
    def __init__(self, n: int, batch_size: int, seed: int, lengths: list[int] | None = None):
        self.n, self.batch_size, self.seed, self.lengths = n, batch_size, seed, lengths
        self.per_epoch = -(-n // batch_size)
        self._epoch: int | None = None
        self._batches: list[list[int]] = []

    def _make(self, epoch: int) -> list[list[int]]:
        g = torch.Generator().manual_seed(stream_seed(self.seed, epoch))
        order = torch.randperm(self.n, generator=g).tolist()
        if self.lengths is None:
            return [order[i : i + self.batch_size] for i in range(0, self.n, self.batch_size)]
        chunk = self.batch_size * 100
        batches = []
        for start in range(0, self.n, chunk):
            part = sorted(order[start : start + chunk], key=self.lengths.__getitem__)
            batches += [part[i : i + self.batch_size] for i in range(0, len(part), self.batch_size)]
        shuffle = torch.randperm(len(batches), generator=g).tolist()
        return [batches[i] for i in shuffle]

    def indices(self, step: int) -> list[int]:
        """The example indices of the batch at ``step``."""
        epoch, index = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            self._epoch, self._batches = epoch, self._make(epoch)
        return self._batches[index]


class TrainBatches:
    """The training batches of a task's n examples, for any (step, batch_size, seed).

    One :class:`EpochBatches` per (batch_size, seed), made on first use, so that a
    task only says how many examples it has (and their lengths, to batch by length).
    """

    def __init__(self, n: int, lengths: list[int] | None = None) -> None:
        self.n, self.lengths = n, lengths
        self._epochs: dict[tuple[int, int], EpochBatches] = {}

    def indices(self, step: int, batch_size: int, seed: int) -> list[int]:
        """The example indices of the batch at ``step``."""
        key = (batch_size, seed)
        if key not in self._epochs:
            self._epochs[key] = EpochBatches(self.n, batch_size, seed, self.lengths)
        return self._epochs[key].indices(step)

    def per_epoch(self, batch_size: int) -> int:
        """Steps in one pass over the examples (the last batch may be short)."""
        return -(-self.n // batch_size)


def pad(seqs: list[list[int]], pad_id: int = 0, min_width: int = 1) -> torch.Tensor:
    """Token-id lists as one (batch, longest) tensor, right-padded with ``pad_id``."""
    out = torch.full((len(seqs), max(min_width, *map(len, seqs))), pad_id, dtype=torch.long)
    for i, seq in enumerate(seqs):
        out[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
    return out
