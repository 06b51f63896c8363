"""The command line as a user runs it: help, listing, errors with exit code 2."""

import json
import os
import sys

import pytest

from archlab.cli import main
from archlab.config import RECIPE_DIR
from tests.conftest import cli


def test_list_models_prints_every_model_with_its_size(capsys) -> None:
    from archlab import list_models

    assert main(["list", "models"]) == 0
    out = capsys.readouterr().out
    for name in list_models():
        assert f"\n{name} " in out
    assert "124,439,808" in out  # GPT-2 small at its default config


def test_python_dash_m_runs_the_cli() -> None:
    proc = cli("list")
    assert proc.returncode == 0, proc.stderr
    assert "gpt" in proc.stdout


@pytest.mark.parametrize("command", [[], ["list"], ["bench"]])
def test_every_command_has_help(command, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*command, "--help"])
    assert exc.value.code == 0
    assert "usage: archlab" in capsys.readouterr().out


def test_unknown_benchmark_is_one_clear_sentence(capsys) -> None:
    assert main(["bench", "gtp"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("archlab: error: unknown benchmark 'gtp'; did you mean gpt?")
    assert "\n" not in err


def test_bench_gpt_quick_prints_ratios(tmp_path, capsys) -> None:
    pytest.importorskip("transformers", reason="the benchmark compares against transformers")
    out_file = tmp_path / "bench.json"
    assert main(["bench", "gpt", "--quick", "--out", str(out_file)]) == 0
    out = capsys.readouterr().out
    assert "train tokens/s" in out and "generate tokens/s" in out
    assert "greedy tokens identical to Hugging Face: True" in out
    assert out_file.exists()


def test_train_eval_generate_end_to_end(shakespeare, tmp_path) -> None:
    from tests.conftest import TINY_GPT

    run_dir = tmp_path / "run"
    sets = [f"--set={s}" for s in [*TINY_GPT, "trainer.max_steps=6", "trainer.eval_every=3"]]
    proc = cli("train", "gpt-shakespeare-char", *sets, "--out", str(run_dir))
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert results["val"]["loss"] < 4.3

    proc = cli("eval", str(run_dir))
    assert proc.returncode == 0 and json.loads(proc.stdout) == results["val"]

    proc = cli(
        "generate", str(run_dir), "--prompt", "KING", "--max-new-tokens", "12", "--seed", "1"
    )
    assert proc.returncode == 0 and proc.stdout.startswith("KING") and len(proc.stdout) == 17


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "no-such-recipe"], "unknown recipe 'no-such-recipe'"),
        (["train", "gpt-shakespeare-char", "--set", "trainer.lr=fast"], "trainer.lr expects float"),
        (["train", "gpt-shakespeare-char", "--device", "cuda"], "no GPU is available"),
        (["train", "--resume", "/nonexistent/run"], "/nonexistent/run is not a directory"),
        (["train", "--resume", "runs/a", "--out", "runs/b"], "give it without --out"),
        (["eval", "/nonexistent/run"], "is not a directory"),
        (["train"], "give either a RECIPE to train or --resume RUN_DIR"),
        (["train", "gpt-shakespeare-char", "--splits", "2"], "has no data.split_seed"),
        (["train", "gnn-esol", "--splits", "2", "--seeds", "2"], "--splits N takes a positive"),
    ],
)
def test_user_mistakes_exit_2_with_one_sentence(args, message) -> None:
    proc = cli(*args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_resuming_a_repeated_training_refuses_what_would_change_it(tmp_path, capsys) -> None:
    """A --seeds run continues as it began (repeats.json), from its own recipe; one from
    before repeats.json says which of its runs can resume."""
    group = tmp_path / "seeds"
    group.mkdir()
    spec = {"recipe": "gcn-cora", "overrides": [], "key": "trainer.seed", "label": "seed"}
    (group / "repeats.json").write_text(json.dumps({**spec, "values": [0, 1]}))
    (group / "recipe.yaml").write_text((RECIPE_DIR / "gcn-cora.yaml").read_text())
    old = tmp_path / "old"
    (old / "seed-0").mkdir(parents=True)
    (old / "seed-0/config.yaml").write_text("task: {}\n")
    for args, message in [
        (["--resume", str(group), "--set", "trainer.lr=1"], "continues as it began: give"),
        (["gat-cora", "--resume", str(group)], "was not trained from the recipe gat-cora"),
        (["gcn-cora", "--seeds", "2", "--resume", str(group)], "continues with --resume RUN_DIR"),
        (["--resume", str(old)], "holds the runs seed-0 of a repeated training that did not"),
    ]:
        assert main(["train", *args]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in group.iterdir()) == ["recipe.yaml", "repeats.json"]


def test_ctrl_c_names_the_resume_command_or_says_nothing_was_saved(
    tmp_path, monkeypatch, capsys
) -> None:
    import archlab.run

    def stopped_after_config(recipe_name, overrides, run_dir, **kwargs):
        (run_dir / "config.yaml").write_text("task: {}\n")
        raise KeyboardInterrupt

    def stopped_before_config(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(archlab.run, "_train", stopped_after_config)
    assert main(["train", "gcn-karate", "--out", str(tmp_path / "a")]) == 130
    resume = f"continue it with `archlab train --resume {tmp_path / 'a'}`"
    assert resume in capsys.readouterr().err
    monkeypatch.setattr(archlab.run, "_train", stopped_before_config)
    assert main(["train", "gcn-karate", "--out", str(tmp_path / "b")]) == 130
    assert "interrupted before the run saved anything" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
    # a repeated training names its own directory, not the run under way
    assert main(["train", "gcn-karate", "--seeds", "2", "--out", str(tmp_path / "c")]) == 130
    assert "interrupted before the run saved anything" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()  # no run began: not even repeats.json stays
    monkeypatch.setattr(archlab.run, "_train", stopped_after_config)
    assert main(["train", "gcn-karate", "--seeds", "2", "--out", str(tmp_path / "d")]) == 130
    assert f"`archlab train --resume {tmp_path / 'd'}`" in capsys.readouterr().err


def test_a_repeated_training_with_a_bad_setting_leaves_no_directory(tmp_path, capsys) -> None:
    out = tmp_path / "bad"
    args = ["train", "gcn-karate", "--seeds", "2", "--out", str(out)]
    assert main([*args, "--set", "trainer.max_stepz=3"]) == 2
    assert "max_stepz" in capsys.readouterr().err
    assert not out.exists()  # the corrected command starts afresh


def test_bad_prompts_exit_2(shakespeare, tmp_path) -> None:
    from archlab.run import train
    from tests.conftest import TINY_GPT

    run_dir, _ = train(
        "gpt-shakespeare-char",
        [*TINY_GPT, "trainer.max_steps=1"],
        out=str(tmp_path / "r"),
        progress=False,
    )
    for prompt, message in [
        ("", "the prompt is empty"),
        ("€uro", "outside the model's vocabulary"),
    ]:
        proc = cli("generate", str(run_dir), "--prompt", prompt)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_splits_trains_once_per_split_seed_from_the_recipes(tmp_path, capsys) -> None:
    from tests.conftest import require_data

    require_data("molecules/delaney-processed.csv")
    tiny = ["model.hidden=16", "model.ffn_hidden=16", "model.depth=1", "trainer.max_epochs=1"]
    sets = [f"--set={s}" for s in [*tiny, "data.split_seed=4", "trainer.warmup_steps=2"]]
    out = tmp_path / "splits"
    assert main(["train", "gnn-esol", *sets, "--splits", "2", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    results = json.loads((out / "results.json").read_text())
    assert results["repeats"] == {"key": "data.split_seed", "values": [4, 5], "split_seeds": [4, 5]}
    assert printed["test"]["rmse"] == results["test"]["rmse"]
    for seed in (4, 5):
        config = (out / f"split-{seed}" / "config.yaml").read_text()
        assert f"split_seed: {seed}\n" in config
    first, second = results["test"]["rmse_runs"]
    assert first != second  # different test molecules


def test_a_reader_that_leaves_stops_the_output_quietly(monkeypatch) -> None:
    """`archlab claims | head`: the rest of the output has nowhere to go, and no traceback;
    a pipe broken elsewhere is still an error."""
    read, write = os.pipe()
    os.close(read)  # the reader has exited
    closed = open(write, "w", buffering=1)  # noqa: SIM115 - main takes its descriptor over
    monkeypatch.setattr(sys, "stdout", closed)
    assert main(["claims", "all", "--dry-run"]) == 141
    read, write = os.pipe()  # a reader still there: the broken pipe is another one
    monkeypatch.setattr(sys, "stdout", open(write, "w"))  # noqa: SIM115

    def broken(args) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr("archlab.cli.cmd_claims", broken)
    with pytest.raises(BrokenPipeError):
        main(["claims"])
    os.close(read)
