"""Hugging Face BERT checkpoints <-> archlab's :class:`~archlab.models.bert.BERT`.

Reads what ``BertModel``, ``BertForMaskedLM``, ``BertForPreTraining`` and
``BertForSequenceClassification`` save, and writes directories they load.
:data:`KEYS` maps archlab's encoder names to Hugging Face's inside ``BertModel``
(``{}`` = layer index); the task models put the base model under ``bert.`` and
their heads beside it (:data:`MLM_KEYS`, :data:`CLASSIFIER_KEYS`).  Hugging Face
keeps the query, key and value projections apart, archlab stacks them in one
``W_qkv`` (:func:`archlab.interop.hf.split_qkv`).  Old checkpoints converted from
TensorFlow name LayerNorm parameters ``gamma``/``beta``; they are read as
``weight``/``bias``.

The public entry points are :meth:`BERT.from_hf <archlab.models.bert.BERT.from_hf>`
and :meth:`BERT.to_hf <archlab.models.bert.BERT.to_hf>`, which call :func:`from_hf`
and :func:`to_hf` here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import replace

from archlab.errors import CheckpointError
from archlab.interop import hf
from archlab.models.bert import BERT, BERTConfig

MODEL_TYPES = ("bert",)
PREFIX = "bert."  # the base model inside the task models

# archlab name -> Hugging Face name inside BertModel ("bert." in the task models).
# W_q, W_k, W_v are the three row blocks of MultiHeadAttention.W_qkv (see hf.split_qkv).
KEYS = {
    "token_emb.weight": "embeddings.word_embeddings.weight",
    "pos_emb.weight": "embeddings.position_embeddings.weight",
    "segment_emb.weight": "embeddings.token_type_embeddings.weight",
    "emb_norm.weight": "embeddings.LayerNorm.weight",
    "emb_norm.bias": "embeddings.LayerNorm.bias",
    "blocks.{}.self_attn.W_q.weight": "encoder.layer.{}.attention.self.query.weight",
    "blocks.{}.self_attn.W_q.bias": "encoder.layer.{}.attention.self.query.bias",
    "blocks.{}.self_attn.W_k.weight": "encoder.layer.{}.attention.self.key.weight",
    "blocks.{}.self_attn.W_k.bias": "encoder.layer.{}.attention.self.key.bias",
    "blocks.{}.self_attn.W_v.weight": "encoder.layer.{}.attention.self.value.weight",
    "blocks.{}.self_attn.W_v.bias": "encoder.layer.{}.attention.self.value.bias",
    "blocks.{}.self_attn.W_o.weight": "encoder.layer.{}.attention.output.dense.weight",
    "blocks.{}.self_attn.W_o.bias": "encoder.layer.{}.attention.output.dense.bias",
    "blocks.{}.attn_res.norm.weight": "encoder.layer.{}.attention.output.LayerNorm.weight",
    "blocks.{}.attn_res.norm.bias": "encoder.layer.{}.attention.output.LayerNorm.bias",
    "blocks.{}.ff.W_1.weight": "encoder.layer.{}.intermediate.dense.weight",
    "blocks.{}.ff.W_1.bias": "encoder.layer.{}.intermediate.dense.bias",
    "blocks.{}.ff.W_2.weight": "encoder.layer.{}.output.dense.weight",
    "blocks.{}.ff.W_2.bias": "encoder.layer.{}.output.dense.bias",
    "blocks.{}.ff_res.norm.weight": "encoder.layer.{}.output.LayerNorm.weight",
    "blocks.{}.ff_res.norm.bias": "encoder.layer.{}.output.LayerNorm.bias",
}
POOLER_KEYS = {"pooler.weight": "pooler.dense.weight", "pooler.bias": "pooler.dense.bias"}
# the heads sit beside the base model, never under "bert."
MLM_KEYS = {
    "mlm.transform.weight": "cls.predictions.transform.dense.weight",
    "mlm.transform.bias": "cls.predictions.transform.dense.bias",
    "mlm.norm.weight": "cls.predictions.transform.LayerNorm.weight",
    "mlm.norm.bias": "cls.predictions.transform.LayerNorm.bias",
    "mlm.bias": "cls.predictions.bias",
}
CLASSIFIER_KEYS = {
    "classifier.weight": "classifier.weight",
    "classifier.bias": "classifier.bias",
}
# tensors a checkpoint may hold that BERT does not load: position/segment id buffers,
# the next-sentence-prediction head, and the MLM decoder (a copy of the tied E_tok and b_v)
IGNORED_SUFFIXES = ("embeddings.position_ids", "embeddings.token_type_ids")
IGNORED_PREFIXES = ("cls.seq_relationship.", "cls.predictions.decoder.")
# Hugging Face hidden_act -> archlab activation, and back
ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "gelu_new": "gelu_tanh"}
ACTIVATIONS_TO_HF = {ours: theirs for theirs, ours in ACTIVATIONS.items()}
LEGACY_NORM = re.compile(r"LayerNorm\.(gamma|beta)$")  # TF-converted names


def key_map(config: BERTConfig, base: str) -> dict[str, str]:
    """archlab name -> Hugging Face name for a BERT with ``config``; ``base`` is "" or "bert."."""
    encoder = dict(KEYS, **(POOLER_KEYS if config.pooler else {}))
    out = {ours: base + theirs for ours, theirs in encoder.items()}
    if config.mlm_head:
        out.update(MLM_KEYS)
    if config.num_classes:
        out.update(CLASSIFIER_KEYS)
    return hf.expand_key_map(out, config.n_layer)


def from_hf(path: str | os.PathLike, cls: type[BERT] = BERT) -> BERT:
    """Load a Hugging Face BERT checkpoint directory (config.json + model.safetensors).

    Reads what ``BertModel``, ``BertForMaskedLM``, ``BertForPreTraining`` and
    ``BertForSequenceClassification`` save; the heads present in the weights set
    ``pooler``, ``mlm_head`` and ``num_classes``.  Every tensor must be there with
    the shape config.json implies.  Not loaded: the ``position_ids`` /
    ``token_type_ids`` buffers, the next-sentence-prediction head
    ``cls.seq_relationship.*``, and ``cls.predictions.decoder.*``, which Hugging
    Face ties to the word embedding and ``cls.predictions.bias``.  Any other
    tensor (another task's head) is refused rather than silently dropped.
    """
    hf_config, hf_state = hf.read_checkpoint(path, MODEL_TYPES)
    source = f"{path}/{hf.WEIGHTS_FILE}"
    state = {LEGACY_NORM.sub(_modern_norm_name, k): v for k, v in hf_state.items()}
    base = PREFIX if any(k.startswith(PREFIX) for k in state) else ""
    pooler = any(k.startswith(base + "pooler.") for k in state)
    mlm_head = any(k.startswith("cls.predictions.") for k in state)
    classifier = any(k.startswith("classifier.") for k in state)
    if classifier and not pooler:
        raise CheckpointError(
            f"{source} has a classifier but no pooler (a token-level head); archlab's BERT "
            "loads sequence classifiers only"
        )
    if mlm_head and not hf_config.get("tie_word_embeddings", True):
        raise CheckpointError(
            "config.json sets tie_word_embeddings=False; archlab's BERT ties the masked-LM "
            "decoder to the word embedding"
        )
    config = replace(
        config_from_hf(hf_config),
        pooler=pooler,
        mlm_head=mlm_head,
        num_classes=class_count(hf_config) if classifier else 0,
    )
    model = cls(config)
    keys = key_map(config, base)
    known = set(keys.values())
    unexpected = sorted(
        k
        for k in state
        if k not in known
        and not k.endswith(IGNORED_SUFFIXES)
        and not k.startswith(IGNORED_PREFIXES)
    )
    if unexpected:
        shown = ", ".join(unexpected[:5]) + (", ..." if len(unexpected) > 5 else "")
        raise CheckpointError(
            f"{source} holds {len(unexpected)} tensor(s) archlab's BERT does not model: "
            f"{shown} (it reads BertModel, BertForMaskedLM, BertForPreTraining and "
            "BertForSequenceClassification checkpoints)"
        )
    loaded = hf.import_state(state, keys, hf.split_qkv(model.state_dict()), source=source)
    model.load_state_dict(hf.merge_qkv(loaded), strict=True)
    return model


def to_hf(model: BERT, path: str | os.PathLike) -> None:
    """Write a checkpoint directory that Hugging Face loads with the same outputs.

    ``BertForMaskedLM.from_pretrained`` reads it when the model has an MLM head,
    ``BertForSequenceClassification`` when it has a classifier, ``BertModel``
    always.  The MLM decoder is not stored: Hugging Face ties it to the word
    embedding on load.
    """
    c = model.config
    if c.num_classes and c.pooling != "cls":
        raise CheckpointError(
            f"this BERT classifies from the {c.pooling} of its hidden states, which Hugging "
            "Face's BertForSequenceClassification (the pooled [CLS]) cannot express"
        )
    base = PREFIX if c.mlm_head or c.num_classes else ""
    state = hf.export_state(hf.split_qkv(model.state_dict()), key_map(c, base))
    hf.write_checkpoint(path, config_to_hf(c), state)


def _modern_norm_name(match: re.Match[str]) -> str:
    return "LayerNorm." + {"gamma": "weight", "beta": "bias"}[match.group(1)]


def class_count(hf_config: Mapping) -> int:
    """Classes of a Hugging Face classifier: its id2label, else num_labels, else HF's default 2."""
    if hf_config.get("id2label"):
        return len(hf_config["id2label"])
    return int(hf_config.get("num_labels", 2))


def config_from_hf(hf_config: dict) -> BERTConfig:
    """Translate a Hugging Face ``BertConfig`` dict, refusing options archlab does not model.

    The heads (``pooler``, ``mlm_head``, ``num_classes``) keep their defaults: the
    weights, not the config, say which are present.  ``classifier_dropout`` is not
    kept; the classifier's dropout is ``dropout`` (``hidden_dropout_prob``).
    """
    position = hf_config.get("position_embedding_type", "absolute")
    if position != "absolute":
        raise CheckpointError(
            f"config.json position_embedding_type {position!r} is not supported (only 'absolute')"
        )
    activation = hf.config_value(hf_config, "hidden_act", "gelu")
    if activation not in ACTIVATIONS:
        raise CheckpointError(
            f"config.json hidden_act {activation!r} is not supported "
            f"(choose one of {', '.join(ACTIVATIONS)})"
        )
    for flag in ("is_decoder", "add_cross_attention"):
        if hf_config.get(flag, False):
            raise CheckpointError(
                f"config.json sets {flag}=True; archlab's BERT is a bidirectional encoder only"
            )
    return BERTConfig(
        vocab_size=hf.config_value(hf_config, "vocab_size"),
        hidden_size=hf.config_value(hf_config, "hidden_size"),
        n_layer=hf.config_value(hf_config, "num_hidden_layers"),
        n_head=hf.config_value(hf_config, "num_attention_heads"),
        d_ff=hf.config_value(hf_config, "intermediate_size"),
        max_len=hf.config_value(hf_config, "max_position_embeddings"),
        type_vocab_size=hf_config.get("type_vocab_size", 2),
        dropout=hf_config.get("hidden_dropout_prob", 0.1),
        attn_dropout=hf_config.get("attention_probs_dropout_prob", 0.1),
        activation=ACTIVATIONS[activation],
        eps=hf_config.get("layer_norm_eps", 1e-12),
        pad_id=hf_config.get("pad_token_id", 0),
    )


def config_to_hf(c: BERTConfig) -> dict:
    """A Hugging Face ``BertConfig`` dict for ``c``, naming the class that loads its heads."""
    activation = ACTIVATIONS_TO_HF[c.activation]
    if c.mlm_head:
        architecture = "BertForMaskedLM"
    elif c.num_classes:
        architecture = "BertForSequenceClassification"
    else:
        architecture = "BertModel"
    config = {
        "model_type": "bert",
        "architectures": [architecture],
        "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size,
        "num_hidden_layers": c.n_layer,
        "num_attention_heads": c.n_head,
        "intermediate_size": c.d_ff,
        "max_position_embeddings": c.max_len,
        "type_vocab_size": c.type_vocab_size,
        "hidden_act": activation,
        "hidden_dropout_prob": c.dropout,
        "attention_probs_dropout_prob": c.attn_dropout,
        "layer_norm_eps": c.eps,
        "pad_token_id": c.pad_id,
        "is_decoder": False,
        "tie_word_embeddings": True,
    }
    if c.num_classes:
        config["id2label"] = {str(i): f"LABEL_{i}" for i in range(c.num_classes)}
        config["label2id"] = {f"LABEL_{i}": i for i in range(c.num_classes)}
    return config
