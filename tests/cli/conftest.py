"""Fixtures for the command-line tests: a scratch directory with model factories and input
files, and the expensive runs (export with both backends) made once per session."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest
import torch

from tests.cli._cli import run_cli

MODEL_PY = textwrap.dedent('''
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = torch.nn.Linear(16, 32)
            self.fc2 = torch.nn.Linear(32, 4)

        def forward(self, x):
            return self.fc2(torch.relu(self.fc1(x)))

    def build():
        torch.manual_seed(0)
        return Net(), (torch.randn(8, 16),)

    def bare():
        torch.manual_seed(0)
        return Net()

    def broken():
        raise RuntimeError("checkpoint weights.bin is missing")

    class Branchy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 4)

        def forward(self, x):
            if x.sum() > 0:
                return self.fc(x)
            return -self.fc(x)

    def untraceable():
        return Branchy(), (torch.randn(2, 4),)
''')


@pytest.fixture(scope="session")
def work(tmp_path_factory) -> Path:
    """model.py factories and input files (.pt / .npz), in one scratch directory."""
    d = tmp_path_factory.mktemp("cli")
    (d / "model.py").write_text(MODEL_PY)
    gen = torch.Generator().manual_seed(1)
    calib = [(torch.randn(8, 16, generator=gen),) for _ in range(4)]
    torch.save(calib, d / "calib.pt")
    nan = [tuple(t.clone() for t in b) for b in calib]
    nan[2][0][3, 5] = float("nan")
    torch.save(nan, d / "calib_nan.pt")
    torch.save((torch.randn(8, 16, generator=gen),), d / "example.pt")
    torch.save([(torch.randn(8, 16, generator=gen),) for _ in range(2)], d / "inputs.pt")
    (d / "junk.pt2").write_bytes(b"PK\x03\x04 this is not an export archive")
    (d / "junk.pte").write_bytes(b"\x00" * 64)
    (d / "junk.onnx").write_bytes(b"not a protobuf at all \xff\xfe")
    return d


@pytest.fixture(scope="session")
def converted_pt2(work) -> Path:
    """The reference: model.py:build quantized (static, calib.pt) in-process, saved as .pt2."""
    import importlib.util

    import pt2e_int8 as q

    spec = importlib.util.spec_from_file_location("cli_test_model", work / "model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model, example = mod.build()
    qm = q.quantize(model, example, calibration=torch.load(work / "calib.pt", weights_only=True))
    path = work / "qm.pt2"
    batch = ({0: torch.export.Dim.AUTO},) * len(example)  # a reference that takes any batch
    torch.export.save(torch.export.export(qm, example, dynamic_shapes=batch, strict=False), path)
    return path


@pytest.fixture(scope="session")
def exported(work) -> tuple[subprocess.CompletedProcess, Path]:
    """`export model.py:build -o exp --calibration calib.pt` with both formats, once."""
    out = work / "exp"
    return run_cli("export", "model.py:build", "-o", out, "--calibration", "calib.pt", cwd=work), out


@pytest.fixture(scope="session")
def dynamic_onnx(work) -> tuple[subprocess.CompletedProcess, Path]:
    """A dynamic-scheme ONNX export with fc1 kept float: a different model from the static reference."""
    out = work / "dyn"
    return run_cli("export", "model.py:build", "-o", out, "--format", "onnx", "--scheme", "dynamic",
                   "--keep-float", "fc1", "--target", "x86-avx2", cwd=work), out
