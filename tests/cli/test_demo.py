"""`pt2e-int8 demo`: the reduced run (hidden --epochs / --bench-iters) prints the table and writes the reports."""

from __future__ import annotations

import json

from tests.cli._cli import run_cli

VARIANTS = ("float", "ptq-static", "ptq-dynamic", "qat")


def test_demo_table_reports_and_plot(tmp_path):
    out = tmp_path / "demo"
    proc = run_cli("demo", "-o", out, "--epochs", "4", "--bench-iters", "5", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    header = next(line for line in proc.stdout.splitlines() if line.startswith("variant"))
    for column in ("accuracy", "size KiB", "median ms", "vs float", "placement"):
        assert column in header
    cells = [line.split()[:2] for line in proc.stdout.splitlines()]
    for v in VARIANTS:
        assert [v, "pte"] in cells and [v, "onnx"] in cells, proc.stdout
    names = {p.name for p in out.iterdir()}
    assert {"report.md", "report.json", "accuracy_latency.png"} <= names
    wrote = next(line for line in proc.stdout.splitlines() if line.startswith("wrote "))
    assert ".lock" not in wrote and not any(n.startswith(".") for n in names), (wrote, names)
    assert {f"{v}.{f}" for v in VARIANTS for f in ("pte", "onnx")} <= names
    assert (out / "accuracy_latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = json.loads((out / "report.json").read_text())
    assert {"dataset", "float_accuracy", "device", "rows", "coverage"} <= doc.keys()
    assert len(doc["rows"]) == 8
    for row in doc["rows"]:
        assert {"variant", "format", "accuracy", "size_bytes", "median_ms", "p90_ms", "placement"} <= row.keys()
        assert 0.0 <= row["accuracy"] <= 1.0
        assert set(row["placement"].values()) <= {"int8", "float"}
        assert row["int8_layers"] == (0 if row["variant"] == "float" else 3), row
    assert "accuracy_latency.png" in (out / "report.md").read_text()
