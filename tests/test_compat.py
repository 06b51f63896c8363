"""Run directories written before the trainer took over training settings still load.

The fixtures under tests/fixtures/v0-runs were written by archlab at commit 2a1583f
(tiny runs: gcn-karate 20 steps; cnn-mnist and sagan-mnist a few steps on 1,000 and
500 images; the config.yaml and model.json of a one-step bert-mr run).
"""

import ast
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from archlab.cli import main
from archlab.compat import upgrade_config
from archlab.config import read_recipe
from archlab.run import load, resolve, train
from tests.conftest import require_data

V0 = Path(__file__).parent / "fixtures" / "v0-runs"


def copy_run(name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(V0 / name, tmp_path / name))


def test_old_config_keys_move_to_the_trainer() -> None:
    karate = upgrade_config(read_recipe(str(V0 / "gcn-karate/config.yaml")))
    assert "select_by" not in karate["data"] and karate["trainer"]["select_by"] == "loss"
    assert "batch_size" not in karate["trainer"]  # the full-batch task never used it
    sagan = upgrade_config(read_recipe(str(V0 / "sagan/config.yaml")))
    assert "d_lr_scale" not in sagan["data"]
    assert sagan["trainer"]["lr_scales"] == {"discriminator": 4.0}
    bert = upgrade_config(read_recipe(str(V0 / "bert/config.yaml")))
    assert bert["model"]["name"] == "bert_classifier"
    recipe = resolve(bert, run_config=True)
    assert recipe.model_name == "bert_classifier" and recipe.trainer.max_epochs == 4
    assert upgrade_config(karate) == karate  # an upgraded config passes unchanged


def test_an_old_run_evaluates_and_resumes(planetoid, tmp_path, capsys) -> None:
    run_dir = copy_run("gcn-karate", tmp_path)
    recorded = json.loads((run_dir / "results.json").read_text())
    assert main(["eval", str(run_dir), "--split", "test"]) == 0
    assert json.loads(capsys.readouterr().out) == pytest.approx(recorded["test"], abs=1e-6)
    _, results = train(None, ["trainer.max_steps=24"], resume=str(run_dir), progress=False)
    assert results["train"]["steps"] == 24
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["trainer"]["select_by"] == "loss" and "select_by" not in saved["data"]
    state = torch.load(run_dir / "state.pt", weights_only=True)
    assert {"scheduler", "rng"} <= set(state) and set(state["rng"]) >= {"torch", "numpy"}


def test_an_old_gan_run_loads_with_its_fid_classifier(tmp_path) -> None:
    require_data("mnist/t10k-images-idx3-ubyte.gz")
    cnn, sagan = copy_run("cnn", tmp_path), copy_run("sagan", tmp_path)
    config = (sagan / "config.yaml").read_text().replace("/tmp/old/cnn", str(cnn))
    (sagan / "config.yaml").write_text(config)
    run = load(sagan)
    assert run.trainer.lr_scales == {"discriminator": 4.0}
    metrics = run.evaluate("val")
    assert metrics["fid"] > 0 and set(metrics) == {"fid", "d_loss", "g_loss"}


def test_no_module_below_run_imports_run_or_the_cli() -> None:
    """Data flows one way: run.py and cli.py sit on top, with what only they use (the
    benchmarks, the server, claims, tune); nothing below them imports any of these."""
    src = Path(__file__).parent.parent / "src" / "archlab"
    top = {"archlab.run", "archlab.cli", "archlab.__main__", "archlab.claims", "archlab.tune"}
    top_packages = ("archlab.bench", "archlab.serve")

    def on_top(module: str) -> bool:
        return (
            module in top
            or module.startswith(tuple(p + "." for p in top_packages))
            or (module in top_packages)
        )

    offenders = []
    for path in src.rglob("*.py"):
        module = "archlab." + ".".join(path.relative_to(src).with_suffix("").parts)
        module = module.removesuffix(".__init__")
        if on_top(module) or path.name == "__main__.py" or path.parent == src.parent:
            continue
        if module == "archlab":  # archlab.load forwards to run.load, lazily
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            offenders += [f"{module} imports {n}" for n in names if on_top(n)]
    assert not offenders
