"""Run archlab's benchmarks and keep their figures as data in results/.

    python benchmarks/run.py            # every benchmark
    python benchmarks/run.py gpt        # one

Each writes results/bench-NAME.json (command, date, machine, measurements), from
which `python scripts/results.py table` builds the README table.  The measuring
code lives in archlab.bench, so `archlab bench` runs the same thing anywhere.

Every figure is measured afresh: a benchmark writes results/bench-NAME.json.partial
as it goes (one that resumes, like kge, takes that file up when stopped and run
again) and replaces results/bench-NAME.json only when it has finished.
"""

import os
import sys
from pathlib import Path

from archlab.bench import BENCHMARKS, run_benchmarks

RESULTS = Path(__file__).resolve().parent.parent / "results"

if __name__ == "__main__":
    for name in sys.argv[1:] or BENCHMARKS:
        final = RESULTS / f"bench-{name}.json"
        partial = final.with_name(final.name + ".partial")
        run_benchmarks([name], out=str(partial))
        os.replace(partial, final)
