"""Errors of the vendor-toolkit bridge; each message says what to do about it."""

from __future__ import annotations


class ToolkitError(ValueError):
    """Base class: something about the RKNN-Toolkit2 bridge failed.

    A ValueError because the toolkit facade raises ValueError for its failures (as RKNN-Toolkit2 does), so
    `init_runtime` passes these through unchanged, with their fix, instead of wrapping them."""


class ToolkitNotFoundError(ToolkitError):
    """No toolkit environment exists where rknnlink looks (the message names the setup command)."""


class ToolkitBrokenError(ToolkitError):
    """The environment exists but the toolkit does not import or run there."""


class ToolkitSetupError(ToolkitError):
    """Creating the managed environment failed (the message carries pip's last lines)."""


class ToolkitJobError(ToolkitError):
    """The toolkit ran but refused the job; `log` holds its full log, `stage` where it stopped."""

    def __init__(self, message: str, log: str = "", stage: str = "") -> None:
        self.log = log
        self.stage = stage
        super().__init__(message)
