"""How a package adds its commands to `tandem`: an entry point in the ``tandem.commands`` group names a
``register(commands)`` function, which adds the package's sub-commands to the parser. Registration modules import
argument definitions and constants, never an engine or the training stack; a command's handler is named by
``lazy_handler("module:function")`` and imported only when that command runs, so `tandem --help` stays instant and a
device never imports vLLM, torch or Ray."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from importlib.metadata import entry_points

GROUP = "tandem.commands"

Handler = Callable[[argparse.Namespace], int]
Commands = argparse._SubParsersAction  # what ArgumentParser.add_subparsers returns


def lazy_handler(target: str) -> Handler:
    """The handler ``"package.module:function"``, imported on its first call."""
    module_name, _, function_name = target.partition(":")

    def run(args: argparse.Namespace) -> int:
        return getattr(importlib.import_module(module_name), function_name)(args)

    run.__qualname__ = target
    return run


def register_all(commands: Commands) -> None:
    """Every installed package's commands, by entry-point name (the order of `tandem --help`)."""
    for entry in sorted(entry_points(group=GROUP), key=lambda entry: entry.name):
        entry.load()(commands)


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The sub-commands ``parser`` takes, by name (none: an empty dict)."""
    actions = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


def run_package_command(register: Callable[[Commands], None], command: list[str], prog: str) -> int:
    """``python -m PACKAGE ARGS``: the package's command ``command`` (e.g. ["edge", "serve"]) with ARGS, parsed by
    the package's own registration, so a daemon starts without the other packages' commands."""
    parser = argparse.ArgumentParser(prog=prog)
    register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    for name in command:  # down to the command's own parser, which then reads ARGS under the module's name
        parser = subcommands(parser)[name]
    parser.prog = prog
    args = parser.parse_args(sys.argv[1:])
    return args.handler(args)
