#!/usr/bin/env python3
"""Board side of the rknnlink USB transport, runnable from a source tree (setup_gadget.sh --bridge-cmd).

The program lives in rknnlink.transport.ffs_bridge so that every deployed rknnlink carries it as
`rknnlink usb-bridge`; this file only puts the source tree's packages on the path and runs it.
Usage: rknnlink_usb_bridge.py [--ffs-dir /dev/ffs-rknnlink] [--target 127.0.0.1:50051] [--no-descriptors] [-v]
"""

import sys
from pathlib import Path

_HOST = Path(__file__).resolve().parents[2] / "host"
if (_HOST / "rknnlink").is_dir() and str(_HOST) not in sys.path:
    sys.path.insert(0, str(_HOST))

from rknnlink.transport.ffs_bridge import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
