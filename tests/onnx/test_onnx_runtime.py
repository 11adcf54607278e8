"""backends.onnx.runtime: the load/run interface bench and compare use, and its errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import pt2e_int8 as q
from backends.onnx.runtime import load_onnx


def test_run_returns_torch_tensors_at_any_batch(block_case):
    sess = load_onnx(block_case.path, threads=1)
    for b in (1, 3, 8):
        x = torch.randn(b, 16, 64)
        (out,) = sess.run([x])
        assert isinstance(out, torch.Tensor) and out.shape == (b, 16, 64)
        assert q.sqnr(block_case.qm(x), out) >= 35
    (out_np,) = sess.run([x.numpy().astype(np.float64)])  # numpy in, cast to the graph's type
    torch.testing.assert_close(out_np, sess.run([x])[0])


def test_missing_file_is_an_input_file_error(tmp_path):
    with pytest.raises(q.InputFileError, match="not found"):
        load_onnx(tmp_path / "nope.onnx")


def test_corrupt_file_is_an_input_file_error(tmp_path, block_case):
    bad = tmp_path / "truncated.onnx"
    bad.write_bytes(block_case.path.read_bytes()[:1000])
    with pytest.raises(q.InputFileError, match="truncated.onnx is not a loadable ONNX model"):
        load_onnx(bad)


def test_wrong_input_count_names_the_inputs(block_case):
    sess = load_onnx(block_case.path)
    with pytest.raises(ValueError, match=r"takes 1 input\(s\) \(x"):
        sess.run([torch.randn(1, 16, 64), torch.randn(1, 16, 64)])


def test_runtime_imports_no_export_machinery():
    code = (
        "import sys, backends.onnx.runtime as r\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'torchao', 'onnx', 'onnx_ir', 'onnxscript', 'executorch'))\n"
        "print(heavy)\n"
        "assert not heavy, heavy\n"
        "assert r.InputFileError.__module__ == 'pt2e_int8.errors'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
