"""The .pte debugger: each layer's output read from the ExecuTorch runtime (intermediate-output
tap, through the XNNPACK delegate) against the PyTorch reference; a lowering fault pinned to its op."""

from __future__ import annotations

import operator

import pytest
import torch
from torch.fx.passes.infra.pass_base import PassBase, PassResult

import pt2e_int8 as q
from backends.executorch.debug import debug_pte
from backends.executorch.passes import xnnpack_passes
from backends.executorch.reference import xnnpack_reference
from pt2e_int8.ops import layer_operands


class ScaleWeightPass(PassBase):
    """A deliberately wrong lowering step: multiplies one layer's weight scales by `factor`.

    Fires on the layer node named `node`. Leaves every other node alone.
    """

    def __init__(self, node: str, factor: float) -> None:
        super().__init__()
        self.node, self.factor = node, factor

    def call(self, gm):
        for n in gm.graph.nodes:
            if n.name == self.node:
                scale = layer_operands(n).weight.args[1]
                setattr(gm, scale.target, operator.attrgetter(scale.target)(gm) * self.factor)
                return PassResult(gm, True)
        return PassResult(gm, False)


@pytest.fixture(scope="module")
def attention(lowered, inputs):
    case = lowered("attention", "static")
    batches = [(inputs("attention", 4, seed),) for seed in (7, 8)]
    return case, batches


def test_a_correct_pte_matches_the_reference_layer_by_layer(attention):
    case, batches = attention
    rep = debug_pte(case.qm, batches, pte=case.result.path)
    rows = q.coverage(case.qm).layers
    assert [r.name for r in rep.rows] == [r.name for r in rows]
    tapped = [r for r in rep.rows if r.max_error is not None]
    assert len(tapped) == len(rows), str(rep)
    assert rep.first_divergence is None, str(rep)
    assert all(r.error_steps <= 2 for r in tapped if r.error_steps is not None), str(rep)
    # The tapped program is the program under test: its outputs are the .pte's, bit for bit.
    assert any("max |diff| 0" in n for n in rep.notes), rep.notes


def test_a_corrupted_lowering_is_pinned_to_its_layer(lowered, inputs):
    """A lowering pass that rescales the middle layer's weights by 5 %: the .pte still runs and
    looks plausible, and the debugger names that layer, with the layer before it exact."""
    case = lowered("linear_heavy", "static")
    rows = q.coverage(case.qm).layers
    assert [r.name for r in rows] == ["net.0", "net.2", "net.4"]
    rep = debug_pte(case.qm, [(inputs("linear_heavy", 8, seed=5),)],
                    passes=[ScaleWeightPass(rows[1].node, 1.05), *xnnpack_passes()])
    by_name = {r.name: r for r in rep.rows}
    assert rep.first_divergence is not None and rep.first_divergence.name == "net.2", str(rep)
    assert by_name["net.0"].error_steps <= 1 and by_name["net.2"].error_steps > 2, str(rep)


def test_xnnpack_reference_is_what_the_dynamic_pte_computes(lowered, inputs):
    case = lowered("linear_heavy", "dynamic")
    x = inputs("linear_heavy", 8, seed=3)
    got = case.program.run([x])[0]
    with torch.no_grad():
        plain, emulated = case.qm(x), xnnpack_reference(case.qm)(x)
    assert q.sqnr(emulated, got) > 60, f"{q.sqnr(emulated, got):.1f} dB"
    assert q.sqnr(emulated, got) > q.sqnr(plain, got) + 15, f"{q.sqnr(plain, got):.1f} dB vs plain"


def test_xnnpack_reference_leaves_static_models_alone(attention):
    case, batches = attention
    emulated = xnnpack_reference(case.qm)
    with torch.no_grad():
        assert torch.equal(emulated(*batches[0]), case.qm(*batches[0]))


def test_pip_runtime_etdump_holds_no_per_op_values_inside_the_delegate(lowered, inputs, tmp_path):
    """Why debug_pte taps instead of reading ETDump: the pip runtime's ETDump times each XNNPACK
    kernel but records no value and no debug handle for it; the debug buffer holds only the
    delegate call's own inputs and outputs. If a release starts logging them, this fails, and the
    Inspector route (calculate_numeric_gap) becomes worth switching to."""
    import logging

    from executorch.devtools import Inspector, generate_etrecord
    from executorch.runtime import Runtime

    from backends.executorch.lower import lower_program

    case = lowered("linear_heavy", "static")
    x = inputs("linear_heavy", 4, seed=2)
    low = lower_program(case.qm, (x,))
    program = low.edge.to_executorch()
    pte, etdump, buffer, etrecord = (tmp_path / n for n in ("m.pte", "m.etdp", "debug.bin", "etrecord.bin"))
    pte.write_bytes(program.buffer)
    generate_etrecord(str(etrecord), low.edge, program)
    loaded = Runtime.get().load_program(str(pte), enable_etdump=True, debug_buffer_size=1 << 20)
    loaded.load_method("forward").execute([x])
    loaded.write_etdump_result_to_file(str(etdump), str(buffer))
    logging.disable(logging.WARNING)
    try:
        inspector = Inspector(etdump_path=str(etdump), etrecord=str(etrecord), debug_buffer_path=str(buffer))
    finally:
        logging.disable(logging.NOTSET)
    events = [e for block in inspector.event_blocks for e in block.events]
    kernels = [e for e in events if e.is_delegated_op]
    assert kernels, "ETDump recorded no XNNPACK kernel events at all"
    assert all(not e.debug_data and e.debug_handles is None for e in kernels), [e.name for e in kernels]
    call = next(e for e in events if e.name == "DELEGATE_CALL")
    assert [tuple(t.shape) for t in call.debug_data] == [tuple(x.shape), (4, 10)]  # its input and output only
