"""`pt2e-int8 bench`: interleaved timings, ratios, the device description, and an import path
that loads only the runtime it needs."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pt2e_int8
from tests.cli._cli import run_cli, run_in_process

PACKAGE_DIR = Path(pt2e_int8.__file__).parent
# Modules a runtime-only board does not have (or that would make bench pay for export).
EXPORT_MACHINERY = ("torchao", "executorch.exir", "executorch.backends", "onnxscript", "backends.onnx.export",
                    "backends.executorch.lower", "pt2e_int8.workflow", "pt2e_int8.quantizer")


def test_bench_two_artifacts_interleaved(work, exported):
    _, exp = exported
    out_json = work / "bench.json"
    proc = run_cli("bench", exp / "model.pte", exp / "model.onnx", "--iters", "20", "--warmup", "2",
                   "--threads", "1", "--json", out_json, cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert "interleaved" in proc.stdout and "vs first" in proc.stdout
    assert "1.00x" in proc.stdout
    doc = json.loads(out_json.read_text())
    device = doc["device"]
    assert {"cpu_model", "logical_cores", "machine", "isa", "runtimes"} <= device.keys()
    assert {"avx2", "avx512_vnni", "avx_vnni", "neon", "dotprod", "i8mm"} <= device["isa"].keys()
    assert {"executorch", "onnxruntime"} <= device["runtimes"].keys()
    assert doc["settings"]["threads"] == 1 and doc["settings"]["order"] == "interleaved"
    results = doc["results"]
    assert [Path(r["artifact"]).name for r in results] == ["model.pte", "model.onnx"]
    for r in results:
        assert {"median_ms", "p90_ms", "min_ms", "ratio_vs_first", "size_bytes"} <= r.keys()
        assert 0 < r["min_ms"] <= r["median_ms"] <= r["p90_ms"]
    assert results[0]["ratio_vs_first"] == 1.0
    # export's .pte takes exactly the example's batch (8): timed at it; the .onnx at batch 1
    assert [r["batch"] for r in results] == [8, 1], results
    assert "[tensor_impl.cpp" not in proc.stderr  # the trial at batch 1 is not logged


def _modules_after_bench(artifact: Path, *, skip_package_init: bool) -> set[str]:
    """Run `bench` in a fresh interpreter and return the loaded module names.

    skip_package_init: import pt2e_int8.app.cli without running pt2e_int8/__init__.py, to test the
    command's own import path apart from the package's eager re-exports.
    """
    stub = (f"import types; pkg = types.ModuleType('pt2e_int8'); pkg.__path__ = [{str(PACKAGE_DIR)!r}]; "
            "sys.modules['pt2e_int8'] = pkg" if skip_package_init else "pass")
    code = textwrap.dedent(f"""
        import json, sys
        {stub}
        from pt2e_int8.app.cli import main
        rc = main(["bench", {str(artifact)!r}, "--iters", "2", "--warmup", "1"])
        print("MODULES=" + json.dumps(sorted(sys.modules)))
        sys.exit(rc)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("MODULES="))
    return set(json.loads(line.removeprefix("MODULES=")))


def _loaded(modules: set[str], prefixes) -> list[str]:
    return sorted({p for p in prefixes for m in modules if m == p or m.startswith(p + ".")})


def test_bench_onnx_imports_only_onnxruntime(exported):
    """The command's own modules: bench on an .onnx never imports the export side or ExecuTorch."""
    _, exp = exported
    modules = _modules_after_bench(exp / "model.onnx", skip_package_init=True)
    assert "onnxruntime" in modules
    assert _loaded(modules, (*EXPORT_MACHINERY, "executorch")) == []


def test_bench_pte_does_not_import_onnx_side(exported):
    _, exp = exported
    modules = _modules_after_bench(exp / "model.pte", skip_package_init=True)
    assert _loaded(modules, ("onnxruntime", "onnx", "onnxscript", "backends.onnx", "pt2e_int8.workflow")) == []


def test_installed_bench_onnx_imports_no_export_machinery(exported):
    """The same through `import pt2e_int8` as the console script does it."""
    probe = subprocess.run([sys.executable, "-c", "import sys, pt2e_int8; print('torchao' in sys.modules)"],
                           capture_output=True, text=True, check=False)
    assert probe.stdout.strip() == "False", "import pt2e_int8 must not import torchao (lazy re-exports)"
    _, exp = exported
    modules = _modules_after_bench(exp / "model.onnx", skip_package_init=False)
    assert _loaded(modules, (*EXPORT_MACHINERY, "executorch")) == []


def test_bench_with_inputs_file(work, exported, capsys):
    _, exp = exported
    rc, out, err = run_in_process("bench", exp / "model.onnx", "--inputs", "example.pt", "--iters", "3",
                                  "--warmup", "0", cwd=work, capsys=capsys)
    assert rc == 0, err
    assert "inputs: example.pt" in out and "model.onnx" in out


def test_bench_pte_imports_no_exir(exported):
    """bench on a .pte loads ExecuTorch's bare runtime bindings, never `executorch.exir` (the compiler
    stack that `executorch.runtime` and `portable_lib` import: 19-38 s under qemu, seconds on a board)."""
    _, exp = exported
    modules = _modules_after_bench(exp / "model.pte", skip_package_init=False)
    assert "executorch.extension.pybindings._C" in modules
    assert _loaded(modules, EXPORT_MACHINERY) == []
