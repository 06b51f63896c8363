"""Forecasting a time series h steps ahead, judged by rolling-origin evaluation.

The series (:mod:`archlab.data.timeseries`: yearly sunspots, monthly Mauna Loa CO2)
is cut in time into a training part, a validation stretch and a held-out test tail
(by default sunspots: train 1700-1880, val 1881-1920, test 1921-2008; CO2: train
1958-03 to 1981-12, val 1982-1991, test 1992-2001).

Rolling origin: every step o from the one just before a period to the one before its
last is an origin; a forecaster sees only y_1..y_o (it is handed that prefix and no
more) and forecasts y_{o+1}..y_{o+H}.  For each horizon h the forecasts whose target
y_{o+h} lies in the period are scored, n - h + 1 of them for a period of n steps:

    MAE_h  = mean_o |y_{o+h} - yhat_{o+h|o}|        RMSE_h = sqrt(mean_o (y_{o+h} - yhat)^2)
    MASE_h = MAE_h / q,   q = mean_{t=m+1..N} |y_t - y_{t-m}|   (Hyndman & Koehler 2006)

q is the in-sample MAE of the seasonal naive forecast on the training part (N steps),
with the series' season m (11 years for sunspots, 12 months for CO2), the same for
every horizon; MASE < 1 beats that in-sample error.  ``mase`` (the selection metric)
is the mean of MASE_h over the horizons.

The networks (any SequenceModel: ``tcn``, ``seq_lstm``, ``seq_gru``, ``seq_transformer``)
forecast directly: they read the last ``context`` values up to the origin, normalised,
and their output at the last step holds the H = max(horizons) forecasts at once
(out_dim = H).  Normalisation uses the training part only: ``global`` is
z = (y - mu) / sigma; ``last`` is z = (y - y_o) / sigma, each window relative to its
origin's value (for trending series such as CO2, whose test values lie above every
training value).  Training examples are the origins of the training part whose
window and H targets lie inside it; the loss is the MSE of the H normalised forecasts.

Baselines, scored by the same rolling-origin code (``archlab baseline RECIPE
--method NAME``): ``seasonal_naive``, yhat_{o+h} = y_{o+h-m ceil(h/m)}; and ``arima``,
a (S)ARIMA from statsmodels whose orders are chosen by AIC on the training part over
:data:`ARIMA_GRID`, its parameters estimated on the training part (as the networks'
weights are) and kept fixed: at each origin the fitted model is run through y_1..y_o
by the Kalman filter (``SARIMAXResults.apply``) and forecasts from there.
"""

from __future__ import annotations

import itertools
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archlab.config import AtLeast, Config, OneOf, Size
from archlab.data.batching import TrainBatches
from archlab.data.timeseries import SERIES, UNIT, Series, load_series
from archlab.errors import ArchlabError, ConfigError, require
from archlab.models import roles
from archlab.tasks import Task, register_task, score_each

# first year of the validation stretch and of the test tail, per series
SPLIT_YEARS = {"sunspots": (1881, 1921), "co2": (1982, 1992)}
NORMALISE = ("global", "last")
Year = Annotated[int, AtLeast(1)]
# (order, seasonal order, trend) candidates per series: d fixed by the series' nature (the
# sunspot cycle is stationary; CO2 has a trend and a yearly season: d = D = 1), p, q, P, Q by AIC
ARIMA_GRID = {
    "sunspots": [((p, 0, q), (0, 0, 0, 0), "c") for p in range(5) for q in range(3)],
    "co2": [
        ((p, 1, q), (P, 1, Q, 12), "n") for p, q, P, Q in itertools.product(range(2), repeat=4)
    ],
}
BASELINES = ("seasonal_naive", "arima")

# a forecaster: the histories y_1..y_o of some origins -> their forecasts (origins, H)
Forecaster = Callable[[Sequence[np.ndarray], int], np.ndarray]


@dataclass
class ForecastData(Config):
    section: ClassVar[str] = "data"

    series: Annotated[str, OneOf(SERIES)] = "sunspots"
    context: Size = 64  # past values the network reads at each origin
    horizons: list[Size] | None = None  # steps ahead to score; None: 1 and one season
    val_start: Year | None = None  # first year of validation; None: the series' default
    test_start: Year | None = None  # first year of the test tail; None: the series' default
    normalise: Annotated[str, OneOf(NORMALISE)] = "global"


# ----- the evaluation, shared by networks and baselines


def seasonal_naive_scale(train: np.ndarray, season: int) -> float:
    """q = mean |y_t - y_{t-m}| over the training part: MASE's denominator."""
    return float(np.mean(np.abs(train[season:] - train[:-season])))


def rolling_origin(
    values: np.ndarray,
    start: int,
    end: int,
    horizons: Sequence[int],
    forecaster: Forecaster,
    scale: float,
) -> dict[str, float]:
    """MAE, RMSE and MASE per horizon of ``forecaster`` over the period values[start:end].

    The origins are start - 1 .. end - 2; the forecaster gets, per origin o, the
    prefix values[:o + 1] only.
    """
    H = max(horizons)
    origins = np.arange(start - 1, end - 1)
    forecasts = np.asarray(forecaster([values[: o + 1] for o in origins], H), dtype=np.float64)
    assert forecasts.shape == (len(origins), H), forecasts.shape
    metrics: dict[str, float] = {}
    for h in horizons:
        scored = origins + h < end
        error = values[origins[scored] + h] - forecasts[scored, h - 1]
        mae = float(np.mean(np.abs(error)))
        metrics[f"mae@{h}"] = mae
        metrics[f"rmse@{h}"] = float(np.sqrt(np.mean(error**2)))
        metrics[f"mase@{h}"] = mae / scale
    metrics["mase"] = float(np.mean([metrics[f"mase@{h}"] for h in horizons]))
    return metrics


def seasonal_naive(season: int) -> Forecaster:
    """yhat_{o+h} = y_{o+h-m k}, k = ceil(h / m): the last value of the same season."""

    def forecast(histories: Sequence[np.ndarray], H: int) -> np.ndarray:
        back = [h - season * math.ceil(h / season) - 1 for h in range(1, H + 1)]
        return np.array([[history[b] for b in back] for history in histories])

    return forecast


def fit_arima(train: np.ndarray, series: str) -> tuple[Any, dict[str, Any]]:
    """The (S)ARIMA of least AIC over ``ARIMA_GRID[series]``, fitted on ``train``."""
    sarimax = require("statsmodels.tsa.statespace.sarimax", "timeseries", "the ARIMA baseline")
    best, tried = None, 0
    for order, seasonal_order, trend in ARIMA_GRID[series]:
        model = sarimax.SARIMAX(train, order=order, seasonal_order=seasonal_order, trend=trend)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence notes of poor candidates
            result = model.fit(disp=False)
        tried += 1
        if np.isfinite(result.aic) and (best is None or result.aic < best[0].aic):
            best = (result, order, seasonal_order, trend)
    result, order, seasonal_order, trend = best
    return result, {
        "order": list(order),
        "seasonal_order": list(seasonal_order),
        "trend": trend,
        "aic": float(result.aic),
        "candidates": tried,
    }


def arima_forecaster(result: Any) -> Forecaster:
    """Forecasts of the fitted ``result`` from each history, its parameters kept."""

    def forecast(histories: Sequence[np.ndarray], H: int) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.stack([np.asarray(result.apply(h).forecast(H)) for h in histories])

    return forecast


# ----- the task


@register_task
class ForecastTask(Task):
    """Direct multi-horizon forecasting of one series; rolling-origin val and test."""

    name = "forecast"
    DataConfig = ForecastData
    roles = (roles.SequenceModel,)
    metric = "mase"
    verbs = frozenset({"predict"})
    predict_inputs = ("DATE",)
    baselines = BASELINES
    derived_model_keys = {
        "in_dim": "one value per step",
        "out_dim": "data.horizons (the longest: one output per step ahead)",
    }

    def setup(self) -> None:
        d = self.data
        self.series: Series = load_series(d.series)
        s, unit = self.series, UNIT[d.series]
        self.horizons = sorted(set(d.horizons or [1, s.season]))
        self.H = max(self.horizons)
        default_val, default_test = SPLIT_YEARS[d.series]
        val_year = default_val if d.val_start is None else d.val_start
        test_year = default_test if d.test_start is None else d.test_start
        self.bounds = {
            "train": (0, s.index_of(val_year)),
            "val": (s.index_of(val_year), s.index_of(test_year)),
            "test": (s.index_of(test_year), len(s)),
        }
        first, last = int(s.years[0]), int(s.years[-1])
        if not first < val_year < test_year <= last:
            raise ConfigError(
                f"data.val_start and data.test_start must satisfy {first} < val_start < "
                f"test_start <= {last} for {d.series}, got {val_year} and {test_year}"
            )
        for split in ("val", "test"):
            a, b = self.bounds[split]
            if b - a < self.H:
                raise ConfigError(
                    f"data.horizons: {self.H} {unit} ahead is longer than the {split} period "
                    f"({s.label(a)} to {s.label(b - 1)}, {b - a} {unit}); use horizons of at "
                    f"most {b - a}"
                )
        n_train = self.bounds["train"][1]
        self.origins = np.arange(d.context - 1, n_train - self.H)  # windows and targets in train
        if len(self.origins) < 1 or d.context > n_train:
            raise ConfigError(
                f"data.context ({d.context}) plus the longest horizon ({self.H}) leaves no "
                f"training window in the {n_train} {unit} before {val_year}; use a context of "
                f"at most {n_train - self.H}"
            )
        train = s.values[:n_train]
        self.mu, self.sigma = float(train.mean()), float(train.std())
        self.scale = seasonal_naive_scale(train, s.season)
        windows = [self._window(s.values[: o + 1]) for o in self.origins]
        self.x = torch.tensor(np.stack([w for w, _ in windows]), dtype=torch.float32)
        targets = np.stack([s.values[o + 1 : o + 1 + self.H] for o in self.origins])
        self.y = torch.tensor(
            (targets - np.array([c for _, c in windows])[:, None]) / self.sigma,
            dtype=torch.float32,
        )
        self.batches = TrainBatches(len(self.origins))

    def _window(self, history: np.ndarray) -> tuple[np.ndarray, float]:
        """The network's input at an origin (context, 1), and the centre it is relative to."""
        centre = self.mu if self.data.normalise == "global" else float(history[-1])
        return ((history[-self.data.context :] - centre) / self.sigma)[:, None], centre

    def model_overrides(self) -> dict:
        return {"in_dim": 1, "out_dim": self.H}

    def use_model(self, model: nn.Module) -> None:
        max_len = getattr(getattr(model, "config", None), "max_len", None)
        if max_len is not None and max_len < self.data.context:
            raise ConfigError(
                f"model.max_len ({max_len}) is shorter than data.context ({self.data.context})"
            )

    def steps_per_epoch(self, batch_size: int) -> int:
        return self.batches.per_epoch(batch_size)

    def splits(self) -> tuple[str, ...]:
        return ("val", "test")

    def train_batch(self, step: int, batch_size: int, seed: int) -> tuple[Tensor, Tensor]:
        rows = torch.tensor(self.batches.indices(step, batch_size, seed))
        return self.x[rows], self.y[rows]

    def batch_size_of(self, batch: tuple[Tensor, Tensor]) -> int:
        return batch[0].shape[0]

    def loss(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        x, y = batch
        return F.mse_loss(model(x)[:, -1].float(), y)

    def network_forecaster(self, model: nn.Module, batch_size: int) -> Forecaster:
        """The network's forecasts, in the series' units, from each history."""

        def forecast(histories: Sequence[np.ndarray], H: int) -> np.ndarray:
            windows = [self._window(h) for h in histories]
            x = torch.tensor(np.stack([w for w, _ in windows]), dtype=torch.float32)
            centres = np.array([c for _, c in windows])[:, None]
            with torch.no_grad():
                out = torch.cat([model(x[i : i + batch_size])[:, -1].float()
                                 for i in range(0, len(x), batch_size)])  # fmt: skip
            return centres + self.sigma * out[:, :H].double().numpy()

        return forecast

    def score(self, forecaster: Forecaster, split: str) -> dict[str, float]:
        """The rolling-origin metrics of ``forecaster`` on ``split`` (val or test)."""
        start, end = self.bounds[split]
        return rolling_origin(self.series.values, start, end, self.horizons, forecaster, self.scale)

    def evaluate(self, model: nn.Module, split: str, batch_size: int) -> dict[str, float]:
        return self.score(self.network_forecaster(model, batch_size), split)

    def run_baseline(self, name: str, pretrained: nn.Module | None = None) -> dict[str, Any]:
        """results.json of a baseline: val and test metrics, and what it fitted."""
        began = time.perf_counter()
        if name == "seasonal_naive":
            forecaster, fitted = seasonal_naive(self.series.season), {"season": self.series.season}
        else:
            result, fitted = fit_arima(
                self.series.values[: self.bounds["train"][1]], self.data.series
            )
            forecaster = arima_forecaster(result)
        results = {split: self.score(forecaster, split) for split in self.splits()}
        seconds = round(time.perf_counter() - began, 2)
        return {**results, "train": {"seconds": seconds}, "baseline": {"method": name, **fitted}}

    # ----- predict: the forecast of a date after the series' end

    def predict_scores(self, model: nn.Module, inputs: list[str]) -> list[Tensor | str]:
        """The forecast, from the series' last value, of each date ('2012', or '2002-06')."""
        if not hasattr(self, "series"):
            self.setup()
        s = self.series
        last = int(s.years[-1]) * 12 + int(s.months[-1]) - 1

        def steps_ahead(text: str) -> int:
            year, _, month = text.strip().partition("-")
            monthly = self.data.series != "sunspots"
            if not year.isdigit() or (month and not (monthly and month.isdigit())):
                form = "a year-month such as 2002-06" if monthly else "a year such as 2012"
                raise ArchlabError(f"{text!r} is not a date of the series; give {form}")
            h = int(year) - int(s.years[-1])
            if monthly:
                h = int(year) * 12 + (int(month or 1) - 1) - last
            if not 1 <= h <= self.H:
                raise ArchlabError(
                    f"{text.strip()} is {h} {UNIT[self.data.series]} after the series' end "
                    f"({s.label(len(s) - 1)}); this run forecasts 1 to {self.H} ahead"
                )
            return h

        def score(hs: list[int]) -> Tensor:
            forecast = self.network_forecaster(model, 1)([s.values], self.H)[0]
            return torch.tensor([[forecast[h - 1]] for h in hs])

        return score_each(inputs, steps_ahead, score)
