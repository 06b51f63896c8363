"""trainer.precision auto: a timed probe picks bf16 only where it is faster; cached, recorded."""

import random
import time

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

import archlab
from archlab.nn.gan import gan_losses
from archlab.run import load, train
from archlab.train import precision
from archlab.train.precision import Probe, choose_precision, probe_training_step, time_steps
from tests.conftest import TINY_GPT

CPU = torch.device("cpu")
QUICK = ["data.val_fraction=0.01"]  # evaluations on 11,000 characters


def steady(fp32: float, bf16: float, rounds: int = 5) -> Probe:
    return Probe((fp32,) * rounds, (bf16,) * rounds)


def test_bf16_is_chosen_only_when_clearly_faster() -> None:
    assert steady(fp32=0.100, bf16=0.090).choice == "bf16"
    assert steady(fp32=0.100, bf16=0.097).choice == "fp32"  # within the margin: not worth it
    assert steady(fp32=0.100, bf16=0.130).choice == "fp32"
    assert all(steady(0.1, b).settled for b in (0.09, 0.097, 0.13))


def test_a_probe_the_load_made_unclear_is_not_settled() -> None:
    # one lucky bf16 step, but round by round bf16 is no faster: the machine was busy
    noisy = Probe((0.10, 0.20, 0.12, 0.30, 0.11), (0.07, 0.21, 0.13, 0.31, 0.12))
    assert noisy.ratios[0] == pytest.approx(0.7) and noisy.ratios[1] > 1
    assert noisy.choice == "fp32" and not noisy.settled
    # bf16 wins by both measures, but the steps of each took anything from 1 to 3 times
    # the fastest: too busy to trust
    busy = Probe((0.10, 0.20, 0.22, 0.30, 0.11), (0.05, 0.09, 0.16, 0.16, 0.05))
    assert max(busy.ratios) < 0.95 and busy.spread > 1.25
    assert busy.choice == "fp32" and not busy.settled
    clear = Probe((0.10, 0.11, 0.10, 0.12, 0.10), (0.05, 0.06, 0.05, 0.05, 0.06))
    assert clear.choice == "bf16" and clear.settled
    # steady and clear, but its threads waited for CPUs half the time (another process)
    starved = Probe(clear.fp32_times, clear.bf16_times, cpu_share=0.5)
    assert starved.choice == "fp32" and not starved.settled


def test_the_probe_takes_the_fastest_interleaved_step_within_its_budget() -> None:
    calls: list[bool] = []

    def step(bf16: bool) -> None:
        calls.append(bf16)
        time.sleep(0.004 if bf16 else 0.002)

    started = time.perf_counter()
    probe = time_steps(step)
    assert time.perf_counter() - started < precision.PROBE_SECONDS + 0.5
    assert probe.choice == "fp32" and 0.002 <= probe.fp32 < probe.bf16
    assert calls[:2] == [False, True]  # the warm-up, then rounds that alternate who goes first
    assert calls[2:6] == [False, True, True, False]
    assert calls.count(True) == calls.count(False) >= 1 + precision.MIN_ROUNDS
    assert len(probe.fp32_times) == len(probe.bf16_times) == len(calls) // 2 - 1
    assert probe.cpu_share < 0.5  # sleeping is not running


def test_the_probe_leaves_the_model_its_buffers_and_every_generator_as_they_were() -> None:
    model = archlab.create_model("dcgan", z_dim=16, ngf=8, ndf=8)  # batch norm statistics
    before = {k: v.clone() for k, v in model.state_dict().items()}
    real = torch.rand(4, 1, 28, 28) * 2 - 1

    def loss_of(m):
        z = torch.randn(4, 16)  # from the global generator, like dropout masks
        return sum(gan_losses("bce", m(real, z)))

    random.seed(3)
    np.random.seed(3)
    rngs = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    probe = probe_training_step(model, loss_of, CPU)
    assert probe.fp32 > 0 and probe.bf16 > 0
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rngs[0]) and random.getstate() == rngs[1]
    assert (np.random.get_state()[1] == rngs[2]).all()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ARCHLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "precision"


def test_each_machine_and_shape_is_probed_once(cache, monkeypatch) -> None:
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: True)
    probes: list[int] = []

    def probe() -> Probe:
        probes.append(1)
        return steady(fp32=0.010, bf16=0.020)

    name, message = choose_precision(CPU, {"model": "gpt", "n_embd": 128}, probe)
    assert name == "fp32" and len(probes) == 1
    assert "measured on this machine (fp32 10.0 ms/step, bf16 20.0 ms/step" in message
    assert choose_precision(CPU, {"model": "gpt", "n_embd": 128}, probe)[0] == "fp32"
    assert len(probes) == 1 and len(list(cache.iterdir())) == 1  # from the cache
    choose_precision(CPU, {"model": "gpt", "n_embd": 384}, probe)
    assert len(probes) == 2  # another shape
    monkeypatch.setattr(precision, "machine_key", lambda device: {"cpu": "another"})
    choose_precision(CPU, {"model": "gpt", "n_embd": 128}, probe)
    assert len(probes) == 3  # another machine
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: False)
    assert choose_precision(CPU, {"model": "gpt", "n_embd": 999}, probe)[0] == "fp32"
    assert len(probes) == 3  # no bf16 instructions: nothing to measure


def test_a_busy_machines_probe_gives_fp32_and_is_asked_again(cache, monkeypatch) -> None:
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: True)
    probes: list[int] = []

    def busy() -> Probe:
        probes.append(1)
        return Probe((0.10, 0.20, 0.22, 0.30, 0.11), (0.05, 0.09, 0.16, 0.16, 0.05))

    name, message = choose_precision(CPU, {"model": "gpt"}, busy)
    assert name == "fp32" and message.endswith("too busy to tell, so not cached")
    assert choose_precision(CPU, {"model": "gpt"}, busy)[0] == "fp32"
    assert len(probes) == 2 and not cache.exists()


def _weights(run_dir):
    return load_file(run_dir / "last.safetensors")


@pytest.mark.parametrize(
    ("measured", "chosen"), [((0.010, 0.020), "fp32"), ((0.020, 0.010), "bf16")]
)
def test_auto_trains_in_the_measured_faster_precision_exactly_as_if_given(
    measured, chosen, shakespeare, cache, tmp_path, monkeypatch
) -> None:
    """On this CPU (bf16 instructions) auto was bf16 even where bf16 is slower; now measured."""
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: True)
    real_time_steps = precision.time_steps

    def measured_steps(step, sync=lambda: None) -> Probe:
        real_time_steps(step, sync)  # the real probe runs on its copy of the model...
        return steady(*measured)  # ...and these are its timings

    monkeypatch.setattr(precision, "time_steps", measured_steps)
    sets = [*TINY_GPT, *QUICK, "model.dropout=0.1", "trainer.max_steps=4", "trainer.eval_every=4"]
    sets.append("trainer.precision=auto")
    auto, auto_results = train(
        "gpt-shakespeare-char", sets, out=str(tmp_path / "a"), progress=False
    )
    config = yaml.safe_load((auto / "config.yaml").read_text())
    assert config["trainer"]["precision"] == chosen  # recorded, for eval and resume
    assert load(auto).trainer.precision == chosen
    given, given_results = train(
        "gpt-shakespeare-char",
        [*sets, f"trainer.precision={chosen}"],
        out=str(tmp_path / "b"),
        progress=False,
    )
    assert auto_results["val"] == given_results["val"]
    for key, value in _weights(auto).items():
        assert torch.equal(value, _weights(given)[key]), key


def test_an_old_run_with_precision_auto_evaluates_as_it_trained(shakespeare, tmp_path) -> None:
    sets = [*TINY_GPT, *QUICK, "trainer.max_steps=1", "trainer.precision=fp32"]
    run_dir, _ = train("gpt-shakespeare-char", sets, out=str(tmp_path / "old"), progress=False)
    path = run_dir / "config.yaml"
    path.write_text(path.read_text().replace("precision: fp32", "precision: auto"))
    before_the_probe = "bf16" if precision.cpu_has_fast_bf16() else "fp32"
    assert load(run_dir).trainer.precision == before_the_probe
