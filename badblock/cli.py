"""The ``badblock`` command: parse arguments, call the library, print. Nothing else lives here.

Each subcommand is a module in :mod:`badblock.commands` with ``HELP``, ``add_arguments(parser)``
and ``run(args) -> int``; heavy imports (torch) happen inside ``run`` so that ``--help`` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from badblock import __version__
from badblock.errors import BadInputError

COMMANDS = ["simulate", "mask", "detect", "preprocess", "fills", "train", "repair", "evaluate",
            "launch", "demo"]


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    parser = argparse.ArgumentParser(
        prog="badblock",
        description="Repair PET sinograms damaged by dead detector blocks with a UNet.")
    parser.add_argument("--version", action="version", version=f"badblock {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    modules = {}
    for name in COMMANDS:
        modname = f"badblock.commands.{name}"
        if importlib.util.find_spec(modname) is None:
            continue
        mod = importlib.import_module(modname)
        p = sub.add_parser(name, help=mod.HELP, description=mod.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        modules[name] = mod
    return parser, modules


def main(argv: list[str] | None = None) -> int:
    parser, modules = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(modules[args.command].run(args) or 0)
    except BadInputError as exc:
        print(f"badblock {args.command}: error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"badblock {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
