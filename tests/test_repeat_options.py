"""--folds and --splits on a task without folds or splits: what it has instead, in one sentence."""

import pytest

from tests.conftest import cli


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["gcn-cora", "--folds", "3"],
            "the node_classification task has no data.folds, so --folds has nothing to vary; "
            "repeat it over seeds with --seeds N",
        ),
        (
            ["gpt-shakespeare-char", "--splits", "2"],
            "the char_lm task has no data.split_seed, so --splits has nothing to vary; "
            "repeat it over seeds with --seeds N",
        ),
        (
            ["dcgan-mnist", "--folds", "2"],
            "the image_generation task has no data.folds, so --folds has nothing to vary; "
            "repeat it over seeds with --seeds N or over data splits with --splits N",
        ),
        (
            ["cnn-mr", "--splits", "2"],
            "the classification task has no data.split_seed, so --splits has nothing to vary; "
            "repeat it over seeds with --seeds N or over folds with --folds N",
        ),
    ],
)
def test_a_repeat_the_task_cannot_vary_names_what_it_can(args, message, tmp_path) -> None:
    proc = cli("train", *args, "--out", str(tmp_path / "run"))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == f"archlab: error: {message}"
    assert "unknown key" not in proc.stderr
    assert not (tmp_path / "run").exists()
