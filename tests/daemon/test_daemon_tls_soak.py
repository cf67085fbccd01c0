"""The soak over the TLS data port (the network route): 10,000 inferences in one session, streamed and mixed
(run() and pipelines, each pipeline its own TLS connection and handshake); file descriptors and memory stay
flat on the client, the daemon and the worker, which ends TLS itself."""

from __future__ import annotations

import pytest
from soak_client import MEASURED, WARM_UP, assert_flat, soak


@pytest.mark.parametrize("mode", ["stream", "mixed"])
def test_ten_thousand_inferences_over_the_tls_data_port_leak_nothing(tls_daemon_process, mode):
    result = soak(tls_daemon_process.address, "tls", mode, str(tls_daemon_process.state))
    assert result["warm"]["total"] == WARM_UP * 2.0 and result["done"]["total"] == MEASURED * 2.0
    assert_flat(result)
    assert result["done"]["inferences"] == WARM_UP + MEASURED
