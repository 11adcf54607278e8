"""bench/RESULTS.md and bench/results.json from the rows of a run, with the issue targets checked.

Targets (issues 3, 4, 6, 13), each `met` / `missed` with the margin, or `n/a` when a row it needs failed:
  minilm_pte   our MiniLM int8 .pte ≤ 0.7× the stock float .pte, mean cosine ≥ 0.995, faster than every anchor
  minilm_onnx  our MiniLM int8 ONNX ≤ 0.6× ORT's float, mean cosine ≥ 0.995, faster than every ONNX Runtime
               anchor (quantize_dynamic per-tensor and per-channel, quantize_static, the transformer optimizer)
  static_onnx  our static MiniLM ONNX at least as faithful as our static .pte (same converted graph)
  digits_qat   our QAT artifacts within 0.5 accuracy points of float (every digits model)
  wall_time    each of our pipelines ≤ 1.2× the wall time of its stock counterpart
"""

from __future__ import annotations

import json
from pathlib import Path

from pt2e_int8.text_table import markdown_table

COSINE_MIN, PTE_MAX, ONNX_MAX, QAT_POINTS, WALL_MAX = 0.995, 0.7, 0.6, 0.5, 1.2
STATIC_FIDELITY_SLACK = 5e-4  # cosine: run-to-run float noise between two runtimes
# our pipeline -> the stock pipeline(s) a user would run instead (summed wall time), in order of preference
WALL_PAIRS = {
    "ours_static_pte": [["stock_static_pte"], ["stock_static_noxform_pte"]],
    "ours_dynamic_pte": [["stock_dynamic_pte"], ["stock_dynamic_noxform_pte"]],
    "ours_mixed_pte": [["stock_static_pte"], ["stock_static_noxform_pte"]],
    "ours_mixed_onnx": [["float_onnx", "ort_static"]],
    "ours_static_onnx": [["float_onnx", "ort_static"]],
    "ours_dynamic_onnx": [["float_onnx", "ort_dynamic"]],
}


def _target(key: str, text: str, status: str, detail: str) -> dict:
    return {"key": key, "target": text, "status": status, "detail": detail}


def _fmt(x, spec=".2f", none="—") -> str:
    return none if x is None else format(x, spec)


def _speed_target(rows: list[dict], key: str, runtime: str, limit: float, text: str,
                  anchor_runtime: str | None = None) -> dict:
    """Best of our rows on `runtime` at cosine ≥ COSINE_MIN: ≤ limit× its runtime's float and faster than every
    anchor (of `anchor_runtime` only, when given)."""
    ours = [r for r in rows if r["origin"] == "ours" and r["runtime"] == runtime and r["ok"]]
    if not ours:
        errs = "; ".join(f"{r['pipeline']}: {r.get('error')}" for r in rows
                         if r["origin"] == "ours" and r["runtime"] == runtime)
        return _target(key, text, "n/a", f"no working row ({errs or 'not run'})")
    good = [r for r in ours if (r.get("quality") or 0) >= COSINE_MIN]
    if not good:
        best = max(ours, key=lambda r: r.get("quality") or 0)
        return _target(key, text, "missed", f"no row reaches cosine {COSINE_MIN}: best {best['pipeline']} "
                       f"at {_fmt(best.get('quality'), '.4f')} (×{_fmt(best.get('ratio_vs_runtime_float'))} float)")
    best = min(good, key=lambda r: r.get("ratio_vs_runtime_float") or 9e9)
    ratio = best.get("ratio_vs_runtime_float")
    anchors = [r for r in rows if r.get("anchor") and r["ok"] and r.get("ratio_vs_stock_float_pte")
               and (anchor_runtime is None or r["runtime"] == anchor_runtime) and r["origin"] != "float"]
    fastest = min(anchors, key=lambda r: r["ratio_vs_stock_float_pte"], default=None)
    mine = best.get("ratio_vs_stock_float_pte")
    misses = []
    if ratio is None or ratio > limit:
        misses.append(f"×{_fmt(ratio)} its float baseline, target ≤ ×{limit} (missed by {_fmt(ratio and ratio - limit)})")
    if fastest is not None and mine is not None and mine >= fastest["ratio_vs_stock_float_pte"]:
        misses.append(f"not faster than anchor {fastest['pipeline']} (×{fastest['ratio_vs_stock_float_pte']:.3f} vs "
                      f"×{mine:.3f} the stock float .pte, "
                      f"{100 * (mine / fastest['ratio_vs_stock_float_pte'] - 1):+.1f}%)")
    head = (f"{best['pipeline']}: {best['median_ms']:.3g} ms, ×{_fmt(ratio, '.3f')} float, "
            f"×{_fmt(mine, '.3f')} stock float .pte, cosine {best['quality']:.4f}")
    if fastest is not None:
        head += (f"; fastest anchor {fastest['pipeline']} ×{fastest['ratio_vs_stock_float_pte']:.3f} "
                 f"(quality {_fmt(fastest.get('quality'), '.4f')})")
    return _target(key, text, "missed" if misses else "met", head + ("; " + "; ".join(misses) if misses else ""))


def _static_fidelity_target(rows: list[dict]) -> dict:
    text = "static MiniLM ONNX at least as faithful as the static .pte"
    by = {r["pipeline"]: r for r in rows}
    onnx, pte = by.get("ours_static_onnx", {}), by.get("ours_static_pte", {})
    if onnx.get("quality") is None or pte.get("quality") is None:
        return _target("static_onnx", text, "n/a", f"not measured (onnx: {onnx.get('error')}, pte: {pte.get('error')})")
    gap = onnx["quality"] - pte["quality"]
    status = "met" if gap >= -STATIC_FIDELITY_SLACK else "missed"
    return _target("static_onnx", text, status, f"ONNX cosine {onnx['quality']:.4f}, .pte {pte['quality']:.4f} "
                   f"({gap:+.4f}; tolerance {STATIC_FIDELITY_SLACK})")


def _qat_target(rows_by_model: dict[str, list[dict]]) -> dict:
    text = f"digits QAT within {QAT_POINTS} points of float accuracy"
    parts, status = [], "met"
    for model, rows in rows_by_model.items():
        by = {r["pipeline"]: r for r in rows}
        base = by.get("float_eager", {}).get("quality")
        for name in ("ours_qat_pte", "ours_qat_onnx"):
            r = by.get(name)
            if r is None:
                continue
            if base is None or r.get("quality") is None:
                parts.append(f"{model}/{name}: not measured ({r.get('error')})")
                status = "n/a" if status == "met" else status
                continue
            drop = base - r["quality"] + 0.0  # + 0.0: no "-0.00"
            if drop > QAT_POINTS:
                status = "missed"
            parts.append(f"{model}/{name}: {r['quality']:.2f}% vs float {base:.2f}% "
                         f"({0.0 - drop:+.2f} points{'' if drop <= QAT_POINTS else f', missed by {drop - QAT_POINTS:.2f}'})")
    if not parts:
        return _target("digits_qat", text, "n/a", "no digits model in this run")
    return _target("digits_qat", text, status, "; ".join(parts))


def _wall_target(rows_by_model: dict[str, list[dict]]) -> dict:
    text = f"our pipelines ≤ {WALL_MAX}× the stock flow's wall time (export + calibrate + lower)"
    parts, status = [], "met"
    for model, rows in rows_by_model.items():
        by = {r["pipeline"]: r for r in rows}
        for ours, choices in WALL_PAIRS.items():
            mine = by.get(ours, {})
            stock = next((c for c in choices if all(by.get(n, {}).get("ok") for n in c)), None)
            if not mine.get("ok") or stock is None:
                continue
            theirs = sum(by[n]["export_wall_s"] or 0 for n in stock)
            ratio = mine["export_wall_s"] / theirs if theirs else float("inf")
            if ratio > WALL_MAX:
                status = "missed"
            parts.append(f"{model}/{ours} {mine['export_wall_s']:.1f} s vs {'+'.join(stock)} {theirs:.1f} s: "
                         f"×{ratio:.2f}" + (f" (missed by {ratio - WALL_MAX:.2f})" if ratio > WALL_MAX else ""))
    if not parts:
        return _target("wall_time", text, "n/a", "no pair where both pipelines worked")
    return _target("wall_time", text, status, "; ".join(parts))


def check_targets(rows: list[dict]) -> list[dict]:
    by_model: dict[str, list[dict]] = {}
    for r in rows:
        by_model.setdefault(r["model"], []).append(r)
    minilm = by_model.get("minilm", [])
    targets = []
    if minilm:
        targets.append(_speed_target(minilm, "minilm_pte", "executorch", PTE_MAX,
                                     f"MiniLM int8 .pte ≤ {PTE_MAX}× stock float .pte, cosine ≥ {COSINE_MIN}, "
                                     "faster than every anchor"))
        targets.append(_speed_target(minilm, "minilm_onnx", "onnxruntime", ONNX_MAX,
                                     f"MiniLM int8 ONNX ≤ {ONNX_MAX}× ORT float, cosine ≥ {COSINE_MIN}, "
                                     "faster than every ONNX Runtime anchor (quantize_dynamic included)",
                                     anchor_runtime="onnxruntime"))
        targets.append(_static_fidelity_target(minilm))
    targets.append(_qat_target({m: rs for m, rs in by_model.items() if m.startswith("digits")}))
    targets.append(_wall_target(by_model))
    return targets


def _ms(x) -> str:
    """Milliseconds with three significant digits (digits models run in microseconds)."""
    if x is None:
        return "—"
    return f"{x:.1f}" if x >= 100 else f"{x:.3g}" if x >= 0.001 else f"{x:.2e}"


def _stages(r: dict) -> str:
    stages = r.get("stages") or {}
    return " + ".join(f"{k} {v:.1f}" for k, v in stages.items()) + " s" if len(stages) > 1 else ""


def _quality(r: dict) -> str:
    q = r.get("quality")
    if q is None:
        return "—"
    return f"{q:.4f}" if r.get("metric") == "cosine" else f"{q:.2f}%"


def _reference(r: dict) -> str:
    """The converted graph's quality in PyTorch and the artifact's distance from it (issue 11)."""
    if r.get("reference_quality") is None:
        return ""
    return (f"PyTorch reference {_quality({**r, 'quality': r['reference_quality']})}, artifact within "
            f"{r['reference_steps']:.2f} output steps of it")


def _table(rows: list[dict]) -> list[str]:
    header = ("pipeline", "runtime", "median ms", "p90 ms", "× runtime float", "× stock float .pte", "size MB",
              "quality", "export s", "peak RSS MB", "notes")
    body = []
    for r in rows:
        parts = [_reference(r), *(r.get("notes") or []), _stages(r)]
        note = f"**failed**: {r['error']}" if not r["ok"] else "; ".join(p for p in parts if p)
        rss = _fmt(r.get("peak_rss_mb"), ".0f") + (" (shared)" if r.get("rss_shared") else "")
        body.append((r["label"], r["runtime"], _ms(r.get("median_ms")), _ms(r.get("p90_ms")),
                     _fmt(r.get("ratio_vs_runtime_float")), _fmt(r.get("ratio_vs_stock_float_pte")),
                     _fmt(r.get("size_mb"), ".3f"), _quality(r), _fmt(r.get("export_wall_s"), ".1f"), rss, note))
    return [markdown_table(header, body, right=range(2, 10))]


METHOD = """\
How it is measured: each pipeline runs in its own process (`python -m bench.worker export`); *export s*
is the sum of its stages (torch.export, prepare/calibrate/convert, lowering or ONNX export; not Python
imports or loading the float weights), *peak RSS* is that process's max resident memory (imports
included, from `os.wait4`). Each runtime's artifacts are then loaded in one process per runtime, run on
the held-out inputs for quality (batch 1, one input at a time), warmed up and timed interleaved
(A B C A B C …, `pt2e_int8.app.timing.time_interleaved`) on one batch-1 input; ONNX Runtime sessions never
spin (`session.intra_op.allow_spinning=0`), nor do PyTorch's OpenMP threads (`OMP_WAIT_POLICY=PASSIVE` in
every child process: spinning OpenMP threads made eager MiniLM 30× slower whenever another process held a core). *× runtime float* divides by the float baseline of the same
runtime in the same interleaving; *× stock float .pte* divides by the stock float .pte, which is timed
inside every runtime's interleaving as the cross-runtime anchor. Quality: MiniLM = mean cosine to the
float eager sentence embeddings on held-out sentences (not the calibration ones); digits = test-split
accuracy. Anchors: the stock ExecuTorch XNNPACKQuantizer flow (symmetric, per-channel;
torch.export → prepare_pt2e → calibrate at batch 1 → convert_pt2e → to_edge_transform_and_lower with
XnnpackPartitioner) and ONNX Runtime's `quantize_static` / `quantize_dynamic` of the float
`torch.onnx.export(dynamo=True)` file after `quant_pre_process`. Every MiniLM row, the float .pte
included, starts from the same model with eager attention (matmul + softmax, which a quantizer can
see); "transform_for_annotation skipped" rows appear only when the stock quantizer failed as shipped."""


def _isa_note(device: dict) -> str:
    """What the int8 kernels can use on this CPU: the issues' targets were set on an AVX2-only Zen 1."""
    isa = device.get("isa", {})
    dot = [k for k in ("avx512_vnni", "avx_vnni", "asimddp", "i8mm", "amx_int8") if isa.get(k)]
    if dot:
        return (f"This CPU has int8 dot-product instructions ({', '.join(dot)}): XNNPACK and ONNX Runtime can run "
                "int8 GEMMs with them, so int8-vs-float ratios here are not comparable with the issues' numbers, "
                "which were measured on an AVX2-only Zen 1 (no VNNI), where int8 GEMMs ran no faster than float.")
    if isa.get("avx2"):
        return ("AVX2 without VNNI: int8 GEMMs use vpmaddubsw (u8×s8 pairs into int16), about as fast as float "
                "FMA here; int8 gains come from the graph around the GEMMs, not from the GEMMs.")
    return "No int8 dot-product instructions seen on this CPU."


# The other benchmarks: each is one command that writes its own result file.
SEE_ALSO = ("Also in bench/, each with its command and device: [arch.md](arch.md) (torchvision CNNs, a ViT, "
            "LSTM/GRU, Conv1d and a ConvTranspose U-Net: our int8 .pte vs our float .pte vs the stock ExecuTorch "
            "flow, `bench/arch.py`), [op_set_islands.md](op_set_islands.md) (float islands inside the delegate, ours "
            "vs the stock quantizer), [recurrent.md](recurrent.md) (LSTM/GRU unrolled into int8 linears vs the fused "
            "op, `bench/recurrent.py`), [observers.md](observers.md) (the default activation observer), "
            "[ORT_OPS.md](ORT_OPS.md) (ONNX Runtime's CPU kernels on MiniLM's shapes), "
            "[AUTO_MINILM.md](AUTO_MINILM.md) (debugger and automatic mixed precision), "
            "[issue11/RESULTS.md](issue11/RESULTS.md) (fully static MiniLM), [distributed_qat.md](distributed_qat.md), "
            "[BENCH_STARTUP.md](BENCH_STARTUP.md) (what the artifact probe costs `bench`) and arm/ (aarch64 under "
            "emulation).")


def render(doc: dict) -> str:
    lines = ["# Benchmark results", "",
             f"Command: `{doc['command']}`  ", f"Run: {doc['started_utc']} → {doc['finished_utc']} (UTC)  ",
             f"Device: {doc['device_line']}; runtimes "
             + ", ".join(f"{k} {v}" for k, v in doc["device"]["runtimes"].items() if v) + "  ",
             f"Threads: {doc['threads']} in every runtime; {doc['iters']} timed runs after {doc['warmup']} warm-up, "
             "interleaved." + (" **--quick run: reduced models, not for quoting.**" if doc["quick"] else "") + "  ",
             _isa_note(doc["device"]), "", SEE_ALSO, ""]
    lines += ["## Targets", "", markdown_table(("target", "status", "detail"),
                                               [(t["target"], f"**{t['status']}**", t["detail"]) for t in doc["targets"]])]
    for model, settings in doc["models"].items():
        rows = [r for r in doc["rows"] if r["model"] == model]
        desc = ", ".join(f"{k} {v}" for k, v in settings.items())
        lines += ["", f"## {model}", "", f"Settings: {desc}.", "", *_table(rows)]
    lines += ["", "## Method", "", METHOD, ""]
    return "\n".join(lines)


def write_results(doc: dict, folder: Path) -> tuple[Path, Path]:
    """Write RESULTS.md and results.json into `folder` (each to a temporary name, then renamed)."""
    doc["targets"] = check_targets(doc["rows"])
    folder.mkdir(parents=True, exist_ok=True)
    md, js = folder / "RESULTS.md", folder / "results.json"
    for path, text in ((js, json.dumps(doc, indent=2, default=str)), (md, render(doc))):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return md, js
