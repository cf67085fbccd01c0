"""`rknnlink farm export | list | run | reap` (registered by rknnlink.cli)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    farm = subparsers.add_parser("farm", help="share boards through labgrid's coordinator (export, list, run)",
                                 description="Board farm on labgrid's coordinator: export this host's boards, "
                                             "list the farm, hold a board for a command. See docs/farm.md.")
    farm.add_argument("--coordinator", metavar="HOST:PORT",
                      help="labgrid coordinator (default $RKNNLINK_FARM_COORDINATOR, $LG_COORDINATOR, "
                           "127.0.0.1:20408)")
    sub = farm.add_subparsers(dest="farm_command", metavar="FARM_COMMAND")

    export = sub.add_parser("export", help="publish this host's boards (runs a labgrid exporter)",
                            description="Probe the boards `rknnlink devices` finds (and --device ones), relay "
                                        "their daemons at --advertise, write the labgrid exporter config, run "
                                        "labgrid-exporter on it, keep places and tags in step, reap leases.")
    export.add_argument("--name", default=socket.gethostname().split(".")[0].lower(),
                        help="exporter name (default: this host's short name)")
    export.add_argument("--advertise", default=None, metavar="HOST",
                        help="address clients reach this host at (default: its hostname)")
    export.add_argument("--device", action="append", default=[], metavar="ID",
                        help="also export this device id (e.g. tcp:127.0.0.1:50051); repeatable")
    export.add_argument("--no-discover", action="store_true", help="export only the --device boards")
    export.add_argument("--config", type=Path, help="where to write the exporter YAML "
                                                    "(default ~/.cache/rknnlink/farm/exporter-NAME.yaml)")
    export.add_argument("--interval", type=float, default=2.0, help="seconds between rescans (default 2)")
    export.add_argument("--ready-file", type=Path, help="write the exported place names here once running")
    export.add_argument("--dry-run", action="store_true",
                        help="probe once, print the exporter YAML and tags, start nothing")
    export.set_defaults(func=_export)

    listing = sub.add_parser("list", help="places, tags, holders and the queue")
    listing.add_argument("--json", action="store_true", help="print JSON for scripts")
    listing.set_defaults(func=_list)

    run = sub.add_parser("run", help="hold a farm board while COMMAND runs",
                         description="Reserve and acquire a board, run COMMAND with RKNNLINK_DEVICE=tcp:ADDRESS "
                                     "and RKNNLINK_FARM_PLACE set, then release it (also when COMMAND fails).")
    run.add_argument("--platform", help="target platform (rk3588, ...)")
    run.add_argument("--place", help="a specific board (a place from `rknnlink farm list`)")
    run.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE", help="required tag; repeatable")
    run.add_argument("--priority", type=float, help="queue priority (higher first; default 0)")
    run.add_argument("--timeout", type=float, help="seconds to wait in the queue (default 600)")
    run.add_argument("--lease", type=float, help="lease seconds (default 30)")
    run.add_argument("cmd", nargs=argparse.REMAINDER, help="-- COMMAND ARGS...")
    run.set_defaults(func=_run)

    reaper = sub.add_parser("reap", help="release places whose lease expired (next to the coordinator)")
    reaper.add_argument("--interval", type=float, default=2.0)
    reaper.add_argument("--once", action="store_true")
    reaper.set_defaults(func=_reap)
    farm.set_defaults(func=lambda args: (farm.print_help(), 2)[1])


def _fail(exc: Exception) -> int:
    print(f"rknnlink farm: {exc}", file=sys.stderr)
    return 1


def _export(args: argparse.Namespace) -> int:
    from .errors import FarmError
    from .exporter import ExportSupervisor, exporter_config, probe_board
    from .tags import group_name

    advertise = args.advertise or socket.gethostname()
    if args.dry_run:
        from .exporter import discovered_ids

        ids = list(dict.fromkeys(args.device + ([] if args.no_discover else discovered_ids())))
        boards = []
        for device_id in ids:
            try:
                board = probe_board(device_id, advertise)
            except Exception as exc:  # noqa: BLE001 - report each board
                print(f"# {device_id}: not exported: {exc}", file=sys.stderr)
                continue
            board.group = group_name(device_id)
            boards.append(board)
        print(exporter_config(args.name, boards), end="")
        for board in boards:
            print(f"# place {args.name}-{board.group}: " + " ".join(f"{k}={v}" for k, v in board.tags.items()))
            board.close()
        return 0
    supervisor = ExportSupervisor(args.name, advertise, args.device, not args.no_discover, args.coordinator,
                                  args.config, args.interval)
    signal.signal(signal.SIGTERM, lambda *_: supervisor.stop())
    signal.signal(signal.SIGINT, lambda *_: supervisor.stop())
    logging.getLogger("rknnlink.farm").setLevel(logging.WARNING)
    try:
        supervisor.run(ready_file=args.ready_file)
    except FarmError as exc:
        return _fail(exc)
    return 0


def farm_state(coordinator: Any) -> Dict[str, List[Dict[str, Any]]]:
    """Places (tags, holder, lease) and reservations (the queue) as plain data."""
    from .coordinator import reservation_state
    from .lease import LEASE_TAG, lease_until

    now = time.time()
    places = []
    for place in sorted(coordinator.places.values(), key=lambda p: p.name):
        until = lease_until(place)
        resources = [{"class": r.cls, "exporter": r.exporter, "group": r.group, "name": r.name,
                      "params": r.params, "avail": r.avail} for r in coordinator.place_resources(place)]
        places.append({"name": place.name, "tags": {k: v for k, v in place.tags.items() if k != LEASE_TAG},
                       "holder": place.acquired or None,
                       "lease_s": round(until - now, 1) if until is not None and place.acquired else None,
                       "reservation": place.reservation or None,
                       "resources": resources})
    queue = []
    for res in sorted(coordinator.reservations(), key=lambda r: (-r.prio, r.created)):
        queue.append({"owner": res.owner, "token": res.token, "state": reservation_state(res), "priority": res.prio,
                      "filter": dict(res.filters["main"].filter) if "main" in res.filters else {},
                      "allocation": dict(res.allocations).get("main"), "age_s": round(now - res.created, 1)})
    return {"places": places, "reservations": queue}


def _list(args: argparse.Namespace) -> int:
    from .coordinator import Coordinator
    from .errors import FarmError

    try:
        with Coordinator(args.coordinator, name=None) as coord:
            state = farm_state(coord)
    except FarmError as exc:
        return _fail(exc)
    if args.json:
        print(json.dumps(state, indent=2, default=str))
        return 0
    rows = [("PLACE", "PLATFORM", "STATE", "HOLDER", "LEASE", "TAGS")]
    for p in state["places"]:
        tags = {k: v for k, v in p["tags"].items() if k not in ("platform", "state", "rknnlink")}
        rows.append((p["name"], p["tags"].get("platform", "-"), p["tags"].get("state", "-"), p["holder"] or "-",
                     f"{p['lease_s']:g}s" if p["lease_s"] is not None else "-",
                     " ".join(f"{k}={v}" for k, v in sorted(tags.items()))))
    print(_table(rows) if len(rows) > 1 else "No places on the coordinator.")
    if state["reservations"]:
        qrows = [("OWNER", "PRIORITY", "STATE", "WANTS", "ALLOCATED", "AGE")]
        for r in state["reservations"]:
            wants = " ".join(f"{k}={v}" for k, v in r["filter"].items() if k != "rknnlink")
            qrows.append((r["owner"], f"{r['priority']:g}", r["state"], wants, r["allocation"] or "-",
                          f"{r['age_s']:g}s"))
        print("\nQueue:\n" + _table(qrows))
    return 0


def _table(rows) -> str:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def _run(args: argparse.Namespace) -> int:
    from .errors import FarmError
    from .reservation import FarmRequest, reserve

    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        print("rknnlink farm run: give a command after --", file=sys.stderr)
        return 2
    try:
        tags = {}
        for item in args.tag:
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"--tag {item!r} must be KEY=VALUE")
            tags[key] = value
        request = FarmRequest.make(args.platform, args.place, tags, args.priority, args.timeout, args.lease,
                                   args.coordinator)
        held = reserve(request)
    except (FarmError, ValueError) as exc:
        return _fail(exc)
    env = dict(os.environ, RKNNLINK_DEVICE=f"tcp:{held.address}", RKNNLINK_FARM_PLACE=held.place)
    try:
        code = subprocess.call(cmd, env=env)
    finally:
        held.release()
    if held.lost:
        print(f"rknnlink farm run: {held.lost}; the command's results may not be exclusive", file=sys.stderr)
        return code or 1
    return code


def _reap(args: argparse.Namespace) -> int:
    from .coordinator import Coordinator
    from .errors import FarmError
    from .lease import reap

    try:
        with Coordinator(args.coordinator, name=None) as coord:
            while True:
                for name in reap(coord):
                    print(f"released {name}: lease expired", flush=True)
                if args.once:
                    return 0
                time.sleep(args.interval)
    except FarmError as exc:
        return _fail(exc)
