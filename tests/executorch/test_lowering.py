"""Lowering to XNNPACK: placement per layer, nothing quantized left outside, parity, batch 1 and 8."""

from __future__ import annotations

import pytest
import torch

import pt2e_int8 as q
from tests.executorch._helpers import output_step, pte_delegates, pte_operators, reference

# (model, scheme): every op family the issue names, over the schemes that apply to it
CASES = [
    ("linear_relu", "static"),
    ("linear_relu", "dynamic"),
    ("linear_relu", "weight_only"),
    ("linear_clamp", "static"),
    ("conv_bn_relu", "qat"),
    ("attention", "static"),
    ("attention", "dynamic"),
]
IDS = [f"{m}-{s}" for m, s in CASES]


def _expected(row) -> str:
    """What placement must say for a coverage row of our XNNPACK lowering."""
    if not row.quantized or row.scheme.startswith("weight-only") or row.op == "matmul":
        return "float"  # weight-only and act x act matmul have no XNNPACK int8 kernel
    return "int8"


@pytest.mark.parametrize(("name", "scheme"), CASES, ids=IDS)
def test_placement_matches_graph(lowered, name, scheme):
    case = lowered(name, scheme)
    rows = q.coverage(case.qm).layers
    assert rows, "coverage found no layers"
    assert set(case.result.placement) == {r.name for r in rows}
    for row in rows:
        want = _expected(row)
        assert case.result.placement[row.name] == want, (row, case.result.detail[row.name])
        if want == "int8":
            kernel = "qd8" if scheme == "dynamic" else "qs8"
            assert kernel in case.result.detail[row.name], case.result.detail[row.name]
        elif row.op == "matmul" and row.quantized:
            assert "no int8 batch-matmul" in case.result.detail[row.name]


@pytest.mark.parametrize(("name", "scheme"), CASES, ids=IDS)
def test_nothing_quantized_outside_delegate(lowered, name, scheme):
    case = lowered(name, scheme)
    ops = pte_operators(case.result.path)
    assert not [o for o in ops if "quantized" in o], ops
    assert "XnnpackBackend" in pte_delegates(case.result.path)


@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("name", ["linear_relu", "linear_clamp", "conv_bn_relu"])
def test_single_layer_within_one_step(lowered, inputs, name, batch):
    case = lowered(name, "qat" if name == "conv_bn_relu" else "static")
    x = inputs(name, batch, seed=11)
    ref, out = reference(case.qm, x), case.program.run([x])[0]
    steps = q.max_error_in_steps(ref, out, output_step(case.qm))
    assert out.shape == ref.shape
    assert steps <= 1.0, f"{name} batch {batch}: {steps:.2f} output steps off the converted graph"


@pytest.mark.parametrize("batch", [1, 8])
def test_transformer_block_within_two_steps(lowered, inputs, batch):
    case = lowered("attention", "static")
    x = inputs("attention", batch, seed=12)
    ref, out = reference(case.qm, x), case.program.run([x])[0]
    steps = q.max_error_in_steps(ref, out, output_step(case.qm))
    db = q.sqnr(ref, out)
    assert steps <= 2.0, f"{steps:.2f} output steps"
    assert db >= 35, f"SQNR {db:.1f} dB against the converted graph"


@pytest.mark.parametrize(("name", "scheme", "min_db"), [
    ("linear_relu", "dynamic", 30),  # XNNPACK qd8 picks qparams per row, the graph per tensor
    ("linear_relu", "weight_only", 60),  # float kernel on the dequantized weights
    ("attention", "dynamic", 30),
])
@pytest.mark.parametrize("batch", [1, 8])
def test_dynamic_and_weight_only_sqnr(lowered, inputs, name, scheme, min_db, batch):
    case = lowered(name, scheme)
    x = inputs(name, batch, seed=13)
    ref, out = reference(case.qm, x), case.program.run([x])[0]
    db = q.sqnr(ref, out)
    assert db >= min_db, f"{name}/{scheme} batch {batch}: SQNR {db:.1f} dB"


def test_digits_mlp(digits):
    model, qm, xte, yte, result, program = digits
    assert result.placement == {"fc1": "int8", "fc2": "int8", "head": "int8"}, result.detail
    out = torch.cat([program.run([xb])[0] for xb in xte.split(64)])
    ref = reference(qm, xte)
    steps = q.max_error_in_steps(ref, out, output_step(qm))
    assert steps <= 2.0, f"{steps:.2f} output steps"
    acc_pte = (out.argmax(-1) == yte).float().mean().item()
    acc_ref = (ref.argmax(-1) == yte).float().mean().item()
    assert acc_pte > 0.85, f"int8 .pte accuracy {acc_pte:.3f}"
    assert abs(acc_pte - acc_ref) <= 0.01, (acc_pte, acc_ref)


def test_int8_file_is_small(lowered, pte_dir):
    from backends.executorch import export_pte

    case = lowered("linear_heavy", "static")
    float_pte = export_pte(case.float_model, (case.example,), pte_dir / "linear_heavy-float.pte")
    ratio = case.result.size_bytes / float_pte.size_bytes
    assert ratio <= 0.3, f"int8 .pte is {ratio:.2f}x the float .pte"
    assert float_pte.placement and set(float_pte.placement.values()) == {"float"}


def test_same_inputs_give_identical_bytes(lowered, pte_dir):
    from backends.executorch import export_pte

    case = lowered("linear_relu", "static")
    again = export_pte(case.qm, (case.example,), pte_dir / "again.pte", dynamic_shapes="batch")
    assert again.path.read_bytes() == case.result.path.read_bytes()


def test_export_leaves_the_model_alone(lowered):
    case = lowered("linear_relu", "static")
    x = torch.randn(3, 16)
    before = [n.format_node() for n in case.qm.graph.nodes]
    from backends.executorch.lower import lower_program

    y = reference(case.qm, x)
    lower_program(case.qm, (case.example,))
    assert [n.format_node() for n in case.qm.graph.nodes] == before
    assert torch.equal(reference(case.qm, x), y)


def test_unknown_delegate_is_a_user_error(lowered, pte_dir):
    from backends.executorch import export_pte
    from pt2e_int8.errors import UserInputError

    case = lowered("linear_relu", "static")
    with pytest.raises(UserInputError, match="delegate='gpu'"):
        export_pte(case.qm, (case.example,), pte_dir / "gpu.pte", delegate="gpu")
    assert not (pte_dir / "gpu.pte").exists()


def test_partitioner_reasons_are_collected():
    from backends.executorch.lower import lower_program
    from tests.executorch._models import LinearThenMean

    lowered = lower_program(LinearThenMean().eval(), (torch.randn(4, 6, 16),))
    reasons = list(lowered.rejections.values())
    assert any("4D" in r for r in reasons), reasons
    placement, detail = lowered.placement()
    assert placement == {"fc": "float"} and "fully_connected f32" in detail["fc"]


def test_static_shapes_keep_a_block_in_one_delegate(pte_dir):
    """With static shapes, LayerNorm and the attention matmuls lower into XNNPACK too."""
    import warnings

    from backends.executorch import export_pte
    from backends.executorch.runtime import load_pte
    from tests.executorch._models import AttentionBlock

    torch.manual_seed(0)
    model, x = AttentionBlock().eval(), torch.randn(1, 6, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qm = q.quantize(model, (x,), calibration=[(torch.randn(1, 6, 32),) for _ in range(4)],
                        dynamic_shapes=None)
        result = export_pte(qm, (x,), pte_dir / "block-static-shapes.pte", dynamic_shapes=None)
    assert pte_delegates(result.path) == ["XnnpackBackend"], pte_operators(result.path)
    xt = torch.randn(1, 6, 32)
    ref, out = reference(qm, xt), load_pte(result.path).run([xt])[0]
    steps = q.max_error_in_steps(ref, out, output_step(qm))
    assert steps <= 2.0 and q.sqnr(ref, out) >= 35, (steps, q.sqnr(ref, out))
    assert result.placement["qkv"] == "int8" and result.placement["matmul"] == "float"


def test_conv_runs_up_to_max_batch_from_a_batch_1_example(tmp_path):
    """Traced at batch 2, ExecuTorch 1.5.1 sized XNNPACK conv buffers for ~15: batch 16+ failed."""
    import torch.nn.functional as F
    from torch import nn

    from backends.executorch import export_pte
    from backends.executorch.runtime import load_pte

    class Conv(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)

        def forward(self, x):
            return F.relu(self.conv(x.reshape(-1, 1, 8, 8))).flatten(1)

    model = Conv().eval()
    res = export_pte(model, (torch.randn(1, 64),), tmp_path / "conv.pte", max_batch=64)
    program = load_pte(res.path)
    for batch in (1, 16, 64):
        x = torch.randn(batch, 64)
        (out,) = program.run([x])
        assert torch.allclose(out, model(x), atol=1e-4), f"batch {batch}"
