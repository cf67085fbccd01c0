"""Progress bars for long phases (upload, calibration, accuracy analysis, deploy).

tqdm on stderr, shown only when stderr is a terminal (logs and CI output stay clean); RKNNLINK_PROGRESS=0
hides them and =1 forces them. While a bar is open, log records are written through tqdm so that a
message never shares a line with the bar.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Any, Callable, Iterator, Optional


def enabled() -> bool:
    setting = os.environ.get("RKNNLINK_PROGRESS", "").strip().lower()
    if setting in ("0", "false", "no", "off"):
        return False
    if setting in ("1", "true", "yes", "on"):
        return True
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


class _TqdmLogHandler(logging.Handler):
    """Writes records above the bar (tqdm.write) instead of into it."""

    def __init__(self, inner: logging.Handler) -> None:
        super().__init__(inner.level)
        self.inner = inner
        self.setFormatter(inner.formatter)

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # never let a progress bar break logging
            self.handleError(record)


@contextlib.contextmanager
def _logs_above_bar() -> Iterator[None]:
    """Route stream handlers on stderr (ours and the root's) through tqdm.write while a bar is shown."""
    swapped = []
    for logger in (logging.getLogger(), logging.getLogger("rknnlink")):
        for handler in list(logger.handlers):
            if isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) in (
                    sys.stderr, sys.stdout):
                wrapper = _TqdmLogHandler(handler)
                logger.removeHandler(handler)
                logger.addHandler(wrapper)
                swapped.append((logger, handler, wrapper))
    try:
        yield
    finally:
        for logger, handler, wrapper in swapped:
            logger.removeHandler(wrapper)
            logger.addHandler(handler)


@contextlib.contextmanager
def bar(total: Optional[float], desc: str, unit: str = "it", unit_scale: bool = False,
        show: Optional[bool] = None) -> Iterator[Callable[[float], Any]]:
    """`with bar(n, 'upload', 'B', True) as advance: advance(k)`; a no-op when bars are disabled."""
    if not (enabled() if show is None else show):
        yield lambda _n: None
        return
    from tqdm import tqdm

    with _logs_above_bar(), tqdm(total=total, desc=desc, unit=unit, unit_scale=unit_scale, file=sys.stderr,
                                 dynamic_ncols=True, leave=True) as progress:
        yield progress.update


def byte_callback(desc: str, total: int) -> Any:
    """A (sent, total) callback for transfers, with the bar opened on first use: returns (callback, close)."""
    state: dict = {}

    def callback(done: int, total_bytes: int = total) -> None:
        if "cm" not in state:
            state["cm"] = bar(total_bytes, desc, "B", True)
            state["advance"] = state["cm"].__enter__()
            state["done"] = 0
        state["advance"](done - state["done"])
        state["done"] = done

    def close() -> None:
        if "cm" in state:
            state.pop("cm").__exit__(None, None, None)

    return callback, close


@contextlib.contextmanager
def steps(total: int, desc: str) -> Iterator[Callable[[str], None]]:
    """A bar over named steps (deploy's progress hook): `with steps(6, 'deploy') as step: step('copying')`."""
    if not enabled():
        yield lambda _name: None
        return
    from tqdm import tqdm

    with _logs_above_bar(), tqdm(total=total, desc=desc, unit="step", file=sys.stderr, leave=True) as progress:
        started = [False]

        def step(name: str) -> None:
            if started[0]:
                progress.update(1)
            started[0] = True
            progress.set_postfix_str(name)

        yield step
        if started[0]:
            progress.update(1)
