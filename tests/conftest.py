"""Suite-wide settings that keep the run hermetic (CI: one run on a fresh machine that reaches only the package
registries; tests send nothing off the machine)."""

import os

# ultralytics (the YOLOv8 corpus models) resolves public DNS names at import to decide whether it is online,
# and pip-installs any export requirement it finds unmet. Neither may happen in a test: the environment is the
# one `make deps` made (a missing package is a skip or a failure that names it, never a mid-run install).
# Subprocesses inherit these.
os.environ.setdefault("YOLO_OFFLINE", "true")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")
