# proxy/http1/_speedups.c: the C twins of the *_py functions in grammar.py, request.py,
# response.py, render.py and tracing/context.py (the C file's first comment lists them).
def split_fields(
    buf: bytes, start: int, end: int, max_headers: int, /
) -> tuple[list[tuple[bytes, bytes]], list[bytes]] | int: ...
def render_request(
    method: bytes, target: bytes, version: bytes, headers: list[tuple[bytes, bytes]], /
) -> bytes | None: ...
def render_response(
    version: bytes, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], /
) -> bytes | None: ...
def forward_request(
    method: bytes,
    target: bytes,
    version: bytes,
    headers: list[tuple[bytes, bytes]],
    names: list[bytes],
    drop: frozenset[bytes],
    extra: list[tuple[bytes, bytes]],
    /,
) -> bytes | None: ...
def forward_response(
    version: bytes,
    status: int,
    reason: bytes,
    headers: list[tuple[bytes, bytes]],
    names: list[bytes],
    drop: frozenset[bytes],
    extra: list[tuple[bytes, bytes]],
    body: bytes,
    /,
) -> bytes | None: ...
def strip_fields(
    headers: list[tuple[bytes, bytes]], names: list[bytes], drop: frozenset[bytes], /
) -> list[tuple[bytes, bytes]] | None: ...
def block_end(buf: bytes, pos: int, /) -> int: ...
def request_head(
    buf: bytes, start: int, end: int, max_headers: int, /
) -> tuple[
    bytes,
    bytes,
    bytes,
    list[tuple[bytes, bytes]],
    list[bytes],
    int | None,
    bool,
    bool,
    bytes | None,
    bool,
    bytes | None,
] | None: ...
def response_head(
    buf: bytes, start: int, end: int, max_headers: int, /
) -> tuple[
    bytes, int, bytes | None, list[tuple[bytes, bytes]], list[bytes], int | None, bool, bool
] | None: ...
def relay_response(
    buf: bytes, max_headers: int, max_head_bytes: int, drop: frozenset[bytes], /
) -> tuple[int, bytes, bool, int] | None: ...
def hex_id(value: int, digits: int, /) -> bytes | None: ...
def random_hex(digits: int, /) -> bytes: ...
def trace_names(names: list[bytes], /) -> int: ...
def traceparent(trace: bytes, span: bytes, sampled: bool, /) -> bytes | None: ...
def name_index(names: list[bytes], key: bytes, start: int, /) -> int: ...
def parse_traceparent(value: bytes, /) -> tuple[bytes, bytes, bool] | None: ...
def request_line(buf: bytes, start: int, end: int, /) -> tuple[bytes, bytes, bytes, int] | None: ...
def status_line(
    buf: bytes, start: int, end: int, /
) -> tuple[bytes, int, bytes | None, int] | None: ...
def valid_host(value: bytes, /) -> bool: ...
