"""Two trained image classifiers on the same images: accuracy and an exact McNemar test.

    python scripts/paired.py RUN_A RUN_B [--split affine] [--out results/NAME.json]

McNemar's exact test asks whether the images only A gets right and those only B gets
right split 50/50 (binomial, two-sided); a small p says the difference in accuracy is
more than the luck of which images each got wrong.  With --out the comparison is
written as a results file (rendered in the README's table by ``results.py table``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from scipy.stats import binomtest

import archlab
from archlab.claims import p_text, write_claim
from archlab.tasks.image_classification import as_input


@torch.no_grad()
def correct(run_dir: str, split: str, batch_size: int = 500) -> torch.Tensor:
    """Per image of ``split``: did the run's model classify it right."""
    run = archlab.load(run_dir)
    run.task.setup()
    run.model.eval()
    images, labels = run.task.examples[split]
    predicted = torch.cat(
        [
            run.task.probabilities(
                run.model, run.model(as_input(images[i : i + batch_size]))
            ).argmax(1)
            for i in range(0, len(images), batch_size)
        ]
    )
    return predicted == labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a")
    parser.add_argument("run_b")
    parser.add_argument("--split", default="affine")
    parser.add_argument("--out", help="write the comparison as a results file")
    parser.add_argument("--reference", default="", help="the published figure it is set against")
    args = parser.parse_args()
    a, b = correct(args.run_a, args.split), correct(args.run_b, args.split)
    only_a, only_b = int((a & ~b).sum()), int((b & ~a).sum())
    p = binomtest(only_b, only_a + only_b).pvalue if only_a + only_b else 1.0
    name_a, name_b = Path(args.run_a).name, Path(args.run_b).name
    summary = (
        f"{args.split} set: {name_a} {a.float().mean():.2%}, {name_b} {b.float().mean():.2%}; "
        f"only {name_a} right on {only_a} images, only {name_b} on {only_b} "
        f"(exact McNemar {p_text(p)})"
    )
    print(summary)
    if args.out:
        body = {
            "summary": summary,
            "reference": args.reference,
            "accuracy_a": a.float().mean().item(),
            "accuracy_b": b.float().mean().item(),
            "only_a": only_a,
            "only_b": only_b,
            "p_value": p,
        }
        command = f"python scripts/paired.py {args.run_a} {args.run_b} --split {args.split}"
        write_claim(args.out, Path(args.out).stem, command, body)


if __name__ == "__main__":
    main()
