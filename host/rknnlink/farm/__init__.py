"""rknnlink.farm: many boards shared by many users and CI jobs, on labgrid's coordinator.

Board hosts run `rknnlink farm export` (exporter.py: a real labgrid exporter per host, one place per
board with its tags); clients ask for `device_id='farm'` / `'farm:PLACE'` (reservation.py: labgrid's
reservation queue with priorities, then an acquisition guarded by a lease, lease.py). From a script:

    from rknnlink.farm import board
    with board(platform="rk3588", priority=5) as b:      # a connected rknnlink.client.Board
        session = b.load_model(model_bytes)

Needs the `farm` extra (labgrid). See docs/farm.md.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Dict, Iterator, Optional

from .errors import BoardGoneError, FarmError, FarmTimeoutError, LeaseLostError
from .reservation import FarmLease, FarmRequest, reserve, resolve_farm

__all__ = ["BoardGoneError", "FarmError", "FarmLease", "FarmRequest", "FarmTimeoutError", "LeaseLostError",
           "board", "reserve", "resolve_farm"]


@contextmanager
def board(platform: Optional[str] = None, place: Optional[str] = None, tags: Optional[Dict[str, str]] = None,
          priority: Optional[float] = None, timeout: Optional[float] = None, lease: Optional[float] = None,
          coordinator: Optional[str] = None) -> Iterator:
    """Hold a farm board for the block and yield a connected rknnlink.client.Board (released on exit)."""
    from rknnlink.client import Board

    request = FarmRequest.make(platform, place, tags, priority, timeout, lease, coordinator)
    with reserve(request) as held:
        endpoint = held.endpoint()
        with Board.connect(endpoint.address, **endpoint.connect_kwargs()) as connected:
            yield connected
        held.check()
