"""Session fixtures: each model is quantized and lowered once, then shared by the tests."""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import pt2e_int8 as q
from backends.executorch import export_pte
from backends.executorch.runtime import PteProgram, load_pte
from backends.result import ExportResult
from tests.core._helpers import DigitsMLP, train
from tests.executorch import _models as models

SCHEMES = {
    "static": q.QuantConfig.static,
    "dynamic": q.QuantConfig.dynamic,
    "weight_only": q.QuantConfig.weight_only,
}


@dataclass
class Case:
    name: str
    float_model: torch.nn.Module
    qm: torch.fx.GraphModule
    example: torch.Tensor
    result: ExportResult
    program: PteProgram


def _inputs(name: str, batch: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = {"linear_relu": (16,), "linear_clamp": (16,), "conv_bn_relu": (3, 8, 8),
             "attention": (6, 32), "linear_heavy": (128,)}[name]
    return torch.randn(batch, *shape, generator=g)


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return {"linear_relu": models.LinearRelu, "linear_clamp": models.LinearClamp,
            "conv_bn_relu": models.ConvBnRelu, "attention": models.AttentionBlock,
            "linear_heavy": models.LinearHeavy}[name]().eval()


@functools.cache
def _quantize(name: str, scheme: str) -> tuple[torch.nn.Module, torch.fx.GraphModule, torch.Tensor]:
    model = _model(name)
    example = _inputs(name, 4)
    calibration = [(_inputs(name, 8, seed),) for seed in range(1, 5)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if name == "conv_bn_relu":  # QAT-converted: conv + batch-norm folded + relu
            prepared = q.prepare_qat(model, (example,))
            with torch.no_grad():
                for (batch,) in calibration:
                    prepared(batch)
            return model, q.convert(prepared), example
        quantizer = q.Int8Quantizer().set_global(SCHEMES[scheme]())
        qm = q.quantize(model, (example,), calibration=calibration, quantizer=quantizer)
    return model, qm, example


@pytest.fixture(scope="session")
def pte_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("pte")


@pytest.fixture(scope="session")
def lowered(pte_dir):
    """lowered(name, scheme, delegate) -> Case, built once per session."""

    @functools.cache
    def build(name: str, scheme: str = "static", delegate: str = "xnnpack") -> Case:
        model, qm, example = _quantize(name, scheme)
        path = pte_dir / f"{name}-{scheme}-{delegate}.pte"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = export_pte(qm, (example,), path, delegate=delegate, dynamic_shapes="batch")  # run at 1 and 8
        return Case(name, model, qm, example, result, load_pte(path))

    return build


@pytest.fixture(scope="session")
def digits(pte_dir):
    """The core's digits MLP, trained briefly, static int8, lowered: (model, qm, x_test, y_test, result, program)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    xtr, ytr, xte, yte = x[perm[:1400]], y[perm[:1400]], x[perm[1400:]], y[perm[1400:]]
    torch.manual_seed(0)
    model = train(DigitsMLP(), xtr, ytr, epochs=4, batch=64).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qm = q.quantize(model, (xtr[:32],), calibration=[(b,) for b in xtr.split(200)])
        result = export_pte(qm, (xtr[:32],), pte_dir / "digits.pte", max_batch=64)  # runs at 64
    return model, qm, xte, yte, result, load_pte(result.path)


@pytest.fixture(scope="session")
def inputs():
    return _inputs
