"""`pt2e-int8 compare`: per-output max abs error, error in output steps, SQNR; exit 1 on a broken bound."""

from __future__ import annotations

import json

from tests.cli._cli import run_cli, run_in_process


def test_compare_against_converted_reference(work, exported, converted_pt2):
    _, exp = exported
    out_json = work / "compare.json"
    proc = run_cli("compare", exp / "model.pte", exp / "model.onnx", "--reference", converted_pt2,
                   "--inputs", "inputs.pt", "--max-steps", "1", "--json", out_json, cwd=work)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "err steps" in proc.stdout and "SQNR dB" in proc.stdout
    doc = json.loads(out_json.read_text())
    assert doc["passed"] is True and len(doc["results"]) == 2
    for r in doc["results"]:
        assert {"artifact", "output", "max_abs_error", "step", "max_error_steps", "sqnr_db"} <= r.keys()
        assert r["step"] > 0 and r["max_error_steps"] <= 1, r
    runtimes = [r["measured_against"] for r in doc["results"]]
    assert runtimes == ["the reference with executorch's integer arithmetic",
                        "the reference with onnxruntime's integer arithmetic"], runtimes


def test_compare_exits_1_when_max_steps_broken(work, dynamic_onnx, converted_pt2):
    _, dyn = dynamic_onnx  # a dynamic export, fc1 float: far from the static reference
    proc = run_cli("compare", dyn / "model.onnx", "--reference", converted_pt2, "--inputs", "inputs.pt",
                   "--max-steps", "0.5", cwd=work)
    assert proc.returncode == 1, proc.stderr
    assert "off by" in proc.stderr and "--max-steps 0.5" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_compare_float_reference_steps_na(work, dynamic_onnx, capsys):
    _, dyn = dynamic_onnx
    args = ("compare", dyn / "model.onnx", "--reference", "model.py:build", "--inputs", "inputs.pt")
    rc, out, err = run_in_process(*args, cwd=work, capsys=capsys)
    assert rc == 0, err
    assert "n/a" in out and "(float)" in out
    rc, _, err = run_in_process(*args, "--max-steps", "1", cwd=work, capsys=capsys)
    assert rc == 2 and "Pass the converted .pt2 as --reference" in err


def test_compare_runs_a_static_pte_on_any_batch(work, exported, converted_pt2):
    """The default .pte takes exactly the example's batch (8): batches of 5 and 19 run in chunks of 8,
    the last padded, and stay within a step of the reference."""
    import torch

    _, exp = exported
    assert json.loads((exp / "report.json").read_text())["artifacts"]["pte"]["shapes"] == "static batch 8"
    gen = torch.Generator().manual_seed(3)
    torch.save([(torch.randn(5, 16, generator=gen),), (torch.randn(19, 16, generator=gen),)], work / "odd.pt")
    out_json = work / "compare-odd.json"
    proc = run_cli("compare", exp / "model.pte", "--reference", converted_pt2, "--inputs", "odd.pt",
                   "--max-steps", "1", "--json", out_json, cwd=work)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    doc = json.loads(out_json.read_text())
    assert doc["passed"] is True and doc["results"][0]["max_error_steps"] <= 1, doc
