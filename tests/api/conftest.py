"""Shared fixtures of the toolkit-facade tests."""

from pathlib import Path

import pytest


@pytest.fixture()
def work(tmp_path, monkeypatch) -> Path:
    """A scratch folder as the working directory: toolkit scripts use relative paths."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
