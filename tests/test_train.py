"""The Trainer on real data: learning, exact resume, Ctrl-C, NaN, checkpoints, run files."""

import json
import os
import signal

import pytest
import torch
from safetensors.torch import load_file

from archlab.errors import CheckpointError, ConfigError
from archlab.run import (
    RunInterrupted,
    is_repeated,
    load,
    load_group,
    resume_repeats,
    train,
    train_repeats,
)
from archlab.tasks.char_lm import CharLMTask
from archlab.train import TrainingStopped
from archlab.train.trainer import TrainerConfig, lr_at, make_optimizer
from tests.conftest import TINY_GPT


def run(tmp_path, name, steps, *extra, **kwargs):
    overrides = [*TINY_GPT, f"trainer.max_steps={steps}", *extra]
    out = str(tmp_path / name)
    return train("gpt-shakespeare-char", overrides, out=out, progress=False, **kwargs)


def steps_logged(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [(json.loads(line)["step"], json.loads(line)["split"]) for line in lines]


def test_training_learns_and_writes_the_run_directory(shakespeare, tmp_path) -> None:
    run_dir, results = run(tmp_path, "a", 30, "trainer.eval_every=15", "trainer.lr=3e-3")
    names = {p.name for p in run_dir.iterdir()}
    expected = {"config.yaml", "metrics.jsonl", "results.json", "model.safetensors", "model.json"}
    assert expected | {"last.safetensors", "state.pt", "curves.png", "tokenizer.json"} <= names
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_losses = [r["loss"] for r in records if r["split"] == "train"]
    assert len(train_losses) == 30 and train_losses[-1] < train_losses[0] - 0.5
    assert [r["step"] for r in records if r["split"] == "val"] == [15, 30]
    # the validation loss beats the uniform guess over 65 characters, ln 65 = 4.17
    assert results["val"]["loss"] < 3.5
    assert json.loads((run_dir / "results.json").read_text())["val"] == results["val"]
    loaded = load(run_dir)
    assert isinstance(loaded.task, CharLMTask)
    text = loaded.task.generate(loaded.model, "ROMEO:", max_new_tokens=20, seed=0)
    assert text.startswith("ROMEO:") and len(text) == 26


def test_final_validation_metrics_are_the_kept_models_without_a_second_pass(
    shakespeare, tmp_path, monkeypatch
) -> None:
    evaluated = []
    original = CharLMTask.evaluate

    def counting(self, model, split, batch_size):
        evaluated.append(split)
        return original(self, model, split, batch_size)

    monkeypatch.setattr(CharLMTask, "evaluate", counting)
    run_dir, results = run(tmp_path, "a", 12, "trainer.eval_every=6", "trainer.lr=5e-2")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in records if r["split"] == "val"]
    assert evaluated == ["val", "val"]  # the two during training, none at the end
    kept = min(val, key=lambda r: r["loss"])
    assert results["val"]["loss"] == kept["loss"]
    assert results["train"]["final_eval_seconds"] < 0.05
    loaded = load(run_dir)  # the weights on disk give those metrics when measured again
    loaded.task.setup()
    assert original(loaded.task, loaded.model, "val", 64) == results["val"]


def test_same_seed_reproduces_bit_for_bit(shakespeare, tmp_path) -> None:
    a, _ = run(tmp_path, "a", 4)
    b, _ = run(tmp_path, "b", 4)
    for key, value in load_file(a / "last.safetensors").items():
        assert torch.equal(value, load_file(b / "last.safetensors")[key])


def test_interrupted_then_resumed_equals_uninterrupted(shakespeare, tmp_path, monkeypatch) -> None:
    common = ("trainer.checkpoint_every=3", "trainer.eval_every=4", "model.dropout=0.1")
    full, full_results = run(tmp_path, "full", 8, *common)

    original = CharLMTask.train_batch

    def interrupt_in_step_6(self, step, batch_size, seed):
        if step == 5:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C
        return original(self, step, batch_size, seed)

    monkeypatch.setattr(CharLMTask, "train_batch", interrupt_in_step_6)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, "cut", 8, *common)
    monkeypatch.setattr(CharLMTask, "train_batch", original)
    state = torch.load(tmp_path / "cut/state.pt", weights_only=True)
    assert state["step"] == 6  # Ctrl-C finished the step under way and saved
    # the scheduler's plan and the last step it set: warm-up 2, cosine over 8 steps
    assert state["scheduler"] == {
        "schedule": "cosine",
        "lr": 3e-3,
        "min_lr": 1e-4,
        "total_steps": 8,
        "warmup_steps": 2,
        "last_step": 5,  # step_to(5) set the rate of the sixth step
    }

    _, resumed_results = train(None, [], resume=str(tmp_path / "cut"), progress=False)
    expected = load_file(full / "last.safetensors")
    for key, value in load_file(tmp_path / "cut/last.safetensors").items():
        assert torch.equal(value, expected[key]), key
    assert resumed_results["val"] == full_results["val"]
    assert steps_logged(tmp_path / "cut") == steps_logged(full)
    assert learning_rates(tmp_path / "cut") == learning_rates(full)


def test_a_repeated_training_stopped_in_its_second_seed_resumes_keeping_the_first(
    shakespeare, tmp_path, monkeypatch
) -> None:
    """``archlab train --resume RUN_DIR`` of a --seeds run: seed 0 is read back, seed 1
    resumes where Ctrl-C left it, seed 2 trains; the whole equals an uninterrupted run."""
    overrides = [*TINY_GPT, "trainer.max_steps=6", "trainer.checkpoint_every=2"]
    common = dict(key="trainer.seed", values=[0, 1, 2], label="seed", progress=False)
    _, full = train_repeats("gpt-shakespeare-char", overrides, out=str(tmp_path / "full"), **common)

    original, trained = CharLMTask.train_batch, []

    def interrupt_seed_1_in_step_4(self, step, batch_size, seed):
        trained.append((seed, step))
        if seed == 1 and step == 3:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C
        return original(self, step, batch_size, seed)

    monkeypatch.setattr(CharLMTask, "train_batch", interrupt_seed_1_in_step_4)
    cut = tmp_path / "cut"
    with pytest.raises(RunInterrupted) as stopped:
        train_repeats("gpt-shakespeare-char", overrides, out=str(cut), **common)
    assert stopped.value.run_dir == cut  # the directory --resume takes, not the seed's
    assert is_repeated(cut) and not (cut / "seed-1/results.json").exists()
    with pytest.raises(CheckpointError, match=f"continue it with `archlab train --resume {cut}`"):
        load_group(cut)
    trained.clear()
    _, resumed = resume_repeats(cut)
    # seed 0 is not trained again; seed 1 goes on from its step-4 checkpoint
    assert sorted({seed for seed, _ in trained}) == [1, 2]
    assert min(step for seed, step in trained if seed == 1) == 4
    assert resumed["val"] == full["val"] and resumed["repeats"] == full["repeats"]


def learning_rates(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r["lr"] for r in map(json.loads, lines) if r["split"] == "train"]


def test_resume_state_restores_every_random_generator() -> None:
    import random

    import numpy as np

    from archlab.train.checkpoint import rng_state, set_rng_state

    def draw():
        return random.random(), float(np.random.rand()), float(torch.rand(()))

    state = rng_state()
    first = draw()
    saved = torch.load(io_roundtrip(state), weights_only=True)  # as state.pt holds it
    set_rng_state(saved)
    assert draw() == first


def io_roundtrip(obj):
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return buffer


def test_sigterm_saves_like_ctrl_c(shakespeare, tmp_path, monkeypatch) -> None:
    """``kill PID`` (or a job scheduler's SIGTERM) keeps the steps done, as Ctrl-C does."""
    original = CharLMTask.train_batch

    def terminate_at_step_3(self, step, batch_size, seed):
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, step, batch_size, seed)

    monkeypatch.setattr(CharLMTask, "train_batch", terminate_at_step_3)
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, "cut", 8, "trainer.checkpoint_every=100")
    assert signal.getsignal(signal.SIGTERM) is handler  # restored after training
    assert torch.load(tmp_path / "cut/state.pt", weights_only=True)["step"] == 4


def test_nan_loss_stops_and_keeps_the_last_finite_state(shakespeare, tmp_path, monkeypatch) -> None:
    original = CharLMTask.loss
    calls = {"n": 0}

    def nan_at_step_4(self, model, batch):
        calls["n"] += 1
        loss = original(self, model, batch)
        return loss * float("nan") if calls["n"] == 4 else loss

    monkeypatch.setattr(CharLMTask, "loss", nan_at_step_4)
    with pytest.raises(TrainingStopped, match="the loss became nan at step 4"):
        run(tmp_path, "nan", 10, "trainer.checkpoint_every=2")
    state = torch.load(tmp_path / "nan/state.pt", weights_only=True)
    assert state["step"] == 3  # the state before the step whose loss was NaN
    weights = load_file(tmp_path / "nan/last.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values())
    assert load(tmp_path / "nan").model is not None


def test_resume_refuses_a_changed_model_config(shakespeare, tmp_path) -> None:
    run(tmp_path, "a", 2)
    with pytest.raises(ConfigError, match="model config differs"):
        train(None, ["model.n_embd=64"], resume=str(tmp_path / "a"), progress=False)


def test_resume_reads_the_best_value_of_an_older_state_file(shakespeare, tmp_path) -> None:
    from archlab.train.checkpoint import STATE_FILE

    run_dir, _ = run(tmp_path, "a", 2, "trainer.eval_every=1")
    state = torch.load(run_dir / STATE_FILE, weights_only=True)
    assert set(state["best"]) == {"loss"}
    state["best"] = 0.0  # before tasks judged results, best was one float: nothing beats it
    torch.save(state, run_dir / STATE_FILE)
    kept = (run_dir / "model.safetensors").read_bytes()
    train(None, ["trainer.max_steps=4"], resume=str(run_dir), progress=False)
    assert torch.load(run_dir / STATE_FILE, weights_only=True)["best"] == {"loss": 0.0}
    assert (run_dir / "model.safetensors").read_bytes() == kept  # no later model beat 0.0


def test_truncated_checkpoint_is_refused(shakespeare, tmp_path) -> None:
    run_dir, _ = run(tmp_path, "a", 2)
    data = (run_dir / "model.safetensors").read_bytes()
    (run_dir / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot be read"):
        load(run_dir)
    with pytest.raises(CheckpointError, match="not an archlab run directory"):
        load(tmp_path)


def test_an_existing_run_directory_is_not_overwritten(shakespeare, tmp_path) -> None:
    run(tmp_path, "a", 1)
    with pytest.raises(ConfigError, match="already holds files"):
        run(tmp_path, "a", 1)


def test_schedule_warms_up_then_decays_to_min_lr() -> None:
    cfg = TrainerConfig(max_steps=100, lr=1.0, min_lr=0.1, warmup_steps=10)
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(10, cfg) == pytest.approx(1.0)
    assert lr_at(55, cfg) == pytest.approx(0.55)
    assert lr_at(100, cfg) == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("settings", "decayed"),
    [
        ({}, {"0.weight", "2.weight"}),
        ({"decay_vectors": True}, {"0.weight", "0.bias", "1.weight", "1.bias", "2.weight"}),
        ({"decay_only": "0."}, {"0.weight"}),
        ({"decay_only": "0.", "decay_vectors": True}, {"0.weight", "0.bias"}),
    ],
)
def test_weight_decay_goes_to_the_parameters_asked_for(settings, decayed) -> None:
    model = torch.nn.Sequential(
        torch.nn.Linear(3, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2, bias=False)
    )
    cfg = TrainerConfig(max_steps=1, weight_decay=0.1, optimizer="adam", **settings)
    optimizer = make_optimizer(model, cfg, torch.device("cpu"))
    names = {id(p): n for n, p in model.named_parameters()}
    got = {g["weight_decay"]: {names[id(p)] for p in g["params"]} for g in optimizer.param_groups}
    assert got[0.1] == decayed
    assert got[0.0] == set(names.values()) - decayed


def test_tensorboard_events_hold_the_logged_scalars(shakespeare, tmp_path, monkeypatch) -> None:
    """Event files mirror metrics.jsonl, also after a crash and a resume from an earlier step."""
    pytest.importorskip("tensorboard", reason="tensorboard is a test extra")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    original = CharLMTask.train_batch

    def crash_at_step_5(self, step, batch_size, seed):
        if step == 4:  # steps 1-4 are logged, the last checkpoint is step 3
            raise RuntimeError("crash")
        return original(self, step, batch_size, seed)

    monkeypatch.setattr(CharLMTask, "train_batch", crash_at_step_5)
    common = ("trainer.checkpoint_every=3", "trainer.eval_every=3")
    with pytest.raises(RuntimeError, match="crash"):
        run(tmp_path, "tb", 6, *common)
    monkeypatch.setattr(CharLMTask, "train_batch", original)
    train(None, [], resume=str(tmp_path / "tb"), progress=False)

    events = EventAccumulator(str(tmp_path / "tb" / "tensorboard"))
    events.Reload()
    records = [
        json.loads(line) for line in (tmp_path / "tb/metrics.jsonl").read_text().splitlines()
    ]
    for split, name in (("train", "loss"), ("train", "lr"), ("val", "loss")):
        logged = [(r["step"], r[name]) for r in records if r["split"] == split]
        scalars = [(e.step, e.value) for e in events.Scalars(f"{split}/{name}")]
        assert [s for s, _ in scalars] == [s for s, _ in logged]  # step 4 once, not twice
        assert [v for _, v in scalars] == pytest.approx([v for _, v in logged], rel=1e-6)
    assert [s for s, _ in logged] == [3, 6]
