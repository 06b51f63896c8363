"""What a run records: metrics.jsonl, results.json, curves.png and TensorBoard events.

The JSON files are strict JSON (:func:`archlab.io.to_json`): a NaN or infinite value
is written as null, with what it was under ``non_finite`` in the same record.

TensorBoard event files go to ``RUN_DIR/tensorboard`` when the ``tensorboard``
package is installed (``pip install tensorboard``; ``tensorboard --logdir RUN_DIR``),
one scalar per logged number, tagged ``SPLIT/NAME`` (``train/loss``, ``val/accuracy``).
``curves.png`` is drawn at most once every ``PLOT_INTERVAL`` seconds during
training (the first time that long after the start), and always at the end or on
an interrupt: drawing costs about 0.15 s and importing matplotlib 0.5 s, which a
recipe that evaluates every step would otherwise pay at every step, and a short run
at every evaluation.
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

from archlab.io import atomic_write, atomic_write_text, to_json

METRICS_FILE, RESULTS_FILE, CURVES_FILE = "metrics.jsonl", "results.json", "curves.png"
TENSORBOARD_DIR = "tensorboard"
PLOT_INTERVAL = 60.0  # seconds between drawings of curves.png during training


class MetricsLog:
    """Appends one JSON object per logged step or evaluation; only rank 0 writes."""

    def __init__(self, run_dir: Path, enabled: bool = True) -> None:
        self.path = run_dir / METRICS_FILE
        self.run_dir, self.enabled = run_dir, enabled
        self.last_plot = time.monotonic()  # of the last curves.png (none yet: the start)
        self.use_tensorboard = enabled and importlib.util.find_spec("tensorboard") is not None
        self._tensorboard = None  # the SummaryWriter, opened at the first write
        self._purge_step: int | None = None  # set by truncate_after

    def _tensorboard_writer(self):
        if self._tensorboard is None:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step hides the events a stopped run logged from that step on
            self._tensorboard = SummaryWriter(
                str(self.run_dir / TENSORBOARD_DIR), purge_step=self._purge_step
            )
        return self._tensorboard

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a", encoding="utf-8") as f:
            f.write(to_json(record) + "\n")
        if self.use_tensorboard:
            writer = self._tensorboard_writer()
            for key, value in record.items():
                if key not in ("step", "split") and isinstance(value, int | float):
                    writer.add_scalar(f"{record['split']}/{key}", value, record["step"])
            writer.flush()

    def records(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text("utf-8").splitlines() if line]

    def truncate_after(self, step: int) -> None:
        """Drop records past ``step`` (written by a run that stopped before checkpointing)."""
        if not self.enabled:
            return
        if self.path.exists():
            kept = [r for r in self.records() if r["step"] <= step]
            atomic_write_text(self.path, "".join(to_json(r) + "\n" for r in kept))
        self.close()
        self._purge_step = step + 1  # and hide their TensorBoard events

    def write_results(self, results: dict) -> None:
        atomic_write_text(self.run_dir / RESULTS_FILE, to_json(results, indent=2) + "\n")

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None

    def plot(self, metric: str, *, force: bool = False) -> None:
        """curves.png: training loss, and the validation metric, against steps.

        Skipped if the last drawing is less than ``PLOT_INTERVAL`` seconds old, unless
        ``force`` (the end of a run).
        """
        if not self.enabled or (not force and time.monotonic() - self.last_plot < PLOT_INTERVAL):
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        records = self.records()
        train = [(r["step"], _num(r["loss"])) for r in records if r["split"] == "train"]
        val = [(r["step"], _num(r[metric])) for r in records if r["split"] == "val" and metric in r]
        fig, ax = plt.subplots(figsize=(7, 4))
        if train:
            ax.plot(*zip(*train, strict=True), label="train loss", lw=1)
        if val:
            ax.plot(*zip(*val, strict=True), "o-", label=f"val {metric}", lw=1.5)
        ax.set_xlabel("step")
        ax.set_title(self.run_dir.name)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        atomic_write(
            self.run_dir / CURVES_FILE, lambda tmp: fig.savefig(tmp, format="png", dpi=100)
        )
        plt.close(fig)
        self.last_plot = time.monotonic()


def _num(value: float | None) -> float:
    """A logged number; NaN for null (a NaN or infinity in the log, see archlab.io.to_json)."""
    return float("nan") if value is None else value
