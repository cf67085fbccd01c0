"""Network transport: mDNS discovery on loopback inside a namespace, TLS + bearer token, refusals."""

from __future__ import annotations

import json
import subprocess

import pytest
from transport_rig import HERE, PYTHON, base_env, find_sim_library

SERIAL = "NETBOARD01"


NET_HOST = "10.77.0.1"


@pytest.fixture(scope="module")
def secure_board(netns, tmp_path_factory):
    # A non-loopback address on the namespace's lo: "beyond loopback" for the daemon, still on this machine.
    subprocess.run(["ip", "-n", netns.name, "addr", "add", f"{NET_HOST}/32", "dev", "lo"], check=True)
    state = tmp_path_factory.mktemp("secure")
    proc = netns.spawn([PYTHON, str(HERE / "secure_server.py"), "--state-dir", str(state), "--serial", SERIAL],
                       ready="READY", log=state / "server.log")
    token = (state / "token").read_text().strip()
    from rknnlink.transport import security

    cert = (state / "cert.pem").read_bytes()
    env = base_env(RKNNLINK_MDNS_INTERFACES="127.0.0.1", RKNNLINK_TOKEN=token)
    return {"proc": proc, "state": state, "token": token, "cert": cert, "fingerprint": security.fingerprint(cert),
            "env": env}


def _discover(netns, env, serial=SERIAL) -> dict:
    return netns.python(f"""
import json
from rknnlink.transport import mdns
services = mdns.discover(timeout=8, serial={serial!r})
print(json.dumps({{"services": [s.__dict__ for s in services]}}))
""", env=env)


def test_discover_finds_the_advertised_daemon(netns, secure_board):
    from rknnlink import PROTOCOL_VERSION, __version__

    services = _discover(netns, secure_board["env"])["services"]
    assert len(services) == 1
    service = services[0]
    assert service["serial"] == SERIAL and service["platform"] == "rk3588"
    assert service["daemon_version"] == __version__ and service["protocol_version"] == PROTOCOL_VERSION
    assert service["host"] == NET_HOST and service["port"] > 0
    assert service["tls"] is True and service["fingerprint"] == secure_board["fingerprint"]


CALL_SNIPPET = """
import json, os, grpc
from rknnlink.transport import resolve
endpoint = resolve({device_id!r}, timeout=10)
payload = os.urandom(150528)
result = {{"secure": endpoint.secure, "address": endpoint.address, "server_name": endpoint.tls_server_name}}
with endpoint.open_channel(options=[("grpc.max_receive_message_length", 1 << 24)]) as channel:
    try:
        result["same"] = channel.unary_unary("/rknnlink.test.Echo/Echo")(payload, timeout=10) == payload
    except grpc.RpcError as exc:
        result["code"], result["details"] = exc.code().name, exc.details()
print(json.dumps(result))
"""


def test_resolve_by_serial_connects_with_tls_and_token(netns, secure_board):
    out = netns.python(CALL_SNIPPET.format(device_id=f"mdns:{SERIAL}"), env=secure_board["env"])
    assert out["secure"] is True and out["same"] is True
    assert out["server_name"] == f"rknnlink-{SERIAL}"


def test_tcp_address_is_pinned_by_the_advertised_fingerprint(netns, secure_board):
    port = _discover(netns, secure_board["env"])["services"][0]["port"]
    out = netns.python(CALL_SNIPPET.format(device_id=f"tcp:{NET_HOST}:{port}"), env=secure_board["env"])
    assert out["secure"] is True and out["same"] is True


def test_tcp_address_with_a_copied_certificate(netns, secure_board):
    port = _discover(netns, secure_board["env"])["services"][0]["port"]
    env = dict(secure_board["env"], RKNNLINK_TLS_CA=str(secure_board["state"] / "cert.pem"),
               RKNNLINK_MDNS="0")  # no advertisement: only the copied file can vouch
    out = netns.python(CALL_SNIPPET.format(device_id=f"tcp:{NET_HOST}:{port}"), env=env)
    assert out["same"] is True


def test_wrong_and_missing_tokens_are_refused_with_clear_errors(netns, secure_board):
    wrong = netns.python(CALL_SNIPPET.format(device_id=f"mdns:{SERIAL}"),
                         env=dict(secure_board["env"], RKNNLINK_TOKEN="not-the-token"))
    assert wrong["code"] == "UNAUTHENTICATED" and "wrong access token" in wrong["details"]
    env = dict(secure_board["env"])
    env.pop("RKNNLINK_TOKEN")
    missing = netns.python(CALL_SNIPPET.format(device_id=f"mdns:{SERIAL}"), env=env)
    assert missing["code"] == "UNAUTHENTICATED" and "RKNNLINK_TOKEN" in missing["details"]


def test_plain_text_clients_are_refused(netns, secure_board):
    port = _discover(netns, secure_board["env"])["services"][0]["port"]
    out = netns.python(f"""
import json, grpc
from rknnlink.transport import security
channel = security.open_channel("{NET_HOST}:{port}", token={secure_board['token']!r})
try:
    channel.unary_unary("/rknnlink.test.Echo/Echo")(b"x", timeout=5)
    print(json.dumps({{"code": "OK"}}))
except grpc.RpcError as exc:
    print(json.dumps({{"code": exc.code().name, "details": exc.details()}}))
""", env=secure_board["env"])
    assert out["code"] == "UNAVAILABLE"


def test_unverifiable_certificate_is_refused_with_the_fix(netns, secure_board, tmp_path):
    port = _discover(netns, secure_board["env"])["services"][0]["port"]
    env = dict(secure_board["env"], RKNNLINK_MDNS="0")
    out = netns.python(f"""
import json
from rknnlink.transport import resolve, TransportError
try:
    resolve("tcp:{NET_HOST}:{port}", timeout=3)
    print(json.dumps({{"error": None}}))
except TransportError as exc:
    print(json.dumps({{"error": str(exc)}}))
""", env=env)
    assert out["error"] and "RKNNLINK_TLS_CA" in out["error"]


def test_devices_lists_network_daemons(netns, secure_board):
    from rknnlink import __version__

    result = netns.run([PYTHON, "-m", "rknnlink.cli", "devices", "--json", "--timeout", "4"],
                       env=secure_board["env"], timeout=60)
    assert result.returncode == 0, result.stderr
    rows = [row for row in json.loads(result.stdout) if row["transport"] == "tcp"]
    assert len(rows) == 1
    assert rows[0]["platform"] == "rk3588" and rows[0]["daemon_version"] == __version__
    assert rows[0]["id"] == f"tcp:{rows[0]['address']}" and rows[0]["state"] == "device"


def test_insecure_network_listener_warns_and_serves_plain_text(netns, secure_board, tmp_path):
    state = tmp_path / "insecure"
    log = tmp_path / "insecure.log"
    proc = netns.spawn([PYTHON, str(HERE / "secure_server.py"), "--state-dir", str(state), "--serial", "OPEN01",
                        "--insecure"], ready="READY", log=log)
    assert "WITHOUT TLS" in log.read_text()
    assert not (state / "token").exists()
    services = _discover(netns, secure_board["env"], serial="OPEN01")["services"]
    service = next(s for s in services if s["serial"] == "OPEN01")
    assert service["tls"] is False and service["fingerprint"] is None
    out = netns.python(CALL_SNIPPET.format(device_id="mdns:OPEN01"), env=secure_board["env"])
    assert out["secure"] is False and out["same"] is True
    proc.terminate()


def test_real_daemon_behind_tls_and_token(netns, secure_board, tmp_path):
    """The daemon's own server class with these pieces wired in answers GetDeviceInfo only with the token."""
    library = find_sim_library()
    if library is None:
        pytest.skip("the simulated librknnrt is not built (run `pip install -e .`)")
    state = tmp_path / "daemon"
    serial = "NETDAEMON2"
    netns.spawn([PYTHON, str(HERE / "secure_server.py"), "--state-dir", str(state), "--serial", serial,
                 "--daemon", library], ready="READY", log=tmp_path / "daemon.log", timeout=60)
    token = (state / "token").read_text().strip()
    snippet = f"""
import json, grpc
from rknnlink.transport import resolve
from rknnlink.transport.probe import device_info
from rknnlink.v1 import rknnlink_pb2 as pb, rknnlink_pb2_grpc as pb_grpc
endpoint = resolve("mdns:{serial}", timeout=10)
with endpoint.open_channel() as channel:
    try:
        info = pb_grpc.RknnLinkStub(channel).GetDeviceInfo(pb.DeviceInfoRequest(), timeout=10)
        print(json.dumps({{"platform": info.platform, "backend": info.backend}}))
    except grpc.RpcError as exc:
        print(json.dumps({{"code": exc.code().name, "details": exc.details()}}))
"""
    good = netns.python(snippet, env=base_env(RKNNLINK_MDNS_INTERFACES="127.0.0.1", RKNNLINK_TOKEN=token))
    assert good == {"platform": "rk3588", "backend": "sim", "_stderr": good["_stderr"]}
    bad = netns.python(snippet, env=base_env(RKNNLINK_MDNS_INTERFACES="127.0.0.1", RKNNLINK_TOKEN="nope"))
    assert bad["code"] == "UNAUTHENTICATED"


def test_inference_over_the_tls_data_port_of_a_network_daemon(netns, secure_board, tmp_path):
    """A session on a daemon beyond loopback (TLS + token), resolved over mDNS, runs over the daemon's TLS
    data port (same certificate, found through the endpoint); without the token nothing is created."""
    library = find_sim_library()
    if library is None:
        pytest.skip("the simulated librknnrt is not built (run `pip install -e .`)")
    state = tmp_path / "daemon"
    serial = "NETDATA3"
    netns.spawn([PYTHON, str(HERE / "secure_server.py"), "--state-dir", str(state), "--serial", serial,
                 "--daemon", library], ready="READY", log=tmp_path / "daemon.log", timeout=60)
    token = (state / "token").read_text().strip()
    snippet = f"""
import json, sys
import numpy as np
sys.path.insert(0, {str(HERE.parent / "runtime")!r})
import sim_models
from rknnlink.client import Board
from rknnlink.transport import resolve
endpoint = resolve("mdns:{serial}", timeout=10)
model = sim_models.conv_relu_model()[0]
try:
    with Board.connect(endpoint.address, **endpoint.connect_kwargs()) as board, board.load_model(model) as session:
        x = np.ones((1, 3, 8, 8), np.float32)
        out = session.run([x], formats=["nchw"])[0]
        with session.pipeline(depth=2) as pipe:
            piped = list(pipe.map([[x]] * 4, formats=["nchw"]))
        print(json.dumps({{"carrier": session.carrier, "kind": session._link.carrier.kind,
                           "shape": list(out.shape), "same": all(np.array_equal(p[0], out) for p in piped)}}))
except Exception as exc:
    print(json.dumps({{"error": type(exc).__name__, "message": str(exc)}}))
"""
    good = netns.python(snippet, env=base_env(RKNNLINK_MDNS_INTERFACES="127.0.0.1", RKNNLINK_TOKEN=token))
    assert {k: good.get(k) for k in ("carrier", "kind", "shape", "same")} == \
        {"carrier": "tls", "kind": "tls", "shape": [1, 4, 8, 8], "same": True}, good
    bad = netns.python(snippet, env=base_env(RKNNLINK_MDNS_INTERFACES="127.0.0.1", RKNNLINK_TOKEN="nope"))
    assert "error" in bad and "RKNNLINK_TOKEN" in bad["message"], bad
