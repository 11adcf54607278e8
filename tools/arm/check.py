"""Run every .pte and .onnx of a folder on x86 and on emulated aarch64 CPUs; compare the outputs.

    python -m tools.arm.check out/demo [--inputs batch.pt] [--cpu neoverse-n1 --cpu max-nosme] [--report DIR]

The same script (`tools/arm/guest.py`) runs the same files on the same inputs with the host python
and with the aarch64 python under qemu-user, once per CPU model. Per artifact and CPU model it
reports the max abs error against x86, that error in output quantization steps, argmax agreement,
the ONNX Runtime operators that ran, and the int8 kernel family the CPU's features select.

Bounds (exit 1 when broken): artifacts whose name says `static` or `qat` must match x86 exactly when
their output is a dequantized int8 tensor (on a quantization grid), and within 1 output step when
float ops follow the last int8 op (a transformer block's LayerNorm: its float kernels differ by ulps
per ISA);
`dynamic` or `mixed` (run-time activation scales) within 1 output step, or, when the folder holds
the model's float artifact too (`minilm-float.pte` beside `minilm-dynamic.pte`; `float.onnx` beside
`ptq-dynamic.onnx`), within the artifact's own int8 error on x86 (max |int8 - float|, same inputs).
Float ones are reported only. The output step is read off the x86 output when its values lie on a
quantization grid (a static output), else it is the step an int8 tensor spanning the x86 output's
range would have.

Why the second bound (bench/arm/ATTRIBUTION.md): XNNPACK's float kernels (LayerNorm as written by
our pass, softmax, GELU) differ by a few ulps between ISAs, and a model that re-quantizes float
values at run time (dynamic activations, or static ones behind float ops) turns a 1-ulp difference
into a different int8 rounding, which deep layers amplify: on x86 alone, moving MiniLM's input by
one ulp moves its dynamic .pte output by up to 5.5 steps. The ARM result is then another draw of
the same int8 rounding noise, not a wrong kernel: it is no further from x86 than int8 is from float.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tools.arm import trace
from tools.arm.cache import (
    CPU_MODELS,
    DEFAULT_CPU_MODELS,
    ArmCache,
    cache_root,
    guest_command,
    guest_env,
    status,
)

GUEST = Path(__file__).with_name("guest.py")
REPO = Path(__file__).resolve().parents[2]
INT8_OPS = ("QGemm", "QLinearMatMul", "QLinearConv", "DynamicQuantizeMatMul", "MatMulInteger", "ConvInteger",
            "MatMulIntegerToFloat", "QLinearAdd", "QLinearMul")


class EmulationUnavailableError(RuntimeError):
    """qemu-user or the aarch64 kit is missing; the message says how to set it up."""


def expectation(name: str) -> str:
    """'exact' | 'steps' | 'none' from the artifact's name (`ptq-static.pte`, `minilm-dynamic.onnx` ...)."""
    low = name.lower()
    if "dynamic" in low or "mixed" in low:
        return "steps"
    if "static" in low or "qat" in low:
        return "exact"
    return "none"


def float_sibling(art: Path, artifacts: list[Path]) -> Path | None:
    """The float artifact of the same model and format: `X-float.pte` for `X-dynamic.pte`, else
    `float.pte` (the demo's `ptq-dynamic.pte`); None when the folder has none."""
    if expectation(art.name) == "none":
        return None
    names = {a.name: a for a in artifacts}
    for scheme in ("dynamic", "mixed", "static", "qat"):
        if scheme in art.stem.lower():
            i = art.stem.lower().index(scheme)
            candidate = f"{art.stem[:i]}float{art.stem[i + len(scheme):]}{art.suffix}"
            if candidate in names:
                return names[candidate]
    return names.get(f"float{art.suffix}")


def output_step(x86: np.ndarray) -> tuple[float, bool]:
    """(step, on_grid): the grid spacing of a dequantized output, else range / 255."""
    flat = np.unique(x86.astype(np.float64).ravel())
    span = float(flat[-1] - flat[0]) if flat.size else 0.0
    if flat.size >= 3 and span > 0:
        diffs = np.diff(flat)
        step = float(diffs.min())
        if step > 0 and np.allclose(diffs / step, np.round(diffs / step), atol=1e-3) and span / step <= 255.5:
            return step, True
    return (span / 255 if span > 0 else 1.0), False


# Libraries of each runtime on aarch64, to attribute traced instructions to the runtime that ran them.
RUNTIME_LIBS = {".pte": ("executorch", "_C.cpython"), ".onnx": ("onnxruntime",)}


def _runtime_instructions(suffix: str, by_lib: dict[str, dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for lib, counts in by_lib.items():
        if any(key in lib for key in RUNTIME_LIBS[suffix]):
            for k, v in counts.items():
                total[k] = total.get(k, 0) + v
    return total


@dataclass
class Row:
    artifact: str
    cpu: str
    output: int
    max_abs_error: float
    step: float
    step_on_grid: bool
    error_steps: float
    argmax_agree: float  # fraction of rows (last dim) whose argmax matches x86
    expect: str
    passed: bool
    bound: float  # the max abs error allowed (0 for exact)
    bound_kind: str  # "exact" | "1 step" | "int8 error" (of the x86 artifact vs its float sibling) | "-"
    kernels: str
    ort_ops_match_x86: bool | None
    int8_instructions: dict | None = None  # traced int8 instructions in the runtime's libraries


def _inputs_npz(artifacts: list[Path], inputs: Path | None, path: Path, batches: tuple[int, ...]) -> None:
    from backends.registry import load_artifact
    from pt2e_int8.app.timing import synthetic_inputs

    arrays = {}
    given = None
    if inputs is not None:
        from pt2e_int8.app.inputs import load_batches

        given = load_batches(str(inputs))
    for art in artifacts:
        if given is not None:
            sets = given
        else:
            program = load_artifact(art)
            sets = [synthetic_inputs(program, b, seed=i) for i, b in enumerate(batches)]
        for b, tensors in enumerate(sets):
            for i, t in enumerate(tensors):
                a = t.detach().cpu().numpy()
                arrays[f"{art.name}/{b}/{i}"] = a.astype(np.float32) if a.dtype == np.float64 else a
    np.savez(path, **arrays)


def _run(cmd: list[str], env: dict | None, timeout: float, what: str) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return time.perf_counter() - t0


def _load(run_dir: Path, stem: str) -> dict[str, np.ndarray]:
    with np.load(run_dir / f"{stem}.npz") as z:
        return {k: z[k] for k in z.files}


def compare(artifacts: list[Path], x86: Path, arm: Path, cpu: str,
            instructions: dict[str, dict[str, dict[str, int]]] | None = None) -> list[Row]:
    rows = []
    for art in artifacts:
        ref, got = _load(x86, art.name), _load(arm, art.name)
        n_out = 1 + max(int(k.split("/")[1]) for k in ref)
        ops_x86 = json.loads((x86 / f"{art.name}.json").read_text())["run"].get("ort_ops")
        ops_arm = json.loads((arm / f"{art.name}.json").read_text())["run"].get("ort_ops")
        if ops_arm is not None:
            int8 = {k: v for k, v in ops_arm.items() if k in INT8_OPS}
            kernels = "ORT " + (", ".join(f"{k}×{v}" for k, v in int8.items()) or "float ops only")
        else:
            kernels = "XNNPACK"
        seen = None
        if instructions is not None:
            seen = _runtime_instructions(art.suffix, instructions.get(art.name, {}))
            kernels += f"; ran {trace.family(seen)}" + (
                f" ({', '.join(f'{k}×{v}' for k, v in list(seen.items())[:3])})" if seen else "")
        sibling = float_sibling(art, artifacts)
        ref_float = _load(x86, sibling.name) if sibling is not None else None
        for o in range(n_out):
            keys = sorted(k for k in ref if int(k.split("/")[1]) == o)
            r = np.concatenate([ref[k].astype(np.float64).ravel() for k in keys])
            g = np.concatenate([got[k].astype(np.float64).ravel() for k in keys])
            err = float(np.max(np.abs(r - g))) if r.size else 0.0
            step, on_grid = output_step(r)
            expect = expectation(art.name)
            if expect == "exact" and not on_grid:  # float ops after the last int8 op: ulps per ISA
                expect = "steps"
            bound, kind = {"exact": (0.0, "exact"), "steps": (step, "1 step"), "none": (math.inf, "-")}[expect]
            if expect == "steps" and ref_float is not None and all(
                    k in ref_float and ref_float[k].shape == ref[k].shape for k in keys):
                f = np.concatenate([ref_float[k].astype(np.float64).ravel() for k in keys])
                int8_error = float(np.max(np.abs(r - f)))
                if int8_error > bound:
                    bound, kind = int8_error, "int8 error"
            agree = []
            for k in keys:
                a, b = ref[k], got[k]
                if a.ndim >= 1 and a.shape[-1] > 1 and a.dtype.kind == "f":
                    agree.append(np.argmax(a.reshape(-1, a.shape[-1]), -1) == np.argmax(b.reshape(-1, b.shape[-1]), -1))
            agree_frac = float(np.concatenate(agree).mean()) if agree else math.nan
            passed = err == 0.0 if expect == "exact" else err <= bound * (1 + 1e-6)
            rows.append(Row(art.name, cpu, o, err, step, on_grid, err / step, agree_frac, expect, passed, bound, kind,
                            kernels, None if ops_x86 is None else ops_x86 == ops_arm, seen))
    return rows


def _bound_text(r: Row) -> str:
    if r.bound_kind == "int8 error":
        return f"≤ int8 err ({r.bound / r.step:.1f} steps)"
    return {"exact": "exact", "1 step": "≤1 step"}.get(r.bound_kind, "-")


def table(rows: list[Row]) -> str:
    header = ("artifact", "cpu", "out", "max abs err", "step", "err steps", "argmax agree", "bound", "ok", "kernels")
    body = [(r.artifact, r.cpu, str(r.output), f"{r.max_abs_error:.3g}", f"{r.step:.3g}{'' if r.step_on_grid else '*'}",
             f"{r.error_steps:.3f}", "n/a" if math.isnan(r.argmax_agree) else f"{100 * r.argmax_agree:.1f}%",
             _bound_text(r), "yes" if r.passed else "NO",
             r.kernels + ("" if r.ort_ops_match_x86 in (None, True) else " (ops differ from x86!)"))
            for r in rows]
    widths = [max(len(x[i]) for x in [header, *body]) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [header, *body])


def check(folder: Path, *, inputs: Path | None = None, cpus: tuple[str, ...] = DEFAULT_CPU_MODELS,
          report: Path | None = None, cache: ArmCache | None = None, batches: tuple[int, ...] = (1, 8),
          timeout: float = 3600, trace_kernels: bool = True) -> tuple[list[Row], dict]:
    """Run `folder`'s artifacts on x86 and each CPU model; return the comparison rows and timings.

    With `trace_kernels`, each artifact runs in its own emulated process under qemu's `-d in_asm`
    log, which tells the int8 instructions it executed (a few seconds more per artifact).
    """
    cache = cache or ArmCache(cache_root())
    ready, why = status(cache)
    if not ready:
        raise EmulationUnavailableError(why)
    artifacts = sorted([*folder.glob("*.pte"), *folder.glob("*.onnx")])
    if not artifacts:
        raise FileNotFoundError(f"{folder}: no .pte or .onnx files to check")
    report = report or folder / "arm-check"
    if inputs is None and (folder / "inputs.pt").is_file():
        inputs = folder / "inputs.pt"
    report.mkdir(parents=True, exist_ok=True)
    npz = report / "inputs.npz"
    _inputs_npz(artifacts, inputs, npz, batches)
    argv = [str(GUEST), "--inputs", str(npz)]
    files = [str(a.resolve()) for a in artifacts]
    seconds = {"x86": _run([sys.executable, *argv, "--out", str(report / "x86"), *files], None, timeout, "x86 run")}
    rows = []
    env = guest_env(cache, [str(REPO)])
    for cpu in cpus:
        what = f"aarch64 run on -cpu {CPU_MODELS[cpu]['qemu_cpu']}"
        if not trace_kernels:
            cmd = guest_command(cache, cpu, [*argv, "--out", str(report / cpu), *files])
            seconds[cpu] = _run(cmd, env, timeout, what)
            rows += compare(artifacts, report / "x86", report / cpu, cpu)
            continue
        seconds[cpu], instructions = 0.0, {}
        for art, file in zip(artifacts, files, strict=True):
            log = report / cpu / f"{art.name}.qemu.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            cmd = guest_command(cache, cpu, [*argv, "--out", str(report / cpu), file])
            cmd[1:1] = ["-d", "in_asm", "-D", str(log)]
            seconds[cpu] += _run(cmd, env, timeout, f"{what} of {art.name}")
            maps = json.loads((report / cpu / f"{art.name}.json").read_text())["maps"]
            instructions[art.name] = trace.int8_instructions(log, maps)
            log.unlink()  # ~150 MB, mostly the interpreter starting
        rows += compare(artifacts, report / "x86", report / cpu, cpu, instructions)
    devices = {cpu: json.loads((report / cpu / f"{artifacts[0].name}.json").read_text())["device"]
               for cpu in ["x86", *cpus]}
    doc = {"folder": str(folder), "qemu": cache.manifest().get("qemu"), "seconds": seconds,
           "cpu_models": {c: {**CPU_MODELS[c], "isa_seen": [k for k, v in devices[c]["isa"].items() if v]} for c in cpus},
           "x86_cpu": devices["x86"]["cpu_model"], "passed": all(r.passed for r in rows),
           "rows": [asdict(r) for r in rows]}
    (report / "arm-check.json").write_text(json.dumps(doc, indent=2) + "\n")
    (report / "arm-check.md").write_text(table(rows) + "\n")
    return rows, doc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="a folder of .pte / .onnx files (e.g. `pt2e-int8 demo -o DIR`)")
    parser.add_argument("--inputs", type=Path, default=None, help=".pt / .npz inputs for every artifact "
                        "(default: FOLDER/inputs.pt, else random inputs of each file's signature at batch 1 and 8)")
    parser.add_argument("--cpu", action="append", choices=sorted(CPU_MODELS), default=None,
                        help=f"emulated CPU model (repeatable; default {' '.join(DEFAULT_CPU_MODELS)})")
    parser.add_argument("--no-trace", action="store_true", help="skip the per-artifact instruction trace (faster)")
    parser.add_argument("--report", type=Path, default=None, help="where outputs and the report go (default FOLDER/arm-check)")
    args = parser.parse_args(argv)
    try:
        rows, doc = check(args.folder, inputs=args.inputs, cpus=tuple(args.cpu or DEFAULT_CPU_MODELS), report=args.report,
                          trace_kernels=not args.no_trace)
    except EmulationUnavailableError as e:
        print(f"arm-check: aarch64 emulation is not available: {e}", file=sys.stderr)
        return 2
    for cpu, spec in doc["cpu_models"].items():
        print(f"{cpu}: qemu -cpu {spec['qemu_cpu']} ({spec['offers']}); features seen: {' '.join(spec['isa_seen'])}")
    print(table(rows))
    print("* step = range/255 of the x86 output (not a quantized output); int8 err = max |int8 - float| of the "
          "x86 artifact and its float sibling (see the module docstring)")
    print(f"seconds: {', '.join(f'{k} {v:.0f}' for k, v in doc['seconds'].items())}")
    print("PASS" if doc["passed"] else "FAIL: see the rows marked NO")
    return 0 if doc["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
