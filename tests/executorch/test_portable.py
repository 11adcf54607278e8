"""The portable target: no delegate, and the program still runs (q/dq as aten arithmetic)."""

from __future__ import annotations

import pytest

import pt2e_int8 as q
from tests.executorch._helpers import output_step, pte_delegates, pte_operators, reference


@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("name", ["linear_relu", "conv_bn_relu"])
def test_portable_static_matches(lowered, inputs, name, batch):
    case = lowered(name, "qat" if name == "conv_bn_relu" else "static", "portable")
    assert pte_delegates(case.result.path) == []
    assert not [o for o in pte_operators(case.result.path) if "quantized" in o]
    x = inputs(name, batch, seed=21)
    ref, out = reference(case.qm, x), case.program.run([x])[0]
    steps = q.max_error_in_steps(ref, out, output_step(case.qm))
    assert steps <= 1.0, f"{steps:.2f} output steps"
    assert set(case.result.placement.values()) == {"float"}


def test_portable_dynamic_runs(lowered, inputs):
    case = lowered("linear_relu", "dynamic", "portable")
    x = inputs("linear_relu", 8, seed=22)
    db = q.sqnr(reference(case.qm, x), case.program.run([x])[0])
    assert db >= 60, f"SQNR {db:.1f} dB (same arithmetic as the graph)"
