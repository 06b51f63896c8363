"""Continuous batching: many generation requests decoded by one GPT, one token per step.

Requests arrive whenever clients send them.  Each decoding step feeds every live
request's newest token through the model at once, then samples each request's next
token with its own settings; a request joins at the next step after it arrives and
leaves when it has its tokens (or its client goes), so the batch never waits for its
slowest member (Yu et al. 2022, "Orca"; vLLM and text-generation-inference do the same).

Each request is decoded exactly as :meth:`archlab.models.GPT.generate` decodes it
alone:
- while its tokens fit the context (length <= block_size), its keys and values live in
  row r of a :class:`~archlab.nn.RaggedKVCache` per layer, at its own positions, and a
  step feeds its newest token only.  A joining request's prompt is run on its own
  (prefill) and its keys and values copied into a free row; live rows stay packed at
  the front, a leaving row's place taken by the last one;
- past the context it conditions on its last block_size tokens without a cache, as an
  uncached model must; all such requests run as one (rows, block_size) batch.
Greedy decoding therefore gives the tokens of one-at-a-time decoding (up to float
rounding in the batched matrix products); a sampled request draws from its own
``torch.Generator``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from archlab.models.gpt import GPT
from archlab.nn.attention import KVCache, RaggedKVCache
from archlab.nn.sampling import check_sampling, sample_next_token

log = logging.getLogger("archlab.serve")


@dataclass(eq=False)
class Request:
    """One generation request: its prompt, settings, and where its tokens go.

    ``emit(token)`` is called with each new token id and ``finish(reason)`` once at the
    end (``reason`` is None when all ``max_new_tokens`` were made), both from the
    decoding thread.  Setting ``cancelled`` (a client that went away) makes it leave at
    the next step; ``deadline`` (``time.monotonic()``) ends it with a reason.
    """

    prompt: list[int]
    max_new_tokens: int
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    emit: Callable[[int], None] = lambda token: None
    finish: Callable[[str | None], None] = lambda reason: None
    deadline: float | None = None
    cancelled: bool = False
    tokens: list[int] = field(default_factory=list)  # prompt + new tokens
    made: int = 0
    generator: torch.Generator | None = None

    def __post_init__(self) -> None:
        check_sampling(self.temperature, self.top_k, self.top_p)
        self.tokens = list(self.prompt)
        if self.seed is not None:
            self.generator = torch.Generator().manual_seed(self.seed)


class ContinuousBatch:
    """The decoding state of one GPT: requests waiting, in cache rows, and past the context.

    Not thread-safe by itself except :meth:`submit`; :class:`BatchWorker` runs
    :meth:`step` in a thread of its own.
    """

    def __init__(self, model: GPT, max_rows: int) -> None:
        self.model = model.eval()
        self.block = model.config.block_size
        self.max_rows = max_rows
        device = next(model.parameters()).device
        self.caches = [RaggedKVCache(max_rows, self.block, device) for _ in model.blocks]
        self.device = device
        self.cached: list[Request] = []  # row i of the caches holds cached[i]
        self.windowed: list[Request] = []  # past the context: no cache
        self.waiting: deque[Request] = deque()
        self.lock = threading.Lock()
        self.steps = 0  # decoding steps run, for tests and statistics

    # ----- bookkeeping -----

    def submit(self, request: Request) -> None:
        with self.lock:
            self.waiting.append(request)

    def live(self) -> int:
        """Requests started and not finished."""
        return len(self.cached) + len(self.windowed)

    def pending(self) -> int:
        with self.lock:
            return len(self.waiting) + self.live()

    def _drop_row(self, row: int) -> None:
        last = len(self.cached) - 1
        if row != last:
            for cache in self.caches:
                cache.move(last, row)
            self.cached[row] = self.cached[last]
        self.cached.pop()

    def _leave(self, request: Request, reason: str | None) -> None:
        if request in self.windowed:
            self.windowed.remove(request)
        else:
            self._drop_row(self.cached.index(request))
        request.finish(reason)

    def _gone(self, request: Request, now: float) -> str | None:
        """Why ``request`` must stop now (its client left, its time ran out), or None."""
        if request.cancelled:
            return "cancelled"
        if request.deadline is not None and now > request.deadline:
            return "time limit"
        return None

    # ----- one step -----

    @torch.no_grad()
    def step(self) -> bool:
        """One decoding step for every live request, after admitting waiting ones.

        Returns whether there was anything to do.
        """
        now = time.monotonic()
        for request in [*self.cached, *self.windowed]:
            reason = self._gone(request, now)
            if reason:
                self._leave(request, reason)
        # a row whose sequence has outgrown the context continues without a cache
        for request in [r for r in self.cached if len(r.tokens) > self.block]:
            self._drop_row(self.cached.index(request))
            self.windowed.append(request)
        scored: list[tuple[Request, Tensor]] = []
        if self.cached:
            last = torch.tensor([[r.tokens[-1]] for r in self.cached], device=self.device)
            logits = self.model.next_token_logits(last, self.caches)
            scored += zip(self.cached, logits, strict=True)
        if self.windowed:
            windows = torch.tensor([r.tokens[-self.block :] for r in self.windowed])
            logits = self.model.next_token_logits(windows.to(self.device))
            scored += zip(self.windowed, logits, strict=True)
        scored += self._admit(now)
        if not scored:
            return False
        self.steps += 1
        for request, token in zip([r for r, _ in scored], self._sample(scored), strict=True):
            request.tokens.append(token)
            request.made += 1
            request.emit(token)
            if request.made >= request.max_new_tokens:
                self._leave(request, None)
        return True

    def _admit(self, now: float) -> list[tuple[Request, Tensor]]:
        """Start waiting requests while rows are free: each prompt's logits (prefill)."""
        started = []
        while self.live() < self.max_rows:
            with self.lock:
                if not self.waiting:
                    break
                request = self.waiting.popleft()
            reason = self._gone(request, now)
            if reason or request.max_new_tokens <= 0:
                request.finish(reason)
                continue
            prompt = torch.tensor([request.tokens], device=self.device)
            if prompt.shape[1] <= self.block:
                caches = [KVCache() for _ in self.model.blocks]
                logits = self.model.next_token_logits(prompt, caches)[0]
                row = len(self.cached)
                for ragged, cache in zip(self.caches, caches, strict=True):
                    ragged.load(row, cache)
                self.cached.append(request)
            else:
                logits = self.model.next_token_logits(prompt[:, -self.block :])[0]
                self.windowed.append(request)
            started.append((request, logits))
        return started

    @staticmethod
    def _sample(scored: list[tuple[Request, Tensor]]) -> list[int]:
        """Each request's next token by its own settings
        (:func:`archlab.nn.sampling.sample_next_token`): greedy ones by one argmax, unseeded
        ones with the same settings by one draw, seeded ones each from its own generator."""
        out = [0] * len(scored)
        groups: dict[tuple, list[int]] = {}
        for i, (r, _) in enumerate(scored):
            if r.temperature == 0:
                key: tuple = ("greedy",)
            elif r.generator is None:
                key = (r.temperature, r.top_k, r.top_p)
            else:
                key = ("seeded", i)
            groups.setdefault(key, []).append(i)
        for rows in groups.values():
            r = scored[rows[0]][0]
            logits = torch.stack([scored[i][1] for i in rows])
            tokens = sample_next_token(logits, r.temperature, r.top_k, r.top_p, r.generator)
            for i, token in zip(rows, tokens[:, 0].tolist(), strict=True):
                out[i] = token
        return out

    def fail_all(self, reason: str) -> None:
        """End every request (after an unexpected error in a step)."""
        with self.lock:
            waiting, self.waiting = list(self.waiting), deque()
        for request in [*self.cached, *self.windowed, *waiting]:
            request.finish(reason)
        self.cached, self.windowed = [], []
        for cache in self.caches:
            cache.lengths.zero_()


class BatchWorker:
    """A thread that runs a :class:`ContinuousBatch`'s steps while there are requests."""

    def __init__(self, batch: ContinuousBatch, name: str = "archlab-batch") -> None:
        self.batch = batch
        self.name = name
        self.wake = threading.Event()
        self.stopping = False
        self.thread: threading.Thread | None = None
        self.start()

    def start(self) -> None:
        """Start the thread (again, after :meth:`stop`)."""
        if self.thread is None or not self.thread.is_alive():
            self.stopping = False
            self.thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self.thread.start()

    def submit(self, request: Request) -> None:
        self.start()
        self.batch.submit(request)
        self.wake.set()

    def pending(self) -> int:
        return self.batch.pending()

    def _run(self) -> None:
        while not self.stopping:
            try:
                busy = self.batch.step()
            except Exception:  # a bug must not stop the server; it is logged, not sent
                log.exception("generation step failed")
                self.batch.fail_all("internal error")
                busy = False
            if not busy:
                self.wake.wait(timeout=0.5)
                self.wake.clear()

    def stop(self) -> None:
        """Stop the thread after its current step; requests still in the batch end."""
        self.stopping = True
        self.wake.set()
        if self.thread is not None:
            self.thread.join(timeout=5)
        self.batch.fail_all("the server is stopping")
