"""Errors of the board farm, each saying what went wrong and what to do about it."""

from __future__ import annotations


class FarmError(Exception):
    """The farm could not give this client a board (coordinator unreachable, no such board, ...)."""


class FarmTimeoutError(FarmError, TimeoutError):
    """No matching board became free within the client's timeout; the reservation was cancelled."""


class BoardGoneError(FarmError):
    """The board this client asked for (farm:PLACE) left the farm: its exporter no longer offers it."""


class LeaseLostError(FarmError):
    """This client's hold on a board ended without release(): its lease expired and the farm reclaimed it."""
