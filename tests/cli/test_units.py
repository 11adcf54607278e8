"""In-process checks of the command line's building blocks (fast; no subprocess)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pt2e_int8 as q
from backends.registry import backend_of, parse_formats
from pt2e_int8.app.device import describe_device, isa_features
from pt2e_int8.app.inputs import check_finite, load_batches
from pt2e_int8.app.parity import compare_outputs, kernel_reference_outputs, output_steps
from pt2e_int8.app.staging import staged_output
from pt2e_int8.errors import CalibrationError, ConfigError, InputFileError

_ARM_CORE = """processor\t: {i}
BogoMIPS\t: 48.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp i8mm
CPU implementer\t: 0x41
CPU part\t: {part}

"""
ARM_CPUINFO = "".join(_ARM_CORE.format(i=i, part="0xd05" if i < 4 else "0xd0b") for i in range(8))


def test_staged_output_keeps_existing_files_on_failure(tmp_path):
    (tmp_path / "model.pte").write_bytes(b"OLD")
    with pytest.raises(RuntimeError), staged_output(tmp_path) as stage:
        (stage / "model.pte").write_bytes(b"NEW")
        (stage / "report.json").write_text("{}")
        raise RuntimeError("lowering failed after the first artifact")
    assert [p.name for p in tmp_path.iterdir()] == ["model.pte"]
    assert (tmp_path / "model.pte").read_bytes() == b"OLD"
    with staged_output(tmp_path) as stage:
        (stage / "model.pte").write_bytes(b"NEW")
    assert (tmp_path / "model.pte").read_bytes() == b"NEW"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pte"]


@pytest.mark.parametrize(
    ("saved", "arity", "expected"),
    [
        (torch.ones(2, 3), None, [(2, 3)]),
        ((torch.ones(2, 3), torch.ones(2, 5)), None, [(2, 3), (2, 5)]),
        ([(torch.ones(2, 3),), (torch.ones(4, 3),)], None, [(2, 3), (4, 3)]),
        ([torch.ones(2, 3), torch.ones(4, 3)], 1, [(2, 3), (4, 3)]),  # a one-input model: batches
    ],
    ids=["tensor", "tuple", "list-of-tuples", "list-of-tensors-arity-1"],
)
def test_load_batches_layouts(tmp_path, saved, arity, expected):
    torch.save(saved, tmp_path / "x.pt")
    batches = load_batches(tmp_path / "x.pt", arity=arity)
    shapes = [tuple(t.shape) for b in batches for t in b]
    assert shapes == expected


def test_load_batches_npz_and_errors(tmp_path):
    np.savez(tmp_path / "x.npz", np.ones((2, 3), np.float32), np.zeros((2,), np.int64))
    (batch,) = load_batches(tmp_path / "x.npz")
    assert [t.dtype for t in batch] == [torch.float32, torch.int64]
    with pytest.raises(InputFileError, match="no such file"):
        load_batches(tmp_path / "missing.pt")
    torch.save({"x": torch.ones(1)}, tmp_path / "d.pt")
    with pytest.raises(InputFileError, match="unexpected layout"):
        load_batches(tmp_path / "d.pt")
    with pytest.raises(CalibrationError, match="batch 1 input 0"):
        check_finite([(torch.ones(2),), (torch.tensor([1.0, float("inf")]),)], "c.pt")


def test_isa_features_arm_and_x86():
    arm = isa_features({"features": ARM_CPUINFO.split("Features\t: ")[1].splitlines()[0]})
    assert arm["neon"] and arm["dotprod"] and arm["i8mm"] and not arm["avx2"]
    x86 = isa_features({"flags": "fpu sse4_1 avx2 fma avx512f avx512_vnni"})
    assert x86["avx2"] and x86["avx512_vnni"] and not x86["avx_vnni"] and not x86["neon"]
    dev = describe_device(ARM_CPUINFO)
    assert dev["isa"]["asimddp"] and dev["runtimes"]["torch"]
    assert dev["cpu_model"] == "4x Cortex-A55 + 4x Cortex-A76"


def test_formats_registry():
    assert [f.name for f in parse_formats("onnx, pte,onnx")] == ["onnx", "pte"]
    with pytest.raises(ConfigError, match="'tflite'"):
        parse_formats("tflite")
    with pytest.raises(InputFileError, match="unknown artifact kind"):
        backend_of("m.tflite")


def test_output_steps_and_parity():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 4))
    x = torch.randn(16, 8)
    qm = q.quantize(model, (x,), calibration=[(x,)])
    (step,) = output_steps(qm)
    assert step is not None and step > 0
    ref = qm(x)
    (row,) = compare_outputs([[ref]], [[ref + step]], [step])
    assert row.max_error_steps == pytest.approx(1.0, rel=1e-4)
    dyn = q.quantize(model, (x,), quantizer=q.Int8Quantizer().set_global(q.QuantConfig.dynamic()))
    assert output_steps(dyn) == [None]  # a float output: steps are n/a


def test_kernel_reference_outputs_and_its_fallback():
    """The backend's reference runs on every batch; one it cannot build or run gives None, so
    `compare` and `export` measure against the plain converted graph instead of failing."""

    class Doubling:
        @staticmethod
        def reference(module):
            return lambda x: module(x) * 2

    class Broken:
        @staticmethod
        def reference(module):
            raise NotImplementedError("a graph the rewrite does not understand")

    class FailsToRun:
        @staticmethod
        def reference(module):
            return lambda x: x @ torch.ones(3, 3)  # wrong shape for the inputs

    model = torch.nn.Linear(8, 4)
    batches = [(torch.randn(2, 8),), (torch.randn(5, 8),)]
    outs = kernel_reference_outputs(Doubling, model, batches)
    assert [o[0].shape for o in outs] == [(2, 4), (5, 4)]
    torch.testing.assert_close(outs[1][0], model(batches[1][0]).detach() * 2)
    assert kernel_reference_outputs(Broken, model, batches) is None
    assert kernel_reference_outputs(FailsToRun, model, batches) is None


def test_load_model_from_package_module(tmp_path, monkeypatch):
    from pt2e_int8.app.modelspec import load_model

    pkg = tmp_path / "clitestpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "models.py").write_text(
        "import torch\n"
        "def build():\n    return torch.nn.Linear(3, 2), torch.randn(4, 3)\n"
        "def not_a_model():\n    return 42\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded = load_model("clitestpkg.models:build")
    assert isinstance(loaded.module, torch.nn.Linear) and not loaded.converted
    assert [tuple(t.shape) for t in loaded.example_inputs] == [(4, 3)]
    with pytest.raises(InputFileError, match=r"returned int; it must return an nn.Module"):
        load_model("clitestpkg.models:not_a_model")
    with pytest.raises(InputFileError, match="neither a .pt2 file nor module:function"):
        load_model("clitestpkg.models")
