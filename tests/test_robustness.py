"""Runs that meet the world: two processes on one directory, signals mid-step, divergence.

- A run directory is held by one process at a time (``RUN_DIR/.lock``); default names
  never collide; a lock left by a killed process is taken over.
- Ctrl-C or SIGTERM anywhere in a step saves a consistent checkpoint at the step's end,
  and the resumed run is bit for bit the uninterrupted one.
- A non-finite loss keeps a resumable state, and every JSON archlab writes is strict.
"""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch.optim.optimizer import register_optimizer_step_post_hook

from archlab.cli import main
from archlab.io import to_json
from archlab.run import train
from archlab.tasks.char_lm import CharLMTask
from archlab.train import TrainingStopped, rundir
from archlab.train import checkpoint as ckpt
from archlab.train.logging import MetricsLog
from tests.conftest import TINY_GPT, require_data


def strict_loads(text: str):
    """``json.loads`` that refuses NaN and Infinity, as most JSON parsers do."""

    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def records(run_dir) -> list[dict]:
    return [strict_loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def popen(*args: str, cwd=None) -> subprocess.Popen:
    """``python -m archlab ARGS``, started and left running."""
    return subprocess.Popen(
        [sys.executable, "-m", "archlab", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
    )


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=600)
    return proc.returncode, out, err


def dead_pid() -> int:
    """The PID of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ----- 1. one process per run directory -----


def test_two_processes_on_one_out_directory_do_not_mix(tmp_path) -> None:
    """One trains; the other is refused (in use, or, if it came late, already holds files)."""
    out, sets = str(tmp_path / "run"), ["--set", "trainer.max_steps=30"]
    small = popen("train", "gcn-karate", *sets, "--set", "model.hidden_dim=8", "--out", out)
    default = popen("train", "gcn-karate", *sets, "--out", out)
    outcomes = [finish(p) for p in (small, default)]
    codes = sorted(code for code, _, _ in outcomes)
    assert codes == [0, 2], outcomes
    loser = next(err for code, _, err in outcomes if code == 2)
    message = loser.strip().splitlines()[-1]
    assert "is in use by process" in message or "already holds files" in message, loser
    run_dir = tmp_path / "run"
    config = rundir_config(run_dir)
    model = strict_loads((run_dir / "model.json").read_text())["config"]
    assert config["model"]["hidden_dim"] == model["hidden_dim"]
    steps = [(r["step"], r["split"]) for r in records(run_dir)]
    assert len(steps) == len(set(steps))  # no step logged twice
    assert not (run_dir / rundir.LOCK_FILE).exists()  # released at the end
    assert main(["train", "--resume", out]) == 0  # the model config is the one trained


def rundir_config(run_dir) -> dict:
    from archlab.config import read_recipe

    return read_recipe(str(run_dir / "config.yaml"))


def test_default_run_directories_do_not_collide(tmp_path) -> None:
    """Two runs started together without --out get a directory each."""
    sets = ["--set", "trainer.max_steps=20"]
    procs = [popen("train", "gcn-karate", "--seed", s, *sets, cwd=tmp_path) for s in "12"]
    outcomes = [finish(p) for p in procs]
    assert [code for code, _, _ in outcomes] == [0, 0], outcomes
    dirs = [err.strip().splitlines()[-1].removeprefix("run directory: ") for _, _, err in outcomes]
    assert dirs[0] != dirs[1]
    for seed, run_dir in zip((1, 2), dirs, strict=True):
        run_dir = tmp_path / run_dir
        assert rundir_config(run_dir)["trainer"]["seed"] == seed
        steps = [(r["step"], r["split"]) for r in records(run_dir)]
        assert len(steps) == len(set(steps))


def test_a_taken_default_name_gets_a_suffix(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    fixed = tmp_path / "runs" / "gcn-karate-20260101-120000"
    monkeypatch.setattr(rundir, "default_run_dir", lambda recipe: fixed)
    claims = [rundir.claim_new(None, "gcn-karate") for _ in range(3)]
    assert [c.run_dir.name for c in claims] == [
        "gcn-karate-20260101-120000",
        "gcn-karate-20260101-120000-2",
        "gcn-karate-20260101-120000-3",
    ]
    for claim in claims:
        claim.release()
    assert not any((tmp_path / "runs").iterdir())  # empty directories we made are removed


def test_a_held_run_directory_is_refused_with_the_holders_pid(tmp_path, capsys) -> None:
    run_dir = tmp_path / "run"
    with rundir.claim_new(run_dir, "gcn-karate"):
        assert main(["train", "gcn-karate", "--out", str(run_dir)]) == 2
        since = strict_loads((run_dir / rundir.LOCK_FILE).read_text())["since"]
        assert capsys.readouterr().err.strip() == (
            f"archlab: error: {run_dir} is in use by process {os.getpid()} (since {since}); "
            "wait for it to end or stop it, or choose another directory"
        )
    assert not run_dir.exists()  # made by the claim, still empty: removed on release
    assert main(["train", "gcn-karate", "--set", "trainer.max_steps=2", "--out", str(run_dir)]) == 0
    with rundir.claim_existing(run_dir):
        assert main(["train", "--resume", str(run_dir)]) == 2
        assert f"is in use by process {os.getpid()}" in capsys.readouterr().err
    assert main(["train", "--resume", str(run_dir)]) == 0


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path, capsys) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    pid = dead_pid()
    stale = {"pid": pid, "host": os.uname().nodename, "since": "2026-01-01T12:00:00"}
    (run_dir / rundir.LOCK_FILE).write_text(json.dumps(stale))
    assert main(["train", "gcn-karate", "--set", "trainer.max_steps=5", "--out", str(run_dir)]) == 0
    err = capsys.readouterr().err
    assert f"archlab: {run_dir} was held by process {pid}, which is gone" in err
    assert not (run_dir / rundir.LOCK_FILE).exists()
    # and on resume
    (run_dir / rundir.LOCK_FILE).write_text(json.dumps(stale))
    assert main(["train", "--resume", str(run_dir), "--set", "trainer.max_steps=10"]) == 0
    assert "which is gone" in capsys.readouterr().err
    assert not (run_dir / rundir.LOCK_FILE).exists()


def test_a_failed_start_releases_and_removes_the_directory_it_made(tmp_path) -> None:
    from archlab.errors import ConfigError

    with pytest.raises(ConfigError, match="trainer.lr expects float"):
        train("gcn-karate", ["trainer.lr=fast"], out=str(tmp_path / "new"), progress=False)
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    with pytest.raises(ConfigError):
        train("gcn-karate", ["trainer.lr=fast"], out=str(tmp_path / "kept"), progress=False)
    assert list((tmp_path / "kept").iterdir()) == []  # not ours to remove, and no lock left


# ----- 2. Ctrl-C and SIGTERM at any phase of a step -----

SIGNAL_RUN = [
    *TINY_GPT,
    "trainer.max_steps=3",
    "trainer.eval_every=2",
    "trainer.checkpoint_every=100",
    "data.val_fraction=0.002",  # a short validation text: fast evaluations
    "model.dropout=0.1",  # so that the RNG state matters
]


def signal_run(run_dir, *extra):
    return train("gpt-shakespeare-char", [*SIGNAL_RUN, *extra], out=str(run_dir), progress=False)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    require_data("shakespeare/input.txt")
    torch.manual_seed(0)
    run_dir, results = signal_run(tmp_path_factory.mktemp("full") / "run")
    return run_dir, results


@pytest.fixture
def no_plots(monkeypatch):
    monkeypatch.setattr(MetricsLog, "plot", lambda self, metric, force=False: None)


def assert_resumes_to(run_dir, uninterrupted) -> None:
    """Resume ``run_dir``: weights, results and log are the uninterrupted run's, bit for bit."""
    full, full_results = uninterrupted
    _, results = train(None, [], resume=str(run_dir), progress=False)
    expected = load_file(full / ckpt.LAST_FILE)
    for key, value in load_file(run_dir / ckpt.LAST_FILE).items():
        assert torch.equal(value, expected[key]), key
    assert results["val"] == full_results["val"]
    assert logged(run_dir) == logged(full)


def logged(run_dir) -> list[dict]:
    """metrics.jsonl without what is measured in time (throughput, seconds spent)."""
    timed = ("tok_per_s", "train_seconds")
    return [{k: v for k, v in r.items() if k not in timed} for r in records(run_dir)]


def saved_step(run_dir) -> tuple[int, int]:
    """The step of state.pt and the step in last.safetensors' metadata."""
    state = torch.load(run_dir / ckpt.STATE_FILE, weights_only=True)
    with safe_open(str(run_dir / ckpt.LAST_FILE), "pt") as f:
        return state["step"], int(f.metadata()["step"])


PHASES = ("data", "forward", "backward", "optimizer step", "zero_grad", "bookkeeping")


def arm(monkeypatch, hooks: list, phase: str, fire) -> None:
    """Call ``fire()`` inside ``phase`` of the second step (step index 1).

    Optimizer hooks it registers go into ``hooks``, for the caller to remove.
    """
    current = {"step": None}
    original_batch = CharLMTask.train_batch

    def train_batch(self, step, batch_size, seed):
        current["step"] = step
        if phase == "data" and step == 1:
            fire()
        return original_batch(self, step, batch_size, seed)

    monkeypatch.setattr(CharLMTask, "train_batch", train_batch)
    if phase in ("forward", "backward"):
        original_loss = CharLMTask.loss

        def loss(self, model, batch):
            if phase == "forward" and current["step"] == 1:
                fire()
            value = original_loss(self, model, batch)
            if phase == "backward" and current["step"] == 1:
                value.register_hook(lambda grad: fire())  # runs inside loss.backward()
            return value

        monkeypatch.setattr(CharLMTask, "loss", loss)
    elif phase == "optimizer step":

        def after_step(optimizer, args, kwargs):  # the weights have just changed
            if current["step"] == 1:
                fire()

        hooks.append(register_optimizer_step_post_hook(after_step))
    elif phase == "zero_grad":
        original_zero = torch.optim.Optimizer.zero_grad

        def zero_grad(self, set_to_none=True):
            original_zero(self, set_to_none)
            if current["step"] == 1:
                fire()

        monkeypatch.setattr(torch.optim.Optimizer, "zero_grad", zero_grad)
    elif phase == "bookkeeping":
        original_write = MetricsLog.write

        def write(self, record):
            if record["step"] == 2 and record["split"] == "train":
                fire()
            original_write(self, record)

        monkeypatch.setattr(MetricsLog, "write", write)


@pytest.fixture
def hooks():
    """Global optimizer hooks a test registers; removed after it."""
    handles: list = []
    yield handles
    remove(handles)


def remove(handles: list) -> None:
    while handles:
        handles.pop().remove()


def once(action):
    done = []

    def fire():
        if not done:
            done.append(True)
            action()

    return fire


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("phase", PHASES)
def test_a_signal_in_any_phase_of_a_step_resumes_bit_for_bit(
    phase, signum, uninterrupted, no_plots, hooks, tmp_path, monkeypatch
) -> None:
    arm(monkeypatch, hooks, phase, once(lambda: os.kill(os.getpid(), signum)))
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        signal_run(tmp_path / "cut")
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers
    monkeypatch.undo()
    remove(hooks)
    assert saved_step(tmp_path / "cut") == (2, 2)  # the step under way, finished and saved
    assert_resumes_to(tmp_path / "cut", uninterrupted)


def test_a_second_ctrl_c_stops_at_once_and_the_last_checkpoint_stands(
    uninterrupted, no_plots, hooks, tmp_path, monkeypatch
) -> None:
    def twice():
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)

    arm(monkeypatch, hooks, "optimizer step", once(twice))
    with pytest.raises(KeyboardInterrupt):
        signal_run(tmp_path / "cut", "trainer.checkpoint_every=1")
    monkeypatch.undo()
    remove(hooks)
    assert saved_step(tmp_path / "cut") == (1, 1)  # not the half-done second step
    assert_resumes_to(tmp_path / "cut", uninterrupted)


def test_a_second_ctrl_c_while_saving_waits_for_the_save(
    uninterrupted, no_plots, tmp_path, monkeypatch
) -> None:
    original = ckpt.save_state

    def save_state(state, path):
        if state["step"] == 2:  # between writing the weights and the state
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        original(state, path)

    monkeypatch.setattr(ckpt, "save_state", save_state)
    with pytest.raises(KeyboardInterrupt):
        signal_run(tmp_path / "cut", "trainer.checkpoint_every=1")
    monkeypatch.undo()
    assert saved_step(tmp_path / "cut") == (2, 2)
    assert_resumes_to(tmp_path / "cut", uninterrupted)


def test_resume_refuses_weights_and_state_of_different_steps(
    uninterrupted, no_plots, tmp_path
) -> None:
    from archlab.errors import CheckpointError

    signal_run(tmp_path / "a", "trainer.checkpoint_every=1")
    state = torch.load(tmp_path / "a" / ckpt.STATE_FILE, weights_only=True)
    state["step"] = 2  # as if killed between writing last.safetensors and state.pt
    torch.save(state, tmp_path / "a" / ckpt.STATE_FILE)
    with pytest.raises(CheckpointError, match="weights of step 3, but the resume state is of"):
        train(None, ["trainer.max_steps=4"], resume=str(tmp_path / "a"), progress=False)


# ----- 4. divergence keeps what it promises -----


def test_a_nan_loss_keeps_the_state_before_it_and_resumes_exactly(
    uninterrupted, no_plots, tmp_path, monkeypatch
) -> None:
    original = CharLMTask.loss
    calls = []

    def nan_in_step_3(self, model, batch):
        calls.append(1)
        loss = original(self, model, batch)
        return loss * float("nan") if len(calls) == 3 else loss

    monkeypatch.setattr(CharLMTask, "loss", nan_in_step_3)
    with pytest.raises(TrainingStopped) as stopped:
        signal_run(tmp_path / "nan")
    run_dir = tmp_path / "nan"
    assert str(stopped.value) == (
        f"the loss became nan at step 3; the run is saved as it was after step 2 in {run_dir}: "
        f"resume it with a lower rate (archlab train --resume {run_dir} --set "
        "trainer.lr=0.0003) or start again with one"
    )
    monkeypatch.undo()
    assert saved_step(run_dir) == (2, 2)
    assert_resumes_to(run_dir, uninterrupted)  # the state kept is exact


def test_resume_after_a_nan_takes_the_lower_rate(shakespeare, no_plots, tmp_path, monkeypatch):
    original = CharLMTask.loss
    calls = []

    def nan_in_step_2(self, model, batch):
        calls.append(1)
        loss = original(self, model, batch)
        return loss * float("nan") if len(calls) == 2 else loss

    monkeypatch.setattr(CharLMTask, "loss", nan_in_step_2)
    with pytest.raises(TrainingStopped):
        signal_run(tmp_path / "nan")
    monkeypatch.undo()
    train(None, ["trainer.lr=1e-3"], resume=str(tmp_path / "nan"), progress=False)
    assert rundir_config(tmp_path / "nan")["trainer"]["lr"] == 1e-3
    lrs = [r["lr"] for r in records(tmp_path / "nan") if r["split"] == "train"]
    assert lrs[0] == pytest.approx(1.5e-3) and lrs[1] == pytest.approx(1e-3)  # warm-up 2


def test_divergence_on_the_command_line(tmp_path) -> None:
    """``--set trainer.lr=1e30``: a stop message on its own line, a resumable run, strict JSON."""
    run_dir = str(tmp_path / "run")
    code, _, err = finish(
        popen("train", "gcn-karate", "--set", "trainer.lr=1e30", "--out", run_dir)
    )
    assert code == 1, err
    assert any(
        line.startswith("archlab: training stopped: the loss became nan at step ")
        for line in err.splitlines()
    ), err
    assert (tmp_path / "run" / ckpt.STATE_FILE).is_file()
    records(tmp_path / "run")  # metrics.jsonl: strict JSON, NaN as null
    strict_loads((tmp_path / "run" / "model.json").read_text())
    code, out, err = finish(popen("eval", run_dir))
    assert code == 0, err
    metrics = strict_loads(out)
    assert metrics["loss"] is None and metrics["non_finite"] == {"loss": "nan"}
    # --resume is accepted (and, from these weights, stops again at the next step)
    code, _, err = finish(popen("train", "--resume", run_dir, "--set", "trainer.lr=1e-3"))
    assert "state.pt is missing" not in err and "training stopped" in err, err


def test_to_json_writes_non_finite_numbers_as_null_with_the_reason() -> None:
    import numpy as np

    results = {
        "val": {"loss": float("nan"), "accuracy": np.float32(0.5)},
        "test": {"loss_runs": [1.0, float("inf"), -float("inf")]},
    }
    assert strict_loads(to_json(results, indent=2)) == {
        "val": {"loss": None, "accuracy": 0.5},
        "test": {"loss_runs": [1.0, None, None]},
        "non_finite": {"val.loss": "nan", "test.loss_runs.1": "inf", "test.loss_runs.2": "-inf"},
    }
    assert to_json({"a": 1, "b": [True, None, "x"]}) == '{"a": 1, "b": [true, null, "x"]}'


def test_a_diverged_validation_is_never_the_best_model(shakespeare, no_plots, tmp_path):
    original = CharLMTask.evaluate
    calls = []

    def nan_at_first_evaluation(self, model, split, batch_size):
        calls.append(1)
        metrics = original(self, model, split, batch_size)
        return {**metrics, "loss": float("nan")} if len(calls) == 1 else metrics

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(CharLMTask, "evaluate", nan_at_first_evaluation)
        run_dir, _ = signal_run(tmp_path / "run", "trainer.eval_every=1")
    state = torch.load(run_dir / ckpt.STATE_FILE, weights_only=True)
    assert state["best"]["loss"] == min(
        r["loss"] for r in records(run_dir) if r["split"] == "val" and r["loss"] is not None
    )
    first = next(r for r in records(run_dir) if r["split"] == "val")
    assert first["step"] == 1 and first["loss"] is None
    assert first["non_finite"] == {"loss": "nan"}
