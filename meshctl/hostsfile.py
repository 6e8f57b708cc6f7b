"""The marked block of /etc/hosts that `meshctl hosts --apply` owns: render it, put it in.

Pure text in, text out. The block is the lines from BEGIN to END inclusive; everything
outside it is kept byte for byte. A file with a broken block (a BEGIN without its END, an
END alone, two blocks) is refused rather than guessed at: the caller writes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

from common.vip import service_vip

BEGIN = "# BEGIN meshctl services (written by `meshctl hosts --apply`; edits are replaced)"
END = "# END meshctl services"
_BEGIN_PREFIX, _END_PREFIX = "# BEGIN meshctl", "# END meshctl"


class HostsFileError(ValueError):
    """The hosts file's marked block is broken; the message says where and what to do."""


def entries(services: Iterable[str]) -> list[tuple[str, str]]:
    """(service, VIP) for each mesh service, sorted by name."""
    return [(name, service_vip(name)) for name in sorted(set(services))]


def render_block(pairs: Iterable[tuple[str, str]]) -> str:
    lines = [BEGIN, *(f"{vip}\t{name}" for name, vip in pairs), END]
    return "\n".join(lines) + "\n"


def replace_block(text: str, block: str, where: str = "hosts file") -> str:
    """`text` with its marked block replaced by `block` (appended when it has none)."""
    lines = text.splitlines(keepends=True)
    begins = [i for i, line in enumerate(lines) if line.startswith(_BEGIN_PREFIX)]
    ends = [i for i, line in enumerate(lines) if line.startswith(_END_PREFIX)]
    if not begins and not ends:
        head = text if not text or text.endswith("\n") else text + "\n"
        return head + block
    if len(begins) != 1 or len(ends) != 1 or ends[0] < begins[0]:
        marks = ", ".join(f"line {i + 1}" for i in sorted(begins + ends))
        raise HostsFileError(
            f"{where}: the meshctl block is broken ({len(begins)} BEGIN and {len(ends)} END "
            f"marker(s), at {marks}): remove the lines between and including the markers "
            "by hand, then run again"
        )
    return "".join(lines[: begins[0]]) + block + "".join(lines[ends[0] + 1 :])
