"""Real data (scikit-learn's digits): accuracy of PTQ and QAT against the float model."""

import copy

import pytest
import torch
import torch.nn.functional as F

import pt2e_int8 as q
from pt2e_int8.app.digits import DigitsCNN
from tests.core._helpers import accuracy, train


def test_ptq_static_within_1_5_points(digits, digits_mlp):
    xtr, _, xte, yte = digits
    float_acc = accuracy(digits_mlp, xte, yte)
    qm = q.quantize(copy.deepcopy(digits_mlp), (xtr[:32],), calibration=list(xtr[:512].split(64)))
    int8_acc = accuracy(qm, xte, yte)  # 450 held-out samples, one batch: dynamic batch dim
    assert float_acc > 90, f"float model undertrained: {float_acc:.1f}%"
    assert int8_acc >= float_acc - 1.5, f"PTQ static {int8_acc:.2f}% vs float {float_acc:.2f}%"


@pytest.mark.parametrize("cfg", [q.QuantConfig.dynamic(), q.QuantConfig.weight_only()], ids=["dynamic", "weight-only"])
def test_ptq_dynamic_and_weight_only(digits, digits_mlp, cfg):
    xtr, _, xte, yte = digits
    qm = q.quantize(copy.deepcopy(digits_mlp), (xtr[:32],), quantizer=q.Int8Quantizer().set_global(cfg))
    assert accuracy(qm, xte, yte) >= accuracy(digits_mlp, xte, yte) - 1.0


def _qat_finetune(pm, x, y, epochs, lr=1e-3, schedule=None):
    g = torch.Generator().manual_seed(1)
    opt = torch.optim.Adam(pm.parameters(), lr=lr)
    pm.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 32):
            idx = perm[i : i + 32]
            loss = F.cross_entropy(pm(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if schedule is not None:
                schedule.step()
    return q.convert(pm)


def test_qat_within_0_5_points(digits, digits_mlp):
    xtr, ytr, xte, yte = digits
    float_acc = accuracy(digits_mlp, xte, yte)
    pm = q.prepare_qat(copy.deepcopy(digits_mlp), (xtr[:32],))
    qm = _qat_finetune(pm, xtr, ytr, epochs=3)
    int8_acc = accuracy(qm, xte, yte)
    assert int8_acc >= float_acc - 0.5, f"QAT {int8_acc:.2f}% vs float {float_acc:.2f}%"
    assert all(r.quantized for r in q.coverage(qm).layers)


def test_conv_bn_relu_qat_folds_batch_norm(digits):
    xtr, ytr, xte, yte = digits
    torch.manual_seed(0)
    model = train(DigitsCNN(width=8), xtr, ytr, epochs=2)
    float_acc = accuracy(model.eval(), xte, yte)
    pm = q.prepare_qat(model, (xtr[:32],))
    sched = q.QATSchedule(pm, freeze_bn_after=25, freeze_observers_after=35)
    qm = _qat_finetune(pm, xtr, ytr, epochs=1, schedule=sched)
    targets = [n.target for n in qm.graph.nodes if n.op == "call_function"]
    assert torch.ops.aten.batch_norm.default not in targets, "batch-norm not folded"
    rows = q.coverage(qm).layers
    assert [r.op for r in rows if r.quantized] == ["conv", "conv", "linear"]
    int8_acc = accuracy(qm, xte, yte)
    assert int8_acc >= float_acc - 1.0, f"CNN QAT {int8_acc:.2f}% vs float {float_acc:.2f}%"
