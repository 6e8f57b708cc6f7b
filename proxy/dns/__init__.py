"""DNS for mesh names: the proxy answers `orders` with its VIP (Istio's DNS proxying).

Place in the flow: beside the outbound listener. The interception rules redirect the
app's UDP and TCP port 53 to 127.0.0.1:15053 (proxy/intercept/rules.py, `dns_port`);
a query for a mesh service name is answered with the VIP that the outbound listener
(15001) maps back to the service; any other query is forwarded unchanged to the
resolvers of /etc/resolv.conf. docs/dns.md has the names answered and the limits.

    wire.py     sans-IO: a query's header and question in, replies out (RFC 1035)
    answer.py   pure: NameTable (built once per snapshot) + bytes -> reply / forward / drop
    server.py   asyncio: the UDP and TCP listener, the bounded forwarder
"""
