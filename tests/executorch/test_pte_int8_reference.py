"""The kernel-faithful reference (pt2e_int8.int8_reference, used by xnnpack_reference): static int8
layers with exact integer accumulation match the .pte bit for bit, where the converted graph's fp32
sums are one step off at rounding ties."""

from __future__ import annotations

import pytest
import torch

import pt2e_int8 as q
from backends.executorch import export_pte
from backends.executorch.reference import XNNPACK_INTEGER_FAMILIES, xnnpack_reference
from backends.executorch.runtime import load_pte
from pt2e_int8.app.parity import output_steps
from pt2e_int8.int8_reference import int8_reference
from tests._transformer import norm_block, randn, tiny_transformer, wide_mlp


def _static(model, shape, tmp_path, name):
    calibration = [(randn(*shape, seed=s),) for s in (1, 2)]
    qm = q.quantize(model, calibration[0], calibration=calibration,
                    quantizer=q.Int8Quantizer().set_global(q.QuantConfig.static()), progress=False)
    x = randn(*shape, seed=3)
    path = export_pte(qm, (x,), tmp_path / f"{name}.pte", dynamic_shapes=None).path
    got = torch.as_tensor(load_pte(path).run([x])[0])
    with torch.no_grad():
        plain, kernel = qm(x), xnnpack_reference(qm)(x)
    return got, plain, kernel, output_steps(qm)[0]


def _off(a, b, step) -> int:
    return int(((a - b).abs() > step / 2).sum())


def test_static_linears_match_the_pte_bit_for_bit(tmp_path):
    got, plain, kernel, step = _static(wide_mlp(), (4096, 1024), tmp_path, "mlp")
    assert _off(got, plain, step) > 0  # the converted graph's fp32 sums flip some roundings ...
    assert (got - kernel).abs().max().item() < 1e-3 * step  # ... integer accumulation does not


@pytest.mark.parametrize("batch", [32])
def test_tiny_transformer_pte_is_closer_to_the_kernel_reference(tmp_path, batch):
    """LayerNorm, GELU and softmax stay float in every runtime (their own ulps can still flip a
    rounding), but the linears' flips are gone: within one step, and far fewer elements off."""
    got, plain, kernel, step = _static(tiny_transformer(), (batch, 64, 64), tmp_path, "tiny")
    off_plain, off_kernel = _off(got, plain, step), _off(got, kernel, step)
    assert off_plain >= 10, off_plain
    assert off_kernel * 2 <= off_plain, (off_kernel, off_plain)
    assert (got - kernel).abs().max().item() <= 1.01 * step



def test_layer_norm_is_computed_as_the_pte_computes_it(tmp_path):
    """The .pte's LayerNorm is XNNPACK's ops (DecomposeLayerNormPass), a few ulps from torch's: at
    a tie of the next quantize an int8 value flips (66 of 1M outputs here; static + smooth MiniLM:
    one sentence 14.6 steps off). The reference evaluates that op with XNNPACK: bit for bit."""
    got, _, kernel, step = _static(norm_block(), (4096, 256), tmp_path, "norm")
    qm = q.quantize(norm_block(), (randn(4096, 256, seed=1),), progress=False,
                    calibration=[(randn(4096, 256, seed=s),) for s in (1, 2)],
                    quantizer=q.Int8Quantizer().set_global(q.QuantConfig.static()))
    with torch.no_grad():
        torch_norm = int8_reference(qm, XNNPACK_INTEGER_FAMILIES)(randn(4096, 256, seed=3))
    assert _off(got, torch_norm, step) > 0  # integer layers alone: torch's LayerNorm flips some ties ...
    assert (got - kernel).abs().max().item() == 0.0  # ... XNNPACK's on the reference's inputs does not
