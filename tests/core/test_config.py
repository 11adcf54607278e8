import pytest
import torch

import pt2e_int8 as q
from pt2e_int8.config import activation_spec, bias_spec, weight_spec


def test_static_preset_specs():
    cfg = q.QuantConfig.static()
    act, w = activation_spec(cfg), weight_spec(cfg, 0)
    assert (act.dtype, act.quant_min, act.quant_max, act.qscheme) == (
        torch.int8, -128, 127, torch.per_tensor_affine)
    assert (w.dtype, w.quant_min, w.quant_max, w.qscheme, w.ch_axis) == (
        torch.int8, -127, 127, torch.per_channel_symmetric, 0)
    assert bias_spec(cfg, "act", "weight") is None  # float bias: the backend quantizes it
    b = bias_spec(cfg.replace(quantize_bias=True), "act", "weight")
    assert b.dtype == torch.int32 and b.derived_from == ["act", "weight"]


@pytest.mark.parametrize(
    ("preset", "dynamic", "has_act", "has_bias"),
    [("dynamic", True, True, False), ("weight_only", False, False, False), ("qat", False, True, False)],
    ids=["dynamic", "weight-only", "qat"],
)
def test_other_presets(preset, dynamic, has_act, has_bias):
    cfg = getattr(q.QuantConfig, preset)()
    act = activation_spec(cfg)
    assert (act is not None) == has_act
    if act is not None:
        assert act.is_dynamic == dynamic
    assert (bias_spec(cfg, "a", "w") is not None) == has_bias
    assert (bias_spec(cfg.replace(quantize_bias=True), "a", "w") is not None) == (preset == "qat")


def test_qat_defaults_to_moving_average():
    assert q.QuantConfig.qat().observer == "moving_average"
    assert q.QuantConfig.qat().is_qat


def test_per_tensor_and_uint8_fields():
    cfg = q.QuantConfig.static(per_channel=False, act_dtype=torch.uint8)
    assert weight_spec(cfg, 0).qscheme == torch.per_tensor_symmetric
    assert (activation_spec(cfg).quant_min, activation_spec(cfg).quant_max) == (0, 255)


def test_equal_configs_share_spec_objects():
    # torchao shares an observer between producer output and consumer input only for equal specs.
    assert activation_spec(q.QuantConfig.static()) is activation_spec(q.QuantConfig.static())


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"observer": "median"}, "observer='median'"),
        ({"act_dtype": torch.float16}, "act_dtype"),
        ({"percentile": 20.0}, "percentile=20.0"),
        ({"weight_qmin": -200}, "weight range"),
    ],
    ids=["observer", "act-dtype", "percentile", "weight-range"],
)
def test_invalid_fields_raise_value_error(kwargs, needle):
    with pytest.raises(ValueError, match="Invalid QuantConfig") as info:
        q.QuantConfig.static(**kwargs)
    assert needle in str(info.value)


def test_all_problems_reported_at_once():
    with pytest.raises(q.ConfigError) as info:
        q.QuantConfig(mode="int4", observer="x")
    assert "mode='int4'" in str(info.value) and "observer='x'" in str(info.value)
