"""bench/arch.py's target checklist reads the rows right (the run itself is minutes long: bench/ only)."""

from __future__ import annotations

import pytest

from bench.arch import INT8_VS_FLOAT_MAX, NOISE, _listed, check, render


def _doc(kind="cnn", float_ms=10.0, int8_ms=5.0, static_ms=5.0, stock_ms=6.0, calls=(1, 1, 1), missing=(),
         same_static=False):
    arts = {
        "ours_float": {"median_ms": float_ms, "delegate_calls": calls[0]},
        "ours_int8": {"median_ms": int8_ms, "delegate_calls": calls[1], "shapes": "dynamic batch 1..64",
                      "notes": [], "outside_delegate": [], "sqnr_db": 30.0},
        "ours_int8_static": {"median_ms": static_ms, "delegate_calls": calls[1]},
        "stock_int8": {"median_ms": stock_ms, "delegate_calls": calls[2], "sqnr_db": 28.0},
    }
    if same_static:
        arts["ours_int8_static"] = {**arts["ours_int8"], "same_as": "ours_int8"}
    return {"model": "m", "kind": kind, "artifacts": arts,
            "coverage": {"rows": 3, "quantized": 3, "int8_placed": 3, "expected_modules": 3, "missing": list(missing),
                         "float_rows": [], "float_placed": {}}}


def test_a_good_cnn_meets_every_target():
    results = check(_doc())
    assert all(met for _, met, _ in results), results
    assert len(results) == 5


@pytest.mark.parametrize(("change", "target"), [
    ({"int8_ms": 9.0, "static_ms": 9.0, "stock_ms": 10.0}, f"int8 ≤ {INT8_VS_FLOAT_MAX}× float"),
    ({"stock_ms": 4.0}, "int8 no slower than stock int8"),
    ({"calls": (1, 3, 2)}, "delegate calls ≤ stock"),
    ({"missing": ("features.3",)}, "coverage lists every layer"),
    ({"static_ms": 4.0}, "default .pte no slower than static shapes"),
], ids=["slow-vs-float", "slow-vs-stock", "more-calls", "missing-layer", "slower-than-static"])
def test_each_target_can_be_missed(change, target):
    results = {t: met for t, met, _ in check(_doc(**change))}
    assert results[target] is False, results
    assert sum(1 for met in results.values() if met is False) == 1, results


def test_noise_margin_and_non_cnn_targets():
    assert all(met for _, met, _ in check(_doc(stock_ms=5.0 / (1 + NOISE / 2))))  # within the noise margin
    targets = [t for t, _, _ in check(_doc(kind="recurrent"))]
    assert targets == ["coverage lists every layer", "default .pte no slower than static shapes"]
    same = {t: (met, detail) for t, met, detail in check(_doc(same_static=True))}
    assert same["default .pte no slower than static shapes"] == (True, "×1.0 (default chose static)")


def test_listed_matches_module_paths():
    names = ["features.0", "attn.in_proj", "attn", "rnn.weight_ih_l0", "fc[linear_1]"]
    assert _listed("features.0", names) and _listed("attn", names) and _listed("fc", names)
    assert _listed("rnn", names)  # by its weight's row
    assert not _listed("features.1", names) and not _listed("att", names)


def test_render_has_every_section():
    meta = {"command": "python bench/arch.py", "started": "t0", "finished": "t1", "device": "cpu", "threads": 2,
            "iters": 5, "warmup": 1}
    text = render(meta, [_doc(), {"model": "broken", "error": "exit 1: boom"}])
    assert "## Targets" in text and "## Latency and structure" in text and "## Where int8 stops" in text
    assert "| broken | all | **failed** | exit 1: boom |" in text
    assert "timed in the same interleaving" in text and "second run" not in text
    noted = render({**meta, "note": "two models are from a second run"}, [_doc()])
    assert "two models are from a second run" in noted
