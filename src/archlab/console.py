"""Messages for the user on stderr, from the main process only (rank 0 under torchrun)."""

from __future__ import annotations

import os
import sys


def note(message: str) -> None:
    """One line ``archlab: MESSAGE`` on stderr, from the main process only."""
    if int(os.environ.get("RANK", 0)) == 0:
        print(f"archlab: {message}", file=sys.stderr, flush=True)
