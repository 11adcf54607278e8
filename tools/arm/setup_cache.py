"""Set up (idempotently) the aarch64 kit that `make arm-check` runs artifacts with, under qemu-user.

    python -m tools.arm.setup_cache            # or: make arm-check (set-up, then the checks)

Steps, each skipped when its marker says it is done (delete the cache folder to start over):

1. qemu-user-static from Debian (the only system-wide install), when missing and we are root.
2. Debian arm64 debs of python3.11, libstdc++6, libgomp1 and their dependencies, fetched with a
   private apt state (`APT_CONFIG`, `APT::Architecture "arm64"`, `apt-get install --download-only`)
   and unpacked with `dpkg -x`. Never `dpkg --add-architecture`: that would make the host's apt try to
   replace its own python3.11 with the arm64 one.
3. aarch64 wheels of the runtimes at the versions installed on this host (so x86 and aarch64 run the
   same releases): `pip download --no-deps --only-binary=:all: --platform manylinux_2_28_aarch64 ...`,
   then `pip install --target` into the sysroot.
4. Stub libraries for the NVIDIA libraries the PyPI aarch64 torch (a CUDA build) links, so torch
   imports with CUDA unavailable (`tools.arm.cuda_stubs`).
5. Per emulated CPU model, a root with its own `/proc/cpuinfo` in aarch64 format, built from the
   hardware capabilities qemu gives that model: qemu 7.2 passes the host's x86 file through and
   ONNX Runtime's CPU detection crashes on it.
6. A smoke import of numpy, onnxruntime, torch and the ExecuTorch bindings on each CPU model.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from tools.arm import cuda_stubs
from tools.arm.cache import (
    CPU_MODELS,
    DEFAULT_CPU_MODELS,
    ArmCache,
    cache_root,
    guest_command,
    guest_env,
    qemu_binary,
)

DEBIAN = "http://deb.debian.org/debian"
SUITES = (f"deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {DEBIAN} bookworm main",
          f"deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {DEBIAN} bookworm-updates main",
          "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security "
          "bookworm-security main")
DEBS = ("python3.11", "libstdc++6", "libgomp1", "libgcc-s1", "libatomic1", "zlib1g")
CROSS_BINUTILS = "binutils-aarch64-linux-gnu"  # an amd64 deb; only `as` and `ld` are used
# The runtimes and what `import torch` / `import onnxruntime` need; versions are read from this host.
WHEELS = ("onnxruntime", "numpy", "executorch", "torch", "flatbuffers", "packaging", "protobuf", "sympy",
          "mpmath", "typing_extensions", "filelock", "networkx", "jinja2", "markupsafe", "fsspec")
PLATFORMS = ("manylinux_2_28_aarch64", "manylinux_2_27_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64")
TIMEOUT = 1800  # seconds for one download step


class SetupError(RuntimeError):
    """A step of the set-up failed; the message says which and what to do."""


def _run(cmd: list[str], *, env: dict | None = None, cwd: Path | None = None, timeout: int = TIMEOUT,
         what: str) -> str:
    print(f"  $ {' '.join(map(str, cmd))[:200]}", flush=True)
    try:
        done = subprocess.run(cmd, env=env, cwd=cwd, timeout=timeout, capture_output=True, text=True, check=False)
    except subprocess.TimeoutExpired as e:
        raise SetupError(f"{what}: timed out after {timeout} s. Check the network to the package registries "
                         "and re-run `make arm-check` (finished steps are kept).") from e
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-15:]
        raise SetupError(f"{what} failed (exit {done.returncode}):\n    " + "\n    ".join(tail))
    return done.stdout


def _step(cache: ArmCache, name: str, key: str) -> Path | None:
    """The marker of a step, or None when the step is already done for this `key`."""
    marker = cache.root / "markers" / name
    if marker.is_file() and marker.read_text() == key:
        print(f"[arm] {name}: done", flush=True)
        return None
    print(f"[arm] {name} ...", flush=True)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    return marker


def ensure_qemu() -> str:
    qemu = qemu_binary()
    if qemu:
        return qemu
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise SetupError("qemu-user is missing and cannot be installed here (needs root and apt-get). Install "
                         "Debian's qemu-user-static (`sudo apt-get install qemu-user-static`) and re-run.")
    print("[arm] installing qemu-user-static (Debian) ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        _run(["apt-get", "install", "-y", "-q", "qemu-user-static"], env=env, what="apt-get install qemu-user-static")
    except SetupError:
        _run(["apt-get", "update", "-q"], env=env, what="apt-get update")
        _run(["apt-get", "install", "-y", "-q", "qemu-user-static"], env=env, what="apt-get install qemu-user-static")
    qemu = qemu_binary()
    if not qemu:
        raise SetupError("qemu-user-static was installed but qemu-aarch64-static is not on PATH.")
    return qemu


def _apt_env(cache: ArmCache) -> dict[str, str]:
    apt = cache.root / "apt"
    for sub in ("lists/partial", "archives/partial", "sources.list.d", "preferences.d", "host/partial"):
        (apt / sub).mkdir(parents=True, exist_ok=True)
    (apt / "status").touch()  # empty: nothing is "installed", so every dependency is fetched
    (apt / "sources.list").write_text("\n".join(SUITES) + "\n")
    conf = f"""
Dir::State "{apt}/";
Dir::State::lists "{apt}/lists/";
Dir::State::status "{apt}/status";
Dir::Cache "{apt}/";
Dir::Cache::archives "{apt}/archives/";
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Dir::Etc::SourceList "{apt}/sources.list";
Dir::Etc::SourceParts "{apt}/sources.list.d";
Dir::Etc::Preferences "{apt}/preferences";
Dir::Etc::PreferencesParts "{apt}/preferences.d";
APT::Architecture "arm64";
APT::Architectures {{ "arm64"; "amd64"; }};
APT::Install-Recommends "false";
APT::Get::Download-Only "true";
Debug::NoLocking "true";
"""
    (apt / "apt.conf").write_text(conf)
    return {**os.environ, "APT_CONFIG": str(apt / "apt.conf"), "DEBIAN_FRONTEND": "noninteractive"}


def fetch_debs(cache: ArmCache) -> None:
    key = " ".join(DEBS)
    marker = _step(cache, "debs", key)
    if marker is None:
        return
    env = _apt_env(cache)
    _run(["apt-get", "update", "-q"], env=env, what="apt-get update (private arm64 state)")
    _run(["apt-get", "install", "-y", "-q", "--download-only", *DEBS], env=env,
         what=f"apt-get install --download-only {' '.join(DEBS)} (arm64)")
    debs = sorted((cache.root / "apt" / "archives").glob("*_arm64.deb")) + sorted(
        (cache.root / "apt" / "archives").glob("*_all.deb"))
    if not debs:
        raise SetupError("apt downloaded no arm64 .deb; see the output above.")
    cache.sysroot.mkdir(parents=True, exist_ok=True)
    for deb in debs:
        _run(["dpkg-deb", "-x", str(deb), str(cache.sysroot)], what=f"dpkg -x {deb.name}")
    if not (cache.sysroot / "usr/bin/python3.11").is_file():
        raise SetupError(f"no usr/bin/python3.11 in {cache.sysroot} after unpacking {len(debs)} debs.")
    marker.write_text(key)


def fetch_cross_binutils(cache: ArmCache) -> Path:
    tool = cache.root / "toolchain"
    marker = _step(cache, "cross-binutils", CROSS_BINUTILS)
    if marker is not None:
        env = _apt_env(cache)
        host = cache.root / "apt" / "host"
        if not any((cache.root / "apt" / "lists").glob("*amd64_Packages*")):
            _run(["apt-get", "update", "-q"], env=env, what="apt-get update (private state)")
        _run(["apt-get", "download", f"{CROSS_BINUTILS}:amd64"], env=env, cwd=host,
             what=f"apt-get download {CROSS_BINUTILS}:amd64")
        for deb in host.glob(f"{CROSS_BINUTILS}_*_amd64.deb"):
            _run(["dpkg-deb", "-x", str(deb), str(tool)], what=f"dpkg -x {deb.name}")
        marker.write_text(CROSS_BINUTILS)
    return tool / "usr" / "bin"


def _host_versions() -> dict[str, str]:
    versions = {}
    for name in WHEELS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError as e:
            raise SetupError(f"{name} is not installed on this host, so its version cannot be mirrored: "
                             "run `make setup` first.") from e
    return versions


def fetch_wheels(cache: ArmCache, versions: dict[str, str]) -> None:
    reqs = [f"{n}=={v.split('+')[0]}" for n, v in versions.items()]  # torch 2.13.0+cpu -> 2.13.0
    key = hashlib.sha256(" ".join(reqs).encode()).hexdigest()
    marker = _step(cache, "wheels", key)
    if marker is None:
        return
    cache.wheels.mkdir(parents=True, exist_ok=True)
    platforms = [a for p in PLATFORMS for a in ("--platform", p)]
    _run([sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-q", "--no-deps",
          "--only-binary=:all:", *platforms, "--python-version", "3.11", "--implementation", "cp", "--abi",
          "cp311", "--abi", "abi3", "--abi", "none", "-d", str(cache.wheels), *reqs],
         what="pip download of the aarch64 wheels")
    marker.write_text(key)


def install_wheels(cache: ArmCache, versions: dict[str, str]) -> None:
    wheels = sorted(cache.wheels.glob("*.whl"))
    key = hashlib.sha256("\n".join(w.name for w in wheels).encode()).hexdigest()
    marker = _step(cache, "install", key)
    if marker is None:
        return
    if cache.site.exists():
        shutil.rmtree(cache.site)
    platforms = [a for p in PLATFORMS for a in ("--platform", p)]
    _run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q", "--no-deps", "--no-index",
          "--only-binary=:all:", *platforms, "--python-version", "3.11", "--implementation", "cp",
          "--target", str(cache.site), *map(str, wheels)], what="pip install --target (aarch64 site)")
    marker.write_text(key)


def build_cuda_stubs(cache: ArmCache, binutils: Path) -> None:
    torch_lib = cache.site / "torch" / "lib"
    key = hashlib.sha256("\n".join([*sorted(p.name for p in torch_lib.glob("*.so*")), *DEBS]).encode()).hexdigest()
    marker = _step(cache, "cuda-stubs", key)
    if marker is None:
        return
    if cache.stubs.exists():
        shutil.rmtree(cache.stubs)
    try:
        made = cuda_stubs.build(scan=[torch_lib, cache.site / "executorch"], present=[cache.sysroot], out=cache.stubs,
                                binutils=binutils)
    except RuntimeError as e:
        raise SetupError(f"building the CUDA stubs: {e}") from e
    print(f"  {len(made)} stub libraries: {', '.join(sorted(made))}", flush=True)
    marker.write_text(key)


REPO = Path(__file__).resolve().parents[2]
_AUXV_PROBE = (f"import sys; sys.path.insert(0, {str(REPO)!r}); from pt2e_int8.app.device import arm_hwcaps; "
               "print(' '.join(arm_hwcaps()))")


def make_cpu_roots(cache: ArmCache, models: list[str]) -> None:
    """cpu/MODEL/: links to the sysroot's top folders plus a /proc/cpuinfo with MODEL's features."""
    for model in models:
        root = cache.cpu_root(model)
        spec = CPU_MODELS[model]
        key = json.dumps(spec, sort_keys=True)
        marker = _step(cache, f"cpu-{model}", key)
        if marker is None:
            continue
        root.mkdir(parents=True, exist_ok=True)
        for top in cache.sysroot.iterdir():
            if top.name in ("proc",):
                continue
            link = root / top.name
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(os.path.relpath(top, root))
        (root / "proc").mkdir(exist_ok=True)
        # Ask the emulated CPU (before any cpuinfo exists: python itself does not read it).
        (root / "proc" / "cpuinfo").unlink(missing_ok=True)
        out = _run(guest_command(cache, model, ["-S", "-c", _AUXV_PROBE]), env=guest_env(cache),
                   timeout=300, what=f"reading the hwcaps of -cpu {spec['qemu_cpu']}")
        feats = out.strip()
        n = os.cpu_count() or 1
        blocks = [f"processor\t: {i}\nBogoMIPS\t: 50.00\nFeatures\t: {feats}\nCPU implementer\t: {spec['implementer']}\n"
                  f"CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: {spec['part']}\nCPU revision\t: 0\n"
                  for i in range(n)]
        (root / "proc" / "cpuinfo").write_text("\n".join(blocks) + "\n")
        print(f"  {model} (-cpu {spec['qemu_cpu']}): {feats}", flush=True)
        marker.write_text(key)


_SMOKE = ("import numpy, onnxruntime, torch\n"
          "from executorch.extension.pybindings import _C\n"
          "print(numpy.__version__, onnxruntime.__version__, torch.__version__, torch.cuda.is_available())\n")


def smoke(cache: ArmCache, models: list[str]) -> dict[str, str]:
    seen = {}
    for model in models:
        t0 = time.perf_counter()
        out = _run(guest_command(cache, model, ["-c", _SMOKE]), env=guest_env(cache), timeout=600,
                   what=f"importing the runtimes on -cpu {CPU_MODELS[model]['qemu_cpu']}")
        seen[model] = out.strip().splitlines()[-1]
        print(f"  {model}: numpy / onnxruntime / torch / cuda = {seen[model]} ({time.perf_counter() - t0:.0f} s)",
              flush=True)
    return seen


def setup(cache: ArmCache, models: list[str]) -> dict:
    qemu = ensure_qemu()
    cache.root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(cache.root).free
    if not cache.ready_file.exists() and free < 3 * 2**30:
        raise SetupError(f"only {free / 2**30:.1f} GiB free where {cache.root} lives; the kit needs ~2 GiB. "
                         "Free some space or point PT2E_INT8_ARM_CACHE elsewhere.")
    versions = _host_versions()
    previous = cache.manifest() if cache.ready_file.is_file() else {}
    markers = cache.root / "markers"
    before = {p.name: p.stat().st_mtime_ns for p in markers.glob("*")} if markers.is_dir() else None
    cache.ready_file.unlink(missing_ok=True)  # written again only when every step below has passed
    fetch_debs(cache)
    binutils = fetch_cross_binutils(cache)
    fetch_wheels(cache, versions)
    install_wheels(cache, versions)
    build_cuda_stubs(cache, binutils)
    make_cpu_roots(cache, models)
    unchanged = before == {p.name: p.stat().st_mtime_ns for p in markers.glob("*")}
    if unchanged and previous.get("versions") == versions and set(models) <= set(previous.get("smoke", {})):
        print("[arm] smoke imports: passed before with these versions; nothing changed since", flush=True)
        seen = {m: previous["smoke"][m] for m in models}
    else:
        seen = smoke(cache, models)
    manifest = {"qemu": _run([qemu, "--version"], what="qemu --version").splitlines()[0], "versions": versions,
                "cpu_models": {m: CPU_MODELS[m] for m in models}, "smoke": seen}
    cache.ready_file.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=None, help="cache folder (default: %(default)s → "
                        "$PT2E_INT8_ARM_CACHE or ~/.cache/pt2e-int8/arm)")
    parser.add_argument("--cpu", action="append", choices=sorted(CPU_MODELS), default=None,
                        help=f"CPU models to prepare (default: {' '.join(DEFAULT_CPU_MODELS)} and cortex-a72)")
    args = parser.parse_args(argv)
    cache = ArmCache((args.cache or cache_root()).resolve())
    models = args.cpu or [*DEFAULT_CPU_MODELS, "cortex-a72"]
    try:
        manifest = setup(cache, models)
    except SetupError as e:
        print(f"arm set-up: {e}", file=sys.stderr)
        return 2
    print(f"[arm] ready in {cache.root}: {manifest['qemu']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
