"""target=: which int8 types each CPU family gets, how `auto` reads the building machine, and that
the choice is written where users and tools can see it (metadata_props, ExportResult.options)."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import backends.onnx.target as target_mod
import pt2e_int8 as q
from backends.cpu_features import isa_features
from backends.onnx import export_onnx
from backends.onnx.runtime import load_onnx
from backends.onnx.target import (
    METADATA_TARGET,
    TARGETS,
    detect_target,
    drift_warning,
    resolve_target,
)
from tests.onnx._models import output_step, steps
from tests.onnx.test_onnx_drift import weights_of_int8_kernels

ZEN1 = "fpu vme sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi2 sha_ni"  # AVX2, no VNNI
ICELAKE = ZEN1 + " avx512f avx512bw avx512_vnni"
ALDERLAKE = ZEN1 + " avx_vnni"
NEOVERSE_N1 = "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"


def flags(text: str, key: str = "flags") -> dict[str, bool]:
    return isa_features({key: text})


@pytest.mark.parametrize("machine,cpu_flags,expected", [
    ("x86_64", flags(ZEN1), "x86-avx2"),
    ("x86_64", flags(ICELAKE), "x86-vnni"),
    ("x86_64", flags(ALDERLAKE), "x86-vnni"),
    ("AMD64", flags(""), "x86-avx2"),  # no /proc/cpuinfo (Windows, macOS): the choice exact everywhere
    ("aarch64", flags(NEOVERSE_N1, "features"), "arm64"),
    ("arm64", flags(""), "arm64"),
    ("riscv64", flags(""), "x86-avx2"),
], ids=["zen1", "icelake", "alderlake", "x86-unknown-flags", "neoverse-n1", "apple", "riscv"])
def test_detect_target(machine, cpu_flags, expected):
    target, why = detect_target(machine, cpu_flags)
    assert target.name == expected
    assert why.startswith("auto:") and (machine.lower() in why or "VNNI" in why or "vnni" in why)


def test_resolve_target_rejects_unknown_names():
    assert resolve_target("x86-vnni") == (TARGETS["x86-vnni"], "given")
    with pytest.raises(q.ConfigError, match="'x86-avx512' is not one of auto, x86-avx2, x86-vnni, arm64"):
        resolve_target("x86-avx512")


def test_drift_warning_only_for_int8_weights_on_x86_without_vnni():
    assert drift_warning("x86-vnni", "x86_64", flags(ZEN1)) is not None
    assert "x86-avx2" in drift_warning("arm64", "x86_64", flags(ZEN1))
    assert drift_warning("x86-vnni", "x86_64", flags(ICELAKE)) is None
    assert drift_warning("x86-avx2", "x86_64", flags(ZEN1)) is None
    assert drift_warning("arm64", "aarch64", flags(NEOVERSE_N1, "features")) is None
    assert drift_warning(None, "x86_64", flags(ZEN1)) is None  # files from before targets, or foreign files


@pytest.fixture(scope="module")
def mlp():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 48), torch.nn.ReLU(), torch.nn.Linear(48, 16)).eval()
    x = torch.randn(8, 32)
    static = q.quantize(model, (x,), calibration=[(torch.randn(8, 32),) for _ in range(4)])
    dynamic = q.quantize(model, (x,), quantizer=q.Int8Quantizer().set_global(q.QuantConfig.dynamic()))
    return static, dynamic, x


def _types(path) -> tuple[set, set]:
    """(weight dtypes of int8 kernels, dtypes of activation QuantizeLinear outputs) in a file."""
    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    acts = {onnx.helper.tensor_dtype_to_np_dtype(inits[n.input[2]].data_type)
            for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits}
    return {w.dtype for w, _ in weights_of_int8_kernels(path)}, acts


@pytest.mark.parametrize("name,weights,acts", [
    ("x86-avx2", np.uint8, np.uint8),
    ("x86-vnni", np.int8, np.uint8),
    ("arm64", np.int8, np.int8),  # S8S8 QDQ: native on ARM, and ONNX Runtime on x86 converts it to U8 at load
])
def test_each_target_writes_its_types_and_runs_exactly_here(mlp, tmp_path, name, weights, acts):
    static, dynamic, x = mlp
    path = tmp_path / f"{name}.onnx"
    res = export_onnx(static, (x,), path, target=name)
    assert _types(path) == ({np.dtype(weights)}, {np.dtype(acts)})
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta[METADATA_TARGET] == name and res.options["target"] == name
    assert res.options["target_reason"] == "given" and meta["pt2e_int8.weight_dtype"] == res.options["weight_dtype"]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0])
    assert steps(static(x), got, output_step(static)) <= 1.0 + 1e-6  # this (VNNI or ARM) CI host runs all exactly
    dyn = tmp_path / f"{name}_dynamic.onnx"
    export_onnx(dynamic, (x,), dyn, target=name)
    assert {w.dtype for w, _ in weights_of_int8_kernels(dyn)} == {np.dtype(weights)}


def test_auto_records_the_building_machine(mlp, tmp_path, monkeypatch):
    static, _, x = mlp
    monkeypatch.setattr(target_mod, "this_cpu", lambda: ("x86_64", flags(ZEN1)))
    res = export_onnx(static, (x,), tmp_path / "auto.onnx")
    assert res.options["target"] == "x86-avx2" and "no VNNI" in res.options["target_reason"]
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "auto.onnx")).metadata_props}
    assert meta[METADATA_TARGET] == "x86-avx2" and meta["pt2e_int8.target_reason"] == res.options["target_reason"]
    monkeypatch.setattr(target_mod, "this_cpu", lambda: ("aarch64", flags(NEOVERSE_N1, "features")))
    assert export_onnx(static, (x,), tmp_path / "auto_arm.onnx").options["target"] == "arm64"


def test_loading_an_int8_weight_file_on_avx2_only_warns(mlp, tmp_path, monkeypatch):
    static, _, x = mlp
    path = tmp_path / "vnni.onnx"
    export_onnx(static, (x,), path, target="x86-vnni")
    monkeypatch.setattr(target_mod, "this_cpu", lambda: ("x86_64", flags(ZEN1)))
    with pytest.warns(UserWarning, match="exported for x86-vnni.*--target x86-avx2") as caught:
        vnni = load_onnx(path)
    assert len([w for w in caught if "exported for x86-vnni" in str(w.message)]) == 1
    assert vnni.run([x])[0].shape == static(x).shape  # a warning, not a refusal: the file still runs
    export_onnx(static, (x,), tmp_path / "avx2.onnx", target="x86-avx2")
    with warnings.catch_warnings(record=True) as quiet:
        warnings.simplefilter("always")
        avx2 = load_onnx(tmp_path / "avx2.onnx")
    assert [str(w.message) for w in quiet if "exported for" in str(w.message)] == []
    assert avx2.run([x])[0].shape == static(x).shape


def test_bad_target_is_a_config_error_and_writes_nothing(mlp, tmp_path):
    static, _, x = mlp
    with pytest.raises(q.ConfigError, match="target='avx2'"):
        export_onnx(static, (x,), tmp_path / "bad.onnx", target="avx2")
    assert not (tmp_path / "bad.onnx").exists()
