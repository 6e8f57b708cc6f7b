"""The gateway proxy: the same proxy serving Istio Gateways, the mesh's front door.

Config path: each snapshot, `table.build_table` turns the Gateways that select this proxy
(by its labels) and the VirtualServices bound to them into a `GatewayTable` (servers by
port, compiled routes by host); `credentials` loads each server's certificate pair.
Request path: `server.GatewayServer` listens on the servers' ports, terminates TLS (SNI picks
the certificate), redirects plain HTTP when `httpsRedirect`, matches the Host against the
servers' and VirtualServices' hosts, records the client's address (`forwarded`), and hands
the matched route to the outbound stack (proxy/outbound/stack.py: weights, retries,
timeouts, circuit breaking, mTLS with the gateway's own SPIFFE identity). docs/gateway.md.
"""
