"""Run artifacts on the inputs of a .npz and save their outputs: the same script on the x86 host and
inside the emulated aarch64 python, so both sides run the same code on the same bytes.

    python tools/arm/guest.py --inputs in.npz --out out/ a.pte b.onnx

`in.npz` holds, per artifact file name and batch, arrays `NAME/BATCH/INPUT`. Writes `out/NAME.npz`
(`BATCH/OUTPUT` arrays) and `out/NAME.json`: the device (ISA features from the kernel's hardware
capabilities, which is what XNNPACK's and ONNX Runtime's CPU detection read), the load and
first-run times, for .onnx the operators ONNX Runtime really ran (from its profiler), and the
process's executable mappings (to name the library of a traced instruction).

Imports only numpy, the runtimes and the project's runtime loaders (no torch.export, no exir).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

T0 = time.perf_counter()

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, for pt2e_int8 / backends

import numpy as np  # noqa: E402


def _batches(npz, stem: str) -> list[list[np.ndarray]]:
    keys = sorted((k for k in npz.files if k.startswith(stem + "/")), key=lambda k: tuple(map(int, k.split("/")[1:])))
    out: dict[int, list] = {}
    for k in keys:
        _, b, _ = k.split("/")
        out.setdefault(int(b), []).append(npz[k])
    return [out[b] for b in sorted(out)]


def _ort_ops(path: Path, batches: list[list[np.ndarray]]) -> dict[str, int]:
    """Operator types ONNX Runtime executed for one run of the first batch, from its profiler."""
    import onnxruntime as ort

    from backends.onnx.runtime import session_options

    so = session_options(threads=1)
    so.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        so.profile_file_prefix = os.path.join(tmp, "prof")
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        feed = {i.name: a for i, a in zip(sess.get_inputs(), batches[0], strict=True)}
        sess.run(None, feed)
        events = json.loads(Path(sess.end_profiling()).read_text())
    ops = Counter(e["args"]["op_name"] for e in events
                  if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and "op_name" in e.get("args", {}))
    return dict(sorted(ops.items()))


def _code_maps() -> list[tuple[int, int, str]]:
    """Executable mappings of this process (start, end, file): lets an instruction trace name its library."""
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        parts = line.split(None, 5)
        if len(parts) == 6 and "x" in parts[1] and parts[5].startswith("/"):
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            out.append((lo, hi, parts[5]))
    return out


def run(artifacts: list[Path], inputs: Path, out: Path, threads: int) -> dict:
    from pt2e_int8.app.device import describe_device  # standard library only

    npz = np.load(inputs)
    out.mkdir(parents=True, exist_ok=True)
    device = describe_device()
    docs = {}
    for path in artifacts:
        batches = _batches(npz, path.name)
        t0 = time.perf_counter()
        if path.suffix == ".pte":
            import torch

            from backends.executorch.runtime import load_pte

            prog = load_pte(path, threads=threads)
            runner = lambda arrays, prog=prog: [o.numpy() for o in prog.run([torch.from_numpy(a) for a in arrays])]  # noqa: E731
        else:
            import onnxruntime as ort

            from backends.onnx.runtime import session_options

            sess = ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
            names = [i.name for i in sess.get_inputs()]
            runner = lambda arrays, sess=sess, names=names: sess.run(None, dict(zip(names, arrays, strict=True)))  # noqa: E731
        t_load = time.perf_counter() - t0
        saved = {}
        t1 = time.perf_counter()
        for b, arrays in enumerate(batches):
            for o, value in enumerate(runner(arrays)):
                saved[f"{b}/{o}"] = np.asarray(value)
            if b == 0:
                t_first = time.perf_counter() - t1
        np.savez(out / f"{path.name}.npz", **saved)
        info = {"load_s": t_load, "first_run_s": t_first, "batches": len(batches)}
        if path.suffix == ".onnx":
            info["ort_ops"] = _ort_ops(path, batches)
        docs[path.name] = info
    for path in artifacts:  # written last: the maps then hold every library the runs loaded
        doc = {"device": device, "run": docs[path.name], "process_s": time.perf_counter() - T0, "maps": _code_maps()}
        (out / f"{path.name}.json").write_text(json.dumps(doc) + "\n")
    return docs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("artifacts", nargs="+", type=Path)
    parser.add_argument("--inputs", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    run(args.artifacts, args.inputs, args.out, args.threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
