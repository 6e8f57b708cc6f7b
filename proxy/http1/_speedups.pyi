# proxy/http1/_speedups.c: the C twins of grammar.split_fields_py, render.keep_fields_py
# and render.render_*_py.
def split_fields(
    buf: bytes, start: int, end: int, max_headers: int, /
) -> tuple[list[tuple[bytes, bytes]], list[bytes]] | int: ...
def render_request(
    method: bytes, target: bytes, version: bytes, headers: list[tuple[bytes, bytes]], /
) -> bytes | None: ...
def render_response(
    version: bytes, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], /
) -> bytes | None: ...
def keep_fields(
    headers: list[tuple[bytes, bytes]], names: list[bytes], drop: frozenset[bytes], /
) -> list[tuple[bytes, bytes]] | None: ...
