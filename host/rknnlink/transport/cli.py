"""`rknnlink devices` and `rknnlink deploy SERIAL`."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from .errors import TransportError

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    devices = subparsers.add_parser("devices", help="list boards on every transport (adb, USB, network)",
                                    description="List boards reachable over adb, the USB bulk bridge and mDNS, "
                                                "with the state, platform and version of their daemon.")
    devices.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    devices.add_argument("--timeout", type=float, default=2.0, metavar="S",
                         help="seconds to spend probing each transport (default 2)")
    devices.set_defaults(func=_devices)

    deploy = subparsers.add_parser("deploy", help="install or update the daemon on a board over adb",
                                   description="Push this rknnlink (a wheel, or the package sources) to the "
                                               "board, install it with its systemd unit and start it.")
    deploy.add_argument("serial", help="adb serial of the board (see `rknnlink devices`)")
    deploy.add_argument("--wheel", help="push this wheel instead of the sources of the running rknnlink")
    deploy.add_argument("--prefix", help="install prefix on the board (default /opt/rknnlink or "
                                         "$RKNNLINK_BOARD_PREFIX)")
    deploy.add_argument("--serve-args", default=None,
                        help="arguments for `rknnlink serve` on the board (default: --listen 127.0.0.1:50051)")
    deploy.add_argument("--no-start", action="store_true", help="install only")
    deploy.add_argument("--timeout", type=float, default=60.0, metavar="S")
    deploy.set_defaults(func=_deploy)


def format_table(records) -> str:
    headers = ("ID", "TRANSPORT", "STATE", "PLATFORM", "DAEMON", "ADDRESS")
    rows = [(r.id, r.transport, r.state, r.platform or "-", r.daemon_version or "-", r.address or "-")
            for r in records]
    widths = [max(len(str(row[i])) for row in rows + [headers]) for i in range(len(headers))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip()
             for row in [headers] + rows]
    return "\n".join(lines)


def _devices(args: argparse.Namespace) -> int:
    from . import list_devices

    records = list_devices(timeout=args.timeout)
    if args.json:
        print(json.dumps([record.to_dict() for record in records], indent=2))
    elif records:
        print(format_table(records))
    else:
        print("No devices found (adb, USB, network).")
    return 0


def _deploy(args: argparse.Namespace) -> int:
    from .deploy import deploy

    try:
        result = deploy(args.serial, wheel=args.wheel, prefix=args.prefix, serve_args=args.serve_args,
                        start=not args.no_start, timeout=args.timeout)
    except TransportError as exc:
        print(f"rknnlink deploy: {exc}", file=sys.stderr)
        return 1
    print(result.summary())
    return 0
