"""Which ONNX weight / activation signedness ONNX Runtime runs exactly on aarch64, and with which kernels.

    nice -n 15 .venv/bin/python -m bench.arm.signedness [--cpu neoverse-n1 --cpu max-nosme --cpu cortex-a72]
    # writes bench/arm/SIGNEDNESS.md and .json

Two models, each quantized once (PT2E, our Int8Quantizer) and written as QDQ ONNX in every
signedness `export_onnx` can write: static U8U8, U8S8, S8S8, S8U8 (activation then weight type) and
dynamic U8U8, U8S8 (ONNX's DynamicQuantizeLinear makes uint8 activations only):

- digits: the demo's MLP (64-128-64-10) trained on scikit-learn's digits, 65 held-out digits
  (batches 1 and 64);
- linear: Linear(384, 1536) - ReLU - Linear(1536, 384), random weights (per-channel int8 weights use
  the full -127..127 range, the case that saturates int16 pair sums), 128 rows of N(0, 1).

Every file runs through `tools.arm.check` (the same script on the x86 host and under qemu-user per
CPU model, each artifact in its own traced process), which gives the difference from x86, the
operators ONNX Runtime ran (its profiler) and the int8 instructions that executed in ONNX Runtime's
library (qemu's instruction log: udot / sdot / ummla / smmla / usmmla ...). Here the outputs are
also compared with the PyTorch reference (the converted GraphModule run by PyTorch on x86), in
steps of the output's quantization grid (static) or range/255 (dynamic).
Speed under emulation says nothing about a board: no timings are reported.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
STATIC = {"u8u8": ("uint8", "uint8"), "u8s8": ("uint8", "int8"), "s8s8": ("int8", "int8"), "s8u8": ("int8", "uint8")}
DYNAMIC = {"u8u8": "uint8", "u8s8": "int8"}


def _digits():
    from pt2e_int8.app.digits import DigitsMLP, load_digits_split, train

    split = load_digits_split()
    torch.manual_seed(0)
    model = train(DigitsMLP(), split, epochs=8, lr=1e-2).eval()
    calib = [(b,) for b in split.x_train.split(32)]
    x = split.x_test
    return model, (split.x_train[:32],), calib, [(x[:1].contiguous(),), (x[1:65].contiguous(),)]


def _linear():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(384, 1536), torch.nn.ReLU(), torch.nn.Linear(1536, 384)).eval()
    g = torch.Generator().manual_seed(1)
    calib = [(torch.randn(32, 384, generator=g),) for _ in range(8)]
    return model, calib[0], calib, [(torch.randn(128, 384, generator=g),)]


MODELS = {"digits": _digits, "linear": _linear}


def export(work: Path) -> dict[str, Path]:
    """Per model: a folder of .onnx files, `inputs.pt`, and the PyTorch reference outputs."""
    import pt2e_int8 as q
    from backends.onnx import export_onnx

    folders = {}
    for name, make in MODELS.items():
        folder = work / name
        folders[name] = folder
        if (folder / "reference.npz").is_file():
            continue
        folder.mkdir(parents=True, exist_ok=True)
        model, example, calib, inputs = make()
        static = q.quantize(copy.deepcopy(model), example, calibration=calib)
        dynamic = q.quantize(copy.deepcopy(model), example,
                             quantizer=q.Int8Quantizer().set_global(q.QuantConfig.dynamic()))
        for tag, (act, weight) in STATIC.items():
            export_onnx(static, example, folder / f"static-{tag}.onnx", act_dtype=act, weight_dtype=weight)
        for tag, weight in DYNAMIC.items():
            export_onnx(dynamic, example, folder / f"dynamic-{tag}.onnx", weight_dtype=weight)
        torch.save(inputs, folder / "inputs.pt")
        ref = {}
        with torch.no_grad():
            for scheme, qm in (("static", static), ("dynamic", dynamic)):
                for b, xs in enumerate(inputs):
                    ref[f"{scheme}/{b}"] = qm(*xs).numpy()
        np.savez(folder / "reference.npz", **ref)
    return folders


def _steps(ref: np.ndarray, got: np.ndarray) -> float:
    from tools.arm.check import output_step

    step, _ = output_step(ref)
    return float(np.abs(got.astype(np.float64) - ref).max()) / step


def versus_reference(folder: Path, report: Path, where: str) -> dict[str, dict]:
    """Per file: max error vs the PyTorch reference in output steps, and argmax agreement."""
    with np.load(folder / "reference.npz") as z:
        ref = {k: z[k] for k in z.files}
    out = {}
    for path in sorted(folder.glob("*.onnx")):
        scheme = path.name.split("-")[0]
        with np.load(report / where / f"{path.name}.npz") as z:
            got = {int(k.split("/")[0]): z[k] for k in z.files}
        r = np.concatenate([ref[f"{scheme}/{b}"].ravel() for b in sorted(got)])
        g = np.concatenate([got[b].ravel() for b in sorted(got)])
        agree = np.concatenate([ref[f"{scheme}/{b}"].argmax(-1) == got[b].argmax(-1) for b in sorted(got)])
        out[path.name] = {"steps_vs_reference": _steps(r, g), "argmax_vs_reference": float(agree.mean())}
    return out


def _cell(row: dict, ref: dict) -> str:
    vs_x86 = "identical" if row["max_abs_error"] == 0 else f"{row['error_steps']:.2f} steps"
    kernels = row["kernels"].split("; ran ")
    ops = kernels[0].removeprefix("ORT ")
    ran = kernels[1] if len(kernels) > 1 else "?"
    return f"{vs_x86} / {ref['steps_vs_reference']:.2f} / {ops} / {ran}"


def report(doc: dict, cpus: tuple[str, ...]) -> str:
    lines = ["# ONNX Runtime on aarch64: which weight / activation signedness runs exactly, on which kernels", "",
             f"Made by `{doc['command']}` on {doc['x86_cpu']} (x86 host: AVX-512 VNNI + AMX) and {doc['qemu']} "
             f"(`-cpu` per column; {', '.join(cpus)}); ONNX Runtime 1.32.0 on both sides, 1 thread, default session "
             "options. Names: static/dynamic, then activation and weight types (u8s8 = uint8 activations, "
             "int8 weights). Cells: difference from the x86 run of the same file / max error vs the PyTorch reference "
             "in output steps / the int8 operators ONNX Runtime ran (profiler) / the int8 instructions that executed "
             "in ONNX Runtime's library (qemu's instruction log, distinct sites). No timings: speed under "
             "emulation says nothing about a board.", ""]
    for name, model in doc["models"].items():
        refs = model["reference"]
        lines += [f"## {name}", "", "| file | x86: vs reference (steps) | " + " | ".join(cpus) + " |",
                  "|---|---:|" + "---|" * len(cpus)]
        by = {(r["artifact"], r["cpu"]): r for r in model["rows"] if r["output"] == 0}
        for art in sorted({r["artifact"] for r in model["rows"]}):
            cells = [_cell(by[(art, c)], refs[c][art]) for c in cpus]
            lines.append(f"| {art} | {refs['x86'][art]['steps_vs_reference']:.2f} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from tools.arm.cache import CPU_MODELS, ArmCache, cache_root
    from tools.arm.check import EmulationUnavailableError, check

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="append", choices=sorted(CPU_MODELS), default=None)
    parser.add_argument("--work", type=Path, default=REPO / "out/arm-signedness")
    parser.add_argument("--out", type=Path, default=REPO / "bench/arm/SIGNEDNESS")
    args = parser.parse_args(argv)
    cpus = tuple(args.cpu or ("neoverse-n1", "max-nosme", "cortex-a72"))
    folders = export(args.work)
    doc = {"command": " ".join(["python -m bench.arm.signedness", *(argv if argv is not None else sys.argv[1:])]),
           "qemu": ArmCache(cache_root()).manifest().get("qemu"), "models": {}}
    for name, folder in folders.items():
        run_dir = args.work / f"{name}-check"
        try:
            rows, check_doc = check(folder, cpus=cpus, report=run_dir, trace_kernels=True)
        except EmulationUnavailableError as e:
            print(f"aarch64 emulation unavailable: {e}", file=sys.stderr)
            return 2
        doc["x86_cpu"] = check_doc["x86_cpu"]
        doc["models"][name] = {
            "rows": [r.__dict__ for r in rows],
            "reference": {w: versus_reference(folder, run_dir, w) for w in ("x86", *cpus)},
        }
    args.out.with_suffix(".json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    text = report(doc, cpus)
    md = args.out.with_suffix(".md")
    if md.is_file() and "<!-- findings -->" in md.read_text():  # keep the hand-written findings below the tables
        text += "\n<!-- findings -->" + md.read_text().split("<!-- findings -->", 1)[1]
    md.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
