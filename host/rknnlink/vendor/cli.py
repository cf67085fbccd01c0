"""`rknnlink toolkit2 setup|check`: create and verify the RKNN-Toolkit2 environment (registered by rknnlink.cli)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("rknnlink.vendor")


def register(subparsers: "argparse._SubParsersAction") -> None:  # noqa: UP037 - private argparse type
    from rknnlink.vendor.environment import PYTHON_ENV, TOOLKIT_VERSION, default_path

    toolkit = subparsers.add_parser(
        "toolkit2", help="manage the RKNN-Toolkit2 environment that compiles vendor .rknn files",
        description=f"RKNN-Toolkit2 {TOOLKIT_VERSION} lives in its own venv (default {default_path()}); "
                    f"{PYTHON_ENV} names an existing one instead.")
    actions = toolkit.add_subparsers(dest="action", metavar="ACTION")
    setup = actions.add_parser("setup", help="create the environment with the known-good pins (CPU torch)")
    setup.add_argument("--path", type=Path, help=f"where (default {default_path()})")
    setup.add_argument("--force", action="store_true", help="delete and recreate an existing environment")
    setup.add_argument("--torch", help="torch requirement or wheel file (default: a local torch 2.13.0 CPU wheel, "
                                       "else torch==2.13.0+cpu); never a CUDA build")
    setup.add_argument("--toolkit", default=f"rknn-toolkit2=={TOOLKIT_VERSION}",
                       help="toolkit requirement or wheel file (installed with --no-deps)")
    setup.set_defaults(func=_setup)
    check = actions.add_parser("check", help="import the toolkit in its environment and print the versions")
    check.add_argument("--path", type=Path, help=f"environment to check (default: ${PYTHON_ENV}, else "
                                                 f"{default_path()})")
    check.set_defaults(func=_check)
    toolkit.set_defaults(func=lambda _args: (toolkit.print_help(), 2)[1])


def _setup(args: argparse.Namespace) -> int:
    from rknnlink.vendor import ToolkitError, setup

    try:
        report = setup(args.path, force=args.force, torch=args.torch, toolkit=args.toolkit)
    except ToolkitError as exc:
        log.error("%s", exc)
        return 1
    steps = ", ".join(f"{name} {sec:g} s" for name, sec in report.steps)
    sys.stdout.write(f"RKNN-Toolkit2 {report.versions.get('rknn-toolkit2')} ready at {report.path} in "
                     f"{report.seconds:g} s ({steps})\npython: {report.python}\n")
    return 0


def _check(args: argparse.Namespace) -> int:
    from rknnlink.vendor import ToolkitError, find_python
    from rknnlink.vendor.environment import check

    try:
        python = find_python(args.path)
        versions = check(python)
    except ToolkitError as exc:
        log.error("%s", exc)
        return 1
    sys.stdout.write(json.dumps({"python": str(python), **versions}, indent=1) + "\n")
    return 0
