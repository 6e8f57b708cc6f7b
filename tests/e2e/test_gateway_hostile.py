"""The hostile-input table (tests/integration/test_framing.py, docs/hostile-input.md) run
against the gateway proxy: raw client socket -> gateway (a plain HTTP server of a Gateway)
-> mTLS -> echo's proxy -> the recording upstream. Same cases, same expectations: each bad
request refused and nothing of it forwarded, smuggled requests arriving as one, malformed
responses answered 502. The test functions are test_framing's own, collected here with
this module's `hop`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.harness import Mesh, free_port, http_get, wait_until
from tests.integration.recorder import FIXTURE, Recorder, TwoHop
from tests.integration.test_framing import (  # noqa: F401 - collected here, on this `hop`
    test_a_second_unsolicited_response_is_never_served_to_the_next_request,
    test_bad_chunk_after_the_head_was_forwarded_is_400,
    test_bad_chunk_after_the_head_was_forwarded_resets_upstream,
    test_bad_chunk_after_the_response_head_cuts_the_client_connection,
    test_malformed_request_is_refused_and_nothing_forwarded,
    test_malformed_response_gives_502_and_the_connection_is_discarded,
    test_request_inside_a_body_arrives_as_one_request,
)

pytestmark = pytest.mark.slow

EDGE = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: edge
spec:
  selector: {{istio: edge}}
  servers:
    - port: {{number: {port}, name: http, protocol: HTTP}}
      hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: edge
spec:
  hosts: ["*"]
  gateways: [edge]
  http:
    - retries: {{attempts: 0}}
      route:
        - destination: {{host: echo}}
"""


@pytest.fixture(scope="module")
def hop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoHop]:
    tmp = tmp_path_factory.mktemp("gateway-framing")
    with Recorder() as rec:
        mesh = Mesh(tmp, FIXTURE)
        port = free_port()
        (mesh.config / "edge.yaml").write_text(EDGE.format(port=port))
        try:
            mesh.start_registry()
            echo = mesh.proxy("echo", "v1", app_port=rec.port)
            gateway = mesh.proxy("edge", None, extra=("--gateway", "--gateway-address",
                                                      "127.0.0.1"))
            wait_until(lambda: http_get(f"http://127.0.0.1:{port}/ready")[0] == 200,
                       timeout=30, what="a first request through the gateway")
            yield TwoHop(mesh, rec, port, gateway, echo)
        finally:
            mesh.close()
