"""Sensitivity and auto_quantize on models where the answer is known, and the no-op on digits."""

import copy

import pytest
import torch
from torch import nn

import pt2e_int8 as q
from pt2e_int8.app.digits import DigitsCNN
from pt2e_int8.debug.auto import auto_quantize
from pt2e_int8.debug.calibrated import Calibrated
from pt2e_int8.debug.fast_eval import evaluation_model
from pt2e_int8.debug.metrics import output_cosine
from pt2e_int8.debug.plan import QuantPlan
from pt2e_int8.debug.sensitivity import Space, run_sensitivity, sensitivity
from tests.core._debug_models import outlier_block
from tests.core._helpers import accuracy, train


@pytest.fixture(scope="module")
def block():
    model, cal, held = outlier_block()
    return model, [(b,) for b in cal.split(16)], output_cosine(model, [(held,)])


@pytest.mark.parametrize("cfg", [q.QuantConfig.static(), q.QuantConfig.dynamic(),
                                 q.QuantConfig.static(per_channel=False, act_dtype=torch.uint8)],
                         ids=["static", "dynamic", "static-per-tensor-uint8"])
def test_evaluation_model_is_exact(block, cfg):
    model, calib, _ = block
    qm = q.quantize(model, calib[0], calibration=calib, quantizer=q.Int8Quantizer().set_global(cfg))
    fast = evaluation_model(copy.deepcopy(qm))
    x = torch.randn(40, 32)
    with torch.no_grad():
        assert torch.equal(qm(x), fast(x))
    kept = [n for n in fast.graph.nodes if n.op == "call_function" and "dequantize_per_tensor.default" in str(n.target)]
    assert not kept  # every static pair was fused


def test_sensitivity_ranks_the_outlier_layer_first(block):
    model, calib, metric = block
    rep = sensitivity(model, calib[0], calib, metric)
    assert rep.rows[0].unit == "fc2" and rep.rows[0].gain > 5 * max(abs(r.gain) for r in rep.rows if r.unit != "fc2")
    assert {(r.unit, r.choice) for r in rep.rows} == {(u, c) for u in ("fc1", "fc2", "head") for c in ("dynamic", "float")}
    assert rep.conversions == 6  # one per variant, from one calibration
    assert "fc2" in str(rep)


def test_auto_quantize_moves_only_the_outlier_layer_to_dynamic(block):
    model, calib, metric = block
    res = auto_quantize(model, calib[0], calib, metric, target=0.999)
    assert res.met and res.moved == {"fc2": "dynamic"}, res.message
    assert res.base_metric < 0.999 <= res.metric
    assert [r.scheme for r in q.coverage(res.model).layers] == [
        "static/per-channel", "dynamic/per-channel", "static/per-channel"]
    assert res.sensitivity.mode == "one_on" and res.sensitivity.rows[0].unit == "fc2"
    # The plan alone reproduces the model: quantize with it and get the same outputs.
    again = q.quantize(model, calib[0], calibration=calib, quantizer=res.plan.to_quantizer())
    x = torch.randn(8, 32)
    with torch.no_grad():
        assert torch.equal(again(x), res.model(x))
    assert res.plan.non_static() == {"fc2": "dynamic"} and res.plan.info["met"] is True


def test_float_only_choice(block):
    model, calib, metric = block
    res = auto_quantize(model, calib[0], calib, metric, target=0.999, choices=("float",))
    assert res.moved == {"fc2": "float"} and res.met


def test_max_drop_is_measured_from_the_float_model(block):
    model, calib, metric = block
    res = auto_quantize(model, calib[0], calib, metric, max_drop=0.001)
    assert res.target == pytest.approx(metric(model) - 0.001)
    assert res.met and "fc2" in res.moved


def test_unreachable_target_says_so(block):
    model, calib, metric = block
    res = auto_quantize(model, calib[0], calib, metric, target=1.5)
    assert not res.met and "not reachable" in res.message
    assert res.metric < 1.5


def test_needs_exactly_one_target(block):
    model, calib, metric = block
    with pytest.raises(q.ConfigError, match="exactly one"):
        auto_quantize(model, calib[0], calib, metric)
    with pytest.raises(q.ConfigError, match="exactly one"):
        auto_quantize(model, calib[0], calib, metric, target=0.9, max_drop=0.1)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_digits_search_is_a_no_op(digits, digits_mlp, kind):
    """Static int8 of the digits models is already within a point of float: nothing moves."""
    xtr, ytr, xte, yte = digits
    if kind == "mlp":
        model = digits_mlp
    else:
        torch.manual_seed(0)
        model = train(DigitsCNN(width=8), xtr, ytr, epochs=2).eval()
    metric = lambda m: accuracy(m, xte, yte) / 100  # noqa: E731
    res = auto_quantize(copy.deepcopy(model), (xtr[:32],), list(xtr[:512].split(64)), metric, max_drop=0.01)
    assert res.noop and "already meets the target" in res.message, res.message
    assert res.conversions == 1 and res.sensitivity is None
    assert res.plan.non_static() == {}


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q, self.k = nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, x):
        return torch.matmul(self.q(x), self.k(x).transpose(-1, -2))


class WithAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn, self.head = Attention(), nn.Linear(6, 2)

    def forward(self, x):
        return self.head(self.attn(x))


def test_moving_a_parent_module_keeps_its_children(block):
    """The two attention matmuls are one unit, `attn`; its q/k linears are units of their own that
    a set_module_name("attn", None) would also catch, so the plan pins them."""
    torch.manual_seed(0)
    model, x = WithAttention().eval(), torch.randn(4, 6, 8)
    quantizer = q.Int8Quantizer().set_global(q.QuantConfig.static())
    calibrated = Calibrated(model, (x,), [(x,)], quantizer)
    space = Space(calibrated, QuantPlan.from_quantizer(quantizer, calibrated.float_graph), lambda m: 0.0)
    assert set(space.units) == {"attn", "attn.q", "attn.k", "head"}
    assert not space.units["attn"].dynamic_kernel and space.units["attn.q"].dynamic_kernel
    plan = space.plan_with({"attn": "float"})
    assert plan.modules == {"attn": None, "attn.q": q.QuantConfig.static(), "attn.k": q.QuantConfig.static()}
    schemes = {r.name: r.scheme for r in q.coverage(calibrated.convert(plan.to_quantizer())).layers}
    assert schemes["attn.q"] == schemes["attn.k"] == "static/per-channel" and schemes["attn"] is None
    # Latency: a float matmul costs nothing where the static one already runs in float (XNNPACK bmm).
    assert space.cost({"attn": "float"}) > 0
    placed = Space(calibrated, space.plan, lambda m: 0.0, placement={"attn": "float"})
    assert placed.cost({"attn": "float"}) == 0
    assert 0 < placed.cost({"head": "dynamic"}) < placed.cost({"head": "float"})
    assert placed.cheapest(("dynamic", "float"))["attn"] == "float"
    rep = run_sensitivity(placed, mode="one_on")
    assert {r.unit for r in rep.rows} == set(space.units)


def test_layer_macs_per_sample():
    from pt2e_int8.capture import export_model
    from pt2e_int8.debug.cost import layer_macs
    from pt2e_int8.ops import layer_op

    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 8 * 8, 16)).eval()
    gm = export_model(model, (torch.randn(4, 3, 8, 8),)).module()
    macs = [layer_macs(n) for n in gm.graph.nodes if layer_op(n) is not None]
    assert macs == [8 * 8 * 8 * 3 * 3 * 3, 8 * 8 * 8 * 16]  # per sample: the batch is symbolic
