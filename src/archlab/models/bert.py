"""BERT: a bidirectional Transformer encoder, pre-trained by masked language modelling.

Devlin, Chang, Lee & Toutanova 2019, "BERT: Pre-training of Deep Bidirectional
Transformers for Language Understanding" (NAACL).  For tokens x_t at positions t in
segments s_t (sentence A = 0, sentence B = 1 in "[CLS] A [SEP] B [SEP]"):

    h_0 = Dropout(LayerNorm(E_tok[x_t] + E_pos[t] + E_seg[s_t]))
    a   = LayerNorm(h + Dropout(MultiHead(h, h)))          post-norm encoder layer
    h'  = LayerNorm(a + Dropout(GELU(a W_1 + b_1) W_2 + b_2))   (GELU exact, erf-based)

Attention is bidirectional: every token attends to every non-padding token, left
and right, which is what the masked-LM objective needs and what a left-to-right
model (GPT) cannot see.  On top of the last layer h_L:

    pooler:          p = tanh(W_p h_L[CLS] + b_p)             ([CLS] is position 0)
    masked LM:       z_t = LayerNorm(GELU(W_t h_L,t + b_t))
                     p(x_t | context) = softmax(z_t E_tok^T + b_v)   (decoder tied to E_tok)
    classification:  logits = W_c Dropout(p) + b_c

Pre-training masks 15 % of the tokens and trains the MLM head to recover them; a
task then fine-tunes the whole network with a classification head on p.

Weights load from and save to Hugging Face BERT checkpoint directories
(:meth:`BERT.from_hf`, :meth:`BERT.to_hf`); a recipe fine-tunes from one with
``model.init_from=DIR`` (:meth:`BERT.load_pretrained`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archlab.errors import CheckpointError, ConfigError, expect
from archlab.interop import hf
from archlab.models import roles
from archlab.nn.checks import check_token_ids
from archlab.nn.positional import LearnedPositionalEmbedding
from archlab.nn.transformer import EncoderBlock, activation_fn
from archlab.registry import register_model


@dataclass
class BERTConfig:
    """Defaults are BERT-base (110M parameters)."""

    vocab_size: int = 30522
    hidden_size: int = 768
    n_layer: int = 12
    n_head: int = 12
    d_ff: int = 3072  # FFN width ("intermediate size")
    max_len: int = 512  # positions with a learned embedding
    type_vocab_size: int = 2  # segments (sentence A / B)
    dropout: float = 0.1  # on embeddings, each sub-layer's output and the classifier input
    attn_dropout: float = 0.1  # on attention probabilities
    activation: str = "gelu"
    eps: float = 1e-12  # LayerNorm epsilon
    pad_id: int | None = 0  # [PAD] token; its embedding row starts at zero and gets no gradient
    pooler: bool = True  # p = tanh(W_p h[CLS] + b_p)
    mlm_head: bool = True  # masked-LM head
    num_classes: int = 0  # classes of the classification head on p; 0 = no such head

    def __post_init__(self) -> None:
        if self.hidden_size % self.n_head:
            raise ConfigError(
                f"hidden_size ({self.hidden_size}) must be divisible by n_head ({self.n_head})"
            )
        if self.num_classes < 0:
            raise ConfigError(f"num_classes must be >= 0, got {self.num_classes}")
        if self.num_classes and not self.pooler:
            raise ConfigError("a classification head (num_classes > 0) needs pooler=True")
        if self.pad_id is not None and not 0 <= self.pad_id < self.vocab_size:
            raise ConfigError(
                f"pad_id {self.pad_id} lies outside the vocabulary [0, {self.vocab_size})"
            )


# archlab name -> Hugging Face name inside BertModel ("bert." in the task models).
# W_q, W_k, W_v are the three row blocks of MultiHeadAttention.W_qkv (see split_qkv).
HF_KEYS = {
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
HF_POOLER_KEYS = {"pooler.weight": "pooler.dense.weight", "pooler.bias": "pooler.dense.bias"}
# the heads sit beside the base model, never under "bert."
HF_MLM_KEYS = {
    "mlm.transform.weight": "cls.predictions.transform.dense.weight",
    "mlm.transform.bias": "cls.predictions.transform.dense.bias",
    "mlm.norm.weight": "cls.predictions.transform.LayerNorm.weight",
    "mlm.norm.bias": "cls.predictions.transform.LayerNorm.bias",
    "mlm.bias": "cls.predictions.bias",
}
HF_CLASSIFIER_KEYS = {
    "classifier.weight": "classifier.weight",
    "classifier.bias": "classifier.bias",
}
# tensors a checkpoint may hold that BERT does not load: position/segment id buffers,
# the next-sentence-prediction head, and the MLM decoder (a copy of the tied E_tok and b_v)
HF_IGNORED_SUFFIXES = ("embeddings.position_ids", "embeddings.token_type_ids")
HF_IGNORED_PREFIXES = ("cls.seq_relationship.", "cls.predictions.decoder.")
HF_ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "gelu_new": "gelu_tanh"}
HF_LEGACY_NORM = re.compile(r"LayerNorm\.(gamma|beta)$")  # TF-converted names
QKV = ("W_q", "W_k", "W_v")
QKV_PART = re.compile(r"^(.*)\.W_([qkv])\.(weight|bias)$")


class MaskedLMHead(nn.Module):
    """z = LayerNorm(act(h W_t + b_t)); logits = z E_tok^T + b_v, E_tok given by the caller."""

    def __init__(self, hidden_size: int, vocab_size: int, activation: str, eps: float) -> None:
        super().__init__()
        self.transform = nn.Linear(hidden_size, hidden_size)
        self.act = activation_fn(activation)
        self.norm = nn.LayerNorm(hidden_size, eps=eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, h: Tensor, E_tok: Tensor) -> Tensor:
        return F.linear(self.norm(self.act(self.transform(h))), E_tok, self.bias)


def _key_padding_mask(attention_mask: Tensor, shape: torch.Size) -> Tensor | None:
    """Hugging Face's mask (1 = token, 0 = padding) -> key_padding_mask (True = ignore)."""
    expect(
        attention_mask.shape == shape,
        f"attention_mask must have the shape of input_ids {tuple(shape)}, "
        f"got {tuple(attention_mask.shape)}",
    )
    padding = attention_mask == 0
    expect(
        bool((padding | (attention_mask == 1)).all()),
        "attention_mask must hold only 1 (token) and 0 (padding)",
    )
    expect(
        not bool(padding.all(dim=1).any()),
        "attention_mask hides every token of some sequence; each needs at least one token",
    )
    return padding if bool(padding.any()) else None


@register_model("bert", BERTConfig)
class BERT(nn.Module):
    """BERT: bidirectional Transformer encoder with pooler, masked-LM and classification heads."""

    role = roles.Encoder

    def __init__(self, config: BERTConfig) -> None:
        super().__init__()
        self.config = c = config
        self.token_emb = nn.Embedding(c.vocab_size, c.hidden_size, padding_idx=c.pad_id)
        self.pos_emb = LearnedPositionalEmbedding(c.max_len, c.hidden_size)
        self.segment_emb = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.emb_norm = nn.LayerNorm(c.hidden_size, eps=c.eps)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(
            EncoderBlock(
                c.hidden_size,
                c.n_head,
                c.d_ff,
                dropout=c.dropout,
                attn_dropout=c.attn_dropout,
                ff_dropout=0.0,
                activation=c.activation,
                norm_first=False,
                eps=c.eps,
            )
            for _ in range(c.n_layer)
        )
        self.pooler = nn.Linear(c.hidden_size, c.hidden_size) if c.pooler else None
        self.mlm = (
            MaskedLMHead(c.hidden_size, c.vocab_size, c.activation, c.eps) if c.mlm_head else None
        )
        self.classifier = nn.Linear(c.hidden_size, c.num_classes) if c.num_classes else None
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """As Hugging Face BERT: N(0, 0.02) weights, zero biases and [PAD] row, LayerNorm 1/0."""
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
    ) -> Tensor:
        """Last hidden states h_L (batch, time, hidden_size) for token ids (batch, time)."""
        return self.hidden_states(input_ids, attention_mask, token_type_ids)

    def hidden_states(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
    ) -> Tensor:
        """Last hidden states h_L (batch, time, hidden_size) for token ids (batch, time).

        ``attention_mask`` follows Hugging Face: 1 for a real token, 0 for padding
        (padding keys are never attended).  ``token_type_ids`` are the segment ids,
        all 0 (sentence A) when omitted.
        """
        c = self.config
        check_token_ids("input_ids", input_ids, c.vocab_size, "vocab_size")
        length = input_ids.shape[1]
        expect(
            length <= c.max_len,
            f"sequence of {length} tokens exceeds the {c.max_len} positions of the model (max_len)",
        )
        x = self.token_emb(input_ids) + self.pos_emb(length)
        if token_type_ids is None:
            x = x + self.segment_emb.weight[0]
        else:
            expect(
                token_type_ids.shape == input_ids.shape,
                f"token_type_ids must have the shape of input_ids {tuple(input_ids.shape)}, "
                f"got {tuple(token_type_ids.shape)}",
            )
            check_token_ids("token_type_ids", token_type_ids, c.type_vocab_size, "type_vocab_size")
            x = x + self.segment_emb(token_type_ids)
        key_padding_mask = (
            None if attention_mask is None else _key_padding_mask(attention_mask, input_ids.shape)
        )
        x = self.drop(self.emb_norm(x))
        for block in self.blocks:
            x = block(x, key_padding_mask=key_padding_mask)
        return x

    # ----- the heads -----

    def _check_hidden(self, hidden: Tensor) -> None:
        expect(
            hidden.dim() == 3 and hidden.shape[-1] == self.config.hidden_size,
            f"hidden states must have shape (batch, time, {self.config.hidden_size}), "
            f"got {tuple(hidden.shape)}",
        )

    def pool(self, hidden: Tensor) -> Tensor:
        """p = tanh(W_p h[CLS] + b_p): (batch, time, hidden) -> (batch, hidden)."""
        if self.pooler is None:
            raise ConfigError("this BERT has no pooler (config.pooler=False)")
        self._check_hidden(hidden)
        return torch.tanh(self.pooler(hidden[:, 0]))

    def mlm_logits(self, hidden: Tensor) -> Tensor:
        """Masked-LM logits (batch, time, vocab_size) from hidden states (batch, time, hidden)."""
        if self.mlm is None:
            raise ConfigError("this BERT has no masked-LM head (config.mlm_head=False)")
        self._check_hidden(hidden)
        return self.mlm(hidden, self.token_emb.weight)

    # ----- fine-tuning from a pretrained model (a recipe's model.init_from) -----

    # what a pretrained model fixes: its sizes and the function its weights compute;
    # dropout and the heads stay the fine-tuning recipe's choice
    PRETRAINED_FIELDS = (
        "vocab_size",
        "hidden_size",
        "n_layer",
        "n_head",
        "d_ff",
        "max_len",
        "type_vocab_size",
        "activation",
        "eps",
        "pad_id",
    )

    def load_pretrained(self, pretrained: BERT) -> list[str]:
        """Copy ``pretrained``'s weights (e.g. from :meth:`from_hf`) into this model.

        The two must agree on :attr:`PRETRAINED_FIELDS`.  The encoder is copied whole;
        a head (pooler, masked-LM, classifier) is copied when both models have it with
        the same shape, and otherwise keeps its fresh initialisation, as the new
        classification head of a fine-tuning run does.  Returns the names of the
        tensors left fresh.
        """
        differ = [
            f
            for f in self.PRETRAINED_FIELDS
            if getattr(self.config, f) != getattr(pretrained.config, f)
        ]
        if differ:
            raise ConfigError(f"the pretrained BERT differs in {', '.join(differ)}")
        ours = self.state_dict()
        shared = {
            name: tensor
            for name, tensor in pretrained.state_dict().items()
            if name in ours and ours[name].shape == tensor.shape
        }
        self.load_state_dict(shared, strict=False)
        return sorted(set(ours) - set(shared))

    # ----- Hugging Face BERT checkpoints -----

    def _hf_key_map(self, base: str) -> dict[str, str]:
        """archlab name -> Hugging Face name for this model's tensors; ``base`` is "" or "bert."."""
        c = self.config
        encoder = dict(HF_KEYS, **(HF_POOLER_KEYS if c.pooler else {}))
        key_map = {ours: base + theirs for ours, theirs in encoder.items()}
        if c.mlm_head:
            key_map.update(HF_MLM_KEYS)
        if c.num_classes:
            key_map.update(HF_CLASSIFIER_KEYS)
        return hf.expand_key_map(key_map, c.n_layer)

    @classmethod
    def from_hf(cls, path: str | os.PathLike) -> BERT:
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
        hf_config, hf_state = hf.read_checkpoint(path, ["bert"])
        source = f"{path}/{hf.WEIGHTS_FILE}"
        state = {HF_LEGACY_NORM.sub(_modern_norm_name, k): v for k, v in hf_state.items()}
        base = "bert." if any(k.startswith("bert.") for k in state) else ""
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
            num_classes=_hf_class_count(hf_config) if classifier else 0,
        )
        model = cls(config)
        key_map = model._hf_key_map(base)
        known = set(key_map.values())
        unexpected = sorted(
            k
            for k in state
            if k not in known
            and not k.endswith(HF_IGNORED_SUFFIXES)
            and not k.startswith(HF_IGNORED_PREFIXES)
        )
        if unexpected:
            shown = ", ".join(unexpected[:5]) + (", ..." if len(unexpected) > 5 else "")
            raise CheckpointError(
                f"{source} holds {len(unexpected)} tensor(s) archlab's BERT does not model: "
                f"{shown} (it reads BertModel, BertForMaskedLM, BertForPreTraining and "
                "BertForSequenceClassification checkpoints)"
            )
        loaded = hf.import_state(state, key_map, split_qkv(model.state_dict()), source=source)
        model.load_state_dict(merge_qkv(loaded), strict=True)
        return model

    def to_hf(self, path: str | os.PathLike) -> None:
        """Write a checkpoint directory that Hugging Face loads with the same outputs.

        ``BertForMaskedLM.from_pretrained`` reads it when the model has an MLM head,
        ``BertForSequenceClassification`` when it has a classifier, ``BertModel``
        always.  The MLM decoder is not stored: Hugging Face ties it to the word
        embedding on load.
        """
        c = self.config
        base = "bert." if c.mlm_head or c.num_classes else ""
        state = hf.export_state(split_qkv(self.state_dict()), self._hf_key_map(base))
        hf.write_checkpoint(path, config_to_hf(c), state)


@register_model(
    "bert_classifier",
    BERTConfig,
    defaults={"num_classes": 2, "mlm_head": False},
    summary="BERT with its classification head on the pooled [CLS] state",
)
class BERTClassifier(BERT):
    """BERT for sentence classification: logits = W_c Dropout(tanh(W_p h_L[CLS] + b_p)) + b_c.

    The same parameters as :class:`BERT` with its pooler and classification head
    (Hugging Face's ``BertForSequenceClassification``); only forward differs.
    """

    role = roles.TextClassifier

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
    ) -> Tensor:
        """Class logits (batch, num_classes) for token ids (batch, time)."""
        if self.classifier is None:
            raise ConfigError("this BERT has no classification head (model.num_classes is 0)")
        pooled = self.pool(self.hidden_states(input_ids, attention_mask, token_type_ids))
        return self.classifier(self.drop(pooled))


def _modern_norm_name(match: re.Match[str]) -> str:
    return "LayerNorm." + {"gamma": "weight", "beta": "bias"}[match.group(1)]


def split_qkv(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Replace each ``*.W_qkv.{weight,bias}`` by its row blocks ``*.W_q``, ``*.W_k``, ``*.W_v``."""
    out: dict[str, Tensor] = {}
    for name, tensor in state.items():
        stem, sep, leaf = name.rpartition(".W_qkv.")
        if not sep:
            out[name] = tensor
            continue
        for part, block in zip(QKV, tensor.chunk(3), strict=True):
            out[f"{stem}.{part}.{leaf}"] = block
    return out


def merge_qkv(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The inverse of :func:`split_qkv`: stack ``W_q``, ``W_k``, ``W_v`` into ``W_qkv``."""
    out: dict[str, Tensor] = {}
    for name, tensor in state.items():
        match = QKV_PART.match(name)
        if match is None:
            out[name] = tensor
        elif match.group(2) == "q":
            stem, leaf = match.group(1), match.group(3)
            out[f"{stem}.W_qkv.{leaf}"] = torch.cat([state[f"{stem}.{p}.{leaf}"] for p in QKV])
    return out


def _hf_class_count(hf_config: Mapping) -> int:
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
    if activation not in HF_ACTIVATIONS:
        raise CheckpointError(
            f"config.json hidden_act {activation!r} is not supported "
            f"(choose one of {', '.join(HF_ACTIVATIONS)})"
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
        activation=HF_ACTIVATIONS[activation],
        eps=hf_config.get("layer_norm_eps", 1e-12),
        pad_id=hf_config.get("pad_token_id", 0),
    )


def config_to_hf(c: BERTConfig) -> dict:
    activation = {ours: theirs for theirs, ours in HF_ACTIVATIONS.items()}[c.activation]
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
