"""Override precedence: set_module_name > set_module_type > set_global; None keeps float."""

import pytest
import torch
from torch import nn

import pt2e_int8 as q
from tests.core._helpers import int8_weight_constants


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.query, self.value = nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, x):
        return self.query(x) + self.value(x)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(Block(), Block())
        self.classifier = nn.Linear(8, 2)

    def forward(self, x):
        return self.classifier(self.encoder(x))


def _rows(quantizer):
    torch.manual_seed(0)
    x = torch.randn(16, 8)
    qm = q.quantize(Net().eval(), (x,), calibration=[(x,)], quantizer=quantizer)
    return {r.name: r for r in q.coverage(qm).layers}, qm


def test_module_name_none_keeps_that_module_float():
    rows, qm = _rows(q.Int8Quantizer().set_global(q.QuantConfig.static()).set_module_name("classifier", None))
    assert not rows["classifier"].quantized
    assert rows["classifier"].reason == "kept float by set_module_name('classifier')"
    assert all(r.quantized for name, r in rows.items() if name != "classifier")
    # 4 encoder linears have int8 weights; the classifier's weight is still a float parameter.
    assert len(int8_weight_constants(qm)) == 4
    assert qm.get_parameter("classifier.weight").dtype == torch.float32


def test_precedence_name_over_type_over_global():
    quantizer = (
        q.Int8Quantizer()
        .set_global(q.QuantConfig.static())
        .set_module_type(Block, q.QuantConfig.dynamic())
        .set_module_name("encoder.1.value", q.QuantConfig.weight_only())
        .set_module_name("encoder.0", None)
    )
    rows, _ = _rows(quantizer)
    assert not rows["encoder.0.query"].quantized and not rows["encoder.0.value"].quantized
    assert rows["encoder.1.query"].scheme == "dynamic/per-channel"
    assert rows["encoder.1.value"].scheme == "weight-only/per-channel"
    assert rows["classifier"].scheme == "static/per-channel"


def test_module_type_none_keeps_every_instance_float():
    rows, _ = _rows(q.Int8Quantizer().set_global(q.QuantConfig.static()).set_module_type(Block, None))
    assert [n for n, r in rows.items() if r.quantized] == ["classifier"]
    assert rows["encoder.1.query"].reason == "kept float by set_module_type(Block)"


def test_global_none_with_one_module_quantized():
    rows, _ = _rows(q.Int8Quantizer().set_global(None).set_module_name("classifier", q.QuantConfig.dynamic()))
    assert [n for n, r in rows.items() if r.quantized] == ["classifier"]


def test_unknown_module_name_is_an_error_with_suggestion():
    with pytest.raises(q.ConfigError, match=r"'encoder.0.querry' \(did you mean 'encoder.0.query'"):
        _rows(q.Int8Quantizer().set_global(q.QuantConfig.static()).set_module_name("encoder.0.querry", None))


def test_unmatched_module_type_warns_and_changes_nothing():
    with pytest.warns(UserWarning, match=r"set_module_type\(Conv2d\) matches no module") as record:
        rows, _ = _rows(q.Int8Quantizer().set_global(q.QuantConfig.static()).set_module_type(nn.Conv2d, None))
    assert len([w for w in record if "matches no module" in str(w.message)]) == 1
    assert sorted(rows) == ["classifier", "encoder.0.query", "encoder.0.value", "encoder.1.query", "encoder.1.value"]
    assert all(r.scheme == "static/per-channel" for r in rows.values()), rows


@pytest.mark.parametrize(
    "call",
    [
        lambda z: z.set_global("static"),
        lambda z: z.set_module_type("Linear", None),
        lambda z: z.set_module_name("", None),
    ],
    ids=["global-not-a-config", "type-not-a-class", "empty-name"],
)
def test_bad_override_arguments(call):
    with pytest.raises(q.ConfigError):
        call(q.Int8Quantizer())


def test_qat_config_in_quantize_is_rejected():
    x = torch.randn(4, 8)
    with pytest.raises(q.ConfigError, match="prepare_qat"):
        q.quantize(Net(), (x,), calibration=[(x,)], quantizer=q.Int8Quantizer().set_global(q.QuantConfig.qat()))
