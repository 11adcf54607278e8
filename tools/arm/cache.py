"""Where the aarch64 emulation kit lives and whether it is ready: one home for its paths.

Everything `make arm-check` downloads goes under one cache folder outside the repository
(`$PT2E_INT8_ARM_CACHE`, else `${XDG_CACHE_HOME:-~/.cache}/pt2e-int8/arm`):

    apt/        private apt state (arm64 package lists and .debs); the host's apt is not touched
    sysroot/    Debian arm64 debs unpacked with `dpkg -x` (CPython 3.11, libstdc++6, libgomp1 ...),
                the wheels installed under sysroot/opt/pt2e-int8/site, CUDA stubs under .../cuda-stubs
    cpu/NAME/   one small root per emulated CPU model: links to sysroot/* plus its own /proc/cpuinfo
    wheels/     the aarch64 wheels (`pip download --platform manylinux..._aarch64`)
    toolchain/  cross binutils (amd64 deb, unpacked) that build the CUDA stub libraries
    READY       written last by the set-up, with the versions it installed

Standard library only: the pytest marker reads `status()` to skip quickly when nothing is set up.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

# The emulated CPU models, as qemu-user 7.2 (Debian 12) names them, and what each offers the int8
# kernels. Never plain `-cpu max` on qemu 7.2: it advertises SME, XNNPACK then takes its SME int8
# kernels, and qemu 7.2 computes them wrong (digits static accuracy 25 % instead of 96.7 %).
CPU_MODELS: dict[str, dict] = {
    "neoverse-n1": {"qemu_cpu": "neoverse-n1", "offers": "NEON + dotprod (sdot), no i8mm",
                    "implementer": "0x41", "part": "0xd0c"},
    "max-nosme": {"qemu_cpu": "max,sme=off", "offers": "NEON + dotprod + i8mm (smmla) + SVE/SVE2",
                  "implementer": "0x00", "part": "0x051"},
    "cortex-a72": {"qemu_cpu": "cortex-a72", "offers": "plain NEON (no dotprod)",
                   "implementer": "0x41", "part": "0xd08"},
}
DEFAULT_CPU_MODELS = ("neoverse-n1", "max-nosme")

SITE = "opt/pt2e-int8/site"  # inside the sysroot
STUBS = "opt/pt2e-int8/cuda-stubs"


def cache_root() -> Path:
    explicit = os.environ.get("PT2E_INT8_ARM_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "pt2e-int8" / "arm"


@dataclass(frozen=True)
class ArmCache:
    root: Path

    @property
    def sysroot(self) -> Path:
        return self.root / "sysroot"

    @property
    def site(self) -> Path:
        return self.sysroot / SITE

    @property
    def stubs(self) -> Path:
        return self.sysroot / STUBS

    @property
    def wheels(self) -> Path:
        return self.root / "wheels"

    @property
    def ready_file(self) -> Path:
        return self.root / "READY"

    def cpu_root(self, model: str) -> Path:
        return self.root / "cpu" / model

    def manifest(self) -> dict:
        return json.loads(self.ready_file.read_text())


def qemu_binary() -> str | None:
    return shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")


def status(cache: ArmCache | None = None) -> tuple[bool, str]:
    """(ready, why not): what a test or `arm-check` needs before it can run anything on aarch64."""
    cache = cache or ArmCache(cache_root())
    if qemu_binary() is None:
        return False, ("qemu-user is not installed (no qemu-aarch64-static on PATH): run `make arm-check`, "
                       "which installs Debian's qemu-user-static, or `apt-get install qemu-user-static`")
    if not cache.ready_file.is_file():
        return False, (f"the aarch64 kit is not set up in {cache.root}: run `make arm-check` "
                       "(downloads ~0.6 GB once, then ~1.5 GB on disk)")
    return True, ""


def guest_env(cache: ArmCache, extra_path: list[str] | tuple[str, ...] = (), model: str | None = None) -> dict[str, str]:
    """Environment for the emulated python: the host's, plus the kit's site and CUDA stubs.

    qemu-user hands the host environment to the guest; qemu-static itself ignores LD_LIBRARY_PATH.
    With `model`, the child processes the guest starts for its artifact probe run under the same
    qemu command (without binfmt_misc, the guest cannot execute its own aarch64 interpreter).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "LD_", "VIRTUAL_ENV"))}
    env["PYTHONPATH"] = os.pathsep.join(["/" + SITE, *extra_path])
    env["LD_LIBRARY_PATH"] = "/" + STUBS
    env["PYTHONNOUSERSITE"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # never write aarch64 .pyc next to the host's sources
    env["HF_HUB_OFFLINE"] = "1"
    env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", "1")
    if model is not None:
        env["PT2E_INT8_PROBE_LAUNCHER"] = shlex.join(guest_command(cache, model, [])[:5])  # qemu -cpu X -L ROOT
    return env


def guest_command(cache: ArmCache, model: str, argv: list[str]) -> list[str]:
    """`qemu-aarch64-static -cpu MODEL -L cpu/MODEL /usr/bin/python3.11 argv...`."""
    qemu = qemu_binary()
    if qemu is None:
        raise RuntimeError(status(cache)[1])
    cpu = CPU_MODELS[model]["qemu_cpu"]
    if cpu == "max":
        raise ValueError("plain -cpu max is wrong on qemu 7.2 (SME kernels compute garbage); use max,sme=off")
    root = cache.cpu_root(model)  # qemu opens the program itself on the host: give its path in the root
    return [qemu, "-cpu", cpu, "-L", str(root), str(root / "usr/bin/python3.11"), *argv]
