"""`rknnlink install-service`: write the systemd unit with this installation's `rknnlink` executable."""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path
from typing import Optional

from rknnlink.v1.address import parse_host_port

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


def systemd_word(value: str, command: bool = False) -> str:
    """One ExecStart word: specifiers (%) escaped, and variables ($) in arguments (systemd expands them
    there, not in the command's path); quoted when it has spaces or quotes."""
    if any(not c.isprintable() for c in value):
        raise ValueError(f"{value!r} contains control characters (newlines would add unit directives)")
    escaped = value.replace("%", "%%")
    if not command:
        escaped = escaped.replace("$", "$$")
    if any(c.isspace() or c in "\"'\\;" for c in escaped):
        escaped = '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return escaped


def render_unit(executable: str, listen: str) -> str:
    if not Path(executable).is_absolute():
        raise ValueError(f"--exec {executable!r} must be an absolute path (systemd runs it without a PATH search)")
    parse_host_port(listen, allow_port_zero=False)  # ValueError with the reason
    return TEMPLATE.read_text().replace("@EXEC@", systemd_word(executable, command=True)).replace("@LISTEN@", listen)


def install(root: Path = Path("/"), listen: str = "127.0.0.1:50051", executable: Optional[str] = None) -> Path:
    """Write <root>/etc/systemd/system/rknnlink-server.service; returns its path."""
    target = Path(root) / "etc" / "systemd" / "system" / UNIT_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_unit(executable or rknnlink_executable(), listen))
    log.info("installed %s", target)
    if Path(root).resolve() == Path("/"):
        log.warning("enable and start it with: systemctl daemon-reload && systemctl enable --now %s", UNIT_NAME)
    return target
