"""`tandem`: one command-line entry point for every part of the system.

Each package registers its own commands (the ``tandem.commands`` entry points, tandem/commands.py); this module
only assembles them, and a command's handler is imported only when that command runs.
"""

from __future__ import annotations

import argparse
import sys

from tandem.cli_support import fail
from tandem.commands import register_all


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tandem",
        description="Tandem: lossless parallel speculative decoding between devices (draft model, llama.cpp) "
        "and edge servers (target model, vLLM or llama.cpp), over gRPC.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    register_all(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        return fail("interrupted", 130)


if __name__ == "__main__":
    sys.exit(main())
