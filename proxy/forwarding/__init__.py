"""The forwarding core: what a request gets between the stack that took it and the upstream.

Place in the flow: a connection driver (``proxy/downstream``) reads a request with its
codec and asks its stack (``proxy/outbound``, ``proxy/inbound``) to ``prepare`` it; the
stack decides with ``routing`` (the VirtualService route, weighted destination, header
ops, compiled once per snapshot), ``authz`` (the AuthorizationPolicies, compiled once per
snapshot) and the pure policies (``proxy/policy``); ``cluster`` holds each subset's
endpoints with the state that outlives snapshots (balancer, outlier detection, pool limits,
retry budget), and ``forward`` carries the request: the replay buffer, attempts with
backoff and per-try timeouts, another endpoint on retry, mirroring, the response streamed
back. One core for every codec: today HTTP/1.1 (``proxy/http1``); ``forward`` still
renders HTTP/1.1 heads itself.
"""
