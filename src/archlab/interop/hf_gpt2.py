"""Hugging Face GPT-2 checkpoints <-> archlab's :class:`~archlab.models.gpt.GPT`.

A ``GPT2LMHeadModel`` directory (``config.json`` + ``model.safetensors``) maps onto
a GPT with learned positions and biases.  :data:`KEYS` is the whole map, from
archlab's parameter names to Hugging Face's inside ``GPT2Model`` (``{}`` = layer
index); ``GPT2LMHeadModel`` prefixes them with ``transformer.``.  GPT-2 stores its
linear layers as ``Conv1D``, i.e. transposed (:data:`TRANSPOSED`).  The output
projection is tied to the token embedding unless ``tie_word_embeddings`` is false,
in which case ``lm_head.weight`` is stored beside the base model.

The public entry points are :meth:`GPT.from_hf <archlab.models.gpt.GPT.from_hf>`
and :meth:`GPT.to_hf <archlab.models.gpt.GPT.to_hf>`, which call :func:`from_hf`
and :func:`to_hf` here.
"""

from __future__ import annotations

import os

from archlab.errors import CheckpointError, ConfigError
from archlab.interop import hf
from archlab.models.gpt import GPT, GPTConfig

MODEL_TYPES = ("gpt2",)
PREFIX = "transformer."  # GPT2LMHeadModel's base model

# archlab name -> Hugging Face GPT-2 name ("{}" = layer index)
KEYS = {
    "wte.weight": "wte.weight",
    "wpe.weight": "wpe.weight",
    "blocks.{}.attn_res.norm.weight": "h.{}.ln_1.weight",
    "blocks.{}.attn_res.norm.bias": "h.{}.ln_1.bias",
    "blocks.{}.self_attn.W_qkv.weight": "h.{}.attn.c_attn.weight",
    "blocks.{}.self_attn.W_qkv.bias": "h.{}.attn.c_attn.bias",
    "blocks.{}.self_attn.W_o.weight": "h.{}.attn.c_proj.weight",
    "blocks.{}.self_attn.W_o.bias": "h.{}.attn.c_proj.bias",
    "blocks.{}.ff_res.norm.weight": "h.{}.ln_2.weight",
    "blocks.{}.ff_res.norm.bias": "h.{}.ln_2.bias",
    "blocks.{}.ff.W_1.weight": "h.{}.mlp.c_fc.weight",
    "blocks.{}.ff.W_1.bias": "h.{}.mlp.c_fc.bias",
    "blocks.{}.ff.W_2.weight": "h.{}.mlp.c_proj.weight",
    "blocks.{}.ff.W_2.bias": "h.{}.mlp.c_proj.bias",
    "ln_f.weight": "ln_f.weight",
    "ln_f.bias": "ln_f.bias",
}
# an untied output projection, stored beside the base model
LM_HEAD_KEYS = {"lm_head.weight": "lm_head.weight"}
TRANSPOSED = ("W_qkv.weight", "W_o.weight", "W_1.weight", "W_2.weight")  # GPT-2's Conv1D
# Hugging Face activation_function -> archlab activation, and back
ACTIVATIONS = {
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu": "gelu",
    "relu": "relu",
}
ACTIVATIONS_TO_HF = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu"}


def key_map(config: GPTConfig, prefix: str = "") -> dict[str, str]:
    """archlab name -> Hugging Face name for every tensor of a GPT with ``config``.

    ``prefix`` goes before the base model's names ("" in a ``GPT2Model``,
    ``transformer.`` in a ``GPT2LMHeadModel``), never before ``lm_head``.
    """
    out = {
        ours: prefix + theirs for ours, theirs in hf.expand_key_map(KEYS, config.n_layer).items()
    }
    if not config.tie_weights:
        out.update(LM_HEAD_KEYS)
    return out


def from_hf(path: str | os.PathLike, cls: type[GPT] = GPT) -> GPT:
    """Load a Hugging Face GPT-2 checkpoint directory (config.json + model.safetensors)."""
    hf_config, hf_state = hf.read_checkpoint(path, MODEL_TYPES)
    config = config_from_hf(hf_config)
    model = cls(config)
    state = hf.strip_prefix(hf_state, PREFIX)
    loaded = hf.import_state(
        state,
        key_map(config),
        model.state_dict(),
        transpose=TRANSPOSED,
        source=f"{path}/{hf.WEIGHTS_FILE}",
    )
    if config.tie_weights:
        loaded["lm_head.weight"] = loaded["wte.weight"]
    model.load_state_dict(loaded, strict=True)
    return model


def to_hf(model: GPT, path: str | os.PathLike) -> None:
    """Write a checkpoint directory that ``GPT2LMHeadModel.from_pretrained`` loads."""
    c = model.config
    if c.position != "learned" or not c.bias:
        raise ConfigError(
            "only GPT-2-style models (learned positions, with biases) can be saved for Hugging Face"
        )
    state = hf.export_state(model.state_dict(), key_map(c, PREFIX), transpose=TRANSPOSED)
    hf.write_checkpoint(path, config_to_hf(c), state)


def config_from_hf(hf_config: dict) -> GPTConfig:
    """Translate a Hugging Face ``GPT2Config`` dict, refusing options archlab does not model."""
    activation = hf.config_value(hf_config, "activation_function", "gelu_new")
    if activation not in ACTIVATIONS:
        raise CheckpointError(f"config.json activation_function {activation!r} is not supported")
    for flag, wanted in (
        ("scale_attn_weights", True),
        ("scale_attn_by_inverse_layer_idx", False),
        ("add_cross_attention", False),
    ):
        if hf_config.get(flag, wanted) != wanted:
            raise CheckpointError(
                f"config.json sets {flag}={hf_config[flag]}, which archlab's GPT does not support"
            )
    n_embd = hf.config_value(hf_config, "n_embd")
    return GPTConfig(
        vocab_size=hf.config_value(hf_config, "vocab_size"),
        block_size=hf.config_value(hf_config, "n_positions"),
        n_layer=hf.config_value(hf_config, "n_layer"),
        n_head=hf.config_value(hf_config, "n_head"),
        n_embd=n_embd,
        d_ff=hf_config.get("n_inner") or 4 * n_embd,
        dropout=hf_config.get("resid_pdrop", 0.1),
        attn_dropout=hf_config.get("attn_pdrop", 0.1),
        activation=ACTIVATIONS[activation],
        eps=hf_config.get("layer_norm_epsilon", 1e-5),
        tie_weights=hf_config.get("tie_word_embeddings", True),
    )


def config_to_hf(c: GPTConfig) -> dict:
    """A Hugging Face ``GPT2Config`` dict for a GPT-2-style ``c``."""
    return {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "vocab_size": c.vocab_size,
        "n_positions": c.block_size,
        "n_layer": c.n_layer,
        "n_head": c.n_head,
        "n_embd": c.n_embd,
        "n_inner": c.d_ff or 4 * c.n_embd,
        "activation_function": ACTIVATIONS_TO_HF[c.activation],
        "resid_pdrop": c.dropout,
        "embd_pdrop": c.dropout,
        "attn_pdrop": c.attn_dropout,
        "layer_norm_epsilon": c.eps,
        "tie_word_embeddings": c.tie_weights,
    }
