"""Run archlab's benchmarks and keep their figures as data in results/.

    python benchmarks/run.py            # every benchmark
    python benchmarks/run.py gpt        # one

Each writes results/bench-NAME.json (command, date, machine, measurements), from
which `python scripts/results.py table` builds the README table.  The measuring
code lives in archlab.bench, so `archlab bench` runs the same thing anywhere.
"""

import sys
from pathlib import Path

from archlab.bench import BENCHMARKS, run_benchmarks

RESULTS = Path(__file__).resolve().parent.parent / "results"

if __name__ == "__main__":
    for name in sys.argv[1:] or BENCHMARKS:
        run_benchmarks([name], out=str(RESULTS / f"bench-{name}.json"))
