"""How far a bench run's MiniLM ONNX files are from `onnx_reference`, per held-out sentence, with
and without ONNX Runtime's LayerNorm in the reference (backends/onnx/layer_norm_reference.py).

    HF_HUB_OFFLINE=1 .venv/bin/python -m bench.onnx_reference_steps --workdir out/bench-issue11c

Reads the run's files (minilm/data.pt, ours_*.onnx, smooth_qat.pt2), re-quantizes the PTQ models
from the same calibration data (deterministic: the files must match their reference bit for bit
when it is right), and writes bench/issue11/steps/ONNX_REFERENCE.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import backends.onnx.reference as onnx_ref
import pt2e_int8 as q
from backends.onnx.runtime import load_onnx
from bench.models import MiniLM, ModelData
from bench.pipelines import SMOOTH_QAT_GRAPH, STATIC_OBSERVER
from pt2e_int8.app.device import describe_device, summary_line
from pt2e_int8.app.minilm import smooth_quantizer
from pt2e_int8.atomic import write_text_atomic

OUT = Path(__file__).parent / "issue11" / "steps" / "ONNX_REFERENCE.md"
PIPELINES = ("ours_static", "ours_smooth", "ours_smooth_insert", "ours_smooth_qat")


def _model(name: str, workdir: Path, data: ModelData):
    if name == "ours_smooth_qat":
        return torch.export.load(workdir / SMOOTH_QAT_GRAPH).module()
    quantizer = {"ours_static": lambda: q.Int8Quantizer().set_global(q.QuantConfig.static(observer=STATIC_OBSERVER)),
                 "ours_smooth": smooth_quantizer,
                 "ours_smooth_insert": lambda: smooth_quantizer(insert=True)}[name]()
    return q.quantize(MiniLM().build(workdir, quick=False), data.calibration[0], calibration=data.calibration,
                      quantizer=quantizer, progress=False)


def _steps(qm, session, data: ModelData) -> list[float]:
    ref, per = onnx_ref.onnx_reference(qm), []
    for x in data.eval_inputs:
        with torch.no_grad():
            r = ref(*x)
        r = r if isinstance(r, torch.Tensor) else r[0]
        got = torch.as_tensor(session.run(list(x))[0]).reshape(r.shape)
        per.append(q.max_error_in_steps(r, got, float(r.max() - r.min()) / 255))
    return per


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, default=Path("out/bench-issue11c"))
    args = p.parse_args()
    workdir = args.workdir / "minilm"
    data = ModelData.load(workdir / "data.pt")
    rows, with_ort = [], onnx_ref.rewrite_layer_norms
    for name in PIPELINES:
        qm, session = _model(name, workdir, data), load_onnx(workdir / f"{name}.onnx")
        onnx_ref.rewrite_layer_norms = lambda gm: False
        try:
            before = _steps(qm, session, data)
        finally:
            onnx_ref.rewrite_layer_norms = with_ort
        after = _steps(qm, session, data)
        cells = [f"{max(v):.2f} ({', '.join(f'{i}: {s:.2f}' for i, s in enumerate(v) if s >= 0.005) or 'none'})"
                 for v in (before, after)]
        rows.append(f"| {name}.onnx | " + " | ".join(cells) + " |")
        print(rows[-1], flush=True)
    write_text_atomic(OUT,
        "# MiniLM ONNX files vs onnx_reference: torch's LayerNorm or ONNX Runtime's\n\n"
        f"Command: `HF_HUB_OFFLINE=1 .venv/bin/python -m bench.onnx_reference_steps --workdir {args.workdir}`  \n"
        f"CPU: {summary_line(describe_device())}; the bench's artifacts (seq 128, 16 held-out sentences); PTQ models re-quantized from the "
        "run's calibration data, the QAT graph read from the run.\n\n"
        "Worst output steps over the 16 sentences (bench `reference_steps`), then the sentences off by "
        "≥ 0.005 steps.\n\n"
        "| file | reference with torch's LayerNorm | with ONNX Runtime's LayerNorm |\n| --- | --- | --- |\n"
        + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
