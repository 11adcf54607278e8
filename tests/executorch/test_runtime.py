"""load_pte / run: errors a user can act on, and no export machinery on import."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from backends.executorch.runtime import load_pte, set_threads, thread_count
from pt2e_int8.errors import ExampleInputsError, InputFileError


def test_missing_file(tmp_path):
    with pytest.raises(InputFileError, match="no such .pte"):
        load_pte(tmp_path / "nope.pte")


def test_not_a_pte(tmp_path):
    bad = tmp_path / "bad.pte"
    bad.write_bytes(b"this is not a flatbuffer at all")
    with pytest.raises(InputFileError, match="not an ExecuTorch program"):
        load_pte(bad)


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.95])
def test_truncated(lowered, tmp_path, keep):
    data = lowered("linear_relu", "static").result.path.read_bytes()
    cut = tmp_path / "cut.pte"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(InputFileError, match="truncated or corrupt"):
        load_pte(cut)


def test_wrong_inputs(lowered):
    program = lowered("linear_relu", "static").program
    with pytest.raises(ExampleInputsError, match="takes 1 input"):
        program.run([torch.randn(2, 16), torch.randn(2, 16)])
    with pytest.raises(ExampleInputsError, match="rejected inputs"):
        program.run([torch.randn(2, 17)])


def test_run_interface(lowered):
    program = load_pte(lowered("linear_relu", "static").result.path)
    outs = program.run([torch.randn(3, 16)])
    assert isinstance(outs, list) and outs[0].shape == (3, 12)


def test_threads():
    before = thread_count()
    try:
        assert set_threads(1) is True
        assert thread_count() == 1
    finally:
        set_threads(before or 2)


def test_runtime_import_needs_no_lowering_machinery():
    code = (
        "import sys, backends.executorch, backends.executorch.runtime\n"
        "heavy = ['backends.executorch.lower', 'backends.executorch.passes',\n"
        "         'executorch.backends.xnnpack.partition.xnnpack_partitioner']\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout


def test_runtime_has_no_quantized_kernels():
    """The evidence behind the portable target's design: if a future runtime registers
    quantized_decomposed / quantized kernels, q/dq could stay as ops there (revisit). In a fresh
    interpreter: ExecuTorch's own test harness (tests/ecosystem) loads its quantized kernel library."""
    code = (
        "from executorch.runtime import Runtime\n"
        "names = Runtime.get().operator_registry.operator_names\n"
        "print(len(names), [n for n in names if n.startswith(('quantized_decomposed::', 'quantized::'))])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    count, quantized = out.stdout.strip().splitlines()[-1].split(" ", 1)
    assert int(count) > 100
    assert quantized == "[]", quantized
