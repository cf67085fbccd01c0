"""A board farm inside a network namespace: a real labgrid-coordinator, two real exporter hosts
(`rknnlink farm export`, which runs labgrid-exporter), two simulated boards as `rknnlink serve`
processes and one board behind the emulated adbd of tests/transport.

    hosta (advertised at 127.0.0.2): sim rk3588 (tcp:127.0.0.1:51001), sim rk3568 (tcp:127.0.0.1:51011)
    hostb (advertised at 127.0.0.3): the adb board 127.0.0.1:6001, an rk3588 whose daemon is on its port 50051

Every process runs in the namespace; code under test that talks to the coordinator runs there too.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("farm_transport_infra", HERE.parent / "transport" / "transport_rig.py")
infra = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(infra)

PYTHON = infra.PYTHON
COORDINATOR = "127.0.0.1:20408"
LEASE_S = 3.0
SIM_BOARDS = {"rk3588": 51001, "rk3568": 51011}
ADB_SERIAL = f"127.0.0.1:{infra.ADBD_PORT}"
PLACES = {"hosta-tcp_127_0_0_1_51001": "rk3588", "hosta-tcp_127_0_0_1_51011": "rk3568",
          "hostb-127_0_0_1_6001": "rk3588"}


def farm_env(**extra: str) -> Dict[str, str]:
    return infra.base_env(RKNNLINK_FARM_COORDINATOR=COORDINATOR, RKNNLINK_FARM_LEASE=str(LEASE_S), **extra)


class Farm:
    def __init__(self, workdir: Path) -> None:
        self.ns = infra.NetNs()
        self.workdir = workdir
        self.logs: Dict[str, Path] = {}
        self.exporters: Dict[str, subprocess.Popen] = {}
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def spawn(self, name: str, args: List[str], ready: Optional[str] = None, env: Optional[Dict[str, str]] = None,
              timeout: float = 120.0) -> subprocess.Popen:
        """Start a process with stdout+stderr in workdir/NAME.log; wait for `ready` in that log."""
        log = self.logs[name] = self.workdir / f"{name}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(self.ns.cmd(args), env=env or farm_env(), stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.ns.procs.append(proc)
        if ready:
            self.wait_log(name, ready, timeout, proc)
        return proc

    def wait_log(self, name: str, text: str, timeout: float, proc: Optional[subprocess.Popen] = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.logs[name].read_text(errors="replace"):
                return
            if proc is not None and proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{name} did not log {text!r}:\n{self.logs[name].read_text(errors='replace')[-3000:]}")

    def _start(self) -> None:
        lib = infra.find_sim_library()
        self.coordinator = self.spawn("coordinator", ["env", "-C", str(self.workdir), PYTHON, "-m",
                                                      "labgrid.remote.coordinator", "-l", COORDINATOR],
                                      ready="listening on")
        for platform, port in SIM_BOARDS.items():
            self.spawn(f"sim-{platform}", [PYTHON, "-m", "rknnlink.cli", "serve", "--backend", "sim", "--platform",
                                           platform, "--library", lib, "--listen", f"127.0.0.1:{port}",
                                           "--cache-dir", str(self.workdir / f"cache-{platform}")],
                       ready="listening on")
        # The adb board: emulated adbd + the real adb server; its daemon listens on the board's port.
        self.spawn("adb-board-daemon", [PYTHON, "-m", "rknnlink.cli", "serve", "--backend", "sim", "--platform",
                                        "rk3588", "--library", lib, "--listen", f"127.0.0.1:{infra.BOARD_PORT}",
                                        "--cache-dir", str(self.workdir / "cache-adb")], ready="listening on")
        self.adb = infra.AdbRig(self.ns, self.workdir / "adb")
        self.adb.connect()
        self.start_exporter("hosta", "127.0.0.2", [f"tcp:127.0.0.1:{p}" for p in SIM_BOARDS.values()])
        self.start_exporter("hostb", "127.0.0.3", [])
        self.wait_places(set(PLACES))

    def start_exporter(self, name: str, advertise: str, devices: List[str]) -> None:
        args = [PYTHON, "-m", "rknnlink.cli", "farm", "export", "--name", name, "--advertise", advertise,
                "--interval", "1", "--config", str(self.workdir / f"exporter-{name}.yaml"),
                "--ready-file", str(self.workdir / f"{name}.ready")]
        for device in devices:
            args += ["--device", device]
        if devices:
            args.append("--no-discover")
        self.exporters[name] = self.spawn(f"export-{name}", args, env=farm_env(RKNNLINK_ADB_DATA_CHANNEL="1"))

    def farm_list(self) -> dict:
        result = self.ns.run([PYTHON, "-m", "rknnlink.cli", "farm", "list", "--json"], env=farm_env(), timeout=90)
        assert result.returncode == 0, result.stderr[-2000:]
        return json.loads(result.stdout)

    def wait_places(self, names: set, timeout: float = 120.0) -> dict:
        deadline = time.monotonic() + timeout
        state: dict = {}
        while time.monotonic() < deadline:
            state = self.farm_list()
            ready = {p["name"] for p in state["places"] if p["tags"].get("rknnlink") == "board"
                     and any(r["class"] == "RKNNLinkDaemon" for r in p["resources"])}
            if names <= ready:
                return state
            time.sleep(0.3)
        logs = {n: self.logs[n].read_text(errors="replace")[-1500:] for n in self.logs if n.startswith("export")}
        raise AssertionError(f"places {sorted(names)} never became ready: {state}\n{logs}")

    def client(self, name: str, code: str, args: List[str], env: Optional[Dict[str, str]] = None
               ) -> subprocess.Popen:
        """A Python client in the namespace; its stdout (JSON lines) goes to workdir/NAME.out."""
        script = self.workdir / f"{name}.py"
        script.write_text(code)
        out = open(self.workdir / f"{name}.out", "wb")  # noqa: SIM115 - the child owns it
        err = open(self.workdir / f"{name}.err", "wb")  # noqa: SIM115
        proc = subprocess.Popen(self.ns.cmd([PYTHON, str(script), *args]), env=env or farm_env(), stdout=out,
                                stderr=err, stdin=subprocess.PIPE, start_new_session=True)
        self.ns.procs.append(proc)
        return proc

    def output(self, name: str) -> List[dict]:
        return [json.loads(line) for line in (self.workdir / f"{name}.out").read_text().splitlines() if line.strip()]

    def stderr(self, name: str) -> str:
        return (self.workdir / f"{name}.err").read_text(errors="replace")

    def wait_output(self, name: str, key: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.output(name):
                if key in line:
                    return line
            time.sleep(0.05)
        raise AssertionError(f"{name} never printed {key!r}: {self.output(name)}\n{self.stderr(name)[-3000:]}")

    def wait_text(self, name: str, text: str, timeout: float = 30.0) -> None:
        """Wait until client NAME's stderr (its log) contains `text`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.stderr(name):
                return
            time.sleep(0.05)
        raise AssertionError(f"{name} never logged {text!r}:\n{self.stderr(name)[-3000:]}")

    def wait_reservations(self, count: int, state: str = "waiting", timeout: float = 30.0) -> List[dict]:
        deadline = time.monotonic() + timeout
        found: List[dict] = []
        while time.monotonic() < deadline:
            found = [r for r in self.farm_list()["reservations"] if r["state"] == state]
            if len(found) >= count:
                return found
            time.sleep(0.2)
        raise AssertionError(f"{count} {state} reservations expected, have {found}")

    def acquisitions(self) -> List[tuple]:
        """The coordinator's own log of acquisitions and releases: (place, 'acquired'|'released', holder)."""
        events = []
        for line in self.logs["coordinator"].read_text(errors="replace").splitlines():
            if ": place acquired by " in line:
                place, _, holder = line.partition(": place acquired by ")
                events.append((place.strip(), "acquired", holder.strip()))
            elif line.endswith(": place released"):
                events.append((line[: -len(": place released")].strip(), "released", ""))
        return events

    def close(self) -> None:
        for proc in self.exporters.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.exporters.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        if getattr(self, "adb", None) is not None:
            self.adb.adb("kill-server")
        self.ns.close()
