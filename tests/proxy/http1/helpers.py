"""Feeding helpers: run a parser over bytes split in given ways, normalise the events."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from proxy.http1 import Data, Event, ProtocolError, RequestParser, ResponseParser

Parser = RequestParser | ResponseParser


def merged(events: Iterable[Event]) -> list[Event]:
    """Events with adjacent Data joined: how a body is cut depends on how bytes arrived."""
    out: list[Event] = []
    for event in events:
        if isinstance(event, Data) and out and isinstance(out[-1], Data):
            out[-1] = Data(out[-1].data + event.data)
        elif not (isinstance(event, Data) and not event.data):
            out.append(event)
    return out


def run(parser: Parser, pieces: Iterable[bytes], eof: bool = False) -> list[Event] | int:
    """Feed ``pieces`` in order; the merged events, or the ProtocolError status."""
    events: list[Event] = []
    try:
        for piece in pieces:
            if piece:
                events.extend(parser.feed(piece))
        if eof:
            events.extend(parser.feed(b""))
    except ProtocolError as error:
        return error.status
    return merged(events)


def split_at(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    """``data`` cut at the given offsets."""
    points = sorted({0, len(data), *(c for c in cuts if 0 <= c <= len(data))})
    return [data[a:b] for a, b in itertools.pairwise(points)]
