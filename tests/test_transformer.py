"""The encoder-decoder Transformer against torch.nn.Transformer, and its decoding."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import archlab
from archlab.errors import ArchlabError, ConfigError, ShapeError
from archlab.models.transformer import Transformer, TransformerConfig
from archlab.nn.decoding import Decoded, beam_search, gnmt_length_penalty, greedy_search

# torch.nn.Transformer's encoder fast path (nested tensors) warns when used, and when
# unavailable (pre-norm); neither concerns archlab.
pytestmark = [
    pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors:UserWarning"),
    pytest.mark.filterwarnings("ignore:enable_nested_tensor is True:UserWarning"),
]

PAD, BOS, EOS = 0, 1, 2
TINY = {
    "src_vocab_size": 13,
    "tgt_vocab_size": 11,
    "d_model": 16,
    "n_head": 2,
    "n_encoder_layers": 2,
    "n_decoder_layers": 2,
    "d_ff": 32,
    "dropout": 0.0,
    "max_len": 16,
}


def tiny_model(seed: int = 0, **overrides: object) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(TransformerConfig(**{**TINY, **overrides})).eval()


def padded(lengths: list[int], vocab: int, *, bos: bool = False, seed: int = 0) -> Tensor:
    """Random ids (batch, max(lengths)) with PAD after each row's length, BOS first if asked."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (len(lengths), max(lengths)), generator=g)
    for row, length in enumerate(lengths):
        ids[row, length:] = PAD
    if bos:
        ids[:, 0] = BOS
    return ids


# ---- parity with torch.nn.Transformer ------------------------------------------------------

ENCODER_LAYER_KEYS = {
    "self_attn.in_proj_weight": "self_attn.W_qkv.weight",
    "self_attn.in_proj_bias": "self_attn.W_qkv.bias",
    "self_attn.out_proj.weight": "self_attn.W_o.weight",
    "self_attn.out_proj.bias": "self_attn.W_o.bias",
    "linear1.weight": "ff.W_1.weight",
    "linear1.bias": "ff.W_1.bias",
    "linear2.weight": "ff.W_2.weight",
    "linear2.bias": "ff.W_2.bias",
    "norm1.weight": "attn_res.norm.weight",
    "norm1.bias": "attn_res.norm.bias",
    "norm2.weight": "ff_res.norm.weight",
    "norm2.bias": "ff_res.norm.bias",
}
DECODER_LAYER_KEYS = {
    **{k: v for k, v in ENCODER_LAYER_KEYS.items() if not k.startswith("norm")},
    "multihead_attn.in_proj_weight": "cross_attn.W_qkv.weight",
    "multihead_attn.in_proj_bias": "cross_attn.W_qkv.bias",
    "multihead_attn.out_proj.weight": "cross_attn.W_o.weight",
    "multihead_attn.out_proj.bias": "cross_attn.W_o.bias",
    "norm1.weight": "self_attn_res.norm.weight",
    "norm1.bias": "self_attn_res.norm.bias",
    "norm2.weight": "cross_attn_res.norm.weight",
    "norm2.bias": "cross_attn_res.norm.bias",
    "norm3.weight": "ff_res.norm.weight",
    "norm3.bias": "ff_res.norm.bias",
}


def archlab_key(torch_key: str) -> str:
    """torch.nn.Transformer's name of a parameter -> archlab's (``encoder.layers.{i}.*``)."""
    stack, part, *rest = torch_key.split(".")
    if part == "norm":
        return torch_key
    layer, name = rest[0], ".".join(rest[1:])
    keys = ENCODER_LAYER_KEYS if stack == "encoder" else DECODER_LAYER_KEYS
    return f"{stack}.layers.{layer}.{keys[name]}"


def load_torch_weights(model: Transformer, ref: nn.Transformer) -> None:
    state = {archlab_key(k): v for k, v in ref.state_dict().items()}
    for stack in ("encoder", "decoder"):
        prefix = f"{stack}."
        sub = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
        getattr(model, stack).load_state_dict(sub, strict=True)


def reference_transformer(norm_first: bool) -> nn.Transformer:
    torch.manual_seed(1)
    ref = nn.Transformer(
        d_model=16,
        nhead=2,
        num_encoder_layers=2,
        num_decoder_layers=3,
        dim_feedforward=32,
        dropout=0.0,
        batch_first=True,
        norm_first=norm_first,
    ).eval()
    with torch.no_grad():  # biases and LayerNorm affine start constant: make them distinct
        for p in ref.parameters():
            if p.dim() == 1:
                p.add_(0.3 * torch.randn_like(p))
    return ref


def padding(lengths: list[int]) -> Tensor:
    return torch.arange(max(lengths))[None, :] >= torch.tensor(lengths)[:, None]


@pytest.mark.parametrize("norm_first", [False, True])
def test_stacks_match_torch_transformer(norm_first: bool) -> None:
    ref = reference_transformer(norm_first)
    model = tiny_model(n_decoder_layers=3, norm_first=norm_first)
    load_torch_weights(model, ref)
    torch.manual_seed(2)
    src, tgt = torch.randn(3, 7, 16), torch.randn(3, 5, 16)
    src_pad, tgt_pad = padding([7, 4, 6]), padding([5, 3, 4])
    causal = torch.ones(5, 5, dtype=torch.bool).triu(1)
    with torch.no_grad():
        ref_memory = ref.encoder(src, src_key_padding_mask=src_pad)
        memory = model.encoder(src, key_padding_mask=src_pad)
        ref_out = ref.decoder(
            tgt,
            ref_memory,
            tgt_mask=causal,
            tgt_key_padding_mask=tgt_pad,
            memory_key_padding_mask=src_pad,
        )
        out = model.decoder(tgt, memory, key_padding_mask=tgt_pad, memory_key_padding_mask=src_pad)
    # torch's encoder fast path zeroes padded positions; only real positions are compared.
    torch.testing.assert_close(memory[~src_pad], ref_memory[~src_pad], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[~tgt_pad], ref_out[~tgt_pad], atol=1e-5, rtol=0)


def sinusoid(length: int, d: int) -> Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d))."""
    pe = torch.zeros(length, d)
    for pos, i in itertools.product(range(length), range(0, d, 2)):
        pe[pos, i] = math.sin(pos / 10000 ** (i / d))
        pe[pos, i + 1] = math.cos(pos / 10000 ** (i / d))
    return pe


def test_forward_is_torch_transformer_on_scaled_embeddings() -> None:
    ref = reference_transformer(norm_first=False)
    model = tiny_model(n_decoder_layers=3)
    load_torch_weights(model, ref)
    src, tgt = padded([6, 3, 5], 13, seed=1), padded([5, 2, 4], 11, bos=True, seed=2)
    E_src, E_tgt = model.src_embed.weight.detach(), model.tgt_embed.weight.detach()
    with torch.no_grad():
        hidden = ref(
            E_src[src] * 4.0 + sinusoid(6, 16),
            E_tgt[tgt] * 4.0 + sinusoid(5, 16),
            tgt_mask=torch.ones(5, 5, dtype=torch.bool).triu(1),
            src_key_padding_mask=src == PAD,
            tgt_key_padding_mask=tgt == PAD,
            memory_key_padding_mask=src == PAD,
        )
        logits = model(src, tgt)
    keep = tgt != PAD
    torch.testing.assert_close(logits[keep], (hidden @ E_tgt.T)[keep], atol=1e-5, rtol=0)


# ---- incremental decoding --------------------------------------------------------------------


def test_cached_decoding_matches_full_forward() -> None:
    model = tiny_model(norm_first=True)
    src, tgt = padded([7, 3, 5], 13, seed=3), padded([6, 6, 6], 11, bos=True, seed=4)
    with torch.no_grad():
        full = model(src, tgt)
        state = model.incremental_decoder(src)
        steps = torch.stack([state.logits(tgt[:, t]) for t in range(tgt.shape[1])], dim=1)
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=0)


def test_reorder_keeps_the_named_rows_of_the_caches() -> None:
    model = tiny_model()
    src, tgt = padded([7, 3, 5], 13, seed=5), padded([6, 6, 6], 11, bos=True, seed=6)
    index = torch.tensor([2, 0])
    with torch.no_grad():
        full = model(src[index], tgt[index])
        state = model.incremental_decoder(src)
        steps = [state.logits(tgt[:, t])[index] for t in range(3)]
        state.reorder(index)
        steps += [state.logits(tgt[index, t]) for t in range(3, 6)]
    torch.testing.assert_close(torch.stack(steps, dim=1), full, atol=1e-5, rtol=0)


# ---- search --------------------------------------------------------------------------------

SMALL_VOCAB = {"src_vocab_size": 9, "tgt_vocab_size": 5}  # PAD, BOS, EOS and two words


@torch.no_grad()
def search(model: Transformer, src: Tensor, beam: int, alpha: float, max_len: int) -> Decoded:
    state = model.incremental_decoder(src, copies=beam)
    start = torch.full((src.shape[0],), BOS)
    return beam_search(
        state.log_probs,
        state.reorder,
        start,
        beam=beam,
        eos_id=EOS,
        max_len=max_len,
        length_penalty=alpha,
    )


def test_beam_of_one_without_length_penalty_is_greedy() -> None:
    model = tiny_model(seed=1, **SMALL_VOCAB)
    src = padded([7, 2, 5, 4, 6], 9, seed=7)
    with torch.no_grad():
        state = model.incremental_decoder(src)
        greedy = greedy_search(
            state.log_probs, state.reorder, torch.full((5,), BOS), eos_id=EOS, max_len=10
        )
    beam = search(model, src, beam=1, alpha=0.0, max_len=10)
    assert beam.tokens == greedy.tokens == model.greedy(src, max_len=10)
    assert model.beam_search(src, beam=1, length_penalty=0.0, max_len=10) == greedy.tokens
    torch.testing.assert_close(beam.scores, greedy.scores)
    assert any(len(tokens) < 10 for tokens in greedy.tokens), "no row stopped at EOS"


def sequence_scores(model: Transformer, src: Tensor, outputs: list[list[int]]) -> Tensor:
    """log p(y | src) for each output y (EOS included if present), by one full forward pass."""
    width = max(map(len, outputs))
    tgt_in = torch.full((len(outputs), width), PAD)
    tgt_out = torch.full((len(outputs), width), PAD)
    for row, y in enumerate(outputs):
        tgt_in[row, : len(y)] = torch.tensor([BOS, *y[:-1]])
        tgt_out[row, : len(y)] = torch.tensor(y)
    with torch.no_grad():
        log_p = F.log_softmax(model(src.expand(len(outputs), -1), tgt_in), dim=-1)
    picked = log_p.gather(2, tgt_out[:, :, None]).squeeze(2)
    return picked.masked_fill(tgt_out == PAD, 0.0).sum(dim=1)


@pytest.mark.parametrize("alpha", [0.0, 0.6, 2.0])
def test_exhaustive_beam_finds_the_best_scoring_output(alpha: float) -> None:
    model = tiny_model(seed=4, **SMALL_VOCAB)
    src, max_len, words = padded([6, 3, 5], 9, seed=8), 4, [3, 4]
    # Every output: n - 1 words then EOS (n <= max_len), or max_len words without EOS.
    outputs = [[*w, EOS] for n in range(max_len) for w in itertools.product(words, repeat=n)]
    outputs += [list(w) for w in itertools.product(words, repeat=max_len)]
    penalties = torch.tensor([gnmt_length_penalty(len(y), alpha) for y in outputs])
    found = search(model, src, beam=32, alpha=alpha, max_len=max_len)
    for row, (tokens, score) in enumerate(zip(found.tokens, found.scores, strict=True)):
        scores = sequence_scores(model, src[row : row + 1], outputs) / penalties
        best = outputs[int(scores.argmax())]
        assert tokens == [t for t in best if t != EOS]
        torch.testing.assert_close(score, scores.max(), atol=1e-5, rtol=0)


def test_length_penalty_changes_the_winner() -> None:
    """Guards the test above: with these weights alpha decides which output is best."""
    model = tiny_model(seed=4, **SMALL_VOCAB)
    src = padded([6, 3, 5], 9, seed=8)
    assert search(model, src, 32, 0.0, 4).tokens != search(model, src, 32, 2.0, 4).tokens


def test_batched_beam_search_equals_one_sentence_at_a_time() -> None:
    model = tiny_model(seed=5, src_vocab_size=9, tgt_vocab_size=7)
    lengths = [7, 2, 5, 4]
    src = padded(lengths, 9, seed=9)
    batched = search(model, src, beam=3, alpha=0.6, max_len=12)
    for row, length in enumerate(lengths):
        alone = search(model, src[row : row + 1, :length], beam=3, alpha=0.6, max_len=12)
        assert alone.tokens[0] == batched.tokens[row]
        torch.testing.assert_close(alone.scores[0], batched.scores[row], atol=1e-5, rtol=0)
    assert model.beam_search(src, beam=3, max_len=12) == batched.tokens


def reference_beam(table: Tensor, beam: int, alpha: float, max_len: int) -> tuple[list[int], float]:
    """Plain-Python beam search on a bigram model, same rules, but always runs to max_len."""
    live, finished = [([], 0.0)], []
    for t in range(max_len):
        cands = sorted(
            (
                (y, token, s + float(table[y[-1] if y else BOS, token]))
                for y, s in live
                for token in range(table.shape[1])
            ),
            key=lambda c: -c[2],
        )[: 2 * beam]
        for y, token, s in cands[:beam]:
            if token == EOS and s > -math.inf:
                finished.append((y, s / gnmt_length_penalty(t + 1, alpha)))
        live = [(y + [token], s) for y, token, s in cands if token != EOS][:beam]
    finished += [(y, s / gnmt_length_penalty(max_len, alpha)) for y, s in live if s > -math.inf]
    return max(finished, key=lambda f: f[1])


@pytest.mark.parametrize(("beam", "alpha"), [(1, 0.6), (2, 0.0), (3, 1.0), (2, 1.5)])
@pytest.mark.parametrize("seed", range(4))
def test_early_stopping_keeps_the_best_output(seed: int, beam: int, alpha: float) -> None:
    """Bigram models, EOS likely in some: done sentences leave early, the winners stay."""
    g = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(4, 6, 6, generator=g)
    logits[:, :, EOS] += torch.tensor([3.0, 1.5, 0.0, -1.0])[:, None]
    table = F.log_softmax(logits, dim=-1)
    table[:, :, [PAD, BOS]] = -math.inf
    sentence = torch.arange(4).repeat_interleave(beam)  # which bigram table each row reads
    rows = []

    def step(last: Tensor) -> Tensor:
        rows.append(last.shape[0])
        return table[sentence, last]

    def reorder(index: Tensor) -> None:
        nonlocal sentence
        sentence = sentence[index]

    found = beam_search(
        step,
        reorder,
        torch.full((4,), BOS),
        beam=beam,
        eos_id=EOS,
        max_len=20,
        length_penalty=alpha,
    )
    assert rows[-1] < rows[0] == 4 * beam
    for row in range(4):
        tokens, score = reference_beam(table[row], beam, alpha, max_len=20)
        assert found.tokens[row] == tokens
        assert EOS not in tokens
        assert found.scores[row].item() == pytest.approx(score, abs=1e-5)


# ---- errors ------------------------------------------------------------------------------


def test_config_errors_name_the_problem() -> None:
    with pytest.raises(ConfigError, match="share_embeddings.*src_vocab_size=10.*tgt_vocab_size=12"):
        TransformerConfig(share_embeddings=True, src_vocab_size=10, tgt_vocab_size=12)
    with pytest.raises(ConfigError, match="divisible"):
        TransformerConfig(d_model=10, n_head=4)
    with pytest.raises(ConfigError, match="different"):
        TransformerConfig(pad_id=2)
    with pytest.raises(ConfigError, match="activation"):
        TransformerConfig(activation="swish")


def test_shared_and_tied_embeddings_are_one_matrix() -> None:
    model = tiny_model(share_embeddings=True, src_vocab_size=11)
    assert model.src_embed.weight is model.tgt_embed.weight is model.W_out.weight
    untied = tiny_model(tie_output=False)
    assert untied.W_out.weight is not untied.tgt_embed.weight


def test_registered_as_transformer() -> None:
    model = archlab.create_model("transformer", **TINY)
    assert isinstance(model, Transformer)
    assert model.config.d_model == 16


@pytest.mark.parametrize(
    ("src", "match"),
    [
        (torch.tensor([3, 4, 5]), r"integer tensor of shape \(batch, time\)"),
        (torch.ones(2, 3), "got torch.float32"),
        (torch.tensor([[3, 13]]), r"src must lie in \[0, 13\) \(the vocabulary size\), found 13"),
        (torch.full((1, 17), 3), "length 17 .* at most max_len=16"),
    ],
)
def test_bad_source_ids_raise_shape_errors(src: Tensor, match: str) -> None:
    model = tiny_model()
    with pytest.raises(ShapeError, match=match):
        model(src, torch.tensor([[BOS]]))


def test_bad_decoding_arguments_raise_archlab_errors() -> None:
    model = tiny_model()
    src = torch.tensor([[3, 4]])
    with pytest.raises(ShapeError, match="tgt"):
        model(src, torch.tensor([[BOS, 11]]))
    with pytest.raises(ArchlabError, match="max_len"):
        model.greedy(src, max_len=17)
    with pytest.raises(ArchlabError, match="beam"):
        model.beam_search(src, beam=0)


@pytest.mark.parametrize("name", ["transformer_classifier", "lstm", "textcnn"])
def test_sentence_classifiers_ignore_padding(name: str) -> None:
    import archlab

    sizes = {
        "transformer_classifier": dict(d_model=16, n_head=2, n_layer=1, d_ff=32, max_len=16),
        "lstm": dict(embed_dim=8, hidden_size=6),
        "textcnn": dict(embed_dim=8, filter_sizes=[2], n_filters=4),
    }
    model = archlab.create_model(name, vocab_size=30, **sizes[name]).eval()
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    padded = torch.tensor([[5, 6, 7, 8, 9, 0, 0, 0]])
    with torch.no_grad():
        torch.testing.assert_close(model(padded), model(ids), atol=1e-5, rtol=1e-5)


def test_cross_attention_weights_are_what_each_layer_computes_inside() -> None:
    """Against torch's own MultiheadAttention given the inputs each cross-attention receives
    (captured with hooks on torch's layers), for the post- and pre-norm stacks."""
    for norm_first in (False, True):
        ref = reference_transformer(norm_first)
        model = tiny_model(n_decoder_layers=3, norm_first=norm_first).eval()
        load_torch_weights(model, ref)
        src, tgt = padded([6, 3, 5], 13, seed=7), padded([5, 2, 4], 11, bos=True, seed=8)
        weights = model.cross_attention(src, tgt)
        assert weights.shape == (3, 3, 2, 5, 6)
        src_pad = src == PAD
        state = {}
        hooks = [
            layer.multihead_attn.register_forward_pre_hook(
                lambda m, args, kwargs, i=i, s=state: s.__setitem__(i, args), with_kwargs=True
            )
            for i, layer in enumerate(ref.decoder.layers)
        ]
        E_src, E_tgt = model.src_embed.weight.detach(), model.tgt_embed.weight.detach()
        with torch.no_grad():
            ref(
                E_src[src] * 4.0 + sinusoid(6, 16),
                E_tgt[tgt] * 4.0 + sinusoid(5, 16),
                tgt_mask=torch.ones(5, 5, dtype=torch.bool).triu(1),
                src_key_padding_mask=src_pad,
                tgt_key_padding_mask=tgt == PAD,
                memory_key_padding_mask=src_pad,
            )
            for hook in hooks:
                hook.remove()
            for i, layer in enumerate(ref.decoder.layers):
                q, k, v = state[i]
                _, expected = layer.multihead_attn(
                    q, k, v, key_padding_mask=src_pad, average_attn_weights=False
                )
                torch.testing.assert_close(weights[i], expected, atol=1e-5, rtol=0)
