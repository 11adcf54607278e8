"""Where all-MiniLM-L6-v2's static int8 accuracy goes, and the fewest layers that win it back.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/auto_minilm.py [--quick] [--out bench/AUTO_MINILM.md]

1. Per-layer numeric debugger on static int8 (histogram observer, every op family: the bench's
   "ours int8 static" model), on the 16 held-out sentences: accumulated and local SQNR per layer.
2. auto_quantize from the "mixed" recipe's own base (linears only, static, histogram observer) to
   mean cosine >= 0.995, candidates measured as XNNPACK computes them (per-row dynamic int8).
3. The chosen plan, the hand-made "mixed" recipe (every FFN linear dynamic) and plain static,
   each exported to a .pte (batch 1, seq 128, as bench/run.py does), run in the ExecuTorch runtime
   on the held-out sentences one at a time, and timed interleaved (batch 1, 2 threads).

Writes the Markdown table file and a JSON file beside it. `--quick`: 2 encoder layers, seq 32.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

import pt2e_int8 as q  # noqa: E402
from backends.executorch import export_pte, load_pte  # noqa: E402
from backends.executorch.reference import xnnpack_reference  # noqa: E402
from pt2e_int8.annotators.linear import annotate_linear  # noqa: E402
from pt2e_int8.app.device import describe_device, summary_line  # noqa: E402
from pt2e_int8.app.minilm import (  # noqa: E402
    CALIBRATION_SENTENCES,
    HELD_OUT_SENTENCES,
    load_minilm,
    mixed_quantizer,
    tokenize,
)
from pt2e_int8.app.timing import bench_artifacts  # noqa: E402
from pt2e_int8.atomic import write_text_atomic  # noqa: E402
from pt2e_int8.debug.metrics import output_cosine  # noqa: E402
from pt2e_int8.text_table import markdown_table  # noqa: E402

TARGET = 0.995


def _pte_cosine(path: Path, model, singles: list[tuple]) -> float:
    prog = load_pte(path)
    with torch.no_grad():
        ref = torch.cat([model(*x) for x in singles])
    got = torch.cat([prog.run(list(x))[0] for x in singles])
    return q.cosine(ref, got)


def _non_static(qm) -> int:
    return sum(1 for r in q.coverage(qm).layers if r.op == "linear" and r.scheme != "static/per-channel")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 encoder layers, seq 32 (smoke run)")
    ap.add_argument("--out", default=None, help="Markdown result file (default: bench/AUTO_MINILM.md, "
                    "out/auto-minilm-quick.md with --quick)")
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--workdir", default="out/auto-minilm")
    args = ap.parse_args()
    out = Path(args.out or ("out/auto-minilm-quick.md" if args.quick else REPO / "bench" / "AUTO_MINILM.md"))
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.set_num_threads(2)
    seq, layers = (32, 2) if args.quick else (128, None)
    t_start = time.perf_counter()

    def say(text: str) -> None:
        print(f"[{time.perf_counter() - t_start:7.1f}s] {text}", flush=True)

    tok, model = load_minilm(layers)
    calibration = [tokenize(tok, CALIBRATION_SENTENCES[i:i + 4], seq) for i in range(0, 16, 4)]
    held = tokenize(tok, HELD_OUT_SENTENCES, seq)
    singles = [tokenize(tok, [s], seq) for s in HELD_OUT_SENTENCES]

    # 1. The debugger on static int8.
    say("debugger: static int8 (histogram), every op family")
    static_all = q.Int8Quantizer().set_global(q.QuantConfig.static(observer="histogram"))
    from pt2e_int8.debug.calibrated import Calibrated

    t0 = time.perf_counter()
    calibrated = Calibrated(model, calibration[0], calibration, static_all)
    qm_static = calibrated.convert(static_all)
    report = q.layer_errors(calibrated.float_graph, qm_static, [tuple(t[i:i + 4] for t in held) for i in range(0, 16, 4)])
    debug_s = time.perf_counter() - t0
    say(f"debugger done in {debug_s:.0f}s; worst local: {[r.name for r in report.worst(6)]}")

    # 2. The search, from the mixed recipe's base.
    base = q.Int8Quantizer(annotators=(annotate_linear,)).set_global(q.QuantConfig.static(observer="histogram"))
    metric = output_cosine(model, [held])
    res = q.auto_quantize(model, calibration[0], calibration, metric, TARGET, quantizer=base,
                          emulate=xnnpack_reference, progress=say)
    say(res.message)
    res.plan.save(work / "plan.json")

    # 3. .pte of the plan, the mixed recipe and plain static (linears only): quality and latency.
    variants = {
        "auto (this search)": res.model,
        "mixed (hand-made: every FFN linear dynamic)": q.quantize(model, calibration[0], calibration=calibration,
                                                                   quantizer=mixed_quantizer()),
        "static (linears, histogram)": q.quantize(model, calibration[0], calibration=calibration, quantizer=base),
    }
    rows, paths = [], []
    for i, (label, qm) in enumerate(variants.items()):
        path = work / f"variant{i}.pte"
        say(f"exporting {label}")
        export_pte(qm, singles[0], path, dynamic_shapes=None)
        with torch.no_grad():
            emulated = q.cosine(model(*held), xnnpack_reference(qm)(*held))
        rows.append({"variant": label, "non_static_linears": _non_static(qm), "cosine_reference": emulated,
                     "cosine_pte": _pte_cosine(path, model, singles), "size_bytes": path.stat().st_size})
        paths.append(path)
    say("timing the three .pte interleaved")
    timings = bench_artifacts(paths, iters=args.iters, warmup=5, threads=2, inputs=singles[0])
    mixed_ms = timings[1].median_ms
    for row, t in zip(rows, timings, strict=True):
        row.update(median_ms=t.median_ms, ratio_vs_mixed=t.median_ms / mixed_ms)

    device = describe_device()
    doc = {
        "command": "HF_HUB_OFFLINE=1 .venv/bin/python bench/auto_minilm.py" + (" --quick" if args.quick else ""),
        "date": dt.date.today().isoformat(), "device": device, "settings": {
            "seq": seq, "layers": layers or 6, "calibration_sentences": 16, "held_out_sentences": 16,
            "target": TARGET, "torch_threads": 2},
        "debugger": {**report.to_dict(), "seconds": round(debug_s, 1),
                     "worst_local": [r.name for r in report.worst(6)]},
        "search": res.to_dict(), "plan": res.plan.to_dict(), "variants": rows,
        "total_seconds": round(time.perf_counter() - t_start, 1),
    }
    write_text_atomic(out.with_suffix(".json"), json.dumps(doc, indent=2) + "\n")
    write_text_atomic(out, _markdown(doc, report, res))
    say(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


def _markdown(doc: dict, report, res) -> str:
    cpu = summary_line(doc["device"])
    s = doc["settings"]
    lines = [
        "# all-MiniLM-L6-v2: where static int8 loses accuracy, and the fewest layers that win it back",
        "",
        f"`{doc['command']}` on {doc['date']}, {cpu}, {s['torch_threads']} threads. seq {s['seq']}, "
        f"{s['layers']} encoder layers, {s['calibration_sentences']} calibration and {s['held_out_sentences']} "
        "held-out sentences (disjoint). Cosine: mean cosine of the sentence embeddings to the float model's.",
        "",
        f"## Per-layer errors, static int8 (every op family, histogram observer): {doc['debugger']['seconds']} s",
        "",
        "Ten lowest local SQNR (this layer alone, float inputs), with the accumulated SQNR (the int8 model up to "
        "this layer):",
        "",
    ]
    worst = report.worst(10)
    lines.append(markdown_table(("layer", "scheme", "local SQNR dB", "accumulated SQNR dB", "local max err (steps)"),
                                [(f"`{r.name}`", r.scheme, f"{r.local_sqnr:.1f}", f"{r.acc_sqnr:.1f}",
                                  f"{r.local_max_error:.3g} ({r.steps(r.local_max_error) or 0:.1f})") for r in worst],
                                right=(2, 3, 4)))
    search = doc["search"]
    lines += [
        "",
        f"## auto_quantize to cosine >= {doc['settings']['target']}: {search['seconds']} s wall, "
        f"{search['cpu_seconds']} s CPU, {search['conversions']} conversions from one calibration",
        "",
        f"{res.message}.",
        "",
        markdown_table(("layer moved off static int8", "runs as", "gain when moved (others moved)"),
                       [(f"`{u}`", c, next((f"{r.gain:+.4f}" for r in res.sensitivity.rows if r.unit == u), ""))
                        for u, c in res.moved.items()] if res.sensitivity else [], right=(2,)),
        "",
        "## The plan in the .pte, next to the hand-made mixed recipe",
        "",
        markdown_table(("variant", "linears not static", "cosine, reference", "cosine, .pte", "median ms",
                        "x mixed", "MB"),
                       [(r["variant"], r["non_static_linears"], f"{r['cosine_reference']:.4f}",
                         f"{r['cosine_pte']:.4f}", f"{r['median_ms']:.2f}", f"{r['ratio_vs_mixed']:.2f}",
                         f"{r['size_bytes'] / 2**20:.1f}") for r in doc["variants"]], right=(1, 2, 3, 4, 5, 6)),
        "",
        "\"reference\" is the converted graph as XNNPACK computes it (per-row dynamic int8: "
        "`backends.executorch.reference.xnnpack_reference`), which the search measures; \".pte\" is the "
        "ExecuTorch runtime, batch 1, one held-out sentence at a time. Latencies: medians of interleaved runs, "
        "batch 1, 2 threads, timed on a shared machine (ratios are the comparable figure).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
