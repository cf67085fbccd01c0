"""Fixtures of the transport tests; the helpers they use live in transport_rig.py (tests import it by that
unique name, so collecting tests/transport beside other test folders cannot pick up another conftest)."""

from __future__ import annotations

import pytest
from transport_rig import AdbRig, NetNs, netns_available


@pytest.fixture(scope="module")
def netns():
    reason = netns_available()
    if reason:
        pytest.skip(reason)
    ns = NetNs()
    try:
        yield ns
    finally:
        ns.close()


@pytest.fixture(scope="module")
def adb_rig(netns, tmp_path_factory):
    rig = AdbRig(netns, tmp_path_factory.mktemp("adb"))
    yield rig
    rig.adb("kill-server")
