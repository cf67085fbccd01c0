"""A synchronous client of labgrid's coordinator (its gRPC service, labgrid >= 24).

labgrid's own client is an asyncio command-line program; rknnlink needs a small blocking API it can call
from `init_runtime()`, a lease-keeper thread and the exporter's supervisor. This module speaks the same
protocol with labgrid's generated stubs: one channel per client, a ClientStream that identifies the client
(the coordinator ties reservations and acquisitions to that name) and keeps a live copy of every place and
resource, and unary calls for the rest. Place and resource snapshots are labgrid's protobuf messages.
"""

from __future__ import annotations

import getpass
import importlib
import importlib.util
import itertools
import logging
import os
import queue
import socket
import sys
import threading
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import grpc

from .errors import FarmError

log = logging.getLogger(__name__)

DEFAULT_COORDINATOR = "127.0.0.1:20408"  # labgrid's default port
ResourceKey = Tuple[str, str, str]  # (exporter, group, resource name)


def _generated() -> Tuple[Any, Any]:
    """labgrid's generated protobuf and gRPC modules. Loaded from labgrid's files without running labgrid's
    package __init__ (which imports its whole driver stack, ~2 s) unless labgrid is imported already."""
    if "labgrid" in sys.modules:
        from labgrid.remote.generated import labgrid_coordinator_pb2, labgrid_coordinator_pb2_grpc

        return labgrid_coordinator_pb2, labgrid_coordinator_pb2_grpc
    spec = importlib.util.find_spec("labgrid")
    if spec is None or not spec.submodule_search_locations:
        raise FarmError("the board farm needs labgrid: pip install 'rknnlink[farm]'")
    name = f"{__name__}_labgrid"
    if name not in sys.modules:
        package = types.ModuleType(name)
        package.__path__ = [str(Path(next(iter(spec.submodule_search_locations))) / "remote" / "generated")]
        sys.modules[name] = package
    return (importlib.import_module(f"{name}.labgrid_coordinator_pb2"),
            importlib.import_module(f"{name}.labgrid_coordinator_pb2_grpc"))


def coordinator_address(explicit: Optional[str] = None) -> str:
    """The coordinator's HOST:PORT: explicit, else $RKNNLINK_FARM_COORDINATOR, else labgrid's $LG_COORDINATOR."""
    address = explicit or os.environ.get("RKNNLINK_FARM_COORDINATOR") or os.environ.get("LG_COORDINATOR")
    address = address or DEFAULT_COORDINATOR
    host, sep, port = address.rpartition(":")
    return address if sep and port.isdigit() and "]" not in port else f"{address}:20408"


def client_name(role: str = "rknnlink") -> str:
    """A name unique to this client: the coordinator records it as the holder of what it acquires."""
    return f"{socket.gethostname()}/{getpass.getuser()}:{role}-{os.getpid()}-{os.urandom(2).hex()}"


def map_values(m: Any) -> Dict[str, Any]:
    """A labgrid MapValue map (resource params) as a plain dict."""
    out = {}
    for key, value in m.items():
        kind = value.WhichOneof("kind")
        out[key] = getattr(value, kind) if kind else None
    return out


@dataclass(frozen=True)
class Resource:
    """One exported resource as the coordinator publishes it."""

    exporter: str
    group: str
    name: str
    cls: str
    params: Dict[str, Any]
    acquired: str
    avail: bool

    @classmethod
    def from_pb(cls, m: Any) -> Resource:
        return cls(m.path.exporter_name, m.path.group_name, m.path.resource_name, m.cls, map_values(m.params),
                   m.acquired, m.avail)


def place_matches(place: Any, resource: Resource) -> bool:
    """labgrid's ResourceMatch rule (fnmatch on exporter, group, class and optional name)."""
    from fnmatch import fnmatchcase

    for match in place.matches:
        if (fnmatchcase(resource.exporter, match.exporter) and fnmatchcase(resource.group, match.group)
                and fnmatchcase(resource.cls, match.cls)
                and (not match.HasField("name") or fnmatchcase(resource.name, match.name))):
            return True
    return False


class Coordinator:
    """A session with labgrid's coordinator. `places` and `resources` follow the coordinator live."""

    def __init__(self, address: Optional[str] = None, name: Optional[str] = None, timeout: float = 10.0) -> None:
        self.pb, grpc_mod = _generated()
        self.address = coordinator_address(address)
        self.name = name or client_name()
        self.timeout = timeout
        options = [("grpc.keepalive_time_ms", 7500), ("grpc.keepalive_timeout_ms", 10000),
                   ("grpc.http2.max_pings_without_data", 0), ("grpc.enable_retries", 0)]
        self._channel = grpc.insecure_channel(self.address, options)
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            self._channel.close()
            raise FarmError(f"cannot reach labgrid's coordinator at {self.address} within {timeout:g} s: start it "
                            f"(`labgrid-coordinator -l HOST:PORT`) or point RKNNLINK_FARM_COORDINATOR (or "
                            f"LG_COORDINATOR) at it") from None
        self.stub = grpc_mod.CoordinatorStub(self._channel)
        self.places: Dict[str, Any] = {}
        self.resources: Dict[ResourceKey, Resource] = {}
        self.changed = threading.Condition()
        self.generation = 0  # bumped on every update batch, under `changed`
        self._out: "queue.Queue[Any]" = queue.Queue()  # noqa: UP037
        self._syncs = itertools.count(1)
        self._synced: Dict[int, threading.Event] = {}
        self._listeners: List[Callable[[], None]] = []
        self.closed = False
        self._shut = False
        self._stream = self.stub.ClientStream(self._outgoing())
        self._reader = threading.Thread(target=self._read, name="farm-coordinator", daemon=True)
        self._reader.start()
        msg = self.pb.ClientInMessage()
        msg.startup.version = _labgrid_version()
        msg.startup.name = self.name
        self._out.put(msg)
        for kind in ("all_places", "all_resources"):
            msg = self.pb.ClientInMessage()
            setattr(msg.subscribe, kind, True)
            self._out.put(msg)
        self.sync()  # the coordinator handles messages in order: after this the session is registered
        self.places = {p.name: p for p in self.call("GetPlaces", self.pb.GetPlacesRequest()).places}

    # -- stream -------------------------------------------------------------------------------------------------
    def _outgoing(self) -> Iterator[Any]:
        while True:
            msg = self._out.get()
            if msg is None:
                return
            yield msg

    def _read(self) -> None:
        try:
            for out in self._stream:
                if out.HasField("sync"):
                    event = self._synced.pop(out.sync.id, None)
                    if event is not None:
                        event.set()
                if out.updates:
                    self._apply(out.updates)
        except grpc.RpcError as exc:
            if not self.closed:
                log.warning("lost the coordinator at %s: %s", self.address, exc.details() or exc.code())
        finally:
            with self.changed:
                self.closed = True
                self.generation += 1
                self.changed.notify_all()
            for event in list(self._synced.values()):
                event.set()

    def _apply(self, updates: Any) -> None:
        with self.changed:
            for update in updates:
                kind = update.WhichOneof("kind")
                if kind == "place":
                    self.places[update.place.name] = update.place
                elif kind == "del_place":
                    self.places.pop(update.del_place, None)
                elif kind == "resource":
                    res = Resource.from_pb(update.resource)
                    self.resources[(res.exporter, res.group, res.name)] = res
                elif kind == "del_resource":
                    p = update.del_resource
                    self.resources.pop((p.exporter_name, p.group_name, p.resource_name), None)
            self.generation += 1
            self.changed.notify_all()

    def sync(self, timeout: Optional[float] = None) -> None:
        """Round trip on the stream: every update the coordinator sent before it has been applied."""
        ident = next(self._syncs)
        event = self._synced[ident] = threading.Event()
        msg = self.pb.ClientInMessage()
        msg.sync.id = ident
        self._out.put(msg)
        if not event.wait(timeout or self.timeout) or self.closed:
            raise FarmError(f"the coordinator at {self.address} did not answer its stream (sync {ident})")

    def wait_change(self, generation: int, timeout: float) -> int:
        """Blocks until an update newer than `generation` arrived (or timeout); returns the new generation."""
        with self.changed:
            self.changed.wait_for(lambda: self.generation != generation or self.closed, timeout)
            return self.generation

    # -- unary calls --------------------------------------------------------------------------------------------
    def call(self, method: str, request: Any, timeout: Optional[float] = None) -> Any:
        try:
            return getattr(self.stub, method)(request, timeout=timeout or self.timeout)
        except grpc.RpcError as exc:
            raise CoordinatorCallError(method, exc) from None

    def add_place(self, name: str) -> None:
        self.call("AddPlace", self.pb.AddPlaceRequest(name=name))

    def delete_place(self, name: str) -> None:
        self.call("DeletePlace", self.pb.DeletePlaceRequest(name=name))

    def add_match(self, place: str, pattern: str) -> None:
        self.call("AddPlaceMatch", self.pb.AddPlaceMatchRequest(placename=place, pattern=pattern))

    def set_tags(self, place: str, tags: Dict[str, str]) -> None:
        """Merge tags into the place's; an empty value deletes that tag (labgrid's rule)."""
        self.call("SetPlaceTags", self.pb.SetPlaceTagsRequest(placename=place, tags=tags))

    def set_comment(self, place: str, comment: str) -> None:
        self.call("SetPlaceComment", self.pb.SetPlaceCommentRequest(placename=place, comment=comment))

    def acquire(self, place: str) -> None:
        self.call("AcquirePlace", self.pb.AcquirePlaceRequest(placename=place))

    def release(self, place: str, fromuser: Optional[str] = None) -> None:
        """Release `place`; with fromuser only if that client still holds it (a no-op otherwise)."""
        request = self.pb.ReleasePlaceRequest(placename=place)
        if fromuser is not None:
            request.fromuser = fromuser
        self.call("ReleasePlace", request)

    def create_reservation(self, tags: Dict[str, str], priority: float) -> Any:
        request = self.pb.CreateReservationRequest(prio=float(priority))
        request.filters["main"].CopyFrom(self.pb.Reservation.Filter(filter=tags))
        return self.call("CreateReservation", request).reservation

    def poll_reservation(self, token: str) -> Any:
        """The reservation's state; polling also keeps a waiting reservation alive (labgrid expires it 60 s
        after the last poll)."""
        return self.call("PollReservation", self.pb.PollReservationRequest(token=token)).reservation

    def cancel_reservation(self, token: str) -> None:
        self.call("CancelReservation", self.pb.CancelReservationRequest(token=token))

    def reservations(self) -> List[Any]:
        return list(self.call("GetReservations", self.pb.GetReservationsRequest()).reservations)

    # -- views --------------------------------------------------------------------------------------------------
    def place_resources(self, place: Any) -> List[Resource]:
        with self.changed:
            return [r for r in self.resources.values() if place_matches(place, r)]

    def close(self) -> None:
        if self._shut:
            return
        self._shut = self.closed = True
        self._out.put(None)
        self._stream.cancel()
        self._channel.close()

    def __enter__(self) -> Coordinator:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class CoordinatorCallError(FarmError):
    """A coordinator RPC failed; `code` is the gRPC status (FAILED_PRECONDITION: place busy, ...)."""

    def __init__(self, method: str, exc: grpc.RpcError) -> None:
        self.code = exc.code() if hasattr(exc, "code") else None
        self.details = exc.details() if hasattr(exc, "details") else str(exc)
        super().__init__(f"labgrid coordinator {method}: {self.details} ({self.code.name if self.code else '?'})")


_STATES = {0: "waiting", 1: "allocated", 2: "acquired", 3: "expired", 4: "invalid"}


def reservation_state(reservation: Any) -> str:
    """labgrid's ReservationState name of a Reservation message."""
    return _STATES.get(int(reservation.state), str(reservation.state))


def _labgrid_version() -> str:
    try:
        from importlib.metadata import version

        return version("labgrid")
    except Exception:  # noqa: BLE001 - only informational
        return "unknown"
