"""Forecasting: the series, rolling-origin evaluation, its metrics, baselines, a tiny training."""

import math

import numpy as np
import pytest
import torch

pytest.importorskip("statsmodels", reason="the timeseries extra (statsmodels) is not installed")

from archlab.cli import main  # noqa: E402
from archlab.data.timeseries import load_series  # noqa: E402
from archlab.run import resolve, train  # noqa: E402
from archlab.tasks.forecast import (  # noqa: E402
    rolling_origin,
    seasonal_naive,
    seasonal_naive_scale,
)

TINY = [
    "trainer.precision=fp32",
    "trainer.device=cpu",
    "data.context=24",
    "model.name=tcn",
    "model.channels=[8,8,8]",
    "model.kernel_size=3",
]


def task_of(overrides: list[str]):
    from archlab.config import apply_overrides, read_recipe

    task = resolve(apply_overrides(read_recipe("tcn-sunspots"), overrides)).task
    task.setup()
    return task


def test_sunspots_are_309_consecutive_years() -> None:
    s = load_series("sunspots")
    assert len(s) == 309 and s.season == 11
    assert s.years[0] == 1700 and s.years[-1] == 2008
    assert (np.diff(s.years) == 1).all()
    assert s.values[0] == 5.0 and s.values[-1] == 2.9  # the dataset's first and last entries


def test_co2_is_monthly_without_gaps() -> None:
    s = load_series("co2")
    assert len(s) == 526 and s.season == 12  # 1958-03 .. 2001-12
    assert (s.label(0), s.label(len(s) - 1)) == ("1958-03", "2001-12")
    step = (s.years * 12 + s.months - 1).astype(int)
    assert (np.diff(step) == 1).all()
    assert np.isfinite(s.values).all()
    assert s.values[0] == pytest.approx(316.1)  # March 1958: one week, 316.1
    assert s.values[1] == pytest.approx((317.3 + 317.6 + 317.5 + 316.4) / 4)  # April's weeks


def test_the_default_splits() -> None:
    task = task_of(TINY)
    s = task.series
    (a, b), (c, d) = task.bounds["val"], task.bounds["test"]
    assert (s.label(a), s.label(b - 1), s.label(c), s.label(d - 1)) == (
        "1881",
        "1920",
        "1921",
        "2008",
    )
    assert task.horizons == [1, 11] and task.H == 11


def test_metrics_match_the_formulas() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(size=60).cumsum()
    start, end, m = 40, 55, 4

    def forecaster(histories, H):  # the last value plus 0.1 per step ahead
        return np.array([[h[-1] + 0.1 * k for k in range(1, H + 1)] for h in histories])

    scale = seasonal_naive_scale(y[:start], m)
    q = sum(abs(y[t] - y[t - m]) for t in range(m, start)) / (start - m)
    assert scale == pytest.approx(q)
    got = rolling_origin(y, start, end, [1, 3], forecaster, scale)
    for h in (1, 3):
        errors = [y[o + h] - (y[o] + 0.1 * h) for o in range(start - 1, end - h)]
        assert len(errors) == end - start - h + 1
        mae = sum(abs(e) for e in errors) / len(errors)
        assert got[f"mae@{h}"] == pytest.approx(mae)
        assert got[f"rmse@{h}"] == pytest.approx(
            math.sqrt(sum(e * e for e in errors) / len(errors))
        )
        assert got[f"mase@{h}"] == pytest.approx(mae / q)
    assert got["mase"] == pytest.approx((got["mase@1"] + got["mase@3"]) / 2)


def test_seasonal_naive_is_exact() -> None:
    m = 5
    y = np.tile(np.arange(m, dtype=float), 8)  # exactly periodic: the naive forecast is perfect
    got = rolling_origin(y, 20, 40, [1, 5, 7], seasonal_naive(m), 1.0)
    assert all(got[f"mae@{h}"] == 0 for h in (1, 5, 7))
    history = np.arange(12.0)  # y_1..y_12 = 0..11, season 5
    # h = 1..5: y_{12+h-5} = y_8..y_12; h = 6, 7: y_{12+h-10} = y_8, y_9 (k = 2 seasons)
    assert seasonal_naive(m)([history], 7).tolist() == [[7, 8, 9, 10, 11, 7, 8]]


def test_rolling_origin_uses_no_future_data() -> None:
    """Changing the values after origin o leaves every forecast made at o or before unchanged."""
    task = task_of(TINY)
    model = torch.nn.Module()
    from archlab.registry import create_model

    model = create_model("tcn", in_dim=1, out_dim=task.H, channels=[8, 8], kernel_size=3).eval()
    sarimax = pytest.importorskip("statsmodels.tsa.statespace.sarimax")
    from archlab.tasks.forecast import arima_forecaster

    y = task.series.values
    arima = sarimax.SARIMAX(y[:181], order=(2, 0, 0), trend="c").fit(disp=False)
    start, end, o = 181, 221, 200
    changed = y.copy()
    changed[o + 1 :] += np.random.default_rng(0).normal(0, 50, len(y) - o - 1)
    for forecaster in (
        task.network_forecaster(model, 16),
        seasonal_naive(11),
        arima_forecaster(arima),
    ):
        seen = []

        def recorder(histories, H, forecaster=forecaster, seen=seen):
            seen.append(forecaster(histories, H))
            return seen[-1]

        rolling_origin(y, start, end, [1, 11], recorder, 1.0)
        rolling_origin(changed, start, end, [1, 11], recorder, 1.0)
        before, after = seen
        k = o - (start - 1) + 1  # the origins start - 1 .. o
        np.testing.assert_array_equal(before[:k], after[:k])
        assert not np.allclose(before[k:], after[k:])  # later origins do see the change


def test_a_tiny_training_beats_the_naive_forecast_and_predicts(tmp_path, capsys) -> None:
    overrides = [
        *TINY,
        "trainer.max_steps=80",
        "trainer.batch_size=16",
        "trainer.lr=0.01",
        "trainer.eval_every=40",
        "trainer.log_every=40",
    ]
    untrained = task_of(TINY)
    run_dir, results = train("tcn-sunspots", overrides, out=str(tmp_path / "run"), progress=False)
    from archlab.registry import create_model

    torch.manual_seed(0)
    model = create_model("tcn", in_dim=1, out_dim=11, channels=[8, 8, 8], kernel_size=3).eval()
    before = untrained.evaluate(model, "val", 64)
    after = results["val"]
    assert after["mase@1"] < 0.8 * before["mase@1"]
    # the seasonal naive forecast one year ahead, on the same validation years
    naive = untrained.score(seasonal_naive(11), "val")
    assert after["mase@1"] < naive["mase@1"]
    # predict: the years after 2008 this run forecasts (1 to 11 ahead), and one too far
    assert main(["predict", str(run_dir), "2009", "2019", "2030"]) == 2
    out, err = capsys.readouterr()
    assert [line.split("\t")[1] for line in out.splitlines()] == ["2009", "2019"]
    assert "2030 is 22 years after the series' end (2008)" in err


@pytest.mark.parametrize(
    "setting, says",
    [
        ("data.horizons=[1,50]", "50 years ahead is longer than the val period (1881 to 1920"),
        ("data.context=0", "data.context must be at least 1, got 0"),
        ("data.series=moon", "data.series must be one of 'sunspots', 'co2', got 'moon'"),
        ("data.context=400", "leaves no training window"),
    ],
)
def test_bad_input_is_one_sentence(setting, says, tmp_path, capsys) -> None:
    assert main(["train", "tcn-sunspots", "--set", setting, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1 and "Traceback" not in err


def test_baseline_command(tmp_path, capsys) -> None:
    out = tmp_path / "naive"
    assert main(["baseline", "tcn-sunspots", "--method", "seasonal_naive", "--out", str(out)]) == 0
    assert (out / "results.json").is_file()
    assert main(["baseline", "tcn-sunspots", "--method", "prophet"]) == 2
    assert "has no baseline 'prophet'" in capsys.readouterr().err


def test_without_statsmodels_training_names_the_timeseries_extra(
    monkeypatch, tmp_path, capsys
) -> None:
    monkeypatch.setitem(__import__("sys").modules, "statsmodels", None)
    load_series.cache_clear()
    try:
        assert main(["train", "tcn-sunspots", "--out", str(tmp_path / "r")]) == 2
    finally:
        load_series.cache_clear()
    err = capsys.readouterr().err
    assert "pip install 'archlab[timeseries]'" in err and err.count("\n") == 1
