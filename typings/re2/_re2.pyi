# The part of google-re2's pybind11 extension that registry/config/regex.py uses: RE2 itself.
import enum

class RE2:
    class Anchor(enum.Enum):
        UNANCHORED = 0
        ANCHOR_START = 1
        ANCHOR_BOTH = 2

    class Options:
        log_errors: bool
        never_capture: bool
        max_mem: int
        def __init__(self) -> None: ...

    def __init__(self, pattern: bytes, options: RE2.Options) -> None: ...
    def ok(self) -> bool: ...
    def error(self) -> bytes: ...
    def ProgramSize(self) -> int: ...
    def Match(
        self, anchor: RE2.Anchor, text: bytes, pos: int, endpos: int
    ) -> list[tuple[int, int]]: ...
