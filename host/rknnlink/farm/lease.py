"""Leases on acquired places: labgrid keeps an acquisition until someone releases it, even after its
holder died, so rknnlink adds a lease on top.

* The holder writes the place tag `lease_until` (epoch seconds) before it acquires the place, and a
  :class:`LeaseKeeper` thread pushes it forward every `duration / 3` seconds while it holds the place.
* A reaper (:func:`reap`, run by every `rknnlink farm export` supervisor for its own places, or by
  `rknnlink farm reap` next to the coordinator) takes a place whose lease is more than `GRACE` seconds
  old away from that holder only (labgrid's ReleasePlace fromuser: a place someone else acquired meanwhile
  is left alone): it cancels the reservation that led to it, clears the tag and releases the place.
* Places acquired without a lease tag (a person with `labgrid-client lock`) are never reaped.

A client killed while holding a board therefore gives it back `duration + GRACE` seconds after its last
refresh, at most plus one reaper period.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Callable, List, Optional

from .coordinator import Coordinator, CoordinatorCallError

log = logging.getLogger(__name__)

LEASE_TAG = "lease_until"
GRACE = 1.0  # seconds past the lease before a reaper acts (clock skew between hosts, a late refresh)


def lease_duration(explicit: Optional[float] = None) -> float:
    """Seconds a lease lasts without refresh: explicit, $RKNNLINK_FARM_LEASE, or 30."""
    value = explicit if explicit is not None else float(os.environ.get("RKNNLINK_FARM_LEASE", "30"))
    if value <= 0:
        raise ValueError(f"the farm lease must be positive seconds, not {value!r} (RKNNLINK_FARM_LEASE)")
    return value


def lease_until(place: Any) -> Optional[float]:
    """The place's lease end (epoch seconds), or None when it carries no rknnlink lease."""
    text = place.tags.get(LEASE_TAG, "")
    try:
        return float(text) if text else None
    except ValueError:
        return None


def write_lease(coordinator: Coordinator, place: str, duration: float) -> float:
    until = time.time() + duration
    coordinator.set_tags(place, {LEASE_TAG: f"{until:.2f}"})
    return until


class LeaseKeeper(threading.Thread):
    """Refreshes this client's lease on `place` until stop(); calls on_lost if the place was taken away."""

    def __init__(self, coordinator: Coordinator, place: str, duration: float,
                 on_lost: Optional[Callable[[str], None]] = None) -> None:
        super().__init__(name=f"farm-lease-{place}", daemon=True)
        self.coordinator, self.place, self.duration = coordinator, place, duration
        self.on_lost = on_lost
        self._halt = threading.Event()
        self.refreshes = 0

    def run(self) -> None:
        while not self._halt.wait(self.duration / 3):
            current = self.coordinator.places.get(self.place)
            if current is None or current.acquired != self.coordinator.name:
                holder = (current.acquired if current is not None else "") or "nobody"
                reason = (f"the farm took board {self.place} back (now held by {holder}): this client's lease "
                          f"expired, e.g. it was suspended longer than {self.duration:g} s")
                log.error("%s", reason)
                if self.on_lost is not None:
                    self.on_lost(reason)
                return
            try:
                write_lease(self.coordinator, self.place, self.duration)
                self.refreshes += 1
            except CoordinatorCallError as exc:  # keep trying: the lease outlives a few missed refreshes
                log.warning("could not refresh the lease on %s: %s", self.place, exc)

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(5)


def reap(coordinator: Coordinator, owned: Optional[Callable[[Any], bool]] = None,
         now: Optional[float] = None) -> List[str]:
    """Release every place (for which `owned(place)` holds) whose lease expired; returns their names."""
    now = time.time() if now is None else now
    released = []
    for place in list(coordinator.places.values()):
        until = lease_until(place)
        if until is None or until + GRACE > now or (owned is not None and not owned(place)):
            continue
        holder = place.acquired or None
        try:
            if holder:
                # Cancel, clear, then release: the next client in the queue gets the place in the same
                # scheduling pass, and a new holder's lease tag is never the one cleared.
                if place.reservation:  # the dead holder's reservation
                    _cancel_quietly(coordinator, place.reservation)
                coordinator.set_tags(place.name, {LEASE_TAG: ""})
                coordinator.release(place.name, fromuser=holder)
                log.warning("released %s held by %s: its lease ended %.1f s ago (the client stopped refreshing "
                            "it: killed, crashed or cut off)", place.name, holder, now - until)
            else:
                coordinator.set_tags(place.name, {LEASE_TAG: ""})
        except CoordinatorCallError as exc:
            log.warning("reaping %s: %s", place.name, exc)
            continue
        released.append(place.name)
    return released


def _cancel_quietly(coordinator: Coordinator, token: str) -> None:
    try:
        coordinator.cancel_reservation(token)
    except CoordinatorCallError as exc:  # already cancelled or expired
        log.debug("reservation %s: %s", token, exc)
