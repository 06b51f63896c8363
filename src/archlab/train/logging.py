"""What a run records: metrics.jsonl, results.json, curves.png and TensorBoard events."""

from __future__ import annotations

import json
from pathlib import Path

from archlab.io import atomic_write, atomic_write_text

METRICS_FILE, RESULTS_FILE, CURVES_FILE = "metrics.jsonl", "results.json", "curves.png"


class MetricsLog:
    """Appends one JSON object per logged step or evaluation; only rank 0 writes."""

    def __init__(self, run_dir: Path, enabled: bool = True) -> None:
        self.path = run_dir / METRICS_FILE
        self.run_dir, self.enabled = run_dir, enabled
        self.tensorboard = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                pass
            else:
                self.tensorboard = SummaryWriter(str(run_dir / "tensorboard"))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.tensorboard is not None:
            for key, value in record.items():
                if key not in ("step", "split") and isinstance(value, int | float):
                    self.tensorboard.add_scalar(f"{record['split']}/{key}", value, record["step"])
            self.tensorboard.flush()

    def records(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text("utf-8").splitlines() if line]

    def truncate_after(self, step: int) -> None:
        """Drop records past ``step`` (written by a run that stopped before checkpointing)."""
        if self.enabled and self.path.exists():
            kept = [r for r in self.records() if r["step"] <= step]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def write_results(self, results: dict) -> None:
        atomic_write_text(self.run_dir / RESULTS_FILE, json.dumps(results, indent=2) + "\n")

    def plot(self, metric: str) -> None:
        """curves.png: training loss, and the validation metric, against steps."""
        if not self.enabled:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        records = self.records()
        train = [(r["step"], r["loss"]) for r in records if r["split"] == "train"]
        val = [(r["step"], r[metric]) for r in records if r["split"] == "val" and metric in r]
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
