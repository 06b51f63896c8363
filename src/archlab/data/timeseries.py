"""Time series that ship inside statsmodels: yearly sunspots and Mauna Loa CO2.

- ``sunspots``: the yearly mean sunspot number, 1700-2008 (309 values), as
  ``statsmodels.datasets.sunspots`` ships it.  Its season is taken as the solar
  cycle, 11 years.
- ``co2``: atmospheric CO2 at Mauna Loa (ppm), weekly from 1958-03-29 to 2001-12-29
  with 59 missing weeks (``statsmodels.datasets.co2``).  Here it is monthly: the mean
  of each calendar month's weeks; the 5 months without any observed week are filled
  by linear interpolation between their neighbours, giving 526 months, 1958-03 to
  2001-12, without gaps.  Season 12 months.

Each series' values are checked against the SHA-256 archlab was measured on
(:data:`SHA256`, over the float64 values as loaded, little-endian; for ``co2`` the
monthly series after interpolation), so a statsmodels release that changes a
dataset is noticed instead of silently giving other figures.

statsmodels is the ``timeseries`` extra (``pip install 'archlab[timeseries]'``).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

import numpy as np

from archlab.errors import ArchlabError, require

SERIES = ("sunspots", "co2")
SEASON = {"sunspots": 11, "co2": 12}  # steps per season: the solar cycle; a year of months
UNIT = {"sunspots": "years", "co2": "months"}
SHA256 = {
    "sunspots": "66c86ecdcd5950f61f6243f924fdfa10a44596e94816291062fdda266a31c86d",
    "co2": "cc924733d2b891a5eaa305f179b974ff8cd414721a4451ff29d3eba7021ec998",
}


@dataclass(frozen=True)
class Series:
    """One series: its values, the calendar year and month of each, and its season."""

    name: str
    values: np.ndarray  # float64, (n,)
    years: np.ndarray  # int, (n,)
    months: np.ndarray  # int 1-12, (n,); 1 throughout for yearly data
    season: int

    def __len__(self) -> int:
        return len(self.values)

    def index_of(self, year: int) -> int:
        """The first step in ``year`` (a step past the end for a later year)."""
        return int(np.searchsorted(self.years, year, side="left"))

    def label(self, i: int) -> str:
        """Step ``i`` as a date: '1921', or '1992-01' for monthly data."""
        if self.name == "sunspots":
            return str(int(self.years[i]))
        return f"{int(self.years[i])}-{int(self.months[i]):02d}"


def values_sha256(values: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(values, dtype="<f8").tobytes()).hexdigest()


@functools.cache
def load_series(name: str) -> Series:
    """The series ``name`` (one of :data:`SERIES`), gap-free, its SHA-256 checked."""
    if name not in SERIES:
        raise ArchlabError(f"unknown series {name!r}; choose one of {', '.join(SERIES)}")
    datasets = require("statsmodels.datasets", "timeseries", "the time series (forecasting)")
    if name == "sunspots":
        frame = datasets.sunspots.load_pandas().data
        values = frame["SUNACTIVITY"].to_numpy(dtype=np.float64)
        years = frame["YEAR"].to_numpy().astype(int)
        months = np.ones_like(years)
    else:
        weekly = datasets.co2.load_pandas().data["co2"]
        monthly = weekly.resample("MS").mean().interpolate(method="linear")
        values = monthly.to_numpy(dtype=np.float64)
        years, months = monthly.index.year.to_numpy(), monthly.index.month.to_numpy()
    found = values_sha256(values)
    if found != SHA256[name]:
        raise ArchlabError(
            f"statsmodels' {name} series is not the one archlab was measured on (SHA-256 of "
            f"its values {found}, expected {SHA256[name]}); use statsmodels 0.14 or 0.15, or "
            f"check what changed in the dataset"
        )
    return Series(name, values, years.astype(int), months.astype(int), SEASON[name])
