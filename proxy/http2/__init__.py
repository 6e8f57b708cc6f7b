"""HTTP/2 codec adapter (sans-IO) over libnghttp2: see docs/http2.md. Not wired in yet."""

from __future__ import annotations

from proxy.http2.connection import (
           ENHANCE_YOUR_CALM,
           NO_ERROR,
           PROTOCOL_ERROR,
           Limits,
           ServerConnection,
)
from proxy.http2.events import ConnectionLost, Data, Event, RequestHead, StreamReset, Trailers

__all__ = ["ENHANCE_YOUR_CALM", "NO_ERROR", "PROTOCOL_ERROR", "ConnectionLost", "Data", "Event",
           "Limits", "RequestHead", "ServerConnection", "StreamReset", "Trailers"]
