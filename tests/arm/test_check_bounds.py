"""The bounds `tools.arm.check` applies, on synthetic x86 / aarch64 outputs (no emulation, runs in CI)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tools.arm.check import compare, expectation, float_sibling


def _write(run_dir: Path, name: str, outputs: list[np.ndarray]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    np.savez(run_dir / f"{name}.npz", **{f"{b}/0": o.astype(np.float32) for b, o in enumerate(outputs)})
    (run_dir / f"{name}.json").write_text(json.dumps({"run": {}}))


@pytest.mark.parametrize(("name", "folder", "sibling"), [
    ("minilm-dynamic.pte", ["minilm-float.pte", "minilm-float.onnx", "float.pte"], "minilm-float.pte"),
    ("ptq-dynamic.onnx", ["float.onnx", "float.pte"], "float.onnx"),
    ("block-mixed.onnx", ["block-float.pte"], None),  # another format is not a sibling
    ("float.pte", ["float.pte"], None),
], ids=["prefixed", "demo", "other-format", "float-itself"])
def test_float_sibling(name, folder, sibling):
    arts = [Path(n) for n in [name, *folder]]
    found = float_sibling(Path(name), arts)
    assert (found.name if found else None) == sibling


def test_expectation_from_name():
    assert [expectation(n) for n in ("qat.pte", "ptq-static.onnx", "minilm-mixed.pte", "x-dynamic.onnx", "float.pte")] \
        == ["exact", "exact", "steps", "steps", "none"]


@pytest.fixture
def runs(tmp_path):
    """x86: float and dynamic outputs whose int8 error is 0.5 (>> 1 step of range/255)."""
    rng = np.random.default_rng(0)
    flt = [rng.normal(size=(4, 10)) for _ in range(2)]
    dyn = [f + rng.choice([-0.5, 0.5], size=f.shape) for f in flt]
    _write(tmp_path / "x86", "m-float.pte", flt)
    _write(tmp_path / "x86", "m-dynamic.pte", dyn)
    return tmp_path, flt, dyn


def _row(tmp_path, arts, arm_outputs):
    _write(tmp_path / "arm", "m-dynamic.pte", arm_outputs)
    with np.load(tmp_path / "x86" / "m-float.pte.npz") as z:  # the float artifact ran on ARM too
        _write(tmp_path / "arm", "m-float.pte", [z[k] for k in sorted(z.files)])
    rows = compare([tmp_path / a for a in arts], tmp_path / "x86", tmp_path / "arm", "neoverse-n1")
    (row,) = [r for r in rows if r.artifact == "m-dynamic.pte"]
    return row


def test_dynamic_within_one_step_passes_without_sibling(runs):
    tmp_path, _, dyn = runs
    step = max(float(np.ptp(np.concatenate([d.ravel() for d in dyn]))) / 255, 1e-9)
    row = _row(tmp_path, ["m-dynamic.pte"], [d + 0.9 * step for d in dyn])
    assert row.bound_kind == "1 step" and row.passed, row


def test_dynamic_beyond_one_step_fails_without_sibling(runs):
    tmp_path, _, dyn = runs
    row = _row(tmp_path, ["m-dynamic.pte"], [d + 0.2 for d in dyn])
    assert row.bound_kind == "1 step" and not row.passed and row.error_steps > 1


def test_float_sibling_bounds_by_the_int8_error(runs):
    """0.2 off x86 is inside the artifact's int8 error (0.5): another draw of its rounding noise."""
    tmp_path, _, dyn = runs
    row = _row(tmp_path, ["m-dynamic.pte", "m-float.pte"], [d + 0.2 for d in dyn])
    assert row.bound_kind == "int8 error" and row.bound == pytest.approx(0.5, abs=1e-6) and row.passed, row


def test_beyond_the_int8_error_fails(runs):
    """A broken kernel: further from x86 than int8 is from float."""
    tmp_path, _, dyn = runs
    row = _row(tmp_path, ["m-dynamic.pte", "m-float.pte"], [d + 0.6 for d in dyn])
    assert row.bound_kind == "int8 error" and not row.passed


def test_static_stays_exact_with_a_sibling(tmp_path):
    rng = np.random.default_rng(1)
    out = [np.round(rng.normal(size=(4, 10)) * 8) / 8]
    _write(tmp_path / "x86", "m-float.pte", [o + 0.3 for o in out])
    _write(tmp_path / "x86", "m-static.pte", out)
    _write(tmp_path / "arm", "m-static.pte", [o + np.float32(1e-6) for o in out])
    _write(tmp_path / "arm", "m-float.pte", [o + 0.3 for o in out])
    rows = compare([tmp_path / "m-static.pte", tmp_path / "m-float.pte"], tmp_path / "x86", tmp_path / "arm", "n1")
    (row,) = [r for r in rows if r.artifact == "m-static.pte"]
    assert row.bound_kind == "exact" and not row.passed
