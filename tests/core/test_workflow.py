"""quantize / prepare_qat / convert end to end: no layer left float, dynamic batch, clear errors."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pt2e_int8 as q
from tests.core._helpers import int8_weight_constants


class Small(nn.Module):
    """The case torchao's eager int8 config skips: layers with <= 16 input features."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(16, 8), nn.Linear(8, 1)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(1, 1)

    def forward(self, x):
        return self.fc(x)


def _train(pm, x, lr: float, steps: int = 3):
    """A few SGD steps on a QAT-prepared model (the loss only has to move the weights)."""
    opt = torch.optim.SGD(pm.parameters(), lr=lr)
    for _ in range(steps):
        loss = pm(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def _quantize(model, x, scheme):
    if scheme == "qat":
        pm = q.prepare_qat(model, (x,))
        _train(pm, x, lr=1e-3)
        return q.convert(pm)
    cfg = {"static": q.QuantConfig.static(), "dynamic": q.QuantConfig.dynamic()}[scheme]
    return q.quantize(model, (x,), calibration=[(x,)], quantizer=q.Int8Quantizer().set_global(cfg))


@pytest.mark.parametrize("scheme", ["static", "dynamic", "qat"])
@pytest.mark.parametrize(
    ("model_cls", "in_features", "weight_shapes"),
    [(Small, 16, [(8, 16), (1, 8)]), (Tiny, 1, [(1, 1)])],
    ids=["16-8-1", "1-1"],
)
def test_small_layers_are_fully_quantized(scheme, model_cls, in_features, weight_shapes):
    torch.manual_seed(0)
    x = torch.randn(32, in_features)
    qm = _quantize(model_cls(), x, scheme)
    weights = int8_weight_constants(qm)
    assert sorted(tuple(w.shape) for w in weights.values()) == sorted(weight_shapes)
    rows = q.coverage(qm).layers
    assert rows and all(r.quantized for r in rows), str(q.coverage(qm))


@pytest.mark.parametrize("cfg", [q.QuantConfig.dynamic(), q.QuantConfig.weight_only()], ids=["dynamic", "weight-only"])
def test_no_calibration_needed_for_dynamic_and_weight_only(cfg):
    torch.manual_seed(0)
    model = Small().eval()
    x = torch.randn(64, 16)
    qm = q.quantize(model, (x[:8],), quantizer=q.Int8Quantizer().set_global(cfg))
    db = q.sqnr(model(x), qm(x))
    assert db > 30, f"{db:.1f} dB: weights need one observed pass even without calibration"


def test_calibrate_at_32_evaluate_at_450():
    torch.manual_seed(0)
    model = Small().eval()
    x = torch.randn(128 + 450, 16)
    calibration, held_out = x[:128].split(32), x[128:]
    qm = q.quantize(model, (calibration[0],), calibration=calibration)
    out = qm(held_out)
    assert out.shape == (450, 1)
    db = q.sqnr(model(held_out), out)
    assert db > 20, f"{db:.1f} dB"


def test_batch_one_example_still_exports_a_dynamic_batch():
    torch.manual_seed(0)
    model = Small().eval()
    x = torch.randn(8, 16)
    qm = q.quantize(model, (x[:1],), calibration=[(x,)])
    assert qm(x).shape == (8, 1)


class FixedBatch(nn.Module):
    def forward(self, x):
        return x + torch.ones(4, 3)  # broadcasting pins the batch to 4


def test_model_that_specializes_batch_falls_back_with_warning():
    with pytest.warns(UserWarning, match="could not be exported.*static batch of 4"):
        qm = q.quantize(FixedBatch(), (torch.randn(4, 3),), quantizer=q.Int8Quantizer().set_global(
            q.QuantConfig.dynamic()))
    assert qm(torch.randn(4, 3)).shape == (4, 3)


def test_user_dynamic_shapes_are_used_as_given():
    x = torch.randn(4, 16)
    qm = q.quantize(Small().eval(), (x,), calibration=[(x,)], dynamic_shapes=None)
    with pytest.raises(Exception):  # noqa: B017  (static export rejects another batch size)
        qm(torch.randn(5, 16))


# -- errors -------------------------------------------------------------------------
def test_static_without_calibration_names_the_fix():
    with pytest.raises(q.CalibrationError, match="calibration="):
        q.quantize(Small(), (torch.randn(2, 16),))


def test_empty_calibration():
    with pytest.raises(q.CalibrationError, match="empty"):
        q.quantize(Small(), (torch.randn(2, 16),), calibration=[])


@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_calibration_names_the_batch(bad):
    batches = [torch.randn(4, 16) for _ in range(3)]
    batches[2][1, 3] = bad
    with pytest.raises(q.CalibrationError, match="batch 2 has NaN or Inf"):
        q.quantize(Small(), (batches[0],), calibration=[(b,) for b in batches])


def test_calibration_batch_of_wrong_shape():
    with pytest.raises(q.CalibrationError, match=r"batch 1 \(Tensor\[4, 15\]"):
        q.quantize(Small(), (torch.randn(4, 16),), calibration=[torch.randn(4, 16), torch.randn(4, 15)])


def test_example_inputs_that_do_not_fit_give_the_signature():
    with pytest.raises(q.ExampleInputsError, match=r"Tensor\[2, 5\].*Small.forward\(x\)"):
        q.quantize(Small(), (torch.randn(2, 5),), calibration=[])


class Branchy(nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x
        return -x


def test_untraceable_model_names_construct_and_fix():
    with pytest.raises(q.ExportError) as info:
        q.quantize(Branchy(), (torch.randn(2, 3),), quantizer=q.Int8Quantizer().set_global(q.QuantConfig.dynamic()))
    msg = str(info.value)
    assert "test_workflow.py" in msg and "if x.sum() > 0" in msg
    assert "torch.cond" in msg


def test_progress_is_shown_when_asked(capsys):
    x = torch.randn(4, 16)
    q.quantize(Small(), (x,), calibration=[(x,)] * 3, progress=True)
    assert "calibrating 3/3 batches" in capsys.readouterr().err


# -- QAT helpers ----------------------------------------------------------------------
class ConvBnDrop(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.drop = nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5)
        self.fc = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        return self.fc(self.drop(torch.flatten(F.relu(self.bn(self.conv(x))), 1)))


def _bn_training_flags(gm):
    return [n.args[5] for n in gm.graph.nodes if n.target == torch.ops.aten.batch_norm.default]


def test_train_eval_switch_dropout_and_batch_norm():
    torch.manual_seed(0)
    x = torch.randn(8, 1, 8, 8)
    pm = q.prepare_qat(ConvBnDrop(), (x,))
    assert _bn_training_flags(pm) == [True]
    pm.eval()
    assert _bn_training_flags(pm) == [False]
    assert torch.equal(pm(x), pm(x)), "dropout still active in eval"
    pm.train()
    assert _bn_training_flags(pm) == [True]
    assert not torch.equal(pm(x), pm(x)), "dropout inactive in train"


def test_qat_calibration_runs_in_eval_mode_and_keeps_train_mode():
    """Calibrating with dropout on gave random, too-wide ranges (static MiniLM's QAT start 0.990 instead
    of its PTQ's 0.995): calibrate sees what inference sees, twice the same, and hands back a training model."""
    torch.manual_seed(0)
    x = torch.randn(8, 1, 8, 8)
    pm = q.prepare_qat(ConvBnDrop(), (x,))
    running = pm.get_buffer("bn.running_mean").clone()

    def fc_input_range():
        return [(m.activation_post_process.min_val.tolist(), m.activation_post_process.max_val.tolist())
                for m in pm.modules() if hasattr(m, "activation_post_process")]

    q.calibrate(pm, [x])
    first = fc_input_range()
    for m in pm.modules():
        if hasattr(m, "activation_post_process"):
            m.activation_post_process.reset_min_max_vals()
    q.calibrate(pm, [x])
    assert fc_input_range() == first, "calibration ran with dropout on"
    assert torch.equal(running, pm.get_buffer("bn.running_mean")), "calibration updated batch-norm statistics"
    assert _bn_training_flags(pm) == [True] and pm.training
    assert not torch.equal(pm(x), pm(x)), "calibrate left the model in eval mode"


def test_freeze_bn_stats_survives_train():
    x = torch.randn(8, 1, 8, 8)
    pm = q.prepare_qat(ConvBnDrop(), (x,))
    q.freeze_bn_stats(pm)
    pm.train()
    assert _bn_training_flags(pm) == [False]
    running = pm.get_buffer("bn.running_mean").clone()
    pm(x)
    assert torch.equal(running, pm.get_buffer("bn.running_mean"))


def test_qat_schedule_freezes_observers():
    torch.manual_seed(0)
    x = torch.randn(8, 1, 8, 8)
    pm = q.prepare_qat(ConvBnDrop(), (x,))
    sched = q.QATSchedule(pm, freeze_observers_after=2, freeze_bn_after=1)
    fq = [m for m in pm.modules() if hasattr(m, "observer_enabled")]
    for _ in range(2):
        pm(x)
        sched.step()
    assert fq and all(int(m.observer_enabled[0]) == 0 for m in fq)
    scales = [m.scale.clone() for m in fq]
    pm(x * 10)
    assert all(torch.equal(a, m.scale) for a, m in zip(scales, fq, strict=True))


def test_convert_puts_model_in_eval_and_folds_batch_norm():
    torch.manual_seed(0)
    x = torch.randn(8, 1, 8, 8)
    pm = q.prepare_qat(ConvBnDrop(), (x,))
    pm(x)  # one training step's forward: fake-quant ranges observed
    qm = q.convert(pm)
    targets = {n.target for n in qm.graph.nodes if n.op == "call_function"}
    assert torch.ops.aten.batch_norm.default not in targets
    assert torch.equal(qm(x), qm(x))
    assert all(r.quantized for r in q.coverage(qm).layers)


def test_fast_conv_bn_fold_matches_torchao_convert():
    """Our convert skips conv kinds the graph lacks; the converted graph must be the same."""
    import copy

    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    from pt2e_int8.bias_grid import snap_bias_to_int32_grid
    from pt2e_int8.compat.torchao import conv_bn_fold_patched, convert_with_trained_qparams

    torch.manual_seed(0)
    x = torch.randn(8, 1, 8, 8)
    pm = q.prepare_qat(ConvBnDrop(), (x,))
    pm(x)
    q.move_to_eval(pm)
    reference_pm = copy.deepcopy(pm)
    ours = q.convert(pm)
    assert not conv_bn_fold_patched()  # the wrapper is undone after convert
    with convert_with_trained_qparams(reference_pm):  # see the next test
        reference = convert_pt2e(reference_pm)
    snap_bias_to_int32_grid(reference)  # convert's own last step, after the fold
    assert torch.equal(ours(x), reference(x))
    assert [n.target for n in ours.graph.nodes] == [n.target for n in reference.graph.nodes]


def _weight_operands(gm, x) -> list[torch.Tensor]:
    """The float weight each linear computes with (after its fake-quant or dequantize)."""
    linears = {n.args[1] for n in gm.graph.nodes if n.target is torch.ops.aten.linear.default}
    seen = []

    class Capture(torch.fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            if n in linears:
                seen.append(out.detach())
            return out

    with torch.no_grad():
        Capture(gm).run(x)
    return seen


def test_convert_rounds_weights_on_the_grid_qat_trained_them_on():
    """torchao's QAT fake-quant (FusedMovingAvgObsFakeQuantize) rounds weights with ATen's
    qparams, which for the symmetric [-127, 127] range divide by 126.5, while convert_pt2e asks
    its observer, which divides by 127: every trained weight was rounded anew at convert."""
    torch.manual_seed(0)
    x = torch.randn(16, 32)
    pm = q.prepare_qat(nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4)), (x,))
    q.calibrate(pm, [(x,), (torch.randn(16, 32),)], progress=False)
    q.freeze_observers(pm)
    _train(pm, x, lr=1e-2)
    q.move_to_eval(pm)
    trained = _weight_operands(pm, x)
    qm = q.convert(pm)
    converted = _weight_operands(qm, x)
    assert len(trained) == len(converted) == 2
    for a, b in zip(trained, converted, strict=True):
        assert torch.equal(a, b), f"{int((a != b).sum())} of {a.numel()} weights rounded differently"
    assert not any("calculate_qparams" in vars(m) for m in pm.modules())  # the override is undone


def test_convert_takes_the_grid_from_the_statistics_not_stale_buffers():
    """After sync_observers merges statistics over ranks, each rank's fake-quant buffers still hold
    its own last qparams: convert must derive them from the merged statistics so ranks agree."""
    from torchao.quantization.pt2e.fake_quantize import FusedMovingAvgObsFakeQuantize

    from pt2e_int8.compat.torchao import kernel_qparams

    torch.manual_seed(0)
    x = torch.randn(16, 32)
    pm = q.prepare_qat(nn.Sequential(nn.Linear(32, 4)), (x,))
    q.calibrate(pm, [(x,)], progress=False)
    fq = next(m for m in pm.modules() if isinstance(m, FusedMovingAvgObsFakeQuantize) and m.is_per_channel)
    stale = fq.scale.clone()
    with torch.no_grad():  # as if another rank had seen weights twice as wide
        fq.activation_post_process.min_val.mul_(2)
        fq.activation_post_process.max_val.mul_(2)
    merged, _ = kernel_qparams(fq)
    assert torch.allclose(merged, 2 * stale)
    qm = q.convert(pm)
    dq = next(n for n in qm.graph.nodes if n.target is torch.ops.quantized_decomposed.dequantize_per_channel.default)
    assert torch.equal(getattr(qm, dq.args[1].target), merged)
