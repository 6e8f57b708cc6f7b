"""Fuzz proxy/http1: RequestParser and ResponseParser on arbitrary bytes, however split.

One input is: a mode byte (which parser; for responses, which request method the response
answers), a byte choosing where to cut the data, and the data. ``check`` asserts, for both
the whole and the cut feeding:

- the parser raises nothing but ProtocolError (with a status it documents);
- how bytes are cut never changes the outcome: the same merged events, or a refusal (the
  status may differ when an input breaks two rules: an incremental parser meets the one
  in the bytes it has first, e.g. a NUL in a field line before the HTTP/0.1 version of a
  head it has not seen whole, 400 instead of 505);
- every Request it hands out renders back (``render_request_head``) to a head that parses to
  the same method, target and fields (what the proxy forwards is what it understood).

Run: ``.venv/bin/python -m fuzz.http1 --runs 1000000`` (atheris; ``--engine hypothesis``
without it). Crashes land in ``fuzz/crashes/``; turn each one into a regression test in
tests/proxy/http1/test_regressions.py (or a strict xfail in tests/fuzz/ until fixed).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from proxy.http1 import (
    Data,
    EndOfMessage,
    Event,
    ProtocolError,
    Request,
    RequestParser,
    ResponseParser,
    render_request_head,
)

REQUEST_STATUSES = frozenset((400, 414, 431, 501, 505))
RESPONSE_METHODS = (b"GET", b"HEAD", b"CONNECT", b"POST")
Outcome = tuple[str, object]


def _merged(events: list[Event]) -> list[Event]:
    out: list[Event] = []
    for ev in events:
        if isinstance(ev, Data):
            if not ev.data:
                continue
            if out and isinstance(out[-1], Data):
                out[-1] = Data(out[-1].data + ev.data)
                continue
        out.append(ev)
    return out


def _parser(mode: int) -> RequestParser | ResponseParser:
    if mode % 2 == 0:
        return RequestParser()
    p = ResponseParser()
    method = RESPONSE_METHODS[(mode >> 1) % len(RESPONSE_METHODS)]
    p.expect(method, b"websocket" if mode & 8 else None)
    p.expect(b"GET")  # a second, pipelined request
    return p


def run(mode: int, pieces: list[bytes]) -> Outcome:
    """Feed `pieces` then EOF; ("events", merged) or ("error", status). Anything else that
    escapes the parser propagates: that is a crash."""
    parser = _parser(mode)
    events: list[Event] = []
    try:
        for piece in pieces:
            if piece:
                events.extend(parser.feed(piece))
            if parser.paused:  # Upgrade/CONNECT: the rest is relayed raw, not parsed
                return "events", _merged(events)
        events.extend(parser.feed(b""))
    except ProtocolError as exc:
        statuses = REQUEST_STATUSES if mode % 2 == 0 else frozenset((502,))
        assert exc.status in statuses, f"undocumented status {exc.status}: {exc}"
        return "error", exc.status
    return "events", _merged(events)


def _round_trip(req: Request) -> None:
    head = render_request_head(req.method, req.target, req.headers, req.version)
    parsed = RequestParser().feed(head)
    assert parsed, f"rendered head did not parse back: {head!r}"
    again = parsed[0]
    assert isinstance(again, Request)
    assert (again.method, again.target, again.version, again.headers) == (
        req.method, req.target, req.version, req.headers), (req, again)


def check(data: bytes) -> None:
    """The properties one fuzz input must keep (see the module docstring)."""
    if len(data) < 2:
        return
    mode, cut, body = data[0], data[1], data[2:]
    whole = run(mode, [body])
    # Cut in three: at cut/256 of the length, and one byte further (a CRLF split in two).
    a = len(body) * cut // 256
    pieces = [body[:a], body[a : a + 1], body[a + 1 :]]
    split = run(mode, pieces)
    single = run(mode, [body[i : i + 1] for i in range(len(body))]) if len(body) <= 64 else split
    for other in (split, single):
        if whole[0] == "error":
            assert other[0] == "error", (whole, other)
        else:
            assert other == whole, (whole, other)
    if whole[0] == "events" and mode % 2 == 0:
        for ev in whole[1]:  # type: ignore[union-attr]
            if isinstance(ev, Request):
                _round_trip(ev)
            elif not isinstance(ev, (Data, EndOfMessage)):
                raise AssertionError(f"unexpected event {ev!r}")


# -- seeds ---------------------------------------------------------------------------------------

SEEDS = [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;e=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\nraw",
    b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET http://a/b?c HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3\r\nabc\r\n0\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    b"HTTP/1.0 200 OK\r\n\r\nuntil close",
]


def seed_inputs() -> list[bytes]:
    """The seeds under every mode, cut in the middle."""
    return [bytes([mode, 128]) + s for s in SEEDS for mode in range(16)]


# -- drivers -------------------------------------------------------------------------------------


def _atheris(args: argparse.Namespace) -> int:
    import atheris

    corpus = Path(args.corpus)
    corpus.mkdir(parents=True, exist_ok=True)
    if not any(corpus.iterdir()):
        for i, s in enumerate(seed_inputs()):
            (corpus / f"seed-{i:03d}").write_bytes(s)
    crashes = Path(args.crashes)
    crashes.mkdir(parents=True, exist_ok=True)
    argv = [sys.argv[0], str(corpus), f"-runs={args.runs}", f"-max_len={args.max_len}",
            f"-artifact_prefix={crashes}/", "-print_final_stats=1"]
    if args.seconds:
        argv.append(f"-max_total_time={args.seconds}")
    # The parser modules are imported already (by this module): instrument what is loaded,
    # so libFuzzer gets coverage feedback from proxy/http1.
    atheris.instrument_all()
    atheris.Setup(argv, check)
    atheris.Fuzz()
    return 0


def _hypothesis(args: argparse.Namespace) -> int:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    examples = args.runs
    start = time.monotonic()

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.one_of(st.binary(min_size=2, max_size=args.max_len),
                     st.sampled_from(seed_inputs()).flatmap(_mutations)))
    def target(data: bytes) -> None:
        check(data)

    target()
    print(f"fuzz.http1: {examples} examples in {time.monotonic() - start:.0f} s, no failure")
    return 0


def _mutations(seed: bytes):  # type: ignore[no-untyped-def]
    from hypothesis import strategies as st

    @st.composite
    def mutate(draw: st.DrawFn) -> bytes:
        data = bytearray(seed)
        for _ in range(draw(st.integers(0, 4))):
            if not data:
                break
            i = draw(st.integers(2, max(2, len(data) - 1)))
            op = draw(st.sampled_from(["flip", "insert", "delete"]))
            if op == "flip" and i < len(data):
                data[i] = draw(st.sampled_from(b"\r\n \t:;,\x00\x0b0aA%/\x7f\xff"))
            elif op == "insert":
                data[i:i] = draw(st.binary(min_size=1, max_size=8))
            elif i < len(data):
                del data[i : i + draw(st.integers(1, 8))]
        return bytes(data)

    return mutate()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fuzz.http1", description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=1_000_000, help="inputs to try")
    ap.add_argument("--seconds", type=int, default=0, help="stop after this long (atheris)")
    ap.add_argument("--max-len", type=int, default=2048)
    ap.add_argument("--engine", choices=["auto", "atheris", "hypothesis"], default="auto")
    here = Path(__file__).resolve().parent
    ap.add_argument("--corpus", default=os.environ.get("FUZZ_CORPUS", "/tmp/meshctl-fuzz/http1"))
    ap.add_argument("--crashes", default=str(here / "crashes"))
    args = ap.parse_args(argv)
    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401
            engine = "atheris"
        except ImportError:
            engine = "hypothesis"
    return _atheris(args) if engine == "atheris" else _hypothesis(args)


if __name__ == "__main__":
    sys.exit(main())
