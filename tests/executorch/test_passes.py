"""Each lowering pass: a graph where it fires and one where it must not (counts + numerics)."""

from __future__ import annotations

import collections
import copy
import warnings

import pytest
import torch

import pt2e_int8 as q
from backends.executorch.passes import (
    DecomposeLayerNormPass,
    DecomposeQuantOpsPass,
    ExpandPerTensorWeightPass,
    FoldBiasDequantPass,
    FoldWeightOnlyDequantPass,
    PassManager,
    ReplaceSplitWithSlicesPass,
)
from pt2e_int8.capture import export_model
from pt2e_int8.errors import LoweringError
from pt2e_int8.qdq import QDQ_OPS
from tests.executorch import _models as models

aten = torch.ops.aten
qd = torch.ops.quantized_decomposed


def _quantize(model, shape, cfg):
    torch.manual_seed(0)
    x = torch.randn(4, *shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qm = q.quantize(model.eval(), (x,), calibration=[(torch.randn(8, *shape),) for _ in range(3)],
                        quantizer=q.Int8Quantizer().set_global(cfg))
    return qm, torch.randn(5, *shape)


@pytest.fixture(scope="module")
def attention_gm():
    return _quantize(models.AttentionBlock(), (6, 32), q.QuantConfig.static())[0]


def _counts(gm) -> collections.Counter:
    return collections.Counter(n.target for n in gm.graph.nodes if n.op == "call_function")


def _int32_dq(gm) -> int:
    return sum(1 for n in gm.graph.nodes if n.op == "call_function" and n.target in QDQ_OPS
               and n.args[-1] == torch.int32)


def _apply(pass_, gm):
    after = copy.deepcopy(gm)
    result = PassManager([pass_]).run(after)
    return result.graph_module, result.modified


def _same(before, after, x, atol=0.0):
    with torch.no_grad():
        a, b = before(x), after(x)
    assert torch.allclose(a, b, atol=atol, rtol=0), f"max diff {(a - b).abs().max().item()}"


def test_fold_bias_fires_on_int32_bias():
    gm, x = _quantize(models.LinearRelu(), (16,), q.QuantConfig.static(quantize_bias=True))
    assert _int32_dq(gm) == 1
    after, modified = _apply(FoldBiasDequantPass(), gm)
    assert modified and _int32_dq(after) == 0
    assert _counts(after)[qd.dequantize_per_channel.default] == _counts(gm)[qd.dequantize_per_channel.default] - 1
    _same(gm, after, x, atol=1e-6)


def test_fold_bias_leaves_float_bias():
    gm, x = _quantize(models.LinearRelu(), (16,), q.QuantConfig.dynamic())
    after, modified = _apply(FoldBiasDequantPass(), gm)
    assert not modified and _counts(after) == _counts(gm)


def test_fold_weight_only_fires():
    gm, x = _quantize(models.LinearRelu(), (16,), q.QuantConfig.weight_only())
    assert _counts(gm)[qd.dequantize_per_channel.default] == 1
    after, modified = _apply(FoldWeightOnlyDequantPass(), gm)
    assert modified and _counts(after)[qd.dequantize_per_channel.default] == 0
    _same(gm, after, x)


def test_fold_weight_only_leaves_int8_activations():
    gm, _ = _quantize(models.LinearRelu(), (16,), q.QuantConfig.static())
    after, modified = _apply(FoldWeightOnlyDequantPass(), gm)
    assert not modified and _counts(after) == _counts(gm)


def test_expand_per_tensor_weight_fires_on_dynamic():
    gm, x = _quantize(models.LinearRelu(), (16,), q.QuantConfig.dynamic(per_channel=False))
    before = _counts(gm)
    after, modified = _apply(ExpandPerTensorWeightPass(), gm)
    now = _counts(after)
    assert modified
    assert now[qd.dequantize_per_channel.default] == before[qd.dequantize_per_channel.default] + 1
    assert sum(now[t] for t in QDQ_OPS) == sum(before[t] for t in QDQ_OPS)
    _same(gm, after, x)


def test_expand_per_tensor_weight_leaves_static():
    gm, _ = _quantize(models.LinearRelu(), (16,), q.QuantConfig.static(per_channel=False))
    after, modified = _apply(ExpandPerTensorWeightPass(), gm)
    assert not modified and _counts(after) == _counts(gm)


def test_split_to_slices_fires_on_feature_chunk(attention_gm):
    gm = attention_gm
    x = torch.randn(3, 6, 32)
    assert _counts(gm)[aten.chunk.default] == 1
    after, modified = _apply(ReplaceSplitWithSlicesPass(), gm)
    assert modified
    assert _counts(after)[aten.chunk.default] == 0 and _counts(after)[aten.slice.Tensor] == 3
    _same(gm, after, x)


def test_split_to_slices_leaves_batch_chunk():
    gm = export_model(models.SplitBatch(), (torch.randn(4, 3),), dynamic_shapes=None).module()
    after, modified = _apply(ReplaceSplitWithSlicesPass(), gm)
    assert not modified and _counts(after) == _counts(gm)


def test_decompose_layer_norm_fires_on_last_dim(attention_gm):
    gm = attention_gm
    x = torch.randn(3, 6, 32)
    before = _counts(gm)
    assert before[aten.layer_norm.default] == 2
    after, modified = _apply(DecomposeLayerNormPass(), gm)
    now = _counts(after)
    assert modified and now[aten.layer_norm.default] == 0
    assert now[aten.linear.default] == before[aten.linear.default] + 4  # mean and variance, twice
    assert now[aten.rsqrt.default] == 2
    _same(gm, after, x, atol=0.02)  # float reassociation may move a value across a rounding edge
    with torch.no_grad():
        assert q.sqnr(gm(x), after(x)) > 40


def test_decompose_layer_norm_leaves_two_dim_norm():
    gm = export_model(models.TwoDimNorm(), (torch.randn(4, 6, 32),), dynamic_shapes=None).module()
    after, modified = _apply(DecomposeLayerNormPass(), gm)
    assert not modified and _counts(after) == _counts(gm)


def test_decomposed_layer_norm_is_exact_in_float():
    norm = torch.nn.LayerNorm(32).eval()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(4, 6, 32) * 3 + 1
    gm = export_model(norm, (x,), dynamic_shapes=None).module()
    after, modified = _apply(DecomposeLayerNormPass(), gm)
    assert modified
    _same(gm, after, x, atol=1e-5)


@pytest.mark.parametrize("traced", ["static", "dynamic"])
def test_attention_lowers_into_one_delegate(attention_gm, traced, tmp_path):
    """to_edge decomposes each 4-D attention matmul into a same-shape expand_copy per operand,
    which XNNPACK has no config for: ExecuTorch's RemoveNoopExpandCopyPass must drop them, or
    every matmul cuts the delegate (MiniLM: 14 delegate calls instead of 2, 24 copies), also
    when the graph was quantized with a dynamic batch (the default)."""
    from backends.executorch import export_pte
    from backends.executorch.runtime import load_pte

    gm = attention_gm
    if traced == "static":
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gm = q.quantize(models.AttentionBlock().eval(), (torch.randn(1, 6, 32),), dynamic_shapes=None,
                            calibration=[(torch.randn(1, 6, 32),) for _ in range(3)])
    assert _counts(gm)[aten.matmul.default] == 2
    x = torch.randn(1, 6, 32)
    res = export_pte(gm, (x,), tmp_path / "attention.pte", dynamic_shapes=None)
    assert res.shapes == "static batch 1", res.shapes
    assert res.delegate_calls == 1 and res.outside_delegate == [], res.outside_delegate
    assert q.sqnr(gm(x), load_pte(res.path).run([x])[0]) >= 30


@pytest.mark.parametrize("scheme", ["static", "dynamic"])
def test_decompose_quant_ops_fires(scheme):
    gm, x = _quantize(models.LinearRelu(), (16,), getattr(q.QuantConfig, scheme)())
    assert sum(_counts(gm)[t] for t in QDQ_OPS) > 0
    after, modified = _apply(DecomposeQuantOpsPass(), gm)
    assert modified and sum(_counts(after)[t] for t in QDQ_OPS) == 0
    _same(gm, after, x)


def test_decompose_quant_ops_only_named_nodes():
    gm, _ = _quantize(models.LinearRelu(), (16,), q.QuantConfig.static())
    after, modified = _apply(DecomposeQuantOpsPass(only=[]), gm)
    assert not modified and _counts(after) == _counts(gm)
    first_q = next(n.name for n in gm.graph.nodes if n.op == "call_function" and n.target in QDQ_OPS)
    after, modified = _apply(DecomposeQuantOpsPass(only=[first_q]), gm)
    assert modified
    assert sum(_counts(after)[t] for t in QDQ_OPS) == sum(_counts(gm)[t] for t in QDQ_OPS) - 1


def test_pass_manager_names_the_failing_pass():
    class BrokenPass(FoldBiasDequantPass):
        def call(self, graph_module):
            raise RuntimeError("boom")

    gm, _ = _quantize(models.LinearRelu(), (16,), q.QuantConfig.static())
    with pytest.raises(LoweringError, match="BrokenPass.*boom") as info:
        PassManager([BrokenPass()]).run(gm)
    assert isinstance(info.value.__cause__, RuntimeError)


class _ClassToken(torch.nn.Module):
    """A classifier reading the last position (x[:, -1]); the ids are integer and must stay."""

    def __init__(self):
        super().__init__()
        self.fc, self.head = torch.nn.Linear(8, 8), torch.nn.Linear(8, 3)

    def forward(self, x, ids):
        return self.head(self.fc(x)[:, -1]) + ids[:, -1].float()[:, None]


def test_select_to_slice_fires_on_a_float_select_and_leaves_integers():
    from backends.executorch.passes import ReplaceSelectWithSlicePass

    torch.manual_seed(0)
    args = (torch.randn(4, 5, 8), torch.randint(0, 9, (4, 6)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qm = q.quantize(_ClassToken().eval(), args, calibration=[args])
    before = _counts(qm)
    assert before[aten.select.int] == 2  # x[:, 0] on floats, ids[:, -1] on integers
    after, fired = _apply(ReplaceSelectWithSlicePass(), qm)
    counts = _counts(after)
    assert fired and counts[aten.select.int] == before[aten.select.int] - 1
    assert counts[aten.view.default] == before[aten.view.default] + 1
    x = (torch.randn(3, 5, 8), torch.randint(0, 9, (3, 6)))
    with torch.no_grad():
        assert torch.equal(qm(*x), after(*x))


def test_select_to_slice_lowers_into_one_delegate(tmp_path):
    from backends.executorch import export_pte

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8))
    x = torch.randn(1, 5, 8)

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.head = model, torch.nn.Linear(8, 3)

        def forward(self, x):
            return self.head(self.body(x)[:, 0])

    res = export_pte(Head().eval(), (x,), tmp_path / "head.pte", dynamic_shapes=None)
    assert res.delegate_calls == 1 and res.outside_delegate == [], res.outside_delegate


class _FlattenHead(torch.nn.Module):
    """A CNN's flatten before its classifier (batch kept), and one that merges the batch."""

    def __init__(self, merge_batch: bool = False):
        super().__init__()
        self.conv, self.fc, self.merge_batch = torch.nn.Conv2d(1, 4, 3), torch.nn.Linear(4 * 6 * 6, 3), merge_batch

    def forward(self, x):
        y = torch.relu(self.conv(x))
        if self.merge_batch:
            return torch.flatten(y).sum()[None] + 0 * self.fc.bias.sum()
        return self.fc(torch.flatten(y, 1))


def test_symbolic_reshape_fires_on_a_batch_keeping_flatten_and_leaves_a_batch_merging_one():
    from backends.executorch.passes import ReplaceSymbolicReshapePass

    torch.manual_seed(0)
    x = torch.randn(2, 1, 8, 8)
    keep = q.quantize(_FlattenHead().eval(), (x,), calibration=[(x,)])
    after, fired = _apply(ReplaceSymbolicReshapePass(), keep)
    assert fired
    counts = _counts(after)
    assert counts[aten.flatten.using_ints] == 0 and counts[aten.view.default] == _counts(keep)[aten.view.default] + 1
    views = [n.args[1] for n in after.graph.nodes if n.target == aten.view.default]
    assert [-1, 144] in views, views
    with torch.no_grad():
        assert torch.equal(keep(x), after(x))
    merge = q.quantize(_FlattenHead(merge_batch=True).eval(), (x,), calibration=[(x,)])
    _, fired = _apply(ReplaceSymbolicReshapePass(), merge)
    assert not fired


def test_dynamic_batch_flatten_stays_in_one_delegate(tmp_path):
    from backends.executorch import export_pte

    torch.manual_seed(0)
    x = torch.randn(1, 1, 8, 8)
    qm = q.quantize(_FlattenHead().eval(), (x,), calibration=[(torch.randn(4, 1, 8, 8),)])
    res = export_pte(qm, (x,), tmp_path / "cnn.pte", dynamic_shapes="batch")
    assert res.shapes.startswith("dynamic batch"), res.shapes
    assert res.delegate_calls == 1 and res.outside_delegate == [], res.outside_delegate
