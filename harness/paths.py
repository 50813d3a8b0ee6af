"""Where the repository's files are, for tests and benchmarks run from a checkout."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results"  # figures written by the tests and the benchmarks (gitignored)
