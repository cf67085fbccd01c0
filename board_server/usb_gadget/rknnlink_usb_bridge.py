#!/usr/bin/env python3
"""Board side of the rknnlink USB transport, runnable from a source tree (setup_gadget.sh --bridge-cmd).

The program lives in rknnlink_server.usb_bridge so that every deployed rknnlink carries it as
`rknnlink usb-bridge`; this file only puts the source tree's packages on the path and runs it.
Usage: rknnlink_usb_bridge.py [--ffs-dir /dev/ffs-rknnlink] [--target 127.0.0.1:50051] [--no-descriptors] [-v]
"""

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[2]
for _tree in (_ROOT / "host", _ROOT / "board_server"):
    if _tree.is_dir() and str(_tree) not in sys.path:
        sys.path.insert(0, str(_tree))

from rknnlink_server.usb_bridge import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
