"""Every API mistake is a Pt2eInt8Error subclass that names the problem and the call that fixes it;
degenerate calibration is refused or warned about with the layers it ruins."""

from __future__ import annotations

import warnings

import pytest
import torch

import pt2e_int8 as q


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Linear(16, 32), torch.nn.Linear(32, 4)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    x = torch.randn(8, 16)
    model = Net().eval()
    pm = q.prepare_qat(Net(), (x,))
    pm(x)
    return model, x, pm, q.convert(q.prepare_qat(Net(), (x,)))


def test_workflow_stage_errors(models):
    model, x, pm, qm = models
    cases = [
        (lambda: q.convert(qm), "already converted"),
        (lambda: q.convert(model), "prepare_qat"),
        (lambda: q.quantize(lambda t: t * 2, (x,), calibration=[(x,)]), "takes a torch.nn.Module, got function"),
        (lambda: q.quantize(qm, (x,), calibration=[(x,)]), "already quantized"),
        (lambda: q.prepare_qat(pm, (x,)), "convert"),
        (lambda: q.coverage(model), "eager module"),
        (lambda: q.coverage(pm), "convert"),
    ]
    for call, fragment in cases:
        with pytest.raises(q.WorkflowError, match=fragment):
            call()


def test_exporters_refuse_prepared_models_directories_and_bad_max_batch(models, tmp_path):
    from backends.executorch import export_pte
    from backends.onnx import export_onnx

    _, x, pm, qm = models
    with pytest.raises(q.WorkflowError, match=r"call pt2e_int8.convert\(model\) first"):
        export_pte(pm, (x,), tmp_path / "m.pte")
    with pytest.raises(q.WorkflowError, match=r"call pt2e_int8.convert\(model\) first"):
        export_onnx(pm, (x,), tmp_path / "m.onnx")
    (tmp_path / "d.pte").mkdir()
    with pytest.raises(q.OutputPathError, match="is a directory"):
        export_pte(qm, (x,), tmp_path / "d.pte")
    (tmp_path / "d.onnx").mkdir()
    with pytest.raises(q.OutputPathError, match="is a directory"):
        export_onnx(qm, (x,), tmp_path / "d.onnx")
    for bad in (0, -3, 2.5, True, "64"):
        with pytest.raises(q.ConfigError, match="max_batch"):
            export_pte(qm, (x,), tmp_path / "m.pte", max_batch=bad)
    assert not (tmp_path / "m.pte").exists() and not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize(("field", "value"), [("per_channel", "yes"), ("is_qat", 1), ("percentile", "99"),
                                              ("weight_qmin", 1.5), ("act_dtype", "int8"), ("observer", 3)])
def test_config_fields_are_type_checked(field, value):
    with pytest.raises(q.ConfigError, match=f"{field}={value!r} must be"):
        q.QuantConfig.static(**{field: value})


def test_error_hierarchy():
    for name in ("WorkflowError", "OutputPathError", "UnsafeModelFileError", "CalibrationError", "ConfigError"):
        assert issubclass(getattr(q, name), q.UserInputError)
    assert issubclass(q.UserInputError, q.Pt2eInt8Error)


def _quantize(calibration):
    torch.manual_seed(0)
    model = Net().eval()
    x = torch.randn(64, 16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        qm = q.quantize(model, (x[:8],), calibration=calibration)
    with torch.no_grad():
        db = q.sqnr(model(x), qm(x))
    return db, [str(w.message) for w in caught if "calibration saw" in str(w.message)]


def test_zero_sample_batch_is_refused():
    with pytest.raises(q.CalibrationError, match="batch 1 has no samples"):
        _quantize([(torch.randn(8, 16),), (torch.randn(0, 16),)])


def test_overflowing_calibration_is_refused():
    with pytest.raises(q.CalibrationError, match="no finite int8 scale at the input of fc1"):
        _quantize([(torch.randn(8, 16) * 1e38,)])


@pytest.mark.parametrize(("data", "fragment"), [
    (torch.zeros(8, 16), "single value at the input of fc1 (always 0)"),
    (torch.full((8, 16), 1e38), "single value at the input of fc1"),
    (torch.randn(8, 16) * 1e20, "beyond 1e+10 at the input of fc1"),
], ids=["all-zero", "constant-1e38", "huge"])
def test_degenerate_calibration_warns_naming_the_layer(data, fragment):
    db, messages = _quantize([(data,)])
    assert any(fragment in m for m in messages), messages
    assert db < 5, f"the warning is for a ruined model; this one has {db:.1f} dB"


def test_representative_calibration_gives_no_warning():
    db, messages = _quantize([(torch.randn(8, 16),) for _ in range(4)])
    assert not messages and db > 15, (db, messages)
