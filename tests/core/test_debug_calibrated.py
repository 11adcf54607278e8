"""One calibration, many variants: a variant converted from transferred statistics equals the same
quantizer calibrated from scratch, tensor for tensor."""

import pytest
import torch
from torch import nn

import pt2e_int8 as q
from pt2e_int8.debug.calibrated import Calibrated


class ConvMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.a, self.b, self.c = nn.Linear(8 * 8 * 8, 32), nn.Linear(32, 32), nn.Linear(32, 4)

    def forward(self, x):
        h = torch.relu(self.a(torch.relu(self.conv(x)).flatten(1)))
        return self.c(self.b(h) + h)


@pytest.fixture(scope="module")
def data():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    return ConvMLP().eval(), [(torch.randn(16, 3, 8, 8, generator=gen),) for _ in range(3)]


VARIANTS = {
    "base": {},
    "b-dynamic": {"b": q.QuantConfig.dynamic()},
    "a-float": {"a": None},
    "conv-float": {"conv": None},
    "b-float-c-dynamic": {"b": None, "c": q.QuantConfig.dynamic()},
}


@pytest.mark.parametrize("observer", ["minmax", "histogram", "percentile"])
def test_transferred_variants_equal_fresh_calibration(data, observer):
    model, calib = data

    def quantizer(changes):
        qz = q.Int8Quantizer().set_global(q.QuantConfig.static(observer=observer))
        for name, cfg in changes.items():
            qz.set_module_name(name, cfg)
        return qz

    calibrated = Calibrated(model, calib[0], calib, quantizer({}))
    x = calib[0][0]
    for name, changes in VARIANTS.items():
        variant = calibrated.convert(quantizer(changes))
        fresh = q.quantize(model, calib[0], calibration=calib, quantizer=quantizer(changes))
        with torch.no_grad():
            assert torch.equal(variant(x), fresh(x)), f"{observer}/{name}"
        assert [r.scheme for r in q.coverage(variant).layers] == [r.scheme for r in q.coverage(fresh).layers]
    assert calibrated.stats.fallbacks == 0
    assert calibrated.stats.variants == len(VARIANTS)


def test_a_variant_with_unseen_statistics_calibrates_itself(data):
    """A histogram-observed variant needs statistics the min-max base never gathered: no twin, so
    it calibrates on its own (counted), and still equals a fresh quantize."""
    model, calib = data
    calibrated = Calibrated(model, calib[0], calib, q.Int8Quantizer().set_global(q.QuantConfig.static()))
    other = q.Int8Quantizer().set_global(q.QuantConfig.static(observer="histogram"))
    variant = calibrated.convert(other)
    fresh = q.quantize(model, calib[0], calibration=calib, quantizer=other)
    with torch.no_grad():
        assert torch.equal(variant(calib[0][0]), fresh(calib[0][0]))
    assert calibrated.stats.fallbacks == 1


def test_qat_base_is_refused(data):
    model, calib = data
    with pytest.raises(q.ConfigError, match="post-training"):
        Calibrated(model, calib[0], calib, q.Int8Quantizer().set_global(q.QuantConfig.qat()))
