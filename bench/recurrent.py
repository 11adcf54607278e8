"""Does decomposing LSTM / GRU into int8 linears pay? Latency of .pte and ONNX, and accuracy.

    .venv/bin/python bench/recurrent.py --threads 2 --iters 200

For each cell (LSTM, GRU) two models:
  digits   the 8x8 digits read row by row (8 steps of 8 pixels), hidden 64, trained a few
           seconds on scikit-learn's digits: accuracy on the held-out split (real data).
  speech   a keyword-spotting-sized layer: 49 steps of 40 features, hidden 128, a linear head;
           random init: SQNR of the output against float eager, on held-out random inputs.
Variants, all batch 1, static shapes, 2 threads, timed interleaved per runtime in one loop
(the first row of each runtime is its float baseline):
  .pte   float, stock ExecuTorch lowering   torch.export → to_edge_transform_and_lower (to_edge
                                            decomposes the op itself)
         float, ours (unrolled)             export_pte: DecomposeRecurrentPass, then XNNPACK
         int8 static / dynamic              quantize (the transform unrolls the op: int8 linears)
  ONNX   float, fused op                    one ONNX LSTM / GRU node
         int8 ... (fused back: default)     export_onnx rebuilds the fused op on int8-rounded weights
         int8 ..., kept unrolled            the per-step int8 linears (recurrent tags stripped)
Writes bench/recurrent.json and bench/recurrent.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402

import pt2e_int8 as q  # noqa: E402
from pt2e_int8.app.device import describe_device, summary_line  # noqa: E402
from pt2e_int8.app.timing import latency_stats, time_interleaved  # noqa: E402
from pt2e_int8.atomic import write_text_atomic  # noqa: E402
from pt2e_int8.numerics import sqnr  # noqa: E402
from pt2e_int8.transforms.decompose_recurrent import RECURRENT_TAG  # noqa: E402


class SeqNet(nn.Module):
    def __init__(self, cell: str, features: int, hidden: int, classes: int) -> None:
        super().__init__()
        self.rnn = getattr(nn, cell)(features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.rnn(x)
        return self.head(y[:, -1])


def digits_task(cell: str, epochs: int):
    """(model, calibration, eval inputs, eval labels): digits rows as a sequence, trained."""
    from pt2e_int8.app.digits import load_digits_split

    torch.manual_seed(0)
    split = load_digits_split()
    xtr, xte = split.x_train.reshape(-1, 8, 8), split.x_test.reshape(-1, 8, 8)
    model = SeqNet(cell, 8, 64, 10)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(epochs):
        for i in range(0, len(xtr), 64):
            loss = nn.functional.cross_entropy(model(xtr[i:i + 64]), split.y_train[i:i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval(), [(xtr[i:i + 64],) for i in range(0, 512, 64)], xte, split.y_test


def speech_task(cell: str):
    torch.manual_seed(1)
    model = SeqNet(cell, 40, 128, 12).eval()
    gen = torch.Generator().manual_seed(2)
    cal = [(torch.randn(16, 49, 40, generator=gen),) for _ in range(4)]
    return model, cal, torch.randn(64, 49, 40, generator=gen), None


def _quantized(model, example, calibration, cfg):
    return q.quantize(model, example, calibration=calibration,
                      quantizer=q.Int8Quantizer().set_global(cfg), progress=False)


def _unrolled(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """A copy without the recurrent tags, so the ONNX backend keeps the per-step int8 linears."""
    gm = copy.deepcopy(gm)
    for node in gm.graph.nodes:
        if RECURRENT_TAG in (node.meta.get("custom") or {}):  # a new dict: deepcopy shares node.meta values
            node.meta["custom"] = {k: v for k, v in node.meta["custom"].items() if k != RECURRENT_TAG}
    return gm


def build_variants(model, calibration, example, workdir: Path) -> dict[str, Path]:
    from backends.executorch import export_pte
    from backends.onnx import export_onnx
    from bench import anchors

    static = _quantized(model, example, calibration, q.QuantConfig.static())
    dynamic = _quantized(model, example, calibration, q.QuantConfig.dynamic())
    paths = {"pte/float, stock ExecuTorch lowering": workdir / "stock_float.pte"}
    anchors.stock_float_pte(model, example, paths["pte/float, stock ExecuTorch lowering"], lambda _: _Null())
    pte = {"float, ours (unrolled)": model, "int8 static": static, "int8 dynamic": dynamic}
    for name, graph in pte.items():
        stem = name.replace(", ", "_").replace(" ", "_").replace("(", "").replace(")", "")
        paths[f"pte/{name}"] = export_pte(graph, example, workdir / f"{stem}.pte", dynamic_shapes=None).path
    onnx = {"float, fused op": model, "int8 static (fused back: default)": static,
            "int8 dynamic (fused back: default)": dynamic, "int8 static, kept unrolled": _unrolled(static),
            "int8 dynamic, kept unrolled": _unrolled(dynamic)}
    for name, graph in onnx.items():
        stem = name.replace(", ", "_").replace(" ", "_").replace("(", "").replace(")", "").replace(":", "")
        paths[f"onnx/{name}"] = export_onnx(graph, example, workdir / f"{stem}.onnx", dynamic_shapes=None).path
    return paths


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def measure(paths: dict[str, Path], eval_x: torch.Tensor, labels, reference, args) -> dict[str, dict]:
    from backends.registry import load_artifact

    rows: dict[str, dict] = {}
    for runtime in ("pte", "onnx"):
        names = [n for n in paths if n.startswith(runtime)]
        progs = {n: load_artifact(paths[n], threads=args.threads) for n in names}
        for n, prog in progs.items():
            out = torch.cat([torch.as_tensor(prog.run([x[None]])[0]) for x in eval_x])
            quality = ((out.argmax(-1) == labels).float().mean().item() * 100 if labels is not None
                       else sqnr(reference, out))
            rows[n] = {"quality": round(quality, 2), "size_kb": round(paths[n].stat().st_size / 1024, 1)}
        x = [eval_x[:1]]
        samples = time_interleaved([lambda p=p, x=x: p.run(x) for p in progs.values()], args.iters, args.warmup)
        base = None
        for n, ms in zip(names, samples, strict=True):
            stats = latency_stats(ms)
            base = base or stats["median_ms"]
            rows[n].update(median_ms=round(stats["median_ms"], 4), p90_ms=round(stats["p90_ms"], 4),
                           vs_float=round(stats["median_ms"] / base, 3))
    return rows


def to_markdown(doc: dict) -> str:
    lines = ["# LSTM / GRU: fused float op vs decomposed int8 linears", "",
             f"Command: `{doc['command']}`  ", f"Device: {doc['device']}  ",
             f"Threads {doc['threads']}, batch 1, static shapes, {doc['iters']} interleaved runs per runtime. "
             "Quality: digits = held-out accuracy %; speech = SQNR dB of the output vs float eager.", ""]
    for model, rows in doc["models"].items():
        lines += [f"## {model}", "", "| runtime | variant | median ms | × runtime's float | quality | KiB |",
                  "|---|---|---:|---:|---:|---:|"]
        for name, r in rows.items():
            runtime, variant = name.split("/", 1)
            lines.append(f"| {runtime} | {variant} | {r['median_ms']:.4f} | {r['vs_float']:.2f} | "
                         f"{r['quality']} | {r['size_kb']} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--out", type=Path, default=ROOT / "bench")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    doc = {"command": "python bench/recurrent.py " + " ".join(sys.argv[1:]), "device": summary_line(describe_device()),
           "threads": args.threads, "iters": args.iters, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for cell in ("LSTM", "GRU"):
            for task in ("digits", "speech"):
                model, cal, eval_x, labels = digits_task(cell, args.epochs) if task == "digits" else speech_task(cell)
                with torch.no_grad():
                    reference = model(eval_x)
                wd = Path(tmp) / f"{cell}_{task}"
                wd.mkdir()
                paths = build_variants(model, cal, (eval_x[:1],), wd)
                doc["models"][f"{cell} {task}"] = measure(paths, eval_x, labels, reference, args)
                print(to_markdown({**doc, "models": {f"{cell} {task}": doc["models"][f"{cell} {task}"]}}), flush=True)
    write_text_atomic(args.out / "recurrent.json", json.dumps(doc, indent=2) + "\n")
    write_text_atomic(args.out / "recurrent.md", to_markdown(doc))


if __name__ == "__main__":
    main()
