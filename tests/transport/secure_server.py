"""A network-facing test server built from rknnlink.transport's pieces: TLS, token, mDNS advertisement.

It does what `rknnlink serve --listen 0.0.0.0:50051` should do (rknnlink_server.listening), on a small
gRPC server (health + bytes echo), or with --daemon on the real rknnlink daemon (sim backend). It listens
on a non-loopback address that the test adds to the namespace's lo, so nothing leaves the machine.
Run: python secure_server.py --state-dir D --serial S [--insecure] [--daemon LIB]; prints "READY PORT".
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from health_server import build_server

from rknnlink import PROTOCOL_VERSION, __version__
from rknnlink_server import listening as serving


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--serial", required=True)
    parser.add_argument("--host", default="10.77.0.1", help="a non-loopback address to listen on")
    parser.add_argument("--platform", default="rk3588")
    parser.add_argument("--insecure", action="store_true")
    parser.add_argument("--daemon", metavar="SIM_LIB", help="serve the real rknnlink daemon (sim backend)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    setup = serving.prepare_listen(f"{args.host}:0", serial=args.serial, platform=args.platform,
                                   state_dir=args.state_dir, insecure=args.insecure)
    if args.daemon:
        from rknnlink_server.server import Daemon, DaemonConfig

        config = DaemonConfig(listen=f"{args.host}:0", backend="sim", platform=args.platform, library=args.daemon,
                              cache_dir=args.state_dir / "cache")
        daemon = Daemon(config, server_credentials=setup.credentials, interceptors=setup.interceptors,
                        data_tls=setup.data_tls).start()
        port, stop = int(daemon.address.rsplit(":", 1)[1]), daemon.stop
    else:
        server, port = build_server(f"{args.host}:0", credentials=setup.credentials, interceptors=setup.interceptors)
        server.start()

        def stop() -> None:
            server.stop(1).wait(2)
    setup.advertise(port, daemon_version=__version__, protocol_version=PROTOCOL_VERSION, interfaces=["127.0.0.1"])
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    print(f"READY {port}", flush=True)
    done.wait()
    setup.close()
    stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
