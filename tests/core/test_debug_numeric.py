"""The per-layer numeric debugger: rows, accumulated vs local error, and naming the layer that hurts."""

import math

import pytest
import torch

import pt2e_int8 as q
from pt2e_int8.debug.calibrated import Calibrated
from pt2e_int8.debug.numeric import ModelMismatchError, layer_errors
from tests.core._debug_models import outlier_block


@pytest.fixture(scope="module")
def block():
    model, cal, held = outlier_block()
    calib = [(b,) for b in cal.split(16)]
    quantizer = q.Int8Quantizer().set_global(q.QuantConfig.static())
    calibrated = Calibrated(model, calib[0], calib, quantizer)
    return model, calibrated, calibrated.convert(quantizer), [(held[:32],), (held[32:],)]


def test_rows_are_the_coverage_rows(block):
    model, calibrated, qm, held = block
    report = layer_errors(calibrated.float_graph, qm, held)
    assert [r.name for r in report.layers] == [r.name for r in q.coverage(qm).layers] == ["fc1", "fc2", "head"]
    assert report.batches == 2 and not report.notes  # one export: matched by debug handle, not by name


def test_names_the_outlier_layer_as_the_cause(block):
    model, calibrated, qm, held = block
    report = layer_errors(calibrated.float_graph, qm, held)
    rows = {r.name: r for r in report.layers}
    assert report.worst(1)[0].name == "fc2", str(report)
    assert rows["fc2"].local_sqnr < rows["fc1"].local_sqnr - 15, str(report)
    # head's own error is small; its accumulated error is inherited from fc2.
    assert rows["head"].local_sqnr > rows["head"].acc_sqnr + 6, str(report)


def test_first_layer_local_equals_accumulated(block):
    """Nothing is upstream of fc1 but the input: both measures see the same computation."""
    model, calibrated, qm, held = block
    fc1 = layer_errors(calibrated.float_graph, qm, held).layers[0]
    assert fc1.local_sqnr == pytest.approx(fc1.acc_sqnr, abs=1e-6)
    assert fc1.local_max_error == pytest.approx(fc1.acc_max_error)


def test_local_error_matches_a_hand_computed_layer(block):
    """fc2 alone: its float input quantized with its own input qparams, int8 weights, output rounding."""
    model, calibrated, qm, held = block
    fc2 = next(r for r in layer_errors(calibrated.float_graph, qm, held[:1]).layers if r.name == "fc2")
    nodes = {n.name: n for n in qm.graph.nodes}
    linear = nodes[next(r.node for r in q.coverage(qm).layers if r.name == "fc2")]
    act_dq, w_dq = linear.args[0], linear.args[1]
    in_scale, in_zp = act_dq.args[1], act_dq.args[2]
    out_dq = next(iter(next(u for u in linear.users).users))
    out_scale, out_zp = out_dq.args[1], out_dq.args[2]
    x = held[0][0]
    with torch.no_grad():
        h = torch.relu(model.fc1(x))
        ref = model.fc2(h)
        hq = (torch.clamp(torch.round(h / in_scale) + in_zp, -128, 127) - in_zp) * in_scale
        w = torch.fx.Interpreter(qm).fetch_attr(w_dq.args[0].target).float()
        w = w * torch.fx.Interpreter(qm).fetch_attr(w_dq.args[1].target)[:, None]
        y = torch.nn.functional.linear(hq, w, model.fc2.bias)
        yq = (torch.clamp(torch.round(y / out_scale) + out_zp, -128, 127) - out_zp) * out_scale
    assert fc2.local_max_error == pytest.approx((ref - yq).abs().max().item(), rel=1e-4, abs=1e-5)


def test_a_float_layer_keeps_only_its_input_error():
    model, cal, held = outlier_block()
    calib = [(b,) for b in cal.split(16)]
    quantizer = q.Int8Quantizer().set_global(q.QuantConfig.static()).set_module_name("fc2", None)
    calibrated = Calibrated(model, calib[0], calib, quantizer)
    rows = {r.name: r for r in layer_errors(calibrated.float_graph, calibrated.convert(quantizer), [(held,)]).layers}
    assert rows["fc2"].scheme is None
    # fc2 runs in float on a quantized input (fc1's static output): its local error is that input's only.
    assert rows["fc2"].local_sqnr > rows["fc1"].local_sqnr, rows


def test_reexported_float_module_matches_by_name(block):
    model, calibrated, qm, held = block
    exact = layer_errors(calibrated.float_graph, qm, held)
    by_name = layer_errors(model, qm, held)
    assert by_name.notes and "name" in by_name.notes[0]
    for a, b in zip(exact.layers, by_name.layers, strict=True):
        assert a.name == b.name and math.isclose(a.acc_sqnr, b.acc_sqnr, rel_tol=1e-6)
        assert math.isclose(a.local_sqnr, b.local_sqnr, rel_tol=1e-6)


def test_another_model_is_refused(block):
    _, _, qm, held = block
    other = torch.nn.Sequential(torch.nn.Conv1d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 30, 8)).eval()
    with pytest.raises(ModelMismatchError, match="does not come from this float model"):
        layer_errors(other, qm, [(torch.randn(2, 1, 32),)])


def test_report_serializes_without_infinities(block):
    import json

    _, calibrated, qm, held = block
    doc = json.loads(layer_errors(calibrated.float_graph, qm, held).to_json())
    assert {"name", "acc_sqnr", "local_sqnr", "local_max_error_steps"} <= set(doc["layers"][0])
