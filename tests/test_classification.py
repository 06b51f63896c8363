"""Sentence classification on real MR: folds, learning beyond chance, predict, --folds."""

import json
import subprocess
import sys

import pytest

from archlab.errors import ConfigError
from archlab.run import load, train, train_repeats
from archlab.tasks.classification import ClassificationData, ClassificationTask

TINY_CNN = [
    "model.embed_dim=32",
    "model.n_filters=16",
    "trainer.max_epochs=2",
    "trainer.eval_every=100",
    "trainer.batch_size=50",
]


def test_folds_partition_the_data_and_keep_test_apart(mr) -> None:
    seen = []
    for fold in (0, 7):
        task = ClassificationTask(ClassificationData(fold=fold))
        task.setup()
        sizes = {k: len(v[0]) for k, v in task.examples.items()}
        assert sum(sizes.values()) == 10662 and sizes["test"] in (1066, 1067)
        seen.append(task.examples["test"][0])
    assert seen[0] != seen[1]


def test_textcnn_beats_chance_and_predicts(mr, tmp_path) -> None:
    run_dir, results = train("cnn-mr", TINY_CNN, out=str(tmp_path / "run"), progress=False)
    assert results["test"]["accuracy"] > 0.6  # chance is 0.5
    run = load(run_dir)
    preds = run.task.predict(run.model, ["a gorgeous , witty , moving film .", "dull and tedious"])
    assert [p["label"] for p in preds] == ["positive", "negative"]
    assert all(0.5 <= p["probability"] <= 1 for p in preds)
    proc = subprocess.run(
        [sys.executable, "-m", "archlab", "predict", str(run_dir), "a wonderful film"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0 and proc.stdout.startswith("positive\t"), proc.stderr
    # a CNN has no token states to pool: it predicts but does not embed
    assert run.verbs == {"predict"}
    proc = subprocess.run(
        [sys.executable, "-m", "archlab", "embed", str(run_dir), "a wonderful film"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2 and proc.stderr.strip().endswith(
        "run of model textcnn, which cannot embed (it can: predict)"
    ), proc.stderr


def test_cross_validation_aggregates_mean_std_and_runs(mr, tmp_path) -> None:
    run_dir, results = train_repeats(
        "cnn-mr",
        [*TINY_CNN, "trainer.max_epochs=1", "data.folds=3"],
        key="data.fold",
        values=[0, 1],
        label="fold",
        out=str(tmp_path / "cv"),
        progress=False,
    )
    runs = results["test"]["accuracy_runs"]
    assert len(runs) == 2 and results["test"]["accuracy"] == pytest.approx(sum(runs) / 2)
    assert results["test"]["accuracy_std"] >= 0
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["test"]["accuracy_runs"] == runs
    assert (run_dir / "fold-1" / "model.safetensors").exists()


def test_bad_fold_is_refused(mr, tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"data.fold must lie in \[0, 10\)"):
        train("cnn-mr", ["data.fold=10"], out=str(tmp_path / "r"), progress=False)
