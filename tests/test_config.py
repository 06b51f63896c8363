"""Recipes and --set overrides: every key checked, every value typed."""

from dataclasses import dataclass

import pytest

from archlab.config import apply_overrides, list_recipes, read_recipe, to_dataclass
from archlab.errors import ConfigError
from archlab.run import resolve


@dataclass
class Example:
    steps: int = 1
    lr: float = 0.1
    flag: bool = False
    name: str = "x"
    limit: int | None = None


def typed(*overrides: str) -> Example:
    raw = apply_overrides({"task": {}, "data": {}, "model": {}, "trainer": {}}, list(overrides))
    return to_dataclass(Example, raw["trainer"], "trainer")


def test_values_from_the_command_line_take_their_field_types() -> None:
    got = typed("trainer.steps=4e2", "trainer.lr=1e-3", "trainer.flag=true", "trainer.limit=7")
    assert got == Example(steps=400, lr=0.001, flag=True, name="x", limit=7)
    assert typed("trainer.limit=none").limit is None
    assert typed("trainer.name=12").name == "12"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.steps=abc", "trainer.steps expects int, got 'abc'"),
        ("trainer.steps=2.5", "trainer.steps expects int, got '2.5'"),
        ("trainer.flag=maybe", "trainer.flag expects bool"),
        ("trainer.stpes=3", "unknown key trainer.stpes; did you mean steps?"),
        ("trainer.steps", "--set expects section.key=value"),
        ("optim.lr=1", "the section must be one of task, data, model, trainer"),
    ],
)
def test_bad_overrides_name_the_key_and_the_expected_type(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("?", r"\?")):
        typed(override)


def test_every_shipped_recipe_resolves() -> None:
    assert "gpt-shakespeare-char" in list_recipes()
    for name in list_recipes():
        recipe = resolve(read_recipe(name))
        lengths = (recipe.trainer.max_steps, recipe.trainer.max_epochs)
        assert any(n is not None and n >= 1 for n in lengths), name


def test_model_keys_are_checked_against_the_model_config() -> None:
    raw = apply_overrides(read_recipe("gpt-shakespeare-char"), ["model.n_layers=2"])
    with pytest.raises(ConfigError, match="unknown key model.n_layers; did you mean n_layer"):
        resolve(raw)


def test_unknown_recipe_and_bad_yaml(tmp_path) -> None:
    with pytest.raises(ConfigError, match="unknown recipe 'gpt-shakespeare'; did you mean"):
        read_recipe("gpt-shakespeare")
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: [unclosed")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        read_recipe(str(bad))
    bad.write_text("tasks: {}")
    with pytest.raises(ConfigError, match="unknown sections"):
        read_recipe(str(bad))
