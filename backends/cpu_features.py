"""This CPU's int8-relevant instruction sets, read from /proc/cpuinfo: the one parser for them.

Standard library only. The backends read it to pick kernels for the building machine
(`backends.onnx.target`, `target="auto"`); the application's device description
(`pt2e_int8.app.device`) reads it for bench headers. Off Linux, nothing is seen: every
feature is False and callers fall back to the choice that is right on every CPU.
"""

from __future__ import annotations

import platform
from pathlib import Path

# ISA features that decide which int8 kernels a runtime can use, in cpuinfo spelling.
# x86: avx2 (baseline int8 via vpmaddubsw), avx512_vnni / avx_vnni (vpdpbusd dot products),
#      amx_int8 (tile matmul). ARM: asimd (NEON), asimddp (sdot/udot), i8mm (smmla).
INT8_FEATURES = ("sse4_1", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8",
                 "neon", "asimd", "asimddp", "i8mm", "sve", "sve2", "sme")
# Friendlier names users search for, alongside the kernel's spelling.
ALIASES = {"asimddp": "dotprod", "asimd": "neon"}
X86_MACHINES = frozenset({"x86_64", "amd64", "i386", "i686", "x86"})
ARM64_MACHINES = frozenset({"aarch64", "arm64", "armv8l"})


def read_cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""


def parse_cpuinfo(text: str) -> dict[str, str]:
    """The first processor block of /proc/cpuinfo as {lower-case key: value}."""
    info: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip().lower()
        if sep and key and key not in info:  # first processor block is enough
            info[key] = value.strip()
    return info


def isa_features(cpuinfo: dict[str, str]) -> dict[str, bool]:
    """The int8-relevant features, each True/False (aliases dotprod/neon included)."""
    flags = set((cpuinfo.get("flags") or cpuinfo.get("features") or "").split())
    found = {f: f in flags for f in INT8_FEATURES}
    for kernel_name, alias in ALIASES.items():
        found[alias] = found.get(alias, False) or found[kernel_name]
    return found


def this_cpu() -> tuple[str, dict[str, bool]]:
    """(platform.machine() lower-cased, isa_features of /proc/cpuinfo) of the running process."""
    return platform.machine().lower(), isa_features(parse_cpuinfo(read_cpuinfo()))
