"""`pt2e-int8 debug` and `export --target-metric / --max-drop / --plan`."""

from __future__ import annotations

import json

import pytest

from tests.cli._cli import run_cli, run_in_process


@pytest.fixture(scope="session")
def debugged(work):
    out = work / "dbg"
    return run_cli("debug", "model.py:build", "-o", out, "--calibration", "calib.pt", "--inputs", "inputs.pt",
                   "--artifacts", "onnx", "--sensitivity", cwd=work), out


def test_debug_writes_table_json_and_plot(debugged):
    proc, out = debugged
    assert proc.returncode == 0, proc.stderr
    assert {p.name for p in out.iterdir()} == {"debug.json", "debug.png"}
    assert (out / "debug.png").read_bytes()[:4] == b"\x89PNG"
    doc = json.loads((out / "debug.json").read_text())
    assert [r["name"] for r in doc["layers"]] == ["fc1", "fc2"]
    for row in doc["layers"]:
        assert row["acc_sqnr"] > 15 and row["local_sqnr"] > 15, row
    assert doc["artifacts"]["onnx"]["first_divergence"] is None, doc["artifacts"]
    assert {r["unit"] for r in doc["sensitivity"]["rows"]} == {"fc1", "fc2"}
    assert "local SQNR dB" in proc.stdout and "fc2" in proc.stdout and "ONNX Runtime" in proc.stdout
    assert "per-layer errors against float" in proc.stderr and "Traceback" not in proc.stderr


def test_debug_refuses_a_converted_model(work, converted_pt2, capsys):
    rc, _, err = run_in_process("debug", converted_pt2, "-o", work / "dbg2", cwd=work, capsys=capsys)
    assert rc == 2 and "already quantized" in err and "float model" in err
    assert not (work / "dbg2").exists()


@pytest.fixture(scope="session")
def searched(work):
    out = work / "auto"
    return run_cli("export", "model.py:build", "-o", out, "--format", "onnx", "--calibration", "calib.pt",
                   "--eval-inputs", "inputs.pt", "--target-metric", "0.99999", cwd=work), out


def test_export_target_metric_writes_a_reusable_plan(work, searched):
    proc, out = searched
    assert proc.returncode == 0, proc.stderr
    assert {p.name for p in out.iterdir()} == {"model.onnx", "plan.json", "report.json", "report.md"}
    report = json.loads((out / "report.json").read_text())
    auto = report["auto"]
    assert auto["met"] and auto["achieved"] >= 0.99999 and auto["base_metric"] < 0.99999, auto
    plan = json.loads((out / "plan.json").read_text())
    assert plan["format"] == "pt2e-int8/quant-plan" and set(plan["modules"]) == set(auto["moved"])
    schemes = {r["name"]: r["scheme"] for r in report["layers"]}
    for name, choice in auto["moved"].items():
        assert schemes[name] == ("dynamic/per-channel" if choice == "dynamic" else None), schemes
    # The plan reproduces the same layer schemes without searching again.
    again = run_cli("export", "model.py:build", "-o", work / "replay", "--format", "onnx", "--calibration",
                    "calib.pt", "--plan", out / "plan.json", cwd=work)
    assert again.returncode == 0, again.stderr
    replay = json.loads((work / "replay" / "report.json").read_text())
    assert {r["name"]: r["scheme"] for r in replay["layers"]} == schemes


def test_export_max_drop_already_met_is_a_no_op(work):
    proc = run_cli("export", "model.py:build", "-o", work / "noop", "--format", "onnx", "--calibration", "calib.pt",
                   "--max-drop", "0.05", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert "already meets the target" in proc.stdout
    plan = json.loads((work / "noop" / "plan.json").read_text())
    assert plan["modules"] == {}


def test_unreachable_target_exits_1_and_writes_nothing(work, capsys):
    out = work / "unreachable"
    rc, _, err = run_in_process("export", "model.py:build", "-o", out, "--format", "onnx", "--calibration",
                                "calib.pt", "--target-metric", "1.5", cwd=work, capsys=capsys)
    assert rc == 1 and "target not reachable" in err and "Nothing was written" in err
    assert not out.exists() or not any(out.iterdir())


def test_target_metric_and_max_drop_exclude_each_other(work, capsys):
    with pytest.raises(SystemExit) as e:
        run_in_process("export", "model.py:build", "-o", work / "bad", "--target-metric", "0.9", "--max-drop", "0.1",
                       cwd=work, capsys=capsys)
    assert e.value.code == 2 and "not allowed with" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "message"), [
    (["--max-drop", "0.1", "--metric", "sqnr"], "infinite"),
    (["--target-metric", "0.9", "--scheme", "dynamic"], "start from static int8"),
    (["--plan", "missing.json"], "no such plan file"),
    (["--plan", "calib.pt", "--scheme", "static"], "--plan already says"),
], ids=["sqnr-drop", "dynamic-base", "missing-plan", "plan-and-scheme"])
def test_bad_search_arguments(work, capsys, args, message):
    rc, _, err = run_in_process("export", "model.py:build", "-o", work / "bad", "--format", "onnx",
                                "--calibration", "calib.pt", *args, cwd=work, capsys=capsys)
    assert rc == 2 and message in err, err
