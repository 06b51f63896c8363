"""``archlab serve`` under load on loopback: latency and tokens/s at 1, 8 and 32 clients.

Trains two small GPT runs of the demo's shape (gpt-shakespeare-char: 4 layers, 128
wide; a few steps: speed does not depend on the weights), one with the demo's
context of 64 characters and one of 256, starts ``archlab serve`` on them at
127.0.0.1 in a fresh process, and sends generation requests from C concurrent
clients (C = 1, 8, 32), each asking for ``TOKENS`` = 128 new characters after a short
prompt, sampled (temperature 0.8, top-k 200, no seed) as the playground asks.  Each
client sends its requests one after the other (8 in all at 1 client, 2 each at 8 and
32).  Reported per C: total tokens/s (every token of every request over the wall
time), p50 and p99 of a request's latency and of its first token's, and failed
requests (any refusal or error; the queue bound is above 32, so there should be none).

The 256 context holds prompt and tokens, so every step is one cached token per
request; with the demo's 64, a request outgrows its context after 57 tokens and
each later step re-reads its last 64 tokens (learned positions shift), as
``GPT.generate`` does: that part is compute-bound, and batching gains little there.

Then a soak: ``SOAK`` seconds ($ARCHLAB_BENCH_SOAK, default 120) of 8 clients on the
64 run, the server's resident memory read every second; flat means the last reading
is within 10 % of the one after the first 10 s.  Everything stays on 127.0.0.1 and
stops by itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from archlab.errors import ArchlabError

RECIPE = "gpt-shakespeare-char"
TOKENS = 128
PROMPT = "ROMEO:\n"
CLIENTS = (1, 8, 32)
CONTEXTS = (64, 256)


def _train(out: Path, block: int) -> None:
    from archlab.run import train

    train(
        RECIPE,
        [
            "trainer.max_steps=3",
            "trainer.eval_every=3",
            "trainer.precision=fp32",
            "data.val_fraction=0.01",
            f"data.block_size={block}",
        ],
        out=str(out),
        progress=False,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _one(client, url: str, tokens: int) -> dict:
    body = {"prompt": PROMPT, "max_new_tokens": tokens, "temperature": 0.8, "top_k": 200}
    began = time.perf_counter()
    first, made, ok, event = None, 0, False, None
    async with client.stream("POST", url, json=body) as r:
        if r.status_code != 200:
            await r.aread()
            return {"ok": False, "status": r.status_code, "seconds": time.perf_counter() - began}
        async for line in r.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
                if event == "done":
                    ok, made = True, data["tokens"]
                elif event == "error":
                    break
                elif first is None:
                    first = time.perf_counter() - began
    return {
        "ok": ok,
        "tokens": made,
        "seconds": time.perf_counter() - began,
        "first_token": first,
    }


async def _level(base: str, run: str, clients: int, rounds: int, tokens: int) -> dict:
    import httpx

    url = f"{base}/v1/runs/{run}/generate"
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:

        async def worker() -> list[dict]:
            return [await _one(client, url, tokens) for _ in range(rounds)]

        began = time.perf_counter()
        done = await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - began
    results = [r for rs in done for r in rs]
    good = [r for r in results if r["ok"]]
    latency = sorted(r["seconds"] for r in good)
    first = sorted(r["first_token"] for r in good if r["first_token"] is not None)
    total = sum(r["tokens"] for r in good)
    return {
        "clients": clients,
        "requests": len(results),
        "failed": len(results) - len(good),
        "tokens": total,
        "wall_seconds": round(wall, 3),
        "tokens_per_s": round(total / wall, 1),
        "latency_p50_s": round(_quantile(latency, 0.5), 3),
        "latency_p99_s": round(_quantile(latency, 0.99), 3),
        "first_token_p50_s": round(_quantile(first, 0.5), 3),
        "first_token_p99_s": round(_quantile(first, 0.99), 3),
    }


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


async def _soak(base: str, run: str, seconds: float, pid: int, tokens: int) -> dict:
    import httpx

    url = f"{base}/v1/runs/{run}/generate"
    stop = time.perf_counter() + seconds
    samples: list[tuple[float, float]] = []
    counts = {"requests": 0, "failed": 0}
    began = time.perf_counter()

    async def client(http) -> None:
        while time.perf_counter() < stop:
            r = await _one(http, url, tokens)
            counts["requests"] += 1
            counts["failed"] += not r["ok"]

    async def watch() -> None:
        while time.perf_counter() < stop:
            samples.append((time.perf_counter() - began, _rss_mb(pid)))
            await asyncio.sleep(1.0)

    async with httpx.AsyncClient(timeout=600) as http:
        await asyncio.gather(watch(), *(client(http) for _ in range(8)))
    settled = next((mb for t, mb in samples if t >= 10), samples[0][1])
    last = samples[-1][1]
    return {
        "seconds": seconds,
        "clients": 8,
        **counts,
        "rss_mb_start": round(samples[0][1], 1),
        "rss_mb_after_10s": round(settled, 1),
        "rss_mb_end": round(last, 1),
        "rss_mb_max": round(max(mb for _, mb in samples), 1),
        "flat": abs(last - settled) <= 0.1 * settled,
    }


def run(quick: bool = False) -> dict:
    tokens = 16 if quick else TOKENS
    clients = (1, 4) if quick else CLIENTS
    soak = 0 if quick else float(os.environ.get("ARCHLAB_BENCH_SOAK", 120))
    with tempfile.TemporaryDirectory(prefix="archlab-bench-serve-") as tmp:
        names = []
        for block in CONTEXTS:
            name = f"gpt-context{block}"
            _train(Path(tmp) / name, block)
            names.append(name)
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        command = [
            sys.executable, "-m", "archlab", "serve",
            *(str(Path(tmp) / n) for n in names),
            "--port", str(port), "--log-level", "warning",
            "--max-queue", "256", "--max-batch", "32",
        ]  # fmt: skip
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _wait_ready(base, server)
            levels: dict[str, dict] = {}
            for name in names:
                levels[name] = {}
                asyncio.run(_level(base, name, 1, 1, tokens))  # warm-up
                for c in clients:
                    rounds = max(1, 8 // c) if c < 8 else 2
                    levels[name][str(c)] = asyncio.run(_level(base, name, c, rounds, tokens))
                    _print_level(name, levels[name][str(c)])
            soaked = asyncio.run(_soak(base, names[0], soak, server.pid, tokens)) if soak else None
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
    top = str(clients[-1])
    speedups = {n: levels[n][top]["tokens_per_s"] / levels[n]["1"]["tokens_per_s"] for n in names}
    result = {
        "tokens_per_request": tokens,
        "prompt": PROMPT,
        "sampling": "temperature 0.8, top-k 200, no seed (as the playground asks)",
        "levels": levels,
        "speedup": {n: round(v, 2) for n, v in speedups.items()},
        "goal": f">= 4x the single-client tokens/s at {top} clients",
        "soak": soaked,
        "reference": "the same server with one client at a time",
        "summary": (
            "; ".join(
                f"{n}: {levels[n][top]['tokens_per_s']:,.0f} tok/s at {top} clients vs "
                f"{levels[n]['1']['tokens_per_s']:,.0f} at 1 ({speedups[n]:.1f}x)"
                for n in names
            )
            + (
                f"; soak {soak:.0f} s: RSS {soaked['rss_mb_after_10s']:.0f} -> "
                f"{soaked['rss_mb_end']:.0f} MB, {soaked['failed']} failed of "
                f"{soaked['requests']}"
                if soaked
                else ""
            )
        ),
    }
    print(f"serve  ({tokens} tokens per request; {result['summary']})")
    return result


def _wait_ready(base: str, server: subprocess.Popen, seconds: float = 120) -> None:
    import httpx

    stop = time.monotonic() + seconds
    while time.monotonic() < stop:
        if server.poll() is not None:
            err = server.stderr.read().decode(errors="replace").strip().splitlines()
            raise ArchlabError(f"archlab serve stopped: {err[-1] if err else 'no message'}")
        try:
            if httpx.get(f"{base}/v1/runs", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise ArchlabError(f"archlab serve did not answer within {seconds:.0f} s")


def _print_level(name: str, r: dict) -> None:
    print(
        f"  {name:<14} {r['clients']:>3} clients  {r['tokens_per_s']:>8,.0f} tok/s  "
        f"p50 {r['latency_p50_s']:6.2f} s  p99 {r['latency_p99_s']:6.2f} s  "
        f"first token p50 {r['first_token_p50_s']:5.2f} s  failed {r['failed']}",
        flush=True,
    )
