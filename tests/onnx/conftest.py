"""Session fixtures for the ONNX backend tests: each model is quantized and exported once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import pt2e_int8 as q
from backends.onnx import export_onnx
from backends.result import ExportResult
from tests.core._helpers import DigitsMLP, train
from tests.onnx._models import (
    AttentionScores,
    Block,
    ConvBnRelu,
    Linear,
    LinearRelu,
)


@dataclass
class Case:
    name: str
    float_model: torch.nn.Module
    qm: torch.fx.GraphModule
    inputs: torch.Tensor  # batch of 8 (the export example)
    path: Path
    result: ExportResult


def _quantize(model, x, cfg, calibration):
    quantizer = q.Int8Quantizer().set_global(cfg)
    return q.quantize(model.eval(), (x,), calibration=calibration, quantizer=quantizer)


def _calib(shape, n=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(*shape, generator=g),) for _ in range(n)]


@pytest.fixture(scope="session")
def onnx_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="session")
def digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    x = (x - x.mean(0)) / (x.std(0) + 1e-3)
    return x, torch.tensor(data.target, dtype=torch.long)


def _make(name, model, x, cfg, calibration, onnx_dir, **export_kw) -> Case:
    torch.manual_seed(0)
    qm = _quantize(model, x, cfg, calibration)
    path = onnx_dir / f"{name}.onnx"
    return Case(name, model, qm, x, path, export_onnx(qm, (x,), path, **export_kw))


@pytest.fixture(scope="session")
def static_cases(onnx_dir, digits) -> dict[str, Case]:
    """The single-layer models of the issue, static int8, QDQ style, default options."""
    torch.manual_seed(0)
    cases = {}
    cfg = q.QuantConfig.static()
    cases["linear_relu"] = _make("linear_relu", LinearRelu(), torch.randn(8, 32), cfg, _calib((8, 32)), onnx_dir)
    cases["linear_3d"] = _make("linear_3d", Linear(), torch.randn(8, 5, 32), cfg, _calib((8, 5, 32)), onnx_dir)
    cases["attention"] = _make("attention", AttentionScores(), torch.randn(8, 6, 32), cfg, _calib((8, 6, 32)),
                               onnx_dir)
    xd, yd = digits
    mlp = train(DigitsMLP(), xd[:1200], yd[:1200], epochs=8).eval()
    cases["digits_mlp"] = _make("digits_mlp", mlp, xd[1200:1208], cfg, [(b,) for b in xd[:1200].split(100)],
                                onnx_dir)
    return cases


@pytest.fixture(scope="session")
def conv_qat(onnx_dir) -> Case:
    """Conv-BN-ReLU through QAT (a few steps), converted: BN folded into the int8 conv."""
    torch.manual_seed(0)
    model = ConvBnRelu()
    x = torch.randn(8, 3, 12, 12)
    pm = q.prepare_qat(model, (x,), quantizer=q.Int8Quantizer().set_global(q.QuantConfig.qat()))
    opt = torch.optim.SGD(pm.parameters(), lr=0.01)
    for _ in range(6):
        loss = pm(torch.randn(8, 3, 12, 12)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    qm = q.convert(pm)
    path = onnx_dir / "conv_bn_relu.onnx"
    return Case("conv_bn_relu", model, qm, x, path, export_onnx(qm, (x,), path))


@pytest.fixture(scope="session")
def block_case(onnx_dir) -> Case:
    torch.manual_seed(0)
    x = torch.randn(8, 16, 64)
    return _make("block", Block(), x, q.QuantConfig.static(), _calib((8, 16, 64)), onnx_dir)


@pytest.fixture(scope="session")
def block_qop(onnx_dir, block_case) -> Case:
    path = onnx_dir / "block_qop.onnx"
    res = export_onnx(block_case.qm, (block_case.inputs,), path, style="qop")
    return Case("block_qop", block_case.float_model, block_case.qm, block_case.inputs, path, res)


@pytest.fixture(scope="session")
def scheme_cases(onnx_dir) -> dict[str, Case]:
    """The block under dynamic and weight-only int8."""
    torch.manual_seed(0)
    x = torch.randn(8, 16, 64)
    return {
        mode: _make(f"block_{mode}", Block(), x, getattr(q.QuantConfig, mode)(), None, onnx_dir)
        for mode in ("dynamic", "weight_only")
    }
