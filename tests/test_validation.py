"""Every setting is checked when its config is built: ranges, rules between fields, and the
model keys a task derives from its data; a run that failed before its first checkpoint
can be resumed."""

import dataclasses
import json
import math
import types
import typing

import pytest

import archlab
from archlab.cli import main
from archlab.config import (
    AtLeast,
    Config,
    Interval,
    OneOf,
    Rule,
    apply_overrides,
    field_types,
    list_recipes,
    read_recipe,
)
from archlab.data.mnist import MNISTSplitData
from archlab.errors import ConfigError
from archlab.models import GPTConfig
from archlab.models.transformer import LayerStackConfig
from archlab.registry import list_models, model_entry
from archlab.run import resolve, train
from archlab.tasks import get_task, list_tasks
from archlab.tasks.char_lm import CharLMTask
from archlab.train import TrainerConfig
from tests.conftest import TINY_GPT

CONFIGS = sorted(
    {model_entry(name).config_cls for name in list_models()}
    | {get_task(name).DataConfig for name in list_tasks()}
    | {TrainerConfig, LayerStackConfig, MNISTSplitData},
    key=lambda cls: cls.__name__,
)
SHAKESPEARE = "gpt-shakespeare-char"
REQUIRED = {TrainerConfig: {"max_steps": 1}}  # what a config needs besides the field tested


def leaves(tp, declared=False):
    """(type, whether a Rule covers it) for each plain type inside annotation ``tp``."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        base, *meta = typing.get_args(tp)
        yield from leaves(base, declared or any(isinstance(m, Rule) for m in meta))
    elif origin in (typing.Union, types.UnionType, list, dict):
        for arg in typing.get_args(tp):
            yield from leaves(arg, declared)
    else:
        yield tp, declared


def bad_values(tp):
    """Values of annotation ``tp`` that its rules refuse."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        out = []
        for rule in args[1:]:
            if isinstance(rule, AtLeast):
                out.append(rule.low - 1)
            elif isinstance(rule, Interval):
                out += [math.nan, rule.low - 1.0] + ([math.inf] if rule.high_open else [])
            elif isinstance(rule, OneOf):
                out.append(-1 if isinstance(rule.choices[0], int) else "no-such-choice")
        return out
    if origin in (typing.Union, types.UnionType):
        return [v for arg in args if arg is not type(None) for v in bad_values(arg)]
    if origin is list:
        return [[v] for v in bad_values(args[0])]
    if origin is dict:
        return [{"x": v} for v in bad_values(args[1])]
    return []


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda cls: cls.__name__)
def test_every_number_field_declares_its_range(cls) -> None:
    assert issubclass(cls, Config) and dataclasses.is_dataclass(cls)
    for name, tp in field_types(cls).items():
        for leaf, declared in leaves(tp):
            if leaf in (int, float):
                assert declared, f"{cls.__name__}.{name} ({tp}) declares no range"


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda cls: cls.__name__)
def test_every_declared_range_is_checked(cls) -> None:
    cls(**REQUIRED.get(cls, {}))  # the defaults are valid
    for name, tp in field_types(cls).items():
        for bad in bad_values(tp):
            with pytest.raises(ConfigError) as caught:
                cls(**{**REQUIRED.get(cls, {}), name: bad})
            message = str(caught.value)
            assert message.startswith(f"{cls.section}.{name}") and "\n" not in message, message


@pytest.mark.parametrize(
    ("name", "settings", "message"),
    [
        ("gpt", {"n_embd": 0}, "gpt.n_embd must be at least 1, got 0"),
        ("gpt", {"n_head": 0}, "gpt.n_head must be at least 1, got 0"),
        ("gpt", {"n_layer": 0}, "gpt.n_layer must be at least 1, got 0"),
        ("gpt", {"block_size": 0}, "gpt.block_size must be at least 1, got 0"),
        ("gpt", {"vocab_size": 0}, "gpt.vocab_size must be at least 1, got 0"),
        ("gpt", {"dropout": 1}, "gpt.dropout must lie in [0, 1), got 1.0"),
        ("gpt", {"dropout": 2}, "gpt.dropout must lie in [0, 1), got 2.0"),
        ("gpt", {"attn_dropout": math.nan}, "gpt.attn_dropout must lie in [0, 1), got nan"),
        ("gpt", {"n_embd": 30, "n_head": 4}, "gpt.n_embd (30) must be divisible by gpt.n_head (4)"),
        ("gpt", {"d_ff": 0}, "gpt.d_ff must be null or at least 1, got 0"),
        ("gpt", {"position": "alibi"}, "gpt.position must be one of 'learned', 'rotary', got"),
        (
            "gpt",
            {"position": "rotary", "n_embd": 12, "n_head": 4},
            "rotary positions need an even head",
        ),
        ("bert", {"hidden_size": 30, "n_head": 4}, "bert.hidden_size (30) must be divisible"),
        ("bert", {"pad_id": 30522}, "bert.pad_id must lie in [0, bert.vocab_size)"),
        ("transformer", {"d_model": 30, "n_head": 4}, "transformer.d_model (30) must be divisible"),
        ("transformer", {"eps": 0.0}, "transformer.eps must be finite and above 0, got 0.0"),
        ("transformer", {"eos_id": 32000}, "transformer.eos_id must lie in [0, transformer.src"),
        ("transformer_classifier", {"n_layer": 0}, "transformer_classifier.n_layer must be at"),
        ("cnn", {"dropout": 2}, "cnn.dropout must lie in [0, 1), got 2.0"),
        ("cnn", {"channels": []}, "cnn.channels must hold at least one width"),
        ("textcnn", {"filter_sizes": [3, 0]}, "textcnn.filter_sizes[1] must be at least 1, got 0"),
        ("textcnn", {"max_norm": math.inf}, "textcnn.max_norm must be null or finite and above 0"),
        ("lstm", {"pad_id": 20000}, "lstm.pad_id must lie in [0, lstm.vocab_size) = [0, 20000)"),
        ("gru", {"hidden_size": 0}, "gru.hidden_size must be at least 1, got 0"),
        ("gat", {"heads": 0}, "gat.heads must be at least 1, got 0"),
        ("gat", {"negative_slope": -0.2}, "gat.negative_slope must be finite and at least 0"),
        ("gcn", {"readout": "median"}, "gcn.readout must be null or one of 'sum', 'mean'"),
        ("mpnn", {"depth": -1}, "mpnn.depth must be at least 0, got -1"),
        ("mpnn_ensemble", {"members": 0}, "mpnn_ensemble.members must be at least 1, got 0"),
        ("capsnet", {"m_plus": 1.5}, "capsnet.m_plus must lie in [0, 1], got 1.5"),
        ("capsnet", {"routing_iters": 0}, "capsnet.routing_iters must be at least 1, got 0"),
        ("dcgan", {"image_size": 30}, "dcgan.image_size must be a multiple of 4, got 30"),
        ("dcgan", {"z_dim": 0}, "dcgan.z_dim must be at least 1, got 0"),
    ],
)
def test_create_model_refuses_a_bad_setting(name, settings, message) -> None:
    with pytest.raises(ConfigError) as caught:
        archlab.create_model(name, **settings)
    assert str(caught.value).startswith(message), str(caught.value)


def test_a_config_built_directly_names_its_section() -> None:
    with pytest.raises(ConfigError, match=r"^model\.n_layer must be at least 1, got 0$"):
        GPTConfig(n_layer=0)
    with pytest.raises(ConfigError, match=r"^trainer\.lr must be finite and above 0, got -1$"):
        TrainerConfig(max_steps=1, lr=-1)
    with pytest.raises(ConfigError, match=r"^model\.n_head must be an integer, got '4'$"):
        GPTConfig(n_head="4")


@pytest.mark.parametrize(
    ("recipe", "override", "message"),
    [
        (SHAKESPEARE, "model.n_head=0", "model.n_head must be at least 1, got 0"),
        (SHAKESPEARE, "model.n_embd=0", "model.n_embd must be at least 1, got 0"),
        (SHAKESPEARE, "model.n_layer=0", "model.n_layer must be at least 1, got 0"),
        (SHAKESPEARE, "model.dropout=1", "model.dropout must lie in [0, 1), got 1.0"),
        (SHAKESPEARE, "model.dropout=2", "model.dropout must lie in [0, 1), got 2.0"),
        (
            SHAKESPEARE,
            "model.n_embd=30",
            "model.n_embd (30) must be divisible by model.n_head (4)",
        ),
        (SHAKESPEARE, "trainer.lr=-1", "trainer.lr must be finite and above 0, got -1.0"),
        (SHAKESPEARE, "trainer.lr=nan", "trainer.lr must be finite and above 0, got nan"),
        (SHAKESPEARE, "trainer.lr=inf", "trainer.lr must be finite and above 0, got inf"),
        (SHAKESPEARE, "trainer.lr=0", "trainer.lr must be finite and above 0, got 0.0"),
        (SHAKESPEARE, "trainer.max_steps=0", "trainer.max_steps must be null or at"),
        (SHAKESPEARE, "trainer.beta2=1", "trainer.beta2 must lie in [0, 1), got 1.0"),
        (SHAKESPEARE, "trainer.grad_clip=-1", "trainer.grad_clip must be finite and"),
        (SHAKESPEARE, "data.block_size=0", "data.block_size must be at least 1, got 0"),
        (SHAKESPEARE, "data.val_fraction=1", "data.val_fraction must lie in (0, 1)"),
        (
            SHAKESPEARE,
            "model.block_size=32",
            "model.block_size comes from data.block_size in the char_lm task; set "
            "data.block_size instead of model.block_size",
        ),
        (
            SHAKESPEARE,
            "model.vocab_size=10",
            "model.vocab_size comes from the data in the char_lm task (the characters of the "
            "training text); remove it",
        ),
        ("sagan-mnist", "trainer.lr_scales={discriminator: 0}", "trainer.lr_scales.discriminator"),
        ("cnn-mnist", "data.canvas=30", "data.canvas must be one of 28, 40, got 30"),
        ("cnn-mnist", "data.val_size=60000", "data.val_size must lie in (0, 60000), got 60000"),
        ("cnn-mnist", "model.input_size=40", "set data.canvas instead of model.input_size"),
        ("cnn-mr", "data.fold=10", "data.fold must lie in [0, 10), got 10"),
        ("cnn-mr", "model.num_classes=3", "model.num_classes comes from the data"),
        ("gcn-cora", "model.in_dim=5", "model.in_dim comes from the data"),
        ("gcn-cora", "data.dataset=corra", "data.dataset must be one of 'cora', 'citeseer'"),
        ("gnn-esol", "model.descriptor_dim=3", "set data.descriptors instead"),
        ("gnn-esol", "data.sizes=[0.5, 0.6, 0.1]", "data.sizes must be three positive fractions"),
        ("transformer-multi30k", "model.max_len=50", "set data.max_len instead of model.max_len"),
        ("transformer-multi30k", "data.label_smoothing=1", "data.label_smoothing must lie in"),
        ("dcgan-mnist", "model.image_size=32", "model.image_size comes from the data"),
        ("dcgan-mnist", "data.fid_samples=1", "data.fid_samples must be at least 2, got 1"),
    ],
)
def test_a_bad_setting_is_one_sentence_and_exit_2_before_any_file(
    tmp_path, capsys, recipe, override, message
) -> None:
    out = tmp_path / "run"
    assert main(["train", recipe, "--set", override, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("archlab: error: ") and err.count("\n") == 1, err
    assert message in err, err
    assert not out.exists()


@pytest.mark.parametrize("recipe_name", list_recipes())
def test_keys_the_data_decides_are_refused_when_set(recipe_name) -> None:
    recipe = read_recipe(recipe_name)
    task = get_task(recipe["task"]["name"])
    assert not set(recipe["model"]) & set(task.derived_model_keys), "the task sets them"
    default = model_entry(recipe["model"]["name"]).make_config()
    for key in [k for k in task.derived_model_keys if hasattr(default, k)]:
        value = getattr(default, key)
        given = apply_overrides(recipe, [f"model.{key}={value}"])
        in_file = {**recipe, "model": {**recipe["model"], key: value}}
        for raw in (given, in_file):
            with pytest.raises(ConfigError, match=f"^model.{key} comes from "):
                resolve(raw)
        # a run's config.yaml holds them, as the task set them; --set still may not change them
        resolve(in_file, run_config=True)
        with pytest.raises(ConfigError, match=f"^model.{key} comes from "):
            resolve(apply_overrides(in_file, [f"model.{key}={value}"]), run_config=True)


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_run_that_failed_before_its_first_checkpoint_resumes_afresh(
    shakespeare, tmp_path, monkeypatch, capsys
) -> None:
    overrides = [*TINY_GPT, "trainer.max_steps=4"]
    original = CharLMTask.train_batch

    def fail_at_step_2(self, step, batch_size, seed):
        if step == 2:
            raise RuntimeError("the disk is full")
        return original(self, step, batch_size, seed)

    monkeypatch.setattr(CharLMTask, "train_batch", fail_at_step_2)
    failed = tmp_path / "failed"
    with pytest.raises(RuntimeError, match="the disk is full"):
        train(SHAKESPEARE, overrides, out=str(failed), progress=False)
    monkeypatch.setattr(CharLMTask, "train_batch", original)
    assert (failed / "config.yaml").exists() and not (failed / "state.pt").exists()
    assert [r["step"] for r in records(failed)] == [1, 2]
    with pytest.raises(ConfigError, match="already holds files"):
        train(SHAKESPEARE, overrides, out=str(failed), progress=False)
    capsys.readouterr()

    _, results = train(None, [], resume=str(failed), progress=False)
    assert "has no checkpoint yet, so it trains afresh" in capsys.readouterr().err
    _, fresh = train(SHAKESPEARE, overrides, out=str(tmp_path / "b"), progress=False)
    assert results["val"] == fresh["val"]
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in records(failed)]
    assert [r["step"] for r in strip] == [r["step"] for r in records(tmp_path / "b")]
    assert [r["loss"] for r in strip] == [r["loss"] for r in records(tmp_path / "b")]
