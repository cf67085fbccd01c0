"""`rknnlink install-service`: write the systemd unit with this installation's `rknnlink` executable."""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path
from typing import Optional

log = logging.getLogger(__name__)
UNIT_NAME = "rknnlink-server.service"
TEMPLATE = Path(__file__).resolve().parent / "systemd" / UNIT_NAME


def rknnlink_executable() -> str:
    """Absolute path of the `rknnlink` command next to this Python, else on PATH."""
    beside = Path(sys.executable).parent / "rknnlink"
    if beside.is_file():
        return str(beside)
    found = shutil.which("rknnlink")
    if found:
        return str(Path(found).resolve())
    raise FileNotFoundError("the `rknnlink` command is not installed; run `pip install rknnlink` first")


def render_unit(executable: str, listen: str) -> str:
    if any(c.isspace() for c in executable) or any(c.isspace() for c in listen):
        raise ValueError("the executable path and --listen must not contain spaces")
    return TEMPLATE.read_text().replace("@EXEC@", executable).replace("@LISTEN@", listen)


def install(root: Path = Path("/"), listen: str = "127.0.0.1:50051", executable: Optional[str] = None) -> Path:
    """Write <root>/etc/systemd/system/rknnlink-server.service; returns its path."""
    target = Path(root) / "etc" / "systemd" / "system" / UNIT_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_unit(executable or rknnlink_executable(), listen))
    log.info("installed %s", target)
    if Path(root).resolve() == Path("/"):
        log.warning("enable and start it with: systemctl daemon-reload && systemctl enable --now %s", UNIT_NAME)
    return target
