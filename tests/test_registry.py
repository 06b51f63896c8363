"""Every registered model: builds by name, runs forward and backward, saves and loads.

A model registered without an entry in ``TINY`` fails here until it gets one, so a
new model is tested the moment it is registered.
"""

import pytest
import torch
from safetensors.torch import load_model, save_model

import archlab
from archlab.errors import ConfigError


def ids(vocab: int, *shape: int) -> torch.Tensor:
    return torch.randint(0, vocab, shape)


def seq() -> torch.Tensor:
    """Real-valued sequence inputs (batch, time, 2)."""
    return torch.randn(2, 9, 2)


EDGES = torch.tensor([[0, 1, 2, 3, 4], [1, 2, 3, 4, 0]])

# name -> (small config overrides, a function making one input batch)
TINY = {
    "gpt": (
        dict(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=16),
        lambda: (ids(50, 2, 16),),
    ),
    "bert": (
        # forward returns hidden states, so heads it does not use are left out
        dict(
            vocab_size=50,
            hidden_size=16,
            n_layer=2,
            n_head=2,
            d_ff=32,
            max_len=16,
            pooler=False,
            mlm_head=False,
        ),
        lambda: (ids(50, 2, 16),),
    ),
    "bert_classifier": (
        dict(vocab_size=50, hidden_size=16, n_layer=2, n_head=2, d_ff=32, max_len=16),
        lambda: (ids(50, 2, 16),),
    ),
    "gpt_classifier": (
        dict(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=16),
        lambda: (ids(50, 2, 16),),
    ),
    "lstm": (dict(vocab_size=50, embed_dim=8, hidden_size=6), lambda: (ids(50, 2, 7),)),
    "gru": (dict(vocab_size=50, embed_dim=8, hidden_size=6, n_layer=2), lambda: (ids(50, 2, 7),)),
    "transformer_classifier": (
        dict(vocab_size=50, d_model=16, n_head=2, n_layer=1, d_ff=32, max_len=16),
        lambda: (ids(50, 2, 9),),
    ),
    "gcn": (dict(in_dim=4, hidden_dim=8, out_dim=3), lambda: (torch.randn(5, 4), EDGES)),
    "gat": (
        dict(in_dim=4, hidden_dim=2, heads=2, out_dim=3, out_heads=2),
        lambda: (torch.randn(5, 4), EDGES),
    ),
    "mpnn": (
        dict(atom_dim=4, bond_dim=3, hidden=8, depth=2, ffn_hidden=8),
        # two molecules (atoms 0-2 and 3-4), each bond in both directions
        lambda: (
            torch.randn(5, 4),
            torch.tensor([[0, 1, 1, 2, 3, 4], [1, 0, 2, 1, 4, 3]]),
            torch.randn(6, 3),
            torch.tensor([0, 0, 0, 1, 1]),
            2,
        ),
    ),
    "mpnn_ensemble": (
        dict(atom_dim=4, bond_dim=3, hidden=8, depth=2, ffn_hidden=8, members=3),
        lambda: (
            torch.randn(5, 4),
            torch.tensor([[0, 1, 1, 2, 3, 4], [1, 0, 2, 1, 4, 3]]),
            torch.randn(6, 3),
            torch.tensor([0, 0, 0, 1, 1]),
            2,
        ),
    ),
    "textcnn": (
        dict(vocab_size=50, embed_dim=8, filter_sizes=[2, 3], n_filters=4),
        lambda: (ids(50, 2, 7),),
    ),
    "cnn": (dict(channels=[4, 8], hidden=[16]), lambda: (torch.rand(2, 1, 28, 28),)),
    # a GAN's forward gives D's scores on (real images, noise[, labels]) for L_D and L_G
    "dcgan": (
        dict(z_dim=8, ngf=4, ndf=4),
        lambda: (torch.rand(2, 1, 28, 28) * 2 - 1, torch.randn(2, 8)),
    ),
    "cgan": (
        dict(z_dim=8, ngf=4, ndf=4),
        lambda: (torch.rand(2, 1, 28, 28) * 2 - 1, torch.randn(2, 8), torch.tensor([3, 7])),
    ),
    "sagan": (
        dict(z_dim=8, ngf=8, ndf=8),
        lambda: (torch.rand(2, 1, 28, 28) * 2 - 1, torch.randn(2, 8)),
    ),
    "capsnet": (
        # forward returns the digit capsules, so the decoder (used by the loss) is left out
        dict(conv1_channels=8, primary_caps=2, primary_dim=4, digit_dim=4, reconstruction_scale=0),
        lambda: (torch.rand(2, 1, 28, 28),),
    ),
    "tcn": (dict(in_dim=2, channels=[4, 6], kernel_size=3, out_dim=3), lambda: (seq(),)),
    "seq_lstm": (dict(in_dim=2, hidden_size=6, out_dim=3), lambda: (seq(),)),
    "seq_gru": (dict(in_dim=2, hidden_size=6, n_layer=2, out_dim=3), lambda: (seq(),)),
    "seq_transformer": (
        dict(in_dim=2, n_embd=8, n_head=2, n_layer=1, max_len=16, out_dim=3),
        lambda: (seq(),),
    ),
    # knowledge-graph embeddings score (h, r, t) id triples; h or t None: every entity
    **{
        name: (
            dict(num_entities=9, num_relations=3, dim=4),
            lambda: (torch.tensor([0, 8]), torch.tensor([2, 1]), torch.tensor([3, 3])),
        )
        for name in ("transe", "distmult", "complex", "rotate")
    },
    # an image and log-mel frames (with lengths); cross-attention reads every encoder's tokens
    "fusion": (
        dict(
            fusion="xattn",
            image={"channels": [2, 4], "hidden": [8]},
            audio_encoder="tcn",
            audio={"channels": [4, 4], "kernel_size": 3},
            n_mels=8,
            hidden=8,
            n_head=2,
        ),
        lambda: (torch.rand(2, 1, 28, 28), torch.randn(2, 9, 8), torch.tensor([9, 5])),
    ),
    "transformer": (
        dict(
            src_vocab_size=40,
            tgt_vocab_size=30,
            d_model=16,
            n_head=2,
            n_encoder_layers=1,
            n_decoder_layers=1,
            d_ff=32,
            max_len=16,
        ),
        lambda: (ids(40, 2, 9), ids(30, 2, 7)),
    ),
}


def test_every_registered_model_has_a_tiny_config() -> None:
    assert set(archlab.list_models()) == set(TINY)


@pytest.mark.parametrize("name", sorted(TINY))
def test_forward_backward_save_load(name: str, tmp_path) -> None:
    overrides, make_input = TINY[name]
    model = archlab.create_model(name, **overrides)
    inputs = make_input()
    out = torch.cat([o.flatten() for o in outputs(model(*inputs))])
    assert torch.isfinite(out).all()
    out.float().pow(2).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads), "every parameter gets a gradient"

    save_model(model, str(tmp_path / "model.safetensors"))
    torch.manual_seed(123)
    again = archlab.create_model(name, **overrides)
    load_model(again, str(tmp_path / "model.safetensors"))
    model.eval(), again.eval()
    for a, b in zip(outputs(again(*inputs)), outputs(model(*inputs)), strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def outputs(out: torch.Tensor | tuple) -> tuple[torch.Tensor, ...]:
    """A forward's float output tensors: one, or the fields of a named tuple (GAN scores,
    fusion outputs, whose mask of present modalities and absent gate are left out)."""
    fields = tuple(out) if isinstance(out, tuple) else (out,)
    return tuple(f for f in fields if f is not None and f.is_floating_point())


@pytest.mark.parametrize("name", sorted(TINY))
def test_every_model_names_a_role_it_fills(name: str) -> None:
    """The role says what forward returns; the model has the role's methods."""
    from archlab.models import roles
    from archlab.registry import model_entry

    model = archlab.create_model(name, **TINY[name][0])
    assert model.role in roles.ROLES and model_entry(name).role is model.role
    assert isinstance(model, model.role), f"{name} lacks a method of {model.role.__name__}"


def test_a_task_refuses_a_model_of_another_role() -> None:
    from archlab.config import read_recipe
    from archlab.run import resolve

    recipe = read_recipe("cnn-mr")
    recipe["model"] = {"name": "gpt"}
    with pytest.raises(
        ConfigError,
        match="classification task trains a TextClassifier.*model"
        " gpt is a LanguageModel; models that fit: bert_classifier",
    ):
        resolve(recipe)


def test_unknown_names_get_suggestions() -> None:
    with pytest.raises(ConfigError, match="unknown model 'gtp'; did you mean gpt"):
        archlab.create_model("gtp")
    with pytest.raises(ConfigError, match="unknown key gpt.n_layers; did you mean n_layer"):
        archlab.create_model("gpt", n_layers=2)
