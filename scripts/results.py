"""Results as data: record a finished run into results/, and build the README table from them.

    python scripts/results.py record RUN_DIR --name gpt-shakespeare-char \
        --command "archlab train gpt-shakespeare-char" --reference "val loss 1.88 (nanoGPT)"
    python scripts/results.py table      # rewrites the table between the README markers

Every README number therefore comes from a file that names its command, date and machine.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"
README = ROOT / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"


def record(args: argparse.Namespace) -> None:
    from archlab.bench import machine

    run_dir = Path(args.run_dir)
    results = json.loads((run_dir / "results.json").read_text())
    entry = {
        "name": args.name,
        "command": args.command,
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": machine(),
        "reference": args.reference,
        "results": results,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(entry, indent=2) + "\n")
    print(f"wrote results/{args.name}.json")


def _fmt(value: float) -> str:
    return f"{value:.4f}" if abs(value) < 10 else f"{value:,.2f}"


def _metrics(results: dict) -> str:
    parts = []
    for split in ("val", "test", "affine"):
        metrics = results.get(split, {})
        for key, value in metrics.items():
            if key.endswith(("_std", "_runs")) or not isinstance(value, int | float):
                continue
            spread = f" ± {_fmt(metrics[key + '_std'])}" if key + "_std" in metrics else ""
            parts.append(f"{split} {key} {_fmt(value)}{spread}")
    train = results.get("train", {})
    if "steps" in train:
        evals = f" + {train['eval_seconds']:.0f} s evaluating" if "eval_seconds" in train else ""
        parts.append(f"{train['steps']} steps in {train['seconds']:.0f} s{evals}")
    elif "runs" in train:
        parts.append(f"{train['runs']} runs, {train['seconds']:.0f} s training in all")
    return ", ".join(parts)


def render() -> str:
    rows = [
        "| result | figure | reference | command | date, machine |",
        "|---|---|---|---|---|",
    ]
    for path in sorted(RESULTS.glob("*.json")):
        entry = json.loads(path.read_text())
        m = entry["machine"]
        where = f"{entry['date']}, {m['cores']}-core {m['cpu']}, torch {m['torch']}"
        if "results" in entry and "command" in entry:
            figure = _metrics(entry["results"])
            if "wall_seconds" in entry:
                figure += f", {entry['wall_seconds']:.0f} s wall in all"
            rows.append(
                f"| {entry['name']} | {figure} | {entry.get('reference', '')} | "
                f"`{entry['command']}` | {where} |"
            )
        for name, bench in entry.get("benchmarks", {}).items():
            label = name if name.startswith("claim") else f"bench {name}"
            rows.append(
                f"| {label} | {bench['summary']} | {bench['reference']} | "
                f"`{entry['command']}` | {where} |"
            )
    return "\n".join(rows)


def table(args: argparse.Namespace) -> None:
    text = README.read_text()
    if START not in text or END not in text:
        sys.exit(f"README.md lacks the markers {START} and {END}")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{START}\n{render()}\n{END}{tail}"
    if args.check:
        if new != text:
            sys.exit("README.md's results table is stale: run `python scripts/results.py table`")
        return
    README.write_text(new)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("record")
    p.add_argument("run_dir")
    p.add_argument("--name", required=True)
    p.add_argument("--command", required=True)
    p.add_argument("--reference", default="")
    p.set_defaults(func=record)
    p = sub.add_parser("table")
    p.add_argument("--check", action="store_true", help="fail if the README is out of date")
    p.set_defaults(func=table)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
