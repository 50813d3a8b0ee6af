"""The start of every benchmark, in one place: ``from bootstrap import ...`` is a bench's first import.

- A bench runs as ``python bench/NAME.py``, so Python puts bench/ first on sys.path, where bench/controller.py,
  bench/linkemu.py and bench/testbed.py would shadow the packages of the same names: the repository goes first.
- Numerical libraries default to one thread per process (OMP_NUM_THREADS=1, as the figures in docs/ were measured:
  two cores shared by a device, an edge and the bench itself); the environment wins.
- A bench whose daemons and clients talk plaintext over loopback calls ``plaintext_on_loopback()`` (the daemons
  then log it as a warning); one that may run them over TLS (soak.py) sets each daemon's environment itself.
"""

import os
import sys
from pathlib import Path

_BENCH = Path(__file__).resolve().parent
sys.path[:] = [str(_BENCH.parent), *(entry for entry in sys.path if Path(entry or ".").resolve() != _BENCH)]

from harness.paths import REPO, RESULTS  # noqa: E402 - once the repository is first on sys.path

__all__ = ["REPO", "RESULTS", "plaintext_on_loopback"]

os.environ.setdefault("OMP_NUM_THREADS", "1")


def plaintext_on_loopback() -> None:
    """Daemons this process starts, and its own clients, talk plaintext, asked for explicitly (--insecure)."""
    os.environ.setdefault("TANDEM_INSECURE", "1")
