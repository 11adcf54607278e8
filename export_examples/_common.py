"""What every example does after quantizing: write both artifacts, run them, tabulate.

Kept apart so each example script reads as the quantization recipe and nothing else.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from backends.executorch import export_pte
from backends.executorch.runtime import load_pte
from backends.onnx import export_onnx
from backends.onnx.runtime import load_onnx
from pt2e_int8.app.artifact_run import run_in_chunks
from pt2e_int8.text_table import text_table


def parse_args(description: str, default_out: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("-o", "--out", default=default_out, help="folder for the artifacts")
    parser.add_argument("--quick", action="store_true", help="few steps and short inputs (CI smoke run)")
    return parser.parse_args()


def export_and_run(name: str, gm, example_inputs: tuple, eval_inputs: tuple, out: Path) -> dict:
    """Write NAME.pte and NAME.onnx, run both on `eval_inputs`; returns outputs, sizes and placements."""
    out.mkdir(parents=True, exist_ok=True)
    pte = export_pte(gm, example_inputs, out / f"{name}.pte")
    onnx = export_onnx(gm, example_inputs, out / f"{name}.onnx")
    with torch.no_grad():
        eager = gm(*eval_inputs)
    return {
        "eager": eager,
        "pte": run_in_chunks(load_pte(pte.path), list(eval_inputs), pte.path, "eval inputs")[0],
        "onnx": load_onnx(onnx.path).run(list(eval_inputs))[0],
        "pte_kb": pte.size_bytes / 1024,
        "onnx_kb": onnx.size_bytes / 1024,
        "int8_layers": f"{len(pte.int8_layers)}/{len(pte.placement)} pte, "
                       f"{len(onnx.int8_layers)}/{len(onnx.placement)} onnx",
    }


def save_results(out: Path, header: list[str], rows: list[list]) -> None:
    """results.json beside the artifacts: what the smoke tests and READMEs read."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps([dict(zip(header, r, strict=True)) for r in rows], indent=2))


def print_table(header: list[str], rows: list[list]) -> None:
    print(text_table(header, [[f"{c:.4g}" if isinstance(c, float) else c for c in row] for row in rows],
                     rule=True))
