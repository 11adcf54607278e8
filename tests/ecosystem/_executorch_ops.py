"""ExecuTorch's own XNNPACK op tests (shipped in the executorch wheel), run with either quantizer.

The wheel's `executorch/backends/xnnpack/test/ops/` holds unittest cases driven by its
`Tester`, whose Quantize stage defaults to `XNNPACKQuantizer().set_global(
get_symmetric_quantization_config(...))`, then lowers with the standard
`to_edge_transform_and_lower(..., partitioner=[XnnpackPartitioner()])` and runs the .pte.
`injected("ours")` swaps `Int8Quantizer` in for the stock quantizer, mapping the stock
config's flags (per-channel, dynamic, QAT, weight range) onto a `QuantConfig`: the drop-in
a user with an existing ExecuTorch pipeline makes. Nothing else of the tests changes.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import pkgutil
import random
import time
import unittest
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

import pt2e_int8 as q

OPS_PACKAGE = "executorch.backends.xnnpack.test.ops"
# Run the stock quantizer on every case (the full count), not only where ours fails.
FULL_BASELINE = os.environ.get("PT2E_INT8_STOCK_BASELINE") == "1"


def quant_config_from_stock(config) -> q.QuantConfig:
    """Our QuantConfig for a torchao `QuantizationConfig` from `get_symmetric_quantization_config`."""
    if config is None:
        return q.QuantConfig.static()
    act, weight = config.input_activation, config.weight
    per_channel = weight is not None and weight.qscheme in (torch.per_channel_symmetric,
                                                            torch.per_channel_affine)
    fields = {"per_channel": per_channel}
    if weight is not None:
        fields.update(weight_qmin=weight.quant_min, weight_qmax=weight.quant_max)
    if act is not None and act.is_dynamic:
        return q.QuantConfig.dynamic(is_qat=bool(config.is_qat), **fields)
    if config.is_qat:
        return q.QuantConfig.qat(**fields)
    return q.QuantConfig.static(**fields)


class StockConfigInt8Quantizer(q.Int8Quantizer):
    """`Int8Quantizer` that also takes the stock quantizer's config objects in `set_global`."""

    def set_global(self, cfg):
        if cfg is not None and not isinstance(cfg, q.QuantConfig):
            cfg = quant_config_from_stock(cfg)
        return super().set_global(cfg)


@contextlib.contextmanager
def injected(quantizer: str) -> Iterator[None]:
    """Within the block, the wheel's op tests quantize with `quantizer` ("stock" or "ours")."""
    if quantizer == "stock":
        yield
        return
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from executorch.backends.xnnpack.test.tester import tester as xnnpack_tester

    stage = xnnpack_tester.Quantize
    original_init = stage.__init__

    def init(self, quantizer=None, quantization_config=None, calibrate=True, calibration_samples=None,
             is_qat=False):
        if quantizer is None or isinstance(quantizer, XNNPACKQuantizer):
            config = quantization_config or get_symmetric_quantization_config(is_qat=bool(is_qat))
            quantizer, quantization_config = StockConfigInt8Quantizer(), quant_config_from_stock(config)
        original_init(self, quantizer=quantizer, quantization_config=quantization_config,
                      calibrate=calibrate, calibration_samples=calibration_samples, is_qat=is_qat)

    # Test modules that build an XNNPACKQuantizer themselves get ours under the same name.
    modules = [m for m in _test_modules() if getattr(m, "XNNPACKQuantizer", None) is XNNPACKQuantizer]
    stage.__init__ = init
    for module in modules:
        module.XNNPACKQuantizer = StockConfigInt8Quantizer
    try:
        yield
    finally:
        stage.__init__ = original_init
        for module in modules:
            module.XNNPACKQuantizer = XNNPACKQuantizer


def _test_modules() -> list:
    package = importlib.import_module(OPS_PACKAGE)
    return [importlib.import_module(f"{OPS_PACKAGE}.{m.name}") for m in pkgutil.iter_modules(package.__path__)
            if m.name.startswith("test_")]


def _cases() -> Iterator[unittest.TestCase]:
    loader = unittest.TestLoader()
    stack = [loader.loadTestsFromModule(m) for m in _test_modules()]
    while stack:
        item = stack.pop(0)
        if isinstance(item, unittest.TestSuite):
            stack[:0] = list(item)
        else:
            yield item


class _QuantizesError(Exception):
    """Discovery sentinel: the test's first step quantizes with a PT2E quantizer."""


class _LowersError(Exception):
    """Discovery sentinel: the test's first step exports or lowers a float model."""


class _QuantizeApiError(Exception):
    """Discovery sentinel: the test quantizes with torchao's `quantize_` (no PT2E quantizer)."""


@functools.cache
def discover_quantized() -> tuple[str, ...]:
    """Ids of the op tests that quantize with a PT2E quantizer: their first Tester step is
    `quantize` with the Quantize stage, or they build the stock quantizer themselves.

    Each test runs with every step stubbed to raise, so discovery costs model construction
    only. A test whose quantize step is torchao's `quantize_` API instead (the `Quantize_`
    stage) is left out: no PT2E quantizer runs in it, so both quantizers would run the very
    same test. (The "int4" linear tests are PT2E cases: 4-bit weight ranges in int8.)
    """
    from executorch.backends.test.harness.stages import Quantize_
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer
    from executorch.backends.xnnpack.test.tester import Tester

    def quantizes(*args, **kwargs):
        raise _QuantizesError

    def tester_quantizes(self, stage=None, *args, **kwargs):
        raise _QuantizeApiError if isinstance(stage, Quantize_) else _QuantizesError

    def lowers(*args, **kwargs):
        raise _LowersError

    patched = {(Tester, "quantize"): tester_quantizes, (XNNPACKQuantizer, "__init__"): quantizes,
               **{(Tester, name): lowers for name in ("export", "to_edge", "to_edge_transform_and_lower")}}
    saved = {key: key[0].__dict__.get(key[1]) for key in patched}
    found = []
    try:
        for (owner, name), fn in patched.items():
            setattr(owner, name, fn)
        for case in _cases():
            result = unittest.TestResult()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                case.run(result)
            traces = [trace for _, trace in result.errors + result.failures]
            if any(_QuantizesError.__name__ in t for t in traces):
                found.append(case.id())
    finally:
        for (owner, name), original in saved.items():
            if original is None:
                delattr(owner, name)
            else:
                setattr(owner, name, original)
    return tuple(sorted(found))


@dataclass(frozen=True)
class Outcome:
    status: str  # "pass", "fail" or "skip"
    message: str  # last line of the first failure, or the skip reason
    seconds: float


def run_case(case_id: str, quantizer: str) -> Outcome:
    """Run one op test (all its subtests) with `quantizer`; never raises."""
    module, cls, method = case_id.rsplit(".", 2)
    case = getattr(importlib.import_module(module), cls)(method)
    result = unittest.TestResult()
    # The Tester draws its inputs with torch.randn: seeded, a case passes or fails the same
    # way on every run of a machine (unseeded, a few parity checks flip at a rounding tie).
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    start = time.perf_counter()
    with injected(quantizer), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        case.run(result)
    seconds = time.perf_counter() - start
    failures = result.errors + result.failures
    if failures:
        lines = [line for line in failures[0][1].strip().splitlines() if line.strip()]
        return Outcome("fail", lines[-1][:400] if lines else "failed", seconds)
    if result.skipped:
        return Outcome("skip", str(result.skipped[0][1]), seconds)
    return Outcome("pass", "", seconds)


def short_id(case_id: str) -> str:
    """test_add.TestAdd.test_qs8_add → add/test_qs8_add."""
    module, _, method = case_id.removeprefix(f"{OPS_PACKAGE}.").split(".")
    return f"{module.removeprefix('test_')}/{method}"
