"""The `rknnlink` command. Each component registers its own subcommands, so this file stays a switchboard."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Optional, Sequence

# Modules that contribute subcommands through `register(subparsers)`; each parser sets `func(args) -> int`.
_COMMAND_MODULES = (
    "rknnlink_server.cli",      # serve, install-service
    "rknnlink.transport.cli",   # devices, deploy
    "rknnlink.farm.cli",        # farm export, farm list, farm run, farm reap
    "rknnlink.vendor.cli",      # toolkit2 setup|check
)


def build_parser() -> argparse.ArgumentParser:
    from rknnlink import __version__

    parser = argparse.ArgumentParser(prog="rknnlink", description="Run, profile and debug models on Rockchip NPUs.")
    parser.add_argument("--version", action="version", version=f"rknnlink {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:  # a host extra may be missing on a board
            logging.getLogger(__name__).debug("subcommands of %s unavailable: %s", module_name, exc)
            continue
        module.register(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=min(level, logging.INFO) if args.command == "serve" else level,
                        format="%(asctime)s %(levelname).1s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
