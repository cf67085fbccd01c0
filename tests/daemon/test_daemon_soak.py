"""10,000 inferences in one session: file descriptors and memory stay flat on the client, daemon and worker."""

from __future__ import annotations

import pytest
from soak_client import MEASURED, WARM_UP, assert_flat, soak


@pytest.mark.parametrize("carrier", ["direct", "relay"])
def test_ten_thousand_streamed_inferences_leak_nothing(daemon, carrier):
    result = soak(daemon.address, carrier, "stream")
    assert result["warm"]["total"] == WARM_UP * 2.0 and result["done"]["total"] == MEASURED * 2.0
    assert_flat(result)
    assert result["done"]["inferences"] == WARM_UP + MEASURED
