"""RknnError: a librknnrt error code with its name and a message that says what to do about it."""

from __future__ import annotations

from typing import Optional

from rknnlink.runtime.abi import ERROR_NAMES

# What a user can do about each code; appended to the call-specific message.
_HINTS = {
    -1: "the runtime reported a generic failure; run with RKNN_LOG_LEVEL=3 on the board for its log",
    -2: "the NPU did not finish in time; check the board load and the NPU driver (dmesg | grep -i rknpu)",
    -3: "the NPU device is unavailable; check that /dev/rknpu or /dev/dri exists and the driver is loaded",
    -4: "out of memory; free memory on the board or use a smaller model",
    -5: "a parameter was invalid; check the call's arguments",
    -6: "the model is invalid or was built for another runtime; rebuild it with rknnlink (or the matching "
        "RKNN-Toolkit2 for a vendor runtime)",
    -7: "the context is invalid (already destroyed?); create a new session",
    -8: "an input is invalid; check the input count, shape, dtype and format against the input attributes",
    -9: "an output request is invalid; check the output count",
    -10: "the runtime does not match the device or driver; update librknnrt and the NPU driver together",
    -11: "the pre-compiled model is incompatible with this driver; rebuild the model",
    -12: "the model's optimization level is incompatible with this driver; rebuild the model",
    -13: "the model was built for another target platform; rebuild it with the board's target_platform",
}


class RknnError(RuntimeError):
    """A failed librknnrt call.

    `code` is the RKNN error code (negative int, e.g. -6), `name` its symbolic name (RKNN_ERR_MODEL_INVALID)
    and `message` the full explanation, including the runtime's own reason when it gives one.
    """

    def __init__(self, code: int, name: Optional[str] = None, message: str = "") -> None:
        self.code = int(code)
        self.name = name or ERROR_NAMES.get(self.code, f"RKNN_ERR_{self.code}")
        self.message = message or hint_for(self.code)
        super().__init__(f"{self.name} ({self.code}): {self.message}")

    def __reduce__(self):  # keep code/name/message when pickled (worker processes, multiprocessing)
        return (type(self), (self.code, self.name, self.message))


def hint_for(code: int) -> str:
    """Advice for an error code; generic for codes the ABI does not define."""
    return _HINTS.get(int(code), "unexpected error code from the NPU runtime")


def error_from_call(function: str, code: int, detail: str = "") -> RknnError:
    """Build the RknnError for `function` returning `code`, adding the runtime's reason text if any."""
    parts = [f"{function} failed"]
    if detail:
        parts.append(detail.strip())
    parts.append(hint_for(code))
    return RknnError(code, None, ": ".join(parts))
