"""The sidecar proxy: the data plane, one process beside each workload.

The folder tree is the request path:

    proxy/
      inbound/      peer proxy -> proxy: verify SPIFFE identity, authorize, hand to the app
      outbound/     app -> proxy: detect protocol, route, retry, balance, mTLS to the peer proxy
      downstream/   connection drivers: an HTTP/1.1 connection's requests, and its fast path
      forwarding/   the core a request gets: route (routing.py), attempts and retries (forward.py)
      policy/       pure decision logic, one module per policy, each with an injected clock
      transport/    listeners, the per-connection Protocol and pools, TLS, detection, TCP relay
      http1/        sans-IO HTTP/1.1 core: bytes in, events out, strict RFC 9112 framing
      intercept/    iptables REDIRECT rules in a network namespace (outbound 15001, inbound 15006)
      control/      the registry client: join, renew, config stream, ACK/NACK; keygen child
      dns/          DNS for mesh names on 127.0.0.1:15053: VIP answers, the rest forwarded
      compiled/     the request path compiled with mypyc (build/core/), used only while current
      admin.py      localhost admin (15000) and Prometheus metrics (15090)
      httpio.py     the side channels' HTTP/1.1 client and server (admin, registry, OTLP)
      run.py        the process's entry: `meshctl proxy` / `python -m proxy` options
      main.py       the process shell: identity, control stream, listeners, admin, drain
      runtime.py    what the stacks receive: the data plane and its frozen per-snapshot Runtime

Config arrives as immutable versioned snapshots; each stack is built once per snapshot and
swapped atomically, so a request reads its snapshot once and finishes on it.
"""

from proxy import compiled as _compiled

_compiled.activate()
