"""`pt2e-int8 export --shapes / --max-batch`, the .pte structure in report.json, and the latency check
against float (skipped suite-wide by PT2E_INT8_NO_SPEED_CHECK, enabled here)."""

from __future__ import annotations

import json

import pytest

from pt2e_int8.app import speed_check
from tests.cli._cli import run_in_process


def _pte_report(out) -> dict:
    return json.loads((out / "report.json").read_text())["artifacts"]["pte"]


@pytest.mark.parametrize(("flags", "shapes"), [
    (["--shapes", "static"], "static batch 8"),
    (["--max-batch", "16"], "dynamic batch 1..16"),
], ids=["static", "max-batch"])
def test_shape_flags_reach_the_pte(work, tmp_path, capsys, flags, shapes):
    out = tmp_path / "out"
    rc, _, err = run_in_process("export", "model.py:build", "-o", out, "--format", "pte",
                                "--calibration", "calib.pt", *flags, cwd=work, capsys=capsys)
    assert rc == 0, err
    pte = _pte_report(out)
    assert pte["shapes"] == shapes
    assert pte["delegate_calls"] == 1 and pte["outside_delegate"] == [] and pte["notes"] == []
    assert pte["latency_vs_float_here"] is None  # skipped in the suite
    assert f"accepts {shapes}" in (out / "report.md").read_text()


def test_speed_check_times_int8_against_float(work, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(speed_check.ENV, raising=False)
    out = tmp_path / "out"
    rc, _, err = run_in_process("export", "model.py:build", "-o", out, "--format", "pte,onnx",
                                "--calibration", "calib.pt", cwd=work, capsys=capsys)
    assert rc == 0, err
    report = json.loads((out / "report.json").read_text())["artifacts"]
    for fmt in ("pte", "onnx"):
        ratio = report[fmt]["latency_vs_float_here"]
        assert isinstance(ratio, float) and ratio > 0, report[fmt]
    assert "timing each artifact against its float export" in err


def test_speed_check_warns_when_int8_is_slower(work, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(speed_check.ENV, raising=False)
    monkeypatch.setattr(speed_check, "int8_vs_float", lambda *a, **k: 1.5)
    out = tmp_path / "out"
    rc, _, err = run_in_process("export", "model.py:build", "-o", out, "--format", "pte",
                                "--calibration", "calib.pt", cwd=work, capsys=capsys)
    assert rc == 0, err
    assert "model.pte takes 1.50x the time of the same model exported in float" in err
    assert _pte_report(out)["latency_vs_float_here"] == 1.5


def test_no_speed_check_without_a_float_model(work, converted_pt2, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(speed_check.ENV, raising=False)
    called = []
    monkeypatch.setattr(speed_check, "int8_vs_float", lambda *a, **k: called.append(1) or 2.0)
    out = tmp_path / "out"
    rc, _, err = run_in_process("export", converted_pt2, "-o", out, "--format", "pte",
                                "--example-inputs", "example.pt", cwd=work, capsys=capsys)
    assert rc == 0, err
    assert not called and _pte_report(out)["latency_vs_float_here"] is None
