"""Stub aarch64 libraries for the NVIDIA libraries the PyPI aarch64 torch wheel links.

PyPI's torch 2.13.0 for manylinux aarch64 is a CUDA build: libtorch_cuda.so needs libcudart,
libcublas, libcudnn, libnccl ... from `nvidia-*` wheels, which are not all published for aarch64
and weigh gigabytes. The ExecuTorch bindings link libtorch, so they need torch to import. A stub
exports every symbol the torch libraries import from a missing library, under the symbol version
they ask for; each function returns 100 (cudaErrorNoDevice / CUDA_ERROR_NO_DEVICE), so
`torch.cuda.is_available()` is False and nothing else is ever called.

Built with the cross binutils (`aarch64-linux-gnu-as`, `-ld`); symbols are read with `readelf`.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections import defaultdict
from pathlib import Path

_SYM = re.compile(r"^\s*\d+:\s+[0-9a-f]+\s+\d+\s+(\w+)\s+(\w+)\s+\w+\s+(\w+)\s+(\S+)")
_VERNEED_FILE = re.compile(r"File:\s+(\S+)")
_VERNEED_NAME = re.compile(r"Name:\s+(\S+)\s+Flags:")
_OBJECT_BYTES = 4096
# Only these may be stubbed; any other missing library is a gap in the sysroot, reported as an error.
_NVIDIA = re.compile(r"^lib(cu\w*|nccl|nvrtc\w*|nvshmem\w*|nvToolsExt|nvJitLink|nvpl\w*)\.so")  # imported data symbols get this much zeroed storage


def _elf_files(root: Path) -> list[Path]:
    out = []
    for p in root.rglob("*.so*"):
        if p.is_file() and not p.is_symlink():
            with p.open("rb") as f:
                if f.read(4) == b"\x7fELF":
                    out.append(p)
    return out


_ENV: dict[str, str] = {}  # the unpacked cross binutils find their own libbfd / libctf through this


def _tool(cmd: list[str], *, capture: bool = False) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=_ENV or None)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)[:200]} failed: {done.stderr.strip()[-500:]}")
    return done.stdout


def _readelf(tool: str, args: list[str], path: Path) -> str:
    return _tool([tool, "-W", *args, str(path)])


def _needed(tool: str, path: Path) -> list[str]:
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", _readelf(tool, ["-d"], path))


def _version_files(tool: str, path: Path) -> dict[str, str]:
    """version name -> library file, from .gnu.version_r."""
    out, current = {}, None
    for line in _readelf(tool, ["-V"], path).splitlines():
        m = _VERNEED_FILE.search(line)
        if m:
            current = m.group(1)
            continue
        m = _VERNEED_NAME.search(line)
        if m and current:
            out[m.group(1)] = current
    return out


def _symbols(tool: str, path: Path) -> list[tuple[str, str, str, str]]:
    """(name, version or '', type, ndx) of every dynamic symbol."""
    out = []
    for line in _readelf(tool, ["--dyn-syms"], path).splitlines():
        m = _SYM.match(line)
        if not m:
            continue
        typ, bind, ndx, full = m.groups()
        if bind == "WEAK" and ndx == "UND":
            continue  # a weak import may stay unresolved
        name, _, version = full.partition("@")
        out.append((name, version.lstrip("@").split(" ")[0], typ, ndx))
    return out


def _asm(symbols: dict[str, str]) -> str:
    lines = ["\t.text", "\t.p2align 2", "\t.type __pt2e_int8_no_device, %function", "__pt2e_int8_no_device:",
             "\tmov w0, #100", "\tret", "\t.size __pt2e_int8_no_device, 8"]
    for name, typ in sorted(symbols.items()):
        if typ == "OBJECT":
            lines += ["\t.bss", "\t.p2align 4", f'\t.globl "{name}"', f'\t.type "{name}", %object',
                      f'\t.size "{name}", {_OBJECT_BYTES}', f'"{name}":', f"\t.zero {_OBJECT_BYTES}"]
        elif typ == "TLS":
            lines += ["\t.section .tbss,\"awT\",@nobits", "\t.p2align 4", f'\t.globl "{name}"',
                      f'\t.type "{name}", %tls_object', f'\t.size "{name}", 64', f'"{name}":', "\t.zero 64"]
        else:
            lines += ["\t.text", f'\t.globl "{name}"', f'\t.type "{name}", %function',
                      f'\t.set "{name}", __pt2e_int8_no_device']
    return "\n".join(lines) + "\n"


def _version_script(by_version: dict[str, set[str]]) -> str:
    nodes = []
    for version, names in sorted(by_version.items()):
        body = " ".join(f'"{n}";' for n in sorted(names))
        nodes.append(f"{version} {{ global: {body} }};" if version else f"{{ global: {body} }};")
    return "\n".join(nodes) + "\n"


def build(scan: list[Path], present: list[Path], out: Path, binutils: Path) -> list[str]:
    """Write a stub into `out` for every library that an ELF under `scan` needs and none under
    `scan` or `present` provides. Returns the stub file names."""
    readelf = str(binutils / "aarch64-linux-gnu-readelf")
    _ENV.clear()
    _ENV.update(os.environ, LD_LIBRARY_PATH=os.pathsep.join(sorted({str(p.parent) for p in binutils.parent.rglob("*.so*")})))
    libs = [p for root in scan for p in _elf_files(root)]
    have = {p.name for root in [*scan, *present] for p in root.rglob("*.so*")}
    defined: set[str] = set()
    wants: dict[Path, list[str]] = {}
    others: dict[str, str] = {}
    for lib in libs:
        missing = [n for n in _needed(readelf, lib) if n not in have]
        others.update({n: lib.name for n in missing if not _NVIDIA.match(n)})
        if missing:
            wants[lib] = missing
    if others:
        raise RuntimeError("libraries missing from the sysroot that are not NVIDIA's (add their Debian packages): "
                           + ", ".join(f"{n} (needed by {by})" for n, by in sorted(others.items())))
    for root in [*scan, *present]:
        for lib in _elf_files(root):
            defined |= {name for name, _, _, ndx in _symbols(readelf, lib) if ndx != "UND"}
    # stub file -> version -> names; name -> type
    stubs: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    types: dict[str, dict[str, str]] = defaultdict(dict)
    for lib, missing in wants.items():
        for m in missing:
            stubs[m]  # noqa: B018  (every missing library gets a stub, even with no symbols)
        versions = _version_files(readelf, lib)
        for name, version, typ, ndx in _symbols(readelf, lib):
            if ndx != "UND":
                continue
            if version:
                owner = versions.get(version)
                if owner in missing:
                    stubs[owner][version].add(name)
                    types[owner][name] = typ
            elif name not in defined:  # unversioned: may come from any missing library this one needs
                for owner in missing:
                    stubs[owner][""].add(name)
                    types[owner][name] = typ
    out.mkdir(parents=True, exist_ok=True)
    work = out / ".build"
    work.mkdir(exist_ok=True)
    for soname, by_version in stubs.items():
        versioned = [v for v in by_version if v]
        if versioned and "" in by_version:  # unversioned names go into a versioned node as its default
            by_version[versioned[0]] |= by_version.pop("")
        src, obj, vmap = work / f"{soname}.s", work / f"{soname}.o", work / f"{soname}.map"
        src.write_text(_asm(types[soname]))
        vmap.write_text(_version_script(by_version) if by_version else "{ global: *; };\n")
        _tool([str(binutils / "aarch64-linux-gnu-as"), "-o", str(obj), str(src)])
        _tool([str(binutils / "aarch64-linux-gnu-ld"), "-shared", "-soname", soname, "--version-script",
               str(vmap), "-z", "max-page-size=0x10000", "-o", str(out / soname), str(obj)])
    return list(stubs)
