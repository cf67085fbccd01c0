"""A minimal gRPC server with the standard health service and a bytes echo method, for transport tests.

It stands in for "some gRPC daemon on the board" where the rknnlink daemon itself is not the subject.
Run: python health_server.py --port 50051 [--port-file F]; prints READY.
"""

from __future__ import annotations

import argparse
import sys
import threading
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

ECHO_METHOD = "/rknnlink.test.Echo/Echo"
HEAD_METHOD = "/rknnlink.test.Echo/Head"   # replies with the first HEAD_BYTES of the request (a score vector)
HEAD_BYTES = 4000


def build_server(bind: str, max_message: int = 64 * 1024 * 1024, credentials=None, interceptors=()) -> tuple:
    """Returns (server, port) with health SERVING, a raw-bytes echo and a 'head' unary method."""
    options = [("grpc.max_receive_message_length", max_message), ("grpc.max_send_message_length", max_message)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=options,
                         interceptors=list(interceptors))
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    echo = grpc.unary_unary_rpc_method_handler(lambda request, _ctx: request)
    head = grpc.unary_unary_rpc_method_handler(lambda request, _ctx: request[:HEAD_BYTES])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("rknnlink.test.Echo",
                                                                          {"Echo": echo, "Head": head})])
    port = server.add_secure_port(bind, credentials) if credentials else server.add_insecure_port(bind)
    return server, port


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file")
    args = parser.parse_args()
    server, port = build_server(f"127.0.0.1:{args.port}")
    server.start()
    if args.port_file:
        Path(args.port_file).write_text(str(port))
    print(f"READY {port}", flush=True)
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
