"""Subcommands `rknnlink serve` and `rknnlink install-service` (registered by rknnlink.cli)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger("rknnlink_server")


def register(subparsers: "argparse._SubParsersAction") -> None:  # noqa: UP037 - private argparse type
    serve = subparsers.add_parser("serve", help="run the board daemon (gRPC) in the foreground",
                                  description="Serve the NPU runtime to rknnlink hosts over gRPC.")
    serve.add_argument("--listen", default="127.0.0.1:50051",
                       help="HOST:PORT to bind (default 127.0.0.1:50051; port 0 picks a free port and prints it)")
    serve.add_argument("--port-file", type=Path, help="write the bound HOST:PORT to this file once listening")
    serve.add_argument("--backend", choices=("auto", "vendor", "sim"), default="auto",
                       help="vendor librknnrt, the simulated NPU, or auto (vendor when installed)")
    serve.add_argument("--platform", help="the simulated board's platform (default rk3588); with the vendor "
                                          "backend it is detected from /proc/device-tree/compatible")
    serve.add_argument("--library", help="explicit librknnrt.so / librknnrt_sim.so path")
    serve.add_argument("--cache-dir", type=Path, help="model cache directory (default /var/cache/rknnlink as root, "
                                                      "~/.cache/rknnlink/models otherwise)")
    serve.add_argument("--max-sessions", type=int, default=16, help="sessions across all clients (default 16)")
    serve.add_argument("--max-cache-mb", type=int, default=2048, help="model cache size limit (default 2048)")
    serve.add_argument("--max-message-mb", type=int, default=64,
                       help="largest gRPC message (one inference request/reply; default 64)")
    serve.add_argument("--call-timeout", type=float, default=60.0,
                       help="seconds a runtime call may take before its worker is killed (default 60)")
    serve.add_argument("--state-dir", type=Path,
                       help="TLS identity and token for network listeners (default /var/lib/rknnlink as root, "
                            "~/.local/state/rknnlink otherwise)")
    serve.add_argument("--insecure", action="store_true",
                       help="listen beyond loopback WITHOUT TLS and token (not recommended)")
    serve.add_argument("--data-port", type=int,
                       help="TCP port of the direct inference data channel (loopback listeners only; default: the "
                            "gRPC port + 1, or a free port when the gRPC port is 0)")
    serve.add_argument("--no-data-port", action="store_true",
                       help="no direct data channel: every client relays its frames through the daemon")
    serve.add_argument("--client-grace", type=float, default=10.0,
                       help="seconds a client may stay connected without its Watch stream (default 10)")
    serve.add_argument("--idle-timeout", type=float, default=60.0,
                       help="seconds an upload, relay stream or dump download may be silent (a relay stream with a "
                            "run in the worker: plus --call-timeout; default 60)")
    serve.add_argument("--operator-token-file", type=Path,
                       help="file with the operator token (created on first use): GetStats with it lists every "
                            "client's sessions")
    serve.set_defaults(func=_serve)

    install = subparsers.add_parser("install-service", help="install the daemon's systemd unit",
                                    description="Write rknnlink-server.service under ROOT/etc/systemd/system.")
    install.add_argument("--root", type=Path, default=Path("/"), help="filesystem root (default /)")
    install.add_argument("--listen", default="127.0.0.1:50051", help="HOST:PORT for the daemon")
    install.add_argument("--exec", dest="executable", help="rknnlink executable (default: this installation's)")
    install.set_defaults(func=_install)

    bridge = subparsers.add_parser("usb-bridge", help="(board) relay the rknnlink USB gadget to the daemon",
                                   description="Board side of the USB transport: serve the FunctionFS bulk "
                                               "endpoints and relay them to the daemon (see setup_gadget.sh).")
    from rknnlink_server.usb_bridge import add_arguments

    add_arguments(bridge)
    bridge.set_defaults(func=_usb_bridge)


def _serve(args: argparse.Namespace) -> int:
    from rknnlink_server.server import DaemonConfig, run

    if (args.max_sessions < 1 or args.max_cache_mb < 1 or args.max_message_mb < 1 or args.call_timeout <= 0
            or args.client_grace <= 0 or args.idle_timeout <= 0):
        log.error("--max-sessions, --max-cache-mb, --max-message-mb, --call-timeout, --client-grace and "
                  "--idle-timeout must be positive")
        return 2
    config = DaemonConfig(listen=args.listen, backend=args.backend, platform=args.platform, library=args.library,
                          cache_dir=args.cache_dir, max_sessions=args.max_sessions, max_cache_mb=args.max_cache_mb,
                          max_message_mb=args.max_message_mb, call_timeout=args.call_timeout,
                          port_file=args.port_file, state_dir=args.state_dir, insecure=args.insecure,
                          data_port=args.data_port, no_data_port=args.no_data_port,
                          client_grace=args.client_grace, idle_timeout=args.idle_timeout,
                          operator_token_file=args.operator_token_file)
    try:
        return run(config)
    except (OSError, ValueError) as exc:
        log.error("cannot start the daemon: %s", exc)
        return 1


def _usb_bridge(args: argparse.Namespace) -> int:
    from rknnlink_server.usb_bridge import run_from_args

    logging.getLogger("rknnlink").setLevel(min(logging.getLogger().level, logging.INFO))
    return run_from_args(args)


def _install(args: argparse.Namespace) -> int:
    from rknnlink_server.install import install

    try:
        install(args.root, args.listen, args.executable)
    except (OSError, ValueError) as exc:
        log.error("cannot install the service: %s", exc)
        return 1
    return 0
