"""What every CLI handler shares: exit codes, the usage error and how a failure is reported."""

from __future__ import annotations

import sys

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2  # bad arguments or configuration, as argparse does
EXIT_UNREACHABLE = 3


class UsageError(Exception):
    """Bad user input: the CLI prints the message and exits with code 2."""


def fail(message: str, code: int) -> int:
    print(f"tandem: error: {message}", file=sys.stderr)
    return code
