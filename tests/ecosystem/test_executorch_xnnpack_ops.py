"""Int8Quantizer is a drop-in for XNNPACKQuantizer in ExecuTorch's own quantized op tests.

Each quantized test of the executorch wheel (backends/xnnpack/test/ops) runs with our
quantizer through ExecuTorch's standard `to_edge_transform_and_lower(XnnpackPartitioner)`,
none of our passes: it must pass wherever the stock quantizer passes.
"""

from __future__ import annotations

import pytest

from tests.ecosystem._executorch_ops import FULL_BASELINE


def test_ours_passes_where_stock_passes(op_test, outcome):
    ours = outcome(op_test, "ours")
    if FULL_BASELINE or ours.status != "pass":
        stock = outcome(op_test, "stock")
    if ours.status == "pass":
        return
    if stock.status != "pass":
        pytest.xfail(f"the stock quantizer fails too ({stock.status}: {stock.message})")
    pytest.fail(f"passes with XNNPACKQuantizer, {ours.status}s with Int8Quantizer: {ours.message}")


def test_discovery_finds_the_quantized_op_tests():
    """Discovery must be able to fail: it finds the known quantized cases and no float one."""
    from tests.ecosystem._executorch_ops import OPS_PACKAGE, discover_quantized, short_id

    found = {short_id(c) for c in discover_quantized()}
    assert {"add/test_qs8_add", "conv2d/test_qs8_conv2d_per_channel", "linear/test_qd8_f32_per_channel_linear",
            "check_quant_params/test_in_per_tensor_quant"} <= found, sorted(found)
    assert not {f for f in found if "/test_fp32_" in f or "/test_fp16_" in f}, sorted(found)
    assert len(found) >= 60, f"only {len(found)} quantized op tests found in {OPS_PACKAGE}"
