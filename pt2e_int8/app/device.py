"""What this device is, for bench results: CPU model, cores, int8-relevant ISA features, runtimes.

Standard library only (no torch; the cpuinfo parser is backends/cpu_features.py), so it costs
nothing on a board, and bench/run.py loads this file on its own. Linux reads /proc/cpuinfo (x86
`flags`, ARM `Features` and `CPU part`); elsewhere the fields it cannot see are None or False.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

# The cpuinfo parser lives in the backends layer (standard library only), which also picks kernels from it.
from backends.cpu_features import ALIASES as _ALIASES
from backends.cpu_features import isa_features
from backends.cpu_features import parse_cpuinfo as _cpuinfo
from backends.cpu_features import read_cpuinfo as _read_cpuinfo

RUNTIME_DISTRIBUTIONS = ("torch", "executorch", "onnxruntime", "numpy")


# Linux arm64 hardware capability bits (arch/arm64/include/uapi/asm/hwcap.h), in /proc/cpuinfo spelling.
# AT_HWCAP / AT_HWCAP2 are what cpuinfo (XNNPACK's and PyTorch's CPU detection) and ONNX Runtime's MLAS
# read on Linux to pick int8 kernels: asimddp -> sdot, i8mm -> smmla, sme -> SME tiles.
HWCAP = ("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc "
         "dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs sb paca pacg").split()
HWCAP2 = ("dcpodp sve2 sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint svei8mm svef32mm svef64mm "
          "svebf16 i8mm bf16 dgh rng bti mte ecv afp rpres mte3 sme smei16i64 smef64f64 smei8i32 smef16f32 "
          "smeb16f32 smef32f32 smefa64 wfxt ebf16 sveebf16 cssc rprfm sve2p1").split()
_AT_HWCAP, _AT_HWCAP2 = 16, 26


def hwcap_features(hwcap: int, hwcap2: int) -> list[str]:
    """Feature names of arm64 AT_HWCAP / AT_HWCAP2 bit masks."""
    return ([n for i, n in enumerate(HWCAP) if hwcap >> i & 1]
            + [n for i, n in enumerate(HWCAP2) if hwcap2 >> i & 1])


def arm_hwcaps(auxv: bytes | None = None) -> list[str] | None:
    """The arm64 features this process was given (None off arm64 Linux or when unreadable)."""
    if auxv is None:
        if platform.machine() not in ("aarch64", "arm64"):
            return None
        try:
            auxv = Path("/proc/self/auxv").read_bytes()
        except OSError:
            return None
    import struct

    entries = dict(struct.iter_unpack("<QQ", auxv[: len(auxv) // 16 * 16]))
    return hwcap_features(entries.get(_AT_HWCAP, 0), entries.get(_AT_HWCAP2, 0))


# Arm "CPU part" codes (implementer 0x41) of cores common on boards and phones: ARM Linux
# /proc/cpuinfo has no "model name", only these numbers.
_ARM_PARTS = {
    0xD03: "Cortex-A53", 0xD04: "Cortex-A35", 0xD05: "Cortex-A55", 0xD07: "Cortex-A57", 0xD08: "Cortex-A72",
    0xD09: "Cortex-A73", 0xD0A: "Cortex-A75", 0xD0B: "Cortex-A76", 0xD0C: "Neoverse-N1", 0xD0D: "Cortex-A77",
    0xD40: "Neoverse-V1", 0xD41: "Cortex-A78", 0xD44: "Cortex-X1", 0xD46: "Cortex-A510", 0xD47: "Cortex-A710",
    0xD48: "Cortex-X2", 0xD49: "Neoverse-N2", 0xD4B: "Cortex-A78C", 0xD4D: "Cortex-A715", 0xD4E: "Cortex-X3",
    0xD4F: "Neoverse-V2", 0xD80: "Cortex-A520", 0xD81: "Cortex-A720", 0xD82: "Cortex-X4",
}


def _arm_cores(text: str) -> str | None:
    """'4x Cortex-A55 + 4x Cortex-A76' from every processor block (big.LITTLE shows both)."""
    counts: dict[str, int] = {}
    implementer = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if key == "cpu implementer":
            implementer = value
        elif key == "cpu part" and value:
            try:
                code = int(value, 16)
            except ValueError:
                continue
            name = _ARM_PARTS.get(code) if implementer == "0x41" else None
            name = name or f"part {value} (implementer {implementer})"
            counts[name] = counts.get(name, 0) + 1
    return " + ".join(f"{n}x {name}" for name, n in counts.items()) or None


def _board_model() -> str | None:
    try:  # device-tree boards (Raspberry Pi, Jetson, Rockchip ...) name themselves here
        return Path("/sys/firmware/devicetree/base/model").read_text(errors="replace").strip("\x00 \n") or None
    except OSError:
        return None


def _cpu_model(cpuinfo: dict[str, str], text: str) -> str:
    for key in ("model name", "hardware", "cpu model"):
        value = cpuinfo.get(key, "")
        if value:
            return value
    return _arm_cores(text) or platform.processor() or platform.machine()


def runtime_versions() -> dict[str, str | None]:
    versions = {}
    for dist in RUNTIME_DISTRIBUTIONS:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def describe_device(cpuinfo_text: str | None = None) -> dict:
    """A JSON-ready description of this machine.

    Example:
        describe_device()["isa"]["avx512_vnni"]  # True on Ice Lake / Zen 4
    """
    text = _read_cpuinfo() if cpuinfo_text is None else cpuinfo_text
    info = _cpuinfo(text)
    hwcaps = arm_hwcaps() if cpuinfo_text is None else None
    if hwcaps is not None:  # what the kernels' own CPU detection reads, rather than the text file
        info["features"] = " ".join(hwcaps)
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu_model": _cpu_model(info, text),
        "board": _board_model(),
        "machine": platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
        "logical_cores": os.cpu_count(),
        "usable_cores": affinity,
        "isa": isa_features(info),
        "isa_source": "hwcap" if hwcaps is not None else "/proc/cpuinfo",
        "python": platform.python_version(),
        "runtimes": runtime_versions(),
    }


def summary_line(device: dict) -> str:
    """'AMD EPYC, 2 cores, x86_64: avx2 avx512_vnni' for the printed header."""
    isa = " ".join(k for k, v in device["isa"].items() if v and k not in _ALIASES.values()) or "no int8 ISA features seen"
    cores = device["usable_cores"] or device["logical_cores"]
    return f"{device['cpu_model']}, {cores} cores, {device['machine']}: {isa}"
