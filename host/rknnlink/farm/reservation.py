"""Getting a board from the farm: select places by tags, wait in the coordinator's queue, acquire, lease.

Device ids (init_runtime's device_id, the CLI's --device):

* ``farm`` - any board of the requested target platform;
* ``farm:PLACE`` - that board (a place name from `rknnlink farm list`);
* either with ``?key=value&...``: ``priority``, ``timeout`` (seconds to wait in the queue), ``lease``
  (seconds), ``coordinator`` (HOST:PORT); every other key is a tag the board must carry
  (``farm?npu_cores=3&backend=vendor``).

Defaults come from $RKNNLINK_FARM_PRIORITY (0), $RKNNLINK_FARM_TIMEOUT (600 s), $RKNNLINK_FARM_LEASE (30 s)
and $RKNNLINK_FARM_COORDINATOR / $LG_COORDINATOR. Priority orders the queue as labgrid does (higher first,
then oldest first).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Dict, Optional
from urllib.parse import parse_qsl

from .coordinator import Coordinator, CoordinatorCallError, Resource, reservation_state
from .errors import BoardGoneError, FarmError, FarmTimeoutError, LeaseLostError
from .lease import LEASE_TAG, LeaseKeeper, lease_duration, write_lease
from .tags import DAEMON_CLASS, POOL_TAG, POOL_VALUE, STATE_TAG, UNPLUGGED

log = logging.getLogger(__name__)

POLL_S = 1.0  # reservation poll period while waiting (also keeps it alive); place updates wake us earlier


@dataclass
class FarmRequest:
    """What a client asks the farm for."""

    platform: Optional[str] = None
    place: Optional[str] = None
    tags: Dict[str, str] = field(default_factory=dict)
    priority: float = 0.0
    timeout: float = 600.0
    lease: float = 30.0
    coordinator: Optional[str] = None

    @classmethod
    def parse(cls, device_id: str, platform: Optional[str] = None) -> FarmRequest:
        """`farm[:PLACE][?key=value&...]` plus the caller's target platform."""
        spec, _, query = device_id.partition("?")
        head, _, place = spec.partition(":")
        if head != "farm":
            raise ValueError(f"{device_id!r} is not a farm device id: use 'farm', 'farm:PLACE' or "
                             f"'farm?tag=value&priority=N&timeout=S'")
        request = cls(platform=platform, place=place or None, priority=float(os.environ.get(
            "RKNNLINK_FARM_PRIORITY", "0")), timeout=float(os.environ.get("RKNNLINK_FARM_TIMEOUT", "600")),
            lease=lease_duration())
        for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
            if key in ("priority", "timeout", "lease"):
                try:
                    setattr(request, key, float(value))
                except ValueError:
                    raise ValueError(f"farm option {key}={value!r} must be a number") from None
            elif key == "coordinator":
                request.coordinator = value
            elif key == "platform":
                request.platform = value
            else:
                request.tags[key] = value
        if request.timeout < 0 or request.lease <= 0:
            raise ValueError("farm timeout must be >= 0 and lease > 0 seconds")
        return request

    @classmethod
    def make(cls, platform: Optional[str] = None, place: Optional[str] = None,
             tags: Optional[Dict[str, str]] = None, priority: Optional[float] = None,
             timeout: Optional[float] = None, lease: Optional[float] = None,
             coordinator: Optional[str] = None) -> FarmRequest:
        """A request from keyword arguments; those left None take the environment's defaults."""
        request = cls.parse(f"farm:{place}" if place else "farm", platform)
        request.tags.update(tags or {})
        for key, value in (("priority", priority), ("timeout", timeout), ("lease", lease)):
            if value is not None:
                setattr(request, key, float(value))
        request.coordinator = coordinator or request.coordinator
        return request

    def filter(self) -> Dict[str, str]:
        """The reservation filter: only places of the rknnlink pool, plus platform, place name and tags."""
        tags = {POOL_TAG: POOL_VALUE, **self.tags}
        if self.platform:
            tags["platform"] = self.platform
        if self.place:
            tags["name"] = self.place
        return tags

    def describe(self) -> str:
        wanted = dict(self.tags)
        if self.platform:
            wanted = {"platform": self.platform, **wanted}
        what = " ".join(f"{k}={v}" for k, v in wanted.items())
        if self.place:
            return f"board {self.place} ({what})" if what else f"board {self.place}"
        return f"a board with {what}" if what else "any board"


def _tags(place: Any) -> Dict[str, str]:
    return {**dict(place.tags), "name": place.name}


def _matches(place: Any, wanted: Dict[str, str]) -> bool:
    tags = _tags(place)
    return all(tags.get(k) == v for k, v in wanted.items())


_LIVE: "weakref.WeakSet[FarmLease]" = weakref.WeakSet()  # noqa: UP037


@atexit.register
def _release_all() -> None:
    for lease in list(_LIVE):
        lease.release()


class FarmLease:
    """A board held from the farm: its place, daemon address and the lease keeping it. release() (or the
    end of a `with` block, or interpreter exit) gives it back; a killed client's lease expires instead."""

    def __init__(self, coordinator: Coordinator, request: FarmRequest, place: str, token: str,
                 daemon: Resource, waited: float) -> None:
        self.coordinator, self.request, self.place, self.token = coordinator, request, place, token
        self.holder = coordinator.name
        params = daemon.params
        self.address = f"{params['address']}:{params['port']}"
        self.data_address = f"{params['address']}:{params['data_port']}" if params.get("data_port") else None
        self.exporter = daemon.exporter
        self.tags = dict(coordinator.places[place].tags)
        self.waited = waited
        self.lost: Optional[str] = None
        self._lock = threading.Lock()
        self.released = False
        self.keeper = LeaseKeeper(coordinator, place, request.lease, on_lost=self._on_lost)
        self.keeper.start()
        _LIVE.add(self)

    def _on_lost(self, reason: str) -> None:
        self.lost = reason  # checked by farm.board() and `farm run`: results may have shared the board

    def check(self) -> None:
        """Raise LeaseLostError when the farm took the board back while this client believed it held it."""
        if self.lost:
            raise LeaseLostError(self.lost)

    def endpoint(self):
        """A transport Endpoint for rknnlink.client / the facade; closing it releases the board."""
        from rknnlink.transport import Endpoint

        return Endpoint(address=self.address, kind="farm", serial=self.place, data_address=self.data_address,
                        _closer=self.release)

    def release(self) -> None:
        """Give the board back (idempotent): end the reservation, release the place, clear the lease tag."""
        with self._lock:
            if self.released:
                return
            self.released = True
        self.keeper.stop()
        coord = self.coordinator
        try:
            # Cancel first: labgrid's scheduler only offers a place whose reservation was dropped in an
            # earlier pass, so releasing last lets the next client in the queue have it at once.
            coord.cancel_reservation(self.token)
            coord.release(self.place, fromuser=self.holder)
            coord.sync()  # our copy of the place now shows whether someone acquired it since
            current = coord.places.get(self.place)
            if current is None or not current.acquired:  # a new holder's own lease tag stays
                coord.set_tags(self.place, {LEASE_TAG: ""})
        except FarmError as exc:
            log.warning("releasing %s: %s (the lease expires by itself)", self.place, exc)
        finally:
            coord.close()
        log.info("farm: released %s", self.place)

    def __enter__(self) -> FarmLease:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def reserve(request: FarmRequest) -> FarmLease:
    """Wait in the coordinator's queue for a board matching `request`, acquire it and start its lease."""
    coord = Coordinator(request.coordinator)
    start = time.monotonic()
    try:
        lease = _reserve(coord, request, start)
    except BaseException:
        coord.close()
        raise
    log.info("farm: %s acquired after %.2f s in the queue (daemon %s via exporter %s)", lease.place,
             lease.waited, lease.address, lease.exporter)
    return lease


def _reserve(coord: Coordinator, request: FarmRequest, start: float) -> FarmLease:
    deadline = start + request.timeout
    wanted = request.filter()
    _check_candidates(coord, request, wanted, set())
    skipped: set = set()
    while True:
        token = coord.create_reservation(wanted, request.priority).token
        try:
            place = _wait_allocation(coord, request, wanted, token, deadline, skipped)
            daemon = _acquire(coord, request, place)
        except BaseException:
            _cancel(coord, token)
            raise
        if daemon is not None:
            return FarmLease(coord, request, place, token, daemon, time.monotonic() - start)
        _cancel(coord, token)
        skipped.add(place)
        if request.place:
            raise BoardGoneError(f"board {place} was allocated to you but its daemon is gone (the board was "
                                 f"unplugged or its exporter stopped); pick another with `rknnlink farm list`")
        log.warning("farm: board %s does not answer (unplugged?); skipping it and waiting for another", place)


def _check_candidates(coord: Coordinator, request: FarmRequest, wanted: Dict[str, str], seen: set) -> set:
    """The places that could serve `request`; raises when none is left, with what left and what exists."""
    with coord.changed:
        places = list(coord.places.values())
    live = {p.name for p in places if _matches(p, wanted)}
    for name in sorted(seen - live):
        if live:
            log.warning("farm: board %s left the farm while you waited; still waiting for %s", name,
                        ", ".join(sorted(live)))
    if live:
        return live
    loose = {k: v for k, v in wanted.items() if k != POOL_TAG}
    gone = sorted(p.name for p in places if _matches(p, loose) and p.tags.get(STATE_TAG) == UNPLUGGED)
    if gone:
        raise BoardGoneError(f"{request.describe()} is not available: {', '.join(gone)} left the farm (unplugged "
                             f"from its exporter host) while you waited; no other board matches. Wait for it to "
                             f"come back or pick another with `rknnlink farm list`")
    pool = sorted((p.name, p.tags.get("platform", "?")) for p in places if p.tags.get(POOL_TAG) == POOL_VALUE)
    offer = ", ".join(f"{n} ({plat})" for n, plat in pool) or "none: is an `rknnlink farm export` running?"
    raise FarmError(f"no board in the farm at {coord.address} matches {request.describe()}; boards: {offer}")


def _wait_allocation(coord: Coordinator, request: FarmRequest, wanted: Dict[str, str], token: str,
                     deadline: float, skipped: set) -> str:
    """Poll (and watch place updates) until our reservation is allocated; returns the place."""
    seen = _check_candidates(coord, request, wanted, set()) - skipped
    generation = coord.generation
    announced = False
    while True:
        try:
            res = coord.poll_reservation(token)
        except CoordinatorCallError as exc:
            raise FarmError(f"the farm dropped our reservation ({exc}); retry") from None
        state = reservation_state(res)
        if state in ("allocated", "acquired"):
            names = [n for n in res.allocations.get("main", "").split(",") if n] if res.allocations else []
            if names:
                return names[0]
        elif state in ("expired", "invalid"):
            raise FarmError(f"our reservation became {state} (the coordinator could not keep it); retry")
        if not announced:
            log.info("farm: waiting for %s (priority %g): %s", request.describe(), request.priority,
                     queue_summary(coord, wanted))
            announced = True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FarmTimeoutError(f"no {request.describe()} became free within {request.timeout:g} s "
                                   f"({queue_summary(coord, wanted)}); raise the timeout (farm?timeout=S or "
                                   f"RKNNLINK_FARM_TIMEOUT) or the priority")
        generation = coord.wait_change(generation, min(POLL_S, remaining))
        if coord.closed:
            raise FarmError(f"lost the coordinator at {coord.address} while waiting for {request.describe()}")
        seen = _check_candidates(coord, request, wanted, seen)


def queue_summary(coord: Coordinator, wanted: Dict[str, str]) -> str:
    """Who holds the matching boards and how many wait, for messages."""
    with coord.changed:
        places = [p for p in coord.places.values() if _matches(p, wanted)]
    held = ", ".join(f"{p.name} held by {p.acquired}" if p.acquired else f"{p.name} free"
                     for p in places)
    try:
        waiting = sum(1 for r in coord.reservations() if reservation_state(r) == "waiting")
    except CoordinatorCallError:
        waiting = -1
    return f"{held or 'no matching board'}; {waiting} reservation(s) waiting"


def _acquire(coord: Coordinator, request: FarmRequest, place: str) -> Optional[Resource]:
    """Lease, acquire and check the place's daemon; None (and nothing held) when it cannot be used."""
    write_lease(coord, place, request.lease)
    try:
        coord.acquire(place)
    except CoordinatorCallError as exc:
        log.warning("farm: acquiring %s failed: %s", place, exc)
        coord.set_tags(place, {LEASE_TAG: ""})
        return None
    daemon = _daemon_resource(coord, place)
    if daemon is None or not _answers(daemon):
        coord.release(place, fromuser=coord.name)
        coord.set_tags(place, {LEASE_TAG: ""})
        return None
    return daemon


def _daemon_resource(coord: Coordinator, place: str, wait: float = 5.0) -> Optional[Resource]:
    """The place's RKNNLinkDaemon resource (waiting briefly: an exporter that restarts re-publishes it)."""
    deadline = time.monotonic() + wait
    generation = coord.generation
    while True:
        current = coord.places.get(place)
        if current is not None:
            found = [r for r in coord.place_resources(current) if r.cls == DAEMON_CLASS and r.avail]
            if found:
                return found[0]
        if time.monotonic() >= deadline or current is None or current.tags.get(STATE_TAG) == UNPLUGGED:
            return None
        generation = coord.wait_change(generation, deadline - time.monotonic())


def _answers(daemon: Resource) -> bool:
    from rknnlink.transport.probe import check_address

    address = f"{daemon.params['address']}:{daemon.params['port']}"
    result = check_address(address, timeout=3.0)
    if not result.ok:
        log.warning("farm: the daemon of %s/%s at %s does not answer (%s)", daemon.exporter, daemon.group,
                    address, result.detail or result.status)
    return result.ok


def _cancel(coord: Coordinator, token: str) -> None:
    try:
        coord.cancel_reservation(token)
    except CoordinatorCallError as exc:
        log.debug("cancelling reservation %s: %s", token, exc)


def resolve_farm(device_id: str, platform: Optional[str] = None, timeout: Optional[float] = None):
    """transport.resolve()'s hook: a farm device id to an Endpoint whose close() releases the board."""
    request = FarmRequest.parse(device_id, platform)
    return reserve(request).endpoint()


__all__ = ["FarmLease", "FarmRequest", "queue_summary", "reserve", "resolve_farm"]
