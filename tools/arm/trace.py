"""Which int8 instructions really ran: qemu's `-d in_asm` log of translated guest code, decoded.

qemu 7.2's disassembler prints the dot-product and matrix-multiply instructions as `.byte`, so
they are decoded here from their encodings (Arm ARM, A64). A block is translated the first time it
runs, so one process per artifact tells which kernels that artifact used, and the process's
executable mappings (`/proc/self/maps`, saved by the guest) name the library they live in.
"""

from __future__ import annotations

import bisect
import re
from collections import Counter
from pathlib import Path

# (mask, value, name): the A64 int8 dot / matrix-multiply instructions the int8 kernels are built on.
ENCODINGS = (
    (0xBF20FC00, 0x0E809400, "sdot"),  # SDOT (vector), .4S <- .16B
    (0xBF20FC00, 0x2E809400, "udot"),
    (0xBFC0F400, 0x0F80E000, "sdot"),  # SDOT (by element)
    (0xBFC0F400, 0x2F80E000, "udot"),
    (0xBFC0F400, 0x0F00F000, "sudot"),  # SUDOT / USDOT (by element, i8mm)
    (0xBFC0F400, 0x0F80F000, "usdot"),
    (0xFFE0FC00, 0x4E80A400, "smmla"),  # SMMLA (vector, i8mm)
    (0xFFE0FC00, 0x6E80A400, "ummla"),
    (0xFFE0FC00, 0x4E80AC00, "usmmla"),
    (0xFF20FC00, 0x44800000, "sve-sdot"),
    (0xFF20FC00, 0x44800400, "sve-udot"),
    (0xFFE0FC00, 0x45009800, "sve-smmla"),
    (0xFFE0FC00, 0x45C09800, "sve-ummla"),
    (0xFFE0001C, 0xA0800000, "sme-smopa"),  # SME outer product into ZA (int8)
    # Plain NEON int8 GEMMs (no dotprod): widening 8-bit multiplies, pairwise accumulates, and
    # XNNPACK's "mlal lane" kernels (16-bit by-element multiply-accumulate after sign extension).
    (0xBFE0FC00, 0x0E20C000, "smull.8b"),
    (0xBFE0FC00, 0x2E20C000, "umull.8b"),
    (0xBFE0FC00, 0x0E208000, "smlal.8b"),
    (0xBFE0FC00, 0x2E208000, "umlal.8b"),
    (0xBFBFFC00, 0x0E206800, "sadalp.8b"),
    (0xBFBFFC00, 0x2E206800, "uadalp.8b"),
    (0xBFC0F400, 0x0F402000, "smlal.h[lane]"),
)
NEON = {"smull.8b", "umull.8b", "smlal.8b", "umlal.8b", "sadalp.8b", "uadalp.8b", "smlal.h[lane]"}
_LINE = re.compile(rb"^0x([0-9a-f]+):\s+([0-9a-f]{8})", re.M)


def decode(word: int) -> str | None:
    for mask, value, name in ENCODINGS:
        if word & mask == value:
            return name
    return None


def int8_instructions(log: Path, maps: list[tuple[int, int, str]]) -> dict[str, dict[str, int]]:
    """{library file name: {instruction: count of distinct translated sites}} for int8 arithmetic."""
    maps = sorted(maps)
    starts = [m[0] for m in maps]
    seen: dict[str, Counter] = {}
    sites: set[int] = set()
    data = log.read_bytes()
    for m in _LINE.finditer(data):
        name = decode(int(m.group(2), 16))
        if name is None:
            continue
        addr = int(m.group(1), 16)
        if addr in sites:  # a block re-translated: count each instruction site once
            continue
        sites.add(addr)
        i = bisect.bisect_right(starts, addr) - 1
        lib = Path(maps[i][2]).name if i >= 0 and addr < maps[i][1] else "?"
        seen.setdefault(lib, Counter())[name] += 1
    return {lib: dict(c.most_common()) for lib, c in sorted(seen.items())}


def family(counts: dict[str, int]) -> str:
    """The kernel family a set of instructions shows, most specific first."""
    names = set(counts)
    for tag, members in (("SME", {"sme-smopa"}), ("i8mm", {"smmla", "ummla", "usmmla", "sve-smmla", "sve-ummla"}),
                         ("SVE dotprod", {"sve-sdot", "sve-udot"}), ("dotprod", {"sdot", "udot", "sudot", "usdot"}),
                         ("NEON", NEON)):
        if names & members:
            return tag
    return "none seen"
