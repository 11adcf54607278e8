"""report.json and report.md for `pt2e-int8 export`: per-layer rows, artifacts, sizes, parity.

The JSON is the contract (`layers[].placement.{pte,onnx}`, `artifacts`); the Markdown is the
same facts for a person. Both are built from one dict, so they cannot disagree.
"""

from __future__ import annotations

import datetime as _dt
import json
import math

from pt2e_int8.text_table import markdown_table


def layer_rows(coverage, results: dict) -> list[dict]:
    """Coverage rows joined with each backend's placement (where the layer really runs)."""
    rows = []
    for r in coverage.layers:
        placement, detail = {}, {}
        for fmt, res in results.items():
            where = res.placement.get(r.name)
            # A float layer cannot run in an int8 kernel; an unreported quantized one is unknown.
            placement[fmt] = where if where is not None else (None if r.quantized else "float")
            if r.name in res.detail:
                detail[fmt] = res.detail[r.name]
        rows.append({"name": r.name, "op": r.op, "node": r.node, "quantized": r.quantized, "scheme": r.scheme,
                     "reason": r.reason, "notes": list(r.notes), "placement": placement, "detail": detail})
    return rows


def build_report(*, model: str, scheme: str, example_inputs: list, coverage, results: dict,
                 parity: dict, versions: dict, speed: dict | None = None,
                 failed: dict | None = None) -> dict:
    """The report as a JSON-ready dict.

    Args:
        results: format name -> ExportResult.
        parity: format name -> {"vs_quantized_graph": [OutputParity dicts], "vs_float": [...] or None}.
        speed: format name -> int8 / float latency on the building machine (app/speed_check.py).
        failed: format name -> {"error": type, "message": str, "stale_file": name of an older file
            of that format left in the output folder, or None}, for formats that were not written.
    """
    layers = layer_rows(coverage, results)
    artifacts = {}
    for fmt, res in results.items():
        artifacts[fmt] = {
            "path": res.path.name,
            "size_bytes": res.size_bytes,
            "int8_layers": sum(1 for row in layers if row["placement"].get(fmt) == "int8"),
            "parity": parity.get(fmt),
            # What the file accepts, and for .pte how it is split: XNNPACK calls per run and every op
            # left outside XNNPACK with the partitioner's reason. Notes: choices made for the user.
            "shapes": getattr(res, "shapes", None),
            "delegate_calls": getattr(res, "delegate_calls", None),
            "outside_delegate": list(getattr(res, "outside_delegate", None) or []),
            "notes": list(getattr(res, "notes", None) or []),
            "latency_vs_float_here": (speed or {}).get(fmt),
            "options": dict(res.options),  # e.g. the ONNX target and the int8 types it chose
        }
    return {
        "tool": {"name": "pt2e-int8", "versions": versions},
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "model": model,
        "scheme": scheme,
        "example_inputs": example_inputs,
        "layers": layers,
        "summary": {"layers": len(layers), "quantized": sum(row["quantized"] for row in layers)},
        "artifacts": artifacts,
        "failed": failed or {},
    }


def to_json(report: dict) -> str:
    return json.dumps(report, indent=2, allow_nan=False, default=str) + "\n"


def _fmt_parity(rows: list[dict] | None) -> str:
    if not rows:
        return "n/a"
    parts = []
    for r in rows:
        steps = f"{r['max_error_steps']:.2f} steps" if r["max_error_steps"] is not None else "steps n/a"
        db = r["sqnr_db"]
        db_text = "exact" if db is None else f"{db:.1f} dB" if math.isfinite(db) else str(db)
        parts.append(f"max abs {r['max_abs_error']:.3g}, {steps}, SQNR {db_text}")
    return "<br>".join(parts)


def to_markdown(report: dict) -> str:
    fmts = list(report["artifacts"])
    lines = [f"# pt2e-int8 export: {report['model']}", "",
             f"Scheme: **{report['scheme']}**. Example inputs: {report['example_inputs']}. "
             f"{report['summary']['quantized']}/{report['summary']['layers']} layers quantized.", "",
             "## Artifacts", ""]
    artifacts = [(a["path"], f"{a['size_bytes'] / 1024:.1f} KiB", f"{a['int8_layers']}/{len(report['layers'])}",
                  _fmt_parity((a["parity"] or {}).get("vs_quantized_graph")),
                  _fmt_parity((a["parity"] or {}).get("vs_float"))) for a in report["artifacts"].values()]
    for fmt, f in report.get("failed", {}).items():  # a format that failed while the others were written
        stale = f" `{f['stale_file']}` in this folder is from an earlier run (stale)." if f.get("stale_file") else ""
        artifacts.append((f"{fmt}: **not written**", "", "", f"{f['error']}: {f['message'][:300]}{stale}", ""))
    lines.append(markdown_table(("file", "size", "int8 layers", "parity vs quantized graph", "parity vs float"),
                                artifacts, right=(1, 2)))
    for a in report["artifacts"].values():
        facts = [f"accepts {a['shapes']}"] if a.get("shapes") else []
        if a.get("delegate_calls") is not None:
            facts.append(f"{a['delegate_calls']} XNNPACK delegate call(s)")
        facts += [f"outside XNNPACK: `{o['op']}` ({o['reason']})" for o in a.get("outside_delegate") or []]
        facts += [f"note: {n}" for n in a.get("notes") or []]
        if a.get("latency_vs_float_here") is not None:
            facts.append(f"{a['latency_vs_float_here']:.2f}x the float export's latency on the building machine")
        if facts:
            lines += ["", f"`{a['path']}`: " + "; ".join(facts) + "."]
    layers = [(f"`{row['name']}`", row["op"], "yes" if row["quantized"] else "no",
               "; ".join([row["scheme"] if row["quantized"] else row["reason"] or "", *row.get("notes", [])]),
               *(str(row["placement"].get(f) or "?") for f in fmts)) for row in report["layers"]]
    lines += ["", "## Layers", "",
              markdown_table(("layer", "op", "quantized", "scheme / reason", *fmts), layers),
              "", f"_Generated {report['created']} by pt2e-int8._", ""]
    return "\n".join(lines)
