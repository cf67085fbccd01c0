"""The board farm end to end: real labgrid-coordinator, real exporters, three simulated boards of two
platforms (one behind the emulated adbd), all in a network namespace this module creates."""

from __future__ import annotations

import json
import os
import signal
import time
from itertools import combinations

import numpy as np
import pytest
from farm_rig import ADB_SERIAL, LEASE_S, PLACES, Farm, farm_env, infra

from rknnlink.api import RKNN
from rknnlink.demo import make_demo_onnx

pytest.importorskip("labgrid")

# One job: hold a board through the toolkit facade (device_id='farm') or the client API (rknnlink.farm.board),
# run, profile, check the daemon sees only this client, and report what happened when.
JOB = r"""
import json, os, sys, time
import numpy as np
mode, model, platform, image_path, go = sys.argv[1:6]
image = np.load(image_path)
model_bytes = open(model, "rb").read()
from rknnlink.api import RKNN
from rknnlink.farm import board as farm_board
print(json.dumps({"ready": True}), flush=True)
while not os.path.exists(go):  # all six start together, so they contend for the boards
    time.sleep(0.01)
t0 = time.time()
if mode == "facade":
    rknn = RKNN()
    assert rknn.load_rknn(model) == 0
    assert rknn.init_runtime(target=platform, device_id=os.environ.get("FARM_DEVICE", "farm"), perf_debug=True) == 0
    start = time.time()
    board = rknn._runtime._board
    outs = [rknn.inference(inputs=[image])[0] for _ in range(4)]
    perf = rknn.eval_perf(is_print=False)
    time.sleep(0.3)
    clients = board.stats()["clients"]
    address, served = board.address, board.info.platform
    end = time.time()
    rknn.release()
else:
    with farm_board(platform=platform) as board:
        start = time.time()
        session = board.load_model(model_bytes, perf=True)
        outs = [session.run([image], formats=["nhwc"])[0] for _ in range(4)]
        perf = {"total_us": session.perf().total_us}
        time.sleep(0.3)
        clients = board.stats()["clients"]
        address, served = board.address, board.info.platform
        end = time.time()
np.save(os.environ["JOB_OUT"], outs[-1])
print(json.dumps({"address": address, "platform": served, "start": start, "end": end, "waited": start - t0,
                  "clients": clients, "same_runs": all(np.array_equal(o, outs[0]) for o in outs),
                  "perf": bool(perf)}))
"""

# A holder that keeps a board until its stdin closes (or it is killed).
HOLD = r"""
import json, logging, os, sys, time
logging.basicConfig(level=logging.DEBUG, format="%(asctime)s %(levelname).1s %(name)s: %(message)s")
from rknnlink.farm import FarmRequest, reserve
device = sys.argv[1]
platform = sys.argv[2] if len(sys.argv) > 2 else None
try:
    lease = reserve(FarmRequest.parse(device, platform))
except Exception as exc:
    print(json.dumps({"error": f"{type(exc).__name__}: {exc}", "at": time.time()}), flush=True)
    sys.exit(0)
print(json.dumps({"held": lease.place, "at": time.time(), "waited": lease.waited}), flush=True)
sys.stdin.read()
lease.release()
print(json.dumps({"released": lease.place, "at": time.time(), "lost": lease.lost}), flush=True)
"""


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    reason = infra.netns_available()
    if reason:
        pytest.skip(reason)
    rig = Farm(tmp_path_factory.mktemp("farm"))
    yield rig
    rig.close()


@pytest.fixture(scope="module")
def models(farm) -> dict:
    """A .rknn of the demo model per platform, an input image and the in-process simulator's output."""
    work = farm.workdir
    make_demo_onnx(work / "demo.onnx")
    image = np.random.default_rng(3).integers(0, 256, (1, 64, 64, 3)).astype(np.uint8)
    np.save(work / "image.npy", image)
    out = {"image": str(work / "image.npy")}
    for platform in ("rk3588", "rk3568"):
        rknn = RKNN()
        rknn.config(mean_values=[[127.5] * 3], std_values=[[127.5] * 3], target_platform=platform)
        assert rknn.load_onnx(str(work / "demo.onnx")) == 0
        assert rknn.build(do_quantization=False) == 0
        assert rknn.export_rknn(str(work / f"demo-{platform}.rknn")) == 0
        assert rknn.init_runtime() == 0
        expected = rknn.inference(inputs=[image])[0]
        rknn.release()
        out[platform] = {"model": str(work / f"demo-{platform}.rknn"), "expected": expected}
    return out


def _holder(farm: Farm, name: str, device: str, platform: str = "", **env: str):
    return farm.client(name, HOLD, [device, platform] if platform else [device],
                       env=infra.base_env(**{**_farm_env(), **env}))


def _farm_env() -> dict:
    return farm_env()


def _release(proc) -> None:
    proc.stdin.close()
    proc.wait(30)


def test_farm_list_shows_places_tags_and_resources(farm):
    state = farm.farm_list()
    places = {p["name"]: p for p in state["places"]}
    assert set(places) == set(PLACES)
    for name, platform in PLACES.items():
        tags = places[name]["tags"]
        assert tags["platform"] == platform and tags["backend"] == "sim" and tags["state"] == "ready"
        assert tags["npu_cores"] == ("3" if platform == "rk3588" else "1") and tags["daemon_version"]
        classes = {r["class"]: r["params"] for r in places[name]["resources"]}
        assert classes["RKNNLinkDaemon"]["address"] == ("127.0.0.3" if name.startswith("hostb") else "127.0.0.2")
    adb = places["hostb-127_0_0_1_6001"]
    assert {r["class"]: r["params"] for r in adb["resources"]}["RKNNLinkADBDevice"]["serial"] == "127.0.0.1:6001"
    assert adb["tags"]["transport"] == "adb"
    table = farm.ns.run([infra.PYTHON, "-m", "rknnlink.cli", "farm", "list"], env=_farm_env()).stdout
    assert "hostb-127_0_0_1_6001" in table and "PLATFORM" in table
    reaper = farm.ns.run([infra.PYTHON, "-m", "rknnlink.cli", "farm", "reap", "--once"], env=_farm_env())
    assert reaper.returncode == 0 and reaper.stdout == ""  # nothing held, nothing to reap


def test_six_concurrent_clients_on_two_platforms_never_share_a_board(farm, models):
    jobs = {}
    go = farm.workdir / "go-six"
    for i in range(6):
        platform = ("rk3588", "rk3568")[i % 2]
        mode = ("facade", "client")[(i // 2) % 2]
        env = infra.base_env(**{**_farm_env(), "JOB_OUT": str(farm.workdir / f"job{i}.npy")})
        jobs[f"job{i}"] = (platform, farm.client(f"job{i}", JOB, [mode, models[platform]["model"], platform,
                                                                  models["image"], str(go)], env=env))
    for name in jobs:
        farm.wait_output(name, "ready", 180)  # six interpreters importing numpy and rknnlink at once
    go.touch()
    t0 = time.monotonic()
    for name, (_platform, proc) in jobs.items():
        assert proc.wait(300) == 0, farm.stderr(name)[-3000:]
    elapsed = time.monotonic() - t0
    results = {name: farm.output(name)[-1] for name in jobs}
    boards = {}
    for name, (platform, _proc) in jobs.items():
        r = results[name]
        assert r["platform"] == platform, r
        assert r["clients"] == 1, f"{name} saw another client on its board: {r}"
        assert r["same_runs"] and r["perf"]
        got = np.load(farm.workdir / f"{name}.npy")
        np.testing.assert_array_equal(got, models[platform]["expected"])
        boards.setdefault(r["address"], []).append((r["start"], r["end"], name))
    assert len(boards) == 3, boards  # every board served someone
    for address, spans in boards.items():
        for (_s1, e1, n1), (s2, _e2, n2) in combinations(sorted(spans), 2):
            assert e1 <= s2, f"{n1} and {n2} overlapped on {address}: {spans}"
    # The coordinator's own log: every acquisition of a place is followed by its release before the next.
    held = {}
    for place, event, holder in farm.acquisitions():
        if event == "acquired":
            assert place not in held, f"{place} acquired by {holder} while {held.get(place)} held it"
            held[place] = holder
        else:
            held.pop(place, None)
    assert not held, f"still held after all jobs ended: {held}"
    waits = sorted(round(r["waited"], 2) for r in results.values())
    print(f"\nsix jobs on three boards in {elapsed:.1f} s; per-job waits {waits}")


def test_places_learn_the_runtime_version_once_a_session_ran(farm, models):
    # One session on every place, held through the farm (so the test does not depend on an earlier test's jobs).
    child = ("import os, sys; from rknnlink.client import Board; from rknnlink.transport import resolve; "
             "b = Board.connect(resolve(os.environ['RKNNLINK_DEVICE']).address); "
             "import numpy as np; s = b.load_model(open(sys.argv[1], 'rb').read()); s.run([np.load(sys.argv[2])]); "
             "s.close(); b.close()")
    for place, platform in PLACES.items():
        ran = farm.ns.run([infra.PYTHON, "-m", "rknnlink.cli", "farm", "run", "--place", place, "--",
                           infra.PYTHON, "-c", child, models[platform]["model"], models["image"]],
                          env=_farm_env(), timeout=120)
        assert ran.returncode == 0, ran.stderr[-2000:]
    deadline = time.monotonic() + 60  # each poll starts a `farm list` process: seconds apiece under load
    while time.monotonic() < deadline:
        tags = {p["name"]: p["tags"] for p in farm.farm_list()["places"]}
        if all(t.get("librknnrt_version") for t in tags.values()):
            break
        time.sleep(0.3)
    assert all(t.get("librknnrt_version") for t in tags.values()), tags


def test_farm_run_holds_a_board_for_a_command(farm):
    child = ("import json, os; from rknnlink.client import Board; from rknnlink.transport import resolve; "
             "e = resolve(os.environ['RKNNLINK_DEVICE']); b = Board.connect(e.address); "
             "print(json.dumps({'device': os.environ['RKNNLINK_DEVICE'], 'place': os.environ['RKNNLINK_FARM_PLACE'], "
             "'platform': b.info.platform, 'clients': b.stats()['clients']})); b.close()")
    result = farm.ns.run([infra.PYTHON, "-m", "rknnlink.cli", "farm", "run", "--platform", "rk3568", "--",
                          infra.PYTHON, "-c", child], env=_farm_env(), timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.splitlines()[-1])
    assert out["place"] == "hosta-tcp_127_0_0_1_51011" and out["device"].startswith("tcp:127.0.0.2:")
    assert out["platform"] == "rk3568" and out["clients"] == 1
    state = farm.farm_list()
    assert {p["name"]: p["holder"] for p in state["places"]}[out["place"]] is None  # released afterwards
    failed = farm.ns.run([infra.PYTHON, "-m", "rknnlink.cli", "farm", "run", "--platform", "rk3568", "--",
                          infra.PYTHON, "-c", "raise SystemExit(3)"], env=_farm_env(), timeout=60)
    assert failed.returncode == 3
    assert all(p["holder"] is None for p in farm.farm_list()["places"])


def test_export_dry_run_prints_the_labgrid_config(farm):
    result = farm.ns.run([infra.PYTHON, "-m", "rknnlink.cli", "farm", "export", "--dry-run", "--no-discover",
                          "--name", "dry", "--advertise", "127.0.0.4", "--device", "tcp:127.0.0.1:51011"],
                         env=_farm_env(), timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "cls: RKNNLinkDaemon" in result.stdout and "address: 127.0.0.4" in result.stdout
    assert "# place dry-tcp_127_0_0_1_51011: platform=rk3568" in result.stdout


def test_a_killed_holder_gives_the_board_back_after_its_lease(farm):
    place = "hosta-tcp_127_0_0_1_51011"
    # A lease of its own, long next to the scheduling delays of a loaded machine: the last refresh before the
    # kill wrote `now + lease`, at most a keeper period (lease/3) earlier, and the reaper waits GRACE past it.
    # So the board comes back >= 2/3 lease after the kill; lease/2 leaves a period of slack for a keeper that
    # ran late, and a board handed back at the kill (say, when the holder's connection dropped) is far below.
    lease = 3 * LEASE_S
    doomed = _holder(farm, "doomed", f"farm?lease={lease:g}", "rk3568")
    held = farm.wait_output("doomed", "held", 60)
    assert held["held"] == place
    waiter = _holder(farm, "after-kill", "farm?timeout=120", "rk3568")  # queued already when the holder dies
    farm.wait_reservations(1)
    os.killpg(doomed.pid, signal.SIGKILL)
    killed = time.time()
    doomed.wait(10)
    got = farm.wait_output("after-kill", "held", 120)
    assert got["held"] == place, got
    returned = got["at"] - killed
    assert returned >= lease / 2, f"the board came back before the lease could expire ({returned:.1f} s)"
    print(f"\nkilled holder's board returned after {returned:.1f} s (lease {lease:g} s)")
    farm.wait_log("export-hosta", "lease ended", 30)  # the exporter's reaper released it, nothing else
    _release(waiter)


def test_a_suspended_holder_is_told_it_lost_the_board(farm):
    place = "hosta-tcp_127_0_0_1_51011"
    sleeper = _holder(farm, "sleeper", "farm", "rk3568")
    assert farm.wait_output("sleeper", "held", 60)["held"] == place
    os.killpg(sleeper.pid, signal.SIGSTOP)
    deadline = time.monotonic() + 20
    while {p["name"]: p["holder"] for p in farm.farm_list()["places"]}[place] is not None:
        assert time.monotonic() < deadline, "the suspended holder's lease never expired"
        time.sleep(0.3)
    os.killpg(sleeper.pid, signal.SIGCONT)
    # The keeper notices at its next period (or the one after, if its copy of the places was not updated yet)
    # and logs it: release() stops the keeper, so it must not come before that.
    farm.wait_text("sleeper", f"took board {place} back", 60)
    _release(sleeper)
    lost = farm.wait_output("sleeper", "released", 10)["lost"]
    assert lost and f"took board {place} back" in lost


def test_higher_priority_reservation_is_served_first(farm):
    blocker = _holder(farm, "blocker", "farm", "rk3568")
    farm.wait_output("blocker", "held", 60)
    low = _holder(farm, "low", "farm?priority=0&timeout=60", "rk3568")
    farm.wait_reservations(1)
    high = _holder(farm, "high", "farm?priority=10&timeout=60", "rk3568")
    queue = farm.wait_reservations(2)
    assert [r["priority"] for r in queue] == [10.0, 0.0]  # the queue as `farm list` shows it
    _release(blocker)
    first = farm.wait_output("high", "held", 30)
    time.sleep(0.5)
    assert not any("held" in line for line in farm.output("low")), "the low-priority client got the board first"
    _release(high)
    second = farm.wait_output("low", "held", 30)
    assert first["at"] < second["at"]
    _release(low)


def test_an_unplugged_board_is_skipped_with_a_clear_message(farm):
    adb_place, sim_place = "hostb-127_0_0_1_6001", "hosta-tcp_127_0_0_1_51001"
    hold_adb = _holder(farm, "hold-adb", f"farm:{adb_place}")
    hold_sim = _holder(farm, "hold-sim", f"farm:{sim_place}")
    farm.wait_output("hold-adb", "held", 60)
    farm.wait_output("hold-sim", "held", 60)
    for_that_board = _holder(farm, "wants-adb", f"farm:{adb_place}?timeout=60")
    for_platform = _holder(farm, "wants-rk3588", "farm?timeout=60", "rk3588")
    farm.wait_reservations(2)
    unplugged = time.time()
    farm.adb.adb("disconnect", ADB_SERIAL)  # the cable is pulled
    error = farm.wait_output("wants-adb", "error", 30)
    assert "BoardGoneError" in error["error"] and adb_place in error["error"] and "left the farm" in error["error"]
    print(f"\nwaiter told after {error['at'] - unplugged:.1f} s: {error['error']}")
    state = {p["name"]: p for p in farm.farm_list()["places"]}
    assert state[adb_place]["tags"]["state"] == "unplugged" and "rknnlink" not in state[adb_place]["tags"]
    _release(hold_sim)
    got = farm.wait_output("wants-rk3588", "held", 30)
    assert got["held"] == sim_place  # the unplugged rk3588 was skipped
    assert f"board {adb_place} left the farm while you waited" in farm.stderr("wants-rk3588")
    _release(for_platform)
    _release(hold_adb)
    for_that_board.wait(10)
    farm.adb.connect()  # plugged back in: the board rejoins the pool
    state = {p["name"]: p for p in farm.wait_places({adb_place}, timeout=90)["places"]}
    assert state[adb_place]["tags"]["state"] == "ready"


def test_bad_farm_requests_say_what_is_wrong(farm):
    out = farm.ns.python(r"""
import json
from rknnlink.farm import FarmError, FarmRequest, reserve
errors = {}
for device, platform in (("farm", "rv1106"), ("farm:nope", None), ("farm?timeout=x", None)):
    try:
        reserve(FarmRequest.parse(device, platform))
        errors[device] = None
    except (FarmError, ValueError) as exc:
        errors[device] = str(exc)
print(json.dumps(errors))
""", env=_farm_env())
    assert "no board in the farm" in out["farm"] and "rk3568" in out["farm"]
    assert "no board in the farm" in out["farm:nope"]
    assert "timeout" in out["farm?timeout=x"] and "number" in out["farm?timeout=x"]


def test_device_id_parsing():
    from rknnlink.farm import FarmRequest

    r = FarmRequest.parse("farm:lab-1?priority=5&timeout=12&npu_cores=3", "rk3588")
    assert (r.place, r.priority, r.timeout, r.tags) == ("lab-1", 5.0, 12.0, {"npu_cores": "3"})
    assert r.filter() == {"rknnlink": "board", "npu_cores": "3", "platform": "rk3588", "name": "lab-1"}
    with pytest.raises(ValueError, match="not a farm device id"):
        FarmRequest.parse("farmer", None)
