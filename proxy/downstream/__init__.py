"""Connection drivers: one downstream connection's requests, read with a codec in order,
each handed to its stack's ``prepare`` and carried by ``proxy/forwarding``.

``http1``: the HTTP/1.1 connection (pipelining answered in order, head and body
timeouts, 400/431 on broken framing, drain), on the sans-IO codec of ``proxy/http1``.
``fastpath``: the same connection's whole plain keep-alive requests carried from the
channels' callbacks, handing over to ``http1``'s coroutine where it stops.
"""
