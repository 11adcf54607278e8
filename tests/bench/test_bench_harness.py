"""bench/run.py: a --quick run on the digits MLP writes every row, and the target checklist reads rows right."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.models import MODELS
from bench.pipelines import pipelines_for
from bench.report import check_targets

REPO = Path(__file__).resolve().parents[2]
ROW_KEYS = {"model", "pipeline", "label", "runtime", "origin", "anchor", "ok", "error", "size_mb", "quality",
            "median_ms", "p90_ms", "ratio_vs_runtime_float", "ratio_vs_stock_float_pte", "export_wall_s",
            "peak_rss_mb", "stages", "notes", "reference_quality", "reference_steps"}
# Rows that do not depend on our backends: a harness bug, not a backend bug, if one fails.
ANCHORS = {"float_eager", "float_pte", "stock_static_pte", "stock_dynamic_pte", "float_onnx", "ort_static",
           "ort_static_matmul", "ort_dynamic", "ort_dynamic_pc"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [sys.executable, "bench/run.py", "--quick", "--models", "digits", "--workdir", str(out / "work"),
         "--results", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return {"doc": json.loads((out / "results.json").read_text()), "md": (out / "RESULTS.md").read_text()}


def test_quick_run_writes_every_row(quick_run):
    doc = quick_run["doc"]
    rows = {r["pipeline"]: r for r in doc["rows"]}
    expected = {p.name for p in pipelines_for(MODELS["digits"]) if p.fallback_for is None}
    assert expected <= set(rows), f"missing rows: {expected - set(rows)}"
    for name, row in rows.items():
        assert ROW_KEYS <= set(row), f"{name} lacks {ROW_KEYS - set(row)}"
        if row["ok"]:
            assert row["median_ms"] > 0 and row["quality"] is not None, row
        else:
            assert row["error"], f"{name} failed without saying why"
    broken = {n: rows[n]["error"] for n in ANCHORS if not rows[n]["ok"]}
    assert not broken, broken
    assert rows["float_eager"]["quality"] > 70, rows["float_eager"]  # % test accuracy after 3 epochs
    assert rows["float_pte"]["ratio_vs_stock_float_pte"] == 1.0
    assert all(rows[n]["ratio_vs_stock_float_pte"] for n in ("float_eager", "float_onnx"))


def test_quick_run_header_and_targets(quick_run):
    doc, md = quick_run["doc"], quick_run["md"]
    assert doc["device"]["cpu_model"] and doc["threads"] == 2 and doc["quick"] is True
    assert "bench/run.py --quick --models digits" in md and "Device:" in md
    assert {t["key"] for t in doc["targets"]} == {"digits_qat", "wall_time"}
    assert all(t["status"] in ("met", "missed", "n/a") for t in doc["targets"])


def _row(pipeline, runtime, origin, median, quality, *, base, anchor=100.0):
    return {"model": "minilm", "pipeline": pipeline, "runtime": runtime, "origin": origin, "ok": True,
            "anchor": origin in ("float", "stock", "ort"), "median_ms": median, "quality": quality,
            "ratio_vs_runtime_float": median / base, "ratio_vs_stock_float_pte": median / anchor,
            "export_wall_s": 10.0}


@pytest.mark.parametrize(("ours_ms", "cosine", "status"),
                         [(60.0, 0.999, "met"), (80.0, 0.999, "missed"), (60.0, 0.99, "missed")],
                         ids=["fast-and-close", "too-slow", "too-far"])
def test_pte_target(ours_ms, cosine, status):
    rows = [_row("float_pte", "executorch", "float", 100.0, 1.0, base=100.0),
            _row("stock_dynamic_pte", "executorch", "stock", 95.0, 0.999, base=100.0),
            _row("ours_dynamic_pte", "executorch", "ours", ours_ms, cosine, base=100.0)]
    target = next(t for t in check_targets(rows) if t["key"] == "minilm_pte")
    assert target["status"] == status, target
    if status == "missed" and cosine >= 0.995:
        assert "missed by 0.10" in target["detail"], target


def test_target_missed_when_an_anchor_is_faster():
    rows = [_row("float_pte", "executorch", "float", 100.0, 1.0, base=100.0),
            _row("ours_dynamic_pte", "executorch", "ours", 60.0, 0.999, base=100.0),
            _row("ort_dynamic", "onnxruntime", "ort", 50.0, 0.99, base=100.0)]
    target = next(t for t in check_targets(rows) if t["key"] == "minilm_pte")
    assert target["status"] == "missed" and "ort_dynamic" in target["detail"], target


def test_row_notes_show_the_pytorch_reference_beside_the_artifact():
    from bench.report import _table

    common = {"metric": "cosine", "runtime": "executorch"}
    row = {**_row("ours_smooth_pte", "executorch", "ours", 60.0, 0.9912, base=100.0), **common,
           "label": "smooth", "reference_quality": 0.9931, "reference_steps": 1.25}
    plain = {**_row("ours_static_pte", "executorch", "ours", 60.0, 0.948, base=100.0), **common, "label": "plain"}
    table = _table([row, plain])[0].splitlines()
    smooth_line = next(line for line in table if "| smooth " in line)
    assert "PyTorch reference 0.9931, artifact within 1.25 output steps" in smooth_line, smooth_line
    assert "PyTorch reference" not in next(line for line in table if "| plain " in line)
