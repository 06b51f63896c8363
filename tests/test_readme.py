"""The README's results table is built from results/*.json and must match them."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_results_table_matches_the_results_files() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts/results.py"), "table", "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_readme_names_the_two_set_up_commands() -> None:
    text = (ROOT / "README.md").read_text()
    assert "make demo" in text and "make test" in text
