"""archlab tune: the grid, the choice on validation only, resuming, and mistakes in one sentence."""

import json
from pathlib import Path

import pytest
import yaml

import archlab.run
from archlab.cli import main

# a GRU on the adding problem at T = 10, small enough to train 30 steps in a second or two
TINY_ADDING = [
    "data.T=10",
    "data.n_train=200",
    "data.n_val=100",
    "data.n_test=100",
    "model.name=seq_gru",
    "trainer.max_steps=30",
    "trainer.eval_every=30",
    "trainer.log_every=10",
]


def sets(overrides: list[str]) -> list[str]:
    return [f"--set={s}" for s in overrides]


def test_every_setting_of_the_grid_trains_with_its_values(tmp_path, capsys) -> None:
    out = tmp_path / "tune"
    grid = ["--grid", "trainer.lr=1e-9,1e-2", "--grid", "model.hidden_size=4,8"]
    assert main(["tune", "tcn-adding", *grid, *sets(TINY_ADDING), "--out", str(out)]) == 0
    tune = json.loads((out / "tune.json").read_text())
    names = [s["name"] for s in tune["settings"]]
    assert names == [
        "trainer.lr=1e-9,model.hidden_size=4",
        "trainer.lr=1e-9,model.hidden_size=8",
        "trainer.lr=1e-2,model.hidden_size=4",
        "trainer.lr=1e-2,model.hidden_size=8",
    ]
    for name in names:
        lr, hidden = (part.split("=")[1] for part in name.split(","))
        config = yaml.safe_load((out / name / "seed-0" / "config.yaml").read_text())
        assert config["trainer"]["lr"] == float(lr)
        assert config["model"]["hidden_size"] == int(hidden)
    assert tune["metric"] == "mse" and tune["better"] == "lower"
    assert tune["repeats"] == {"key": "trainer.seed", "values": [0]}
    assert tune["finished"] and tune["wall_seconds"] > 0
    assert tune["command"].startswith("archlab tune tcn-adding --grid trainer.lr=1e-9,1e-2")
    # an lr of 1e-9 does not move the weights: it cannot be chosen over 1e-2
    assert tune["choice"]["name"].startswith("trainer.lr=1e-2,")
    printed = capsys.readouterr().out
    assert f"{tune['choice']['name']}  " in printed and "<- chosen" in printed
    assert "test" not in printed.split("train it with:")[0]  # no test figure is shown


def fake_train(calls: list, val: dict[str, float], test: dict[str, float], metric: str):
    """A stand-in for archlab.run.train: results.json with the given figures per lr."""

    def train(recipe, overrides, *, out=None, resume=None, progress=True):
        calls.append(resume or out)
        run_dir = Path(resume or out)
        run_dir.mkdir(parents=True, exist_ok=True)
        values = dict(o.split("=", 1) for o in overrides)
        (run_dir / "config.yaml").write_text(yaml.safe_dump({"data": {}}))
        which = int(values.get("data.fold", values.get("trainer.seed", 0)))
        lr = values.get("trainer.lr") or json.loads((run_dir / "lr.json").read_text())
        (run_dir / "lr.json").write_text(json.dumps(lr))
        results = {
            "val": {metric: val[lr] + 0.001 * which},
            "test": {metric: test[lr]},
            "train": {"seconds": 1.0},
        }
        (run_dir / "results.json").write_text(json.dumps(results))
        return run_dir, results

    return train


@pytest.mark.parametrize(
    ("recipe", "metric", "val", "chosen"),
    [
        ("cnn-mr", "accuracy", {"1e-4": 0.70, "2e-4": 0.80, "4e-4": 0.75}, "2e-4"),
        ("tcn-adding", "mse", {"1e-4": 0.70, "2e-4": 0.80, "4e-4": 0.75}, "1e-4"),
    ],
)
def test_the_choice_is_the_best_validation_mean_never_the_test(
    recipe, metric, val, chosen, tmp_path, monkeypatch, capsys
) -> None:
    calls = []
    test = {lr: 1.0 - v for lr, v in val.items()}  # the test figures say the opposite
    monkeypatch.setattr(archlab.run, "train", fake_train(calls, val, test, metric))
    repeat = ["--on-folds", "0", "3"] if recipe == "cnn-mr" else ["--seeds", "2"]
    out = tmp_path / "tune"
    assert main(["tune", recipe, "--grid", "trainer.lr=1e-4,2e-4,4e-4", *repeat,
                 "--out", str(out)]) == 0  # fmt: skip
    tune = json.loads((out / "tune.json").read_text())
    assert tune["choice"]["name"] == f"trainer.lr={chosen}"
    assert tune["choice"]["set"] == [f"trainer.lr={chosen}"]
    assert len(calls) == 6
    mine = next(s for s in tune["settings"] if s["name"] == f"trainer.lr={chosen}")
    runs = mine["val"][f"{metric}_runs"]
    assert runs == pytest.approx(
        [val[chosen], val[chosen] + (0.003 if recipe == "cnn-mr" else 0.001)]
    )
    assert "test" not in json.dumps(tune["settings"])
    if recipe == "cnn-mr":
        assert tune["repeats"] == {"key": "data.fold", "values": [0, 3]}
        assert (out / "trainer.lr=2e-4" / "fold-3" / "results.json").is_file()
    printed = capsys.readouterr().out
    assert f"trainer.lr={chosen}" in printed.splitlines()[-2]


def test_a_second_call_trains_only_what_is_not_finished(tmp_path, monkeypatch, capsys) -> None:
    calls = []
    val = {"1e-4": 0.7, "2e-4": 0.8, "4e-4": 0.9}
    train = fake_train(calls, val, val, "accuracy")
    out = tmp_path / "tune"
    args = ["tune", "cnn-mr", "--on-folds", "0", "1", "--out", str(out)]

    def stop_at_2e4_fold_1(recipe, overrides, **kw):
        if "trainer.lr=2e-4" in overrides and "data.fold=1" in overrides:
            Path(kw["out"]).mkdir()
            (Path(kw["out"]) / "config.yaml").write_text("data: {}\n")  # started, not finished
            (Path(kw["out"]) / "lr.json").write_text('"2e-4"')
            raise KeyboardInterrupt
        return train(recipe, overrides, **kw)

    monkeypatch.setattr(archlab.run, "train", stop_at_2e4_fold_1)
    assert main([*args[:2], "--grid", "trainer.lr=1e-4,2e-4", *args[2:]]) == 130
    tune = json.loads((out / "tune.json").read_text())
    assert [s["name"] for s in tune["settings"]] == ["trainer.lr=1e-4"] and not tune["finished"]
    assert not (out / ".lock").exists()
    assert calls == [
        *(str(out / "trainer.lr=1e-4" / f"fold-{k}") for k in (0, 1)),
        str(out / "trainer.lr=2e-4" / "fold-0"),
    ]

    calls.clear()
    monkeypatch.setattr(archlab.run, "train", train)
    assert main([*args[:2], "--grid", "trainer.lr=1e-4,2e-4,4e-4", *args[2:]]) == 0
    assert calls == [
        str(out / "trainer.lr=2e-4" / "fold-1"),  # resumed from where it stopped
        str(out / "trainer.lr=4e-4" / "fold-0"),
        str(out / "trainer.lr=4e-4" / "fold-1"),
    ]
    tune = json.loads((out / "tune.json").read_text())
    assert tune["finished"] and tune["choice"]["name"] == "trainer.lr=4e-4"
    assert len(tune["settings"]) == 3

    calls.clear()
    assert main([*args[:2], "--grid", "trainer.lr=1e-4,2e-4,4e-4", *args[2:]]) == 0
    assert calls == []  # all finished: read back
    assert "finished earlier, read back" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["cnn-mr", "--grid", "trainer.lrr=1e-4,2e-4"],
            "unknown key trainer.lrr; did you mean lr?",
        ),
        (["cnn-mr", "--grid", "trainer.lr="], "--grid 'trainer.lr=' lists no values"),
        (["cnn-mr", "--grid", "trainer.lr=1e-4,,2e-4"], "has an empty value between its commas"),
        (["cnn-mr", "--grid", "trainer.lr=1e-4,1e-4"], "lists a value twice"),
        (["cnn-mr", "--grid", "trainer.lr=1e-4,0.0001"], "lists a value twice"),
        (["cnn-mr", "--grid", "data.dataset=mr,sst2"], "data.dataset cannot be in --grid"),
        (["cnn-mr", "--grid", "data.folds=5,10"], "data.folds cannot be in --grid"),
        (["cnn-mr", "--grid", "data.fold=0,1", "--seeds", "1"], "data.fold cannot be in --grid"),
        (["cnn-mr", "--grid", "task.name=classification"], "task.name cannot be in --grid"),
        (["cnn-mr", "--grid", "trainer.lr=1e-4,fast"], "trainer.lr expects float, got 'fast'"),
        (["cnn-mr", "--grid", "trainer.lr=0.0,1e-4"], "trainer.lr must be finite and above 0"),
        (["cnn-mr", "--grid", "lr=1e-4"], "--grid expects section.key=value"),
        (["cnn-mr"], "give at least one --grid KEY=V1,V2,..."),
        (
            ["cnn-mr", "--grid", "trainer.lr=1e-4", "--grid", "trainer.lr=2e-4"],
            "--grid names trainer.lr twice",
        ),
        (
            ["cnn-mr", "--grid", "trainer.lr=1e-4", "--set", "trainer.lr=2e-4"],
            "trainer.lr is both in --grid and in --set",
        ),
        (
            ["gcn-cora", "--grid", "trainer.lr=1e-2,5e-3", "--on-folds", "0", "1"],
            "the node_classification task has no data.fold, so --on-folds has nothing to vary",
        ),
        (
            ["cnn-mr", "--grid", "trainer.lr=1e-4", "--on-folds", "0", "10"],
            "--on-folds 10: data.fold must lie in [0, 10), got 10",
        ),
        (["cnn-mr", "--grid", "trainer.lr=1e-4", "--on-folds", "1", "1"], "different folds"),
        (
            ["cnn-mr", "--grid", "trainer.lr=1e-4", "--on-folds", "0", "--seeds", "2"],
            "give --on-folds or --seeds, not both",
        ),
        (["cnn-mr", "--grid", "trainer.lr=1e-4", "--seeds", "0"], "--seeds takes a positive"),
        (
            ["cnn-mr", "--grid", "data.fold=0,1", "--on-folds", "2"],
            "data.fold is what --on-folds varies",
        ),
        (["cnn-mr", "--grid", "trainer.seed=0,1"], "trainer.seed cannot be in --grid"),
        (
            ["cnn-mr", "--grid", "trainer.lr=" + "0" * 250 + "1"],
            "would be longer than 255 bytes",
        ),
        (["no-such-recipe", "--grid", "trainer.lr=1e-4"], "unknown recipe 'no-such-recipe'"),
    ],
)
def test_mistakes_exit_2_with_one_sentence(args, message, tmp_path, capsys) -> None:
    out = tmp_path / "tune"
    assert main(["tune", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("archlab: error: ") and message in err, err
    assert "\n" not in err
    assert not out.exists()


def test_a_directory_of_something_else_is_not_taken_over(tmp_path, capsys) -> None:
    out = tmp_path / "tune"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["tune", "cnn-mr", "--grid", "trainer.lr=1e-4", "--out", str(out)]) == 2
    assert "already holds files but no tune.json" in capsys.readouterr().err
    (out / "notes.txt").unlink()
    (out / "tune.json").write_text(json.dumps({"recipe": "cnn-mr", "set": ["data.max_len=32"]}))
    assert main(["tune", "cnn-mr", "--grid", "trainer.lr=1e-4", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds a tune with another set" in err and "\n" not in err


def test_a_setting_whose_training_stops_loses_and_is_not_retried(tmp_path, monkeypatch, capsys):
    from archlab.train import TrainingStopped

    calls = []
    val = {"1e-4": 0.7, "1e-2": 0.9}
    train = fake_train(calls, val, val, "accuracy")

    def diverge_at_1e2(recipe, overrides, **kw):
        if "trainer.lr=1e-2" in overrides:
            calls.append(kw["out"])
            raise TrainingStopped("the loss became nan at step 3")
        return train(recipe, overrides, **kw)

    monkeypatch.setattr(archlab.run, "train", diverge_at_1e2)
    args = ["tune", "cnn-mr", "--grid", "trainer.lr=1e-4,1e-2", "--out", str(tmp_path / "t")]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "trainer.lr=1e-2  stopped: the loss became nan at step 3" in printed
    tune = json.loads((tmp_path / "t" / "tune.json").read_text())
    assert tune["choice"]["name"] == "trainer.lr=1e-4"
    calls.clear()
    assert main(args) == 0
    assert calls == []  # neither the finished nor the stopped setting trains again
    assert "stopped in an earlier call" in capsys.readouterr().err


def test_the_tune_that_docs_recipes_md_gives_for_minilm_mr_is_valid() -> None:
    import shlex

    from archlab.cli import build_parser
    from archlab.tune import check_settings, parse_grid, plan_repeats

    docs = (Path(__file__).parent.parent / "docs/recipes.md").read_text(encoding="utf-8")
    section = docs.split("\n### minilm-mr\n", 1)[1].split("\n### ", 1)[0]
    (line,) = [line for line in section.splitlines() if line.startswith("archlab tune ")]
    args = build_parser().parse_args(shlex.split(line)[1:])
    grid = parse_grid(args.grid, args.set)
    repeats = plan_repeats(args.recipe, args.set, args.on_folds, args.seeds)
    check_settings(args.recipe, args.set, grid, repeats)  # every run resolves
    assert grid == {"trainer.lr": ["5e-5", "1e-4", "2e-4", "4e-4"]}
    assert (repeats.key, repeats.values) == ("data.fold", [0, 1])


def test_a_value_written_another_way_than_in_the_earlier_call_is_refused(
    tmp_path, monkeypatch, capsys
) -> None:
    calls = []
    val = {"1e-4": 0.7, "2e-4": 0.8, "0.0001": 0.7}
    monkeypatch.setattr(archlab.run, "train", fake_train(calls, val, val, "accuracy"))
    out = str(tmp_path / "t")
    assert main(["tune", "cnn-mr", "--grid", "trainer.lr=1e-4,2e-4", "--out", out]) == 0
    calls.clear()
    capsys.readouterr()
    assert main(["tune", "cnn-mr", "--grid", "trainer.lr=0.0001,2e-4", "--out", out]) == 2
    err = capsys.readouterr().err.strip()
    assert "has trainer.lr=1e-4 from an earlier call" in err and "\n" not in err
    assert calls == []  # not trained again under a second name


def test_a_nan_validation_figure_is_never_chosen() -> None:
    from archlab.tune import choose

    nan, ok = ({"name": n, "set": [n], "status": "done", "val": {"accuracy": v}}
               for n, v in (("a", float("nan")), ("b", 0.5)))  # fmt: skip
    for better in ("higher", "lower"):
        assert choose([nan, ok], "accuracy", better)["name"] == "b"
    assert choose([nan], "accuracy", "higher") is None


def test_a_run_read_back_with_a_null_figure_aggregates_to_nan() -> None:
    # results.json writes a non-finite figure as null (archlab.io.to_json); a tune that
    # continues reads it back
    import math

    out = archlab.run.aggregate([{"val": {"mse": None}}, {"val": {"mse": 0.5}}])
    assert math.isnan(out["val"]["mse"]) and out["val"]["mse_runs"][1] == 0.5


def test_a_tune_killed_in_its_first_setting_continues(tmp_path, monkeypatch, capsys) -> None:
    """tune.json is written before anything trains: a tune killed (not interrupted) in its
    first setting is continued by the same command, and a second process is told the
    directory is in use rather than that it is not a tune."""
    calls = []
    val = {"1e-4": 0.7, "2e-4": 0.8}
    train = fake_train(calls, val, val, "accuracy")
    out = tmp_path / "t"

    class Killed(BaseException):  # as SIGKILL: no except or finally of tune's runs
        pass

    def killed(recipe, overrides, **kw):
        assert (out / "tune.json").is_file()
        Path(kw["out"]).mkdir(parents=True)
        (Path(kw["out"]) / "config.yaml").write_text("data: {}\n")
        (Path(kw["out"]) / "lr.json").write_text('"1e-4"')
        raise Killed

    monkeypatch.setattr(archlab.run, "train", killed)
    monkeypatch.setattr("archlab.train.rundir.Claim.release", lambda self: None)
    args = ["tune", "cnn-mr", "--grid", "trainer.lr=1e-4,2e-4", "--out", str(out)]
    with pytest.raises(Killed):
        main(args)
    monkeypatch.undo()
    for lock in out.rglob(".lock"):  # what a killed process leaves is taken over when dead
        lock.unlink()
    monkeypatch.setattr(archlab.run, "train", train)
    assert main(args) == 0
    assert json.loads((out / "tune.json").read_text())["choice"]["name"] == "trainer.lr=2e-4"


def test_a_recipe_edited_since_the_tune_began_is_refused(tmp_path, monkeypatch, capsys) -> None:
    from archlab.config import read_recipe

    calls = []
    val = {"1e-4": 0.7, "2e-4": 0.8}
    monkeypatch.setattr(archlab.run, "train", fake_train(calls, val, val, "accuracy"))
    recipe = tmp_path / "mine.yaml"
    recipe.write_text(yaml.safe_dump(read_recipe("cnn-mr")))
    args = ["tune", str(recipe), "--grid", "trainer.lr=1e-4,2e-4", "--out", str(tmp_path / "t")]
    assert main(args) == 0
    assert main(args) == 0  # unchanged: the finished settings are read back
    capsys.readouterr()
    edited = read_recipe("cnn-mr")
    edited["trainer"]["batch_size"] += 1
    recipe.write_text(yaml.safe_dump(edited))
    calls.clear()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "as it read before an edit" in err and "\n" not in err
    assert calls == []
