"""GPT against Hugging Face ``GPT2LMHeadModel``: training and generation tokens/s.

Training: nanoGPT's CPU "baby" size (4 layers, 4 heads, 128 wide, block 64,
batch 12, vocab 65), forward + cross-entropy + backward + AdamW step, the same
batches and the same optimizer for both.  Generation: batch 1, a 16-token prompt,
256 new tokens greedily, archlab with its KV cache against ``generate`` (which
also caches); both models hold the same weights, so the tokens must agree.
"""

from __future__ import annotations

import tempfile

import torch
import torch.nn.functional as F

from archlab.bench import interleaved_medians, timed
from archlab.errors import ConfigError
from archlab.models.gpt import GPT

SIZE = dict(n_layer=4, n_head=4, n_embd=128, vocab_size=65)
BLOCK, BATCH, NEW_TOKENS, PROMPT = 64, 12, 256, 16


def _hf_pair(block_size: int):
    """A random Hugging Face GPT-2 and archlab's GPT loaded from its checkpoint."""
    try:
        import transformers
    except ImportError:
        raise ConfigError(
            "the gpt benchmark compares against Hugging Face transformers; "
            "install it with: pip install 'archlab[test]'"
        ) from None
    config = transformers.GPT2Config(
        n_positions=block_size,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        **{k: v for k, v in SIZE.items()},
    )
    torch.manual_seed(0)
    ref = transformers.GPT2LMHeadModel(config)
    with tempfile.TemporaryDirectory() as tmp:
        ref.save_pretrained(tmp)
        ours = GPT.from_hf(tmp)
    return ours, ref


def _train_rate(model, logits_of, batches, steps: int, bf16: bool = False) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    model.train()

    def step(i: int) -> None:
        x, y = batches[i % len(batches)]
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            logits = logits_of(x)
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]).float(), y.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for i in range(3):  # warm-up
        step(i)
    seconds = timed(lambda: [step(i) for i in range(steps)])
    return steps * BATCH * BLOCK / seconds


def run(quick: bool = False) -> dict:
    steps, repeats = (5, 1) if quick else (20, 5)
    ours, ref = _hf_pair(BLOCK)
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, SIZE["vocab_size"], (8, BATCH, BLOCK + 1), generator=g)
    batches = [(b[:, :-1].contiguous(), b[:, 1:].contiguous()) for b in data]
    train = interleaved_medians(
        {
            "archlab": lambda: _train_rate(ours, ours, batches, steps),
            "hf": lambda: _train_rate(ref, lambda x: ref(x).logits, batches, steps),
            "archlab_bf16": lambda: _train_rate(ours, ours, batches, steps, bf16=True),
            "hf_bf16": lambda: _train_rate(ref, lambda x: ref(x).logits, batches, steps, True),
        },
        repeats,
    )

    new = 32 if quick else NEW_TOKENS
    ours, ref = _hf_pair(512)
    ours.eval(), ref.eval()
    ref.generation_config.pad_token_id = 0
    prompt = torch.randint(0, SIZE["vocab_size"], (1, PROMPT), generator=g)
    outputs = {}

    def ours_rate() -> float:
        outputs["archlab"] = ours.generate(prompt, new, temperature=0)
        return new / timed(lambda: ours.generate(prompt, new, temperature=0))

    def hf_rate() -> float:
        kwargs = dict(do_sample=False, max_new_tokens=new, min_new_tokens=new)
        with torch.no_grad():
            outputs["hf"] = ref.generate(prompt, **kwargs)
            return new / timed(lambda: ref.generate(prompt, **kwargs))

    generate = interleaved_medians({"archlab": ours_rate, "hf": hf_rate}, repeats)
    same = torch.equal(outputs["archlab"], outputs["hf"])

    result = {
        "train_tokens_per_s": train,
        "train_ratio": train["archlab"] / train["hf"],
        "train_ratio_bf16": train["archlab_bf16"] / train["hf_bf16"],
        "generate_tokens_per_s": generate,
        "generate_ratio": generate["archlab"] / generate["hf"],
        "generated_tokens_identical": same,
        "config": {**SIZE, "block_size": BLOCK, "batch_size": BATCH, "new_tokens": new},
        "reference": "Hugging Face GPT2LMHeadModel, same weights and batches",
        "summary": (
            f"training {train['archlab']:,.0f} tok/s ({train['archlab'] / train['hf']:.2f}x HF; "
            f"bf16 autocast {train['archlab_bf16'] / train['hf_bf16']:.2f}x), "
            f"generation {generate['archlab']:,.0f} tok/s "
            f"({generate['archlab'] / generate['hf']:.2f}x HF)"
        ),
    }
    print(f"gpt  (n_layer 4, n_head 4, n_embd 128, vocab 65; {torch.get_num_threads()} threads)")
    print(f"  {'':<28}{'archlab':>10}{'HF GPT-2':>10}{'ratio':>8}")
    print(
        f"  {'train tokens/s (B12 T64)':<28}{train['archlab']:>10,.0f}{train['hf']:>10,.0f}"
        f"{result['train_ratio']:>7.2f}x"
    )
    print(
        f"  {'train, bf16 autocast':<28}{train['archlab_bf16']:>10,.0f}{train['hf_bf16']:>10,.0f}"
        f"{result['train_ratio_bf16']:>7.2f}x"
    )
    print(
        f"  {f'generate tokens/s ({new} new)':<28}{generate['archlab']:>10,.0f}"
        f"{generate['hf']:>10,.0f}{result['generate_ratio']:>7.2f}x"
    )
    print(f"  greedy tokens identical to Hugging Face: {same}")
    return result
