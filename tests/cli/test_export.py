"""`pt2e-int8 export`: artifacts, report.json contract keys, report.md, progress, .pt2 inputs."""

from __future__ import annotations

import json

from tests.cli._cli import run_cli, run_in_process


def test_export_writes_artifacts_and_report(exported):
    proc, out = exported
    assert proc.returncode == 0, proc.stderr
    assert {p.name for p in out.iterdir()} == {"model.pte", "model.onnx", "report.json", "report.md"}
    # progress on stderr, results on stdout
    for step in ("quantizing (static, 4 calibration batches)", "exporting model.pte", "exporting model.onnx",
                 "checking parity"):
        assert step in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "2/2 layers in int8" in proc.stdout

    report = json.loads((out / "report.json").read_text())
    assert {"layers", "artifacts"} <= report.keys()
    assert [r["name"] for r in report["layers"]] == ["fc1", "fc2"]
    for row in report["layers"]:
        assert {"name", "op", "quantized", "reason", "placement"} <= row.keys()
        assert row["op"] == "linear" and row["quantized"] is True and row["reason"] is None
        assert row["placement"] == {"pte": "int8", "onnx": "int8"}, row
    for fmt in ("pte", "onnx"):
        art = report["artifacts"][fmt]
        assert art["size_bytes"] == (out / f"model.{fmt}").stat().st_size
        parity = art["parity"]["vs_quantized_graph"][0]
        assert parity["step"] > 0
        assert parity["max_error_steps"] <= 1.0, f"{fmt}: {parity['max_error_steps']} steps off the quantized graph"
        runtime = {"pte": "executorch", "onnx": "onnxruntime"}[fmt]
        assert art["parity"]["reference"] == f"the quantized graph with {runtime}'s integer arithmetic"
        assert art["parity"]["vs_float"][0]["sqnr_db"] > 15, art["parity"]["vs_float"]
    md = (out / "report.md").read_text()
    assert "| `fc1` | linear | yes |" in md and "model.pte" in md
    onnx_options = report["artifacts"]["onnx"]["options"]  # --target auto: this machine's, and why
    assert onnx_options["target"] in ("x86-avx2", "x86-vnni", "arm64") and onnx_options["target_reason"].startswith("auto:")


def test_export_keep_float_dynamic(dynamic_onnx):
    proc, out = dynamic_onnx
    assert proc.returncode == 0, proc.stderr
    assert {p.name for p in out.iterdir()} == {"model.onnx", "report.json", "report.md"}
    rows = {r["name"]: r for r in json.loads((out / "report.json").read_text())["layers"]}
    assert rows["fc1"]["quantized"] is False and "set_module_name('fc1')" in rows["fc1"]["reason"]
    assert rows["fc1"]["placement"] == {"onnx": "float"}
    assert rows["fc2"]["quantized"] is True and rows["fc2"]["scheme"].startswith("dynamic")
    options = json.loads((out / "report.json").read_text())["artifacts"]["onnx"]["options"]
    assert options["target"] == "x86-avx2" and options["weight_dtype"].startswith("uint8")


def test_export_converted_pt2_as_is(work, converted_pt2, capsys):
    out = work / "from_pt2"
    proc = run_cli("export", converted_pt2, "-o", out, "--format", "onnx", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert "already quantized" in proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["scheme"] == "as converted"
    assert [r["quantized"] for r in report["layers"]] == [True, True]
    assert report["artifacts"]["onnx"]["parity"]["vs_quantized_graph"][0]["max_error_steps"] <= 1.0
    # quantization flags make no sense for a converted model: a usage error, not a silent ignore
    rc, _, err = run_in_process("export", converted_pt2, "-o", out, "--scheme", "dynamic", cwd=work, capsys=capsys)
    assert rc == 2 and "already quantized" in err


OUTLIER_PY = '''
import torch

class Block(torch.nn.Module):
    """linear -> residual add -> LayerNorm, one output channel 100x the rest (BERT's FFN output)."""
    def __init__(self):
        super().__init__()
        self.fc, self.norm = torch.nn.Linear(32, 32), torch.nn.LayerNorm(32)
        with torch.no_grad():
            self.fc.bias[3] = 200.0

    def forward(self, x):
        return self.norm(x + self.fc(x))

def build():
    torch.manual_seed(0)
    return Block(), (torch.randn(16, 32),)
'''


def test_export_smooth_records_the_rewrite(tmp_path, capsys):
    (tmp_path / "outlier.py").write_text(OUTLIER_PY)
    out = tmp_path / "out"
    proc = run_cli("export", "outlier.py:build", "-o", out, "--format", "onnx", "--smooth", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["scheme"] == "static + smooth"
    (row,) = report["layers"]
    assert row["quantized"] and any(n.startswith("output rescaled: 1 channel") for n in row["notes"]), row
    parity = report["artifacts"]["onnx"]["parity"]["vs_quantized_graph"][0]  # a float output: no step
    assert parity["sqnr_db"] is None or parity["sqnr_db"] > 40, parity
    assert "output rescaled" in (out / "report.md").read_text()
    rc, _, err = run_in_process("export", "outlier.py:build", "-o", tmp_path / "dyn", "--scheme", "dynamic",
                                "--smooth", cwd=tmp_path, capsys=capsys)
    assert rc == 2 and "--smooth applies to the static scheme only" in err
    assert not (tmp_path / "dyn").exists() or not any((tmp_path / "dyn").iterdir())
