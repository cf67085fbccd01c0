"""A network-facing test server built from rknnlink.transport's pieces: TLS, token, mDNS advertisement.

It is what `rknnlink serve --listen 0.0.0.0:50051` does for transport security, on a small gRPC server
(health + bytes echo), or with --daemon on the real rknnlink daemon (sim backend).
Run: python secure_server.py --state-dir D --serial S [--insecure] [--daemon LIB]; prints "READY PORT".
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from health_server import build_server

from rknnlink import PROTOCOL_VERSION, __version__
from rknnlink.transport import mdns, security


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--serial", required=True)
    parser.add_argument("--platform", default="rk3588")
    parser.add_argument("--insecure", action="store_true")
    parser.add_argument("--daemon", metavar="SIM_LIB", help="serve the real rknnlink daemon (sim backend)")
    args = parser.parse_args()
    credentials, interceptors, fingerprint = None, [], None
    if not args.insecure:
        cert, key = security.load_or_create_identity(args.state_dir, f"rknnlink-{args.serial}", ["127.0.0.1"])
        token = security.load_or_create_token(args.state_dir / security.TOKEN_FILE)
        credentials = security.server_credentials(cert, key)
        interceptors = [security.token_interceptor(token)]
        fingerprint = security.fingerprint(cert)
    if args.daemon:
        from rknnlink_server.server import Daemon, DaemonConfig

        config = DaemonConfig(listen="127.0.0.1:0", backend="sim", platform=args.platform, library=args.daemon,
                              cache_dir=args.state_dir / "cache")
        daemon = Daemon(config, server_credentials=credentials, interceptors=interceptors).start()
        port, stop = int(daemon.address.rsplit(":", 1)[1]), daemon.stop
    else:
        server, port = build_server("127.0.0.1:0", credentials=credentials, interceptors=interceptors)
        server.start()

        def stop() -> None:
            server.stop(1).wait(2)
    advertisement = mdns.advertise(port, serial=args.serial, platform=args.platform, daemon_version=__version__,
                                   protocol_version=PROTOCOL_VERSION, addresses=["127.0.0.1"],
                                   tls_fingerprint=fingerprint, interfaces=["127.0.0.1"])
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    print(f"READY {port}", flush=True)
    done.wait()
    advertisement.close()
    stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
