"""Entry point of the ``mvcm`` console script.

Every subcommand is a module in :mod:`mvcm_core.cli` exposing
``add_parser(subparsers) -> argparse.ArgumentParser`` (which sets ``func=run`` as default) and
``run(args) -> int``. Modules are imported lazily so ``mvcm inspect`` never pays for torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# subcommand name -> module that implements it
COMMANDS: dict[str, str] = {
    "inspect": "mvcm_core.cli.inspect_cmd",
    "openi": "mvcm_core.cli.openi_cmd",
    "phantom": "mvcm_core.cli.phantom_cmd",
    "ask": "mvcm_core.cli.predict_cmd",
    "retrieve": "mvcm_core.cli.predict_cmd",
    "index": "mvcm_core.cli.index_cmd",
    "bench": "mvcm_core.cli.bench_cmd",
}


def build_parser(commands: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """Build the top-level parser with the requested (default: all) subcommands."""
    from mvcm_core.version import __version__

    parser = argparse.ArgumentParser(prog="mvcm", description="MVCM multi-view medical vision-language tools.")
    parser.add_argument("--version", action="version", version=f"mvcm {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = dict.fromkeys(COMMANDS[name] for name in commands or COMMANDS)  # one module may serve several
    for module in modules:
        importlib.import_module(module).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``mvcm`` command line and return its exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    wanted = [a for a in argv if a in COMMANDS][:1]
    parser = build_parser(wanted or None)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
