"""Model roles: what a model's ``forward`` returns, and the extra methods its role has.

Every model class names its role in a class attribute, ``role``; a task names the
roles it can train (``Task.roles``), so a recipe that pairs a task with a model of
another role is refused before any data is read.  A model's ``forward`` returns
outputs -- logits, hidden states, capsules, discriminator scores -- never a loss:
losses, metrics and model selection live in the task.  The protocols are
``runtime_checkable``, and the tests check every registered model against its role.

    role                forward(...) returns                          extra methods
    LanguageModel       idx (B, T) -> next-token logits (B, T, V)      generate,
                                                                       generate_stream
    Seq2Seq             src (B, S), tgt (B, T) -> logits (B, T, V)     greedy, beam_search
    Encoder             input_ids, attention_mask, token_type_ids
                        -> hidden states (B, T, H)
    TextClassifier      input_ids, attention_mask -> logits (B, C)
    ImageClassifier     images (B, C_in, H, W) -> logits (B, C)         features
    CapsuleClassifier   images -> digit capsules v (B, C, D);          reconstruct
                        ||v_j|| is the probability of class j
    NodeModel           x (N, F), edge_index (2, E) [, batch]
                        -> node outputs (N, out) [graph outputs (G, out)]
    MoleculeModel       x, edge_index, edge_attr, batch, num_graphs
                        [, descriptors] -> predictions (G, targets)
    GAN                 real (B, ...), z (B, Z) [, y] -> GANScores     generator
    SequenceModel       x (B, T, F) or ids (B, T) [, lengths]          init_state, step
                        -> outputs (B, T, out), causal
    KGEModel            h, r, t ids (broadcast; h or t None: every      constrain_
                        entity) -> triple scores
    MultimodalClassifier image (B, 1, H, W), audio (B, T, F)
                        [, lengths, present] -> FusionOutput
                        (logits, per-modality logits, mask, gate)

Beside its role a model may have a capability a task can use: ``TokenStates``, the
last hidden states of every token (BERT and the classifier built on it), which the
``embed`` verb pools into sentence embeddings.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from archlab.nn.gan import GANScores

if TYPE_CHECKING:
    from archlab.models.fusion import FusionOutput


@runtime_checkable
class LanguageModel(Protocol):
    """Causal language model: next-token logits, and sampling with a KV cache."""

    def forward(self, idx: Tensor) -> Tensor: ...

    def generate(
        self,
        idx: Tensor,
        max_new_tokens: int,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor: ...

    def generate_stream(
        self,
        idx: Tensor,
        max_new_tokens: int,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
    ) -> Iterator[Tensor]: ...


@runtime_checkable
class Seq2Seq(Protocol):
    """Encoder-decoder: logits of each next target token given the source; decoding."""

    def forward(self, src: Tensor, tgt: Tensor) -> Tensor: ...

    def greedy(self, src: Tensor, max_len: int | None = None) -> list[list[int]]: ...

    def beam_search(
        self, src: Tensor, beam: int = 4, length_penalty: float = 0.6, max_len: int | None = None
    ) -> list[list[int]]: ...


@runtime_checkable
class Encoder(Protocol):
    """Bidirectional text encoder: the last hidden states of every token."""

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
    ) -> Tensor: ...


@runtime_checkable
class TextClassifier(Protocol):
    """Sentence classifier: class logits from token ids and their mask (1 = token)."""

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor: ...


@runtime_checkable
class ImageClassifier(Protocol):
    """Image classifier: class logits; ``features`` are the penultimate activations."""

    def forward(self, images: Tensor) -> Tensor: ...

    def features(self, images: Tensor) -> Tensor: ...


@runtime_checkable
class CapsuleClassifier(Protocol):
    """Capsule network: one capsule per class, its length the class probability."""

    def forward(self, images: Tensor) -> Tensor: ...

    def reconstruct(self, v: Tensor, labels: Tensor | None = None) -> Tensor: ...


@runtime_checkable
class NodeModel(Protocol):
    """Graph network: an output per node, or per graph when it has a readout."""

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor | None = None) -> Tensor: ...


@runtime_checkable
class MoleculeModel(Protocol):
    """Molecule property model: predictions per molecule of a batch of bond graphs."""

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor,
        edge_attr: Tensor,
        batch: Tensor,
        num_graphs: int,
        descriptors: Tensor | None = None,
    ) -> Tensor: ...


@runtime_checkable
class GAN(Protocol):
    """Generator and discriminator: scores for both players' losses; images from noise."""

    def forward(self, real: Tensor, z: Tensor, y: Tensor | None = None) -> GANScores: ...

    def generator(self, z: Tensor, y: Tensor | None = None) -> Tensor: ...


@runtime_checkable
class SequenceModel(Protocol):
    """Causal sequence model: an output per step, and one step at a time from a state.

    The output at t depends on inputs 1..t only (:mod:`archlab.nn.sequence`); a task
    reads every step (language models, music, copy memory), the last real step
    (classification, the adding problem) or pools them.
    """

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor: ...

    def init_state(self, batch: int) -> Any: ...

    def step(self, x_t: Tensor, state: Any = None) -> tuple[Tensor, Any]: ...


@runtime_checkable
class KGEModel(Protocol):
    """Knowledge-graph embedding: a score per (head, relation, tail), larger = more plausible.

    ``forward(h, r, t)`` takes id tensors that broadcast together and returns their
    scores in the broadcast shape; ``h`` or ``t`` None stands for every entity (a last
    axis of all entities, 1-to-all).  ``constrain_`` projects the weights back onto the
    model's constraints (unit-norm entities, unit-modulus relations) after an update.
    """

    num_entities: int
    num_relations: int

    def forward(self, h: Tensor | None, r: Tensor, t: Tensor | None) -> Tensor: ...

    def constrain_(self) -> None: ...


@runtime_checkable
class MultimodalClassifier(Protocol):
    """Classifier of paired inputs (an image and a sound): fused class logits and more.

    ``present`` (B, 2) marks which modality each example has (False: missing, its
    input is zeros); the output's fields are in :class:`archlab.models.fusion.FusionOutput`.
    """

    def forward(
        self,
        image: Tensor,
        audio: Tensor,
        lengths: Tensor | None = None,
        present: Tensor | None = None,
    ) -> FusionOutput: ...


@runtime_checkable
class TokenStates(Protocol):
    """A capability, not a role: the last hidden states (B, T, H) of token ids (B, T)."""

    def hidden_states(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
    ) -> Tensor: ...


ROLES: tuple[type, ...] = (
    LanguageModel,
    Seq2Seq,
    Encoder,
    TextClassifier,
    ImageClassifier,
    CapsuleClassifier,
    NodeModel,
    MoleculeModel,
    GAN,
    SequenceModel,
    KGEModel,
    MultimodalClassifier,
)
