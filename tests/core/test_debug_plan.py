"""QuantPlan: a quantizer configuration as JSON, exact round trips, strict loading."""

import json

import pytest
import torch
from torch import nn

import pt2e_int8 as q
from pt2e_int8.annotators.linear import annotate_linear
from pt2e_int8.capture import export_model
from pt2e_int8.debug.plan import QuantPlan


class Blocks(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8))
        self.outer = nn.Sequential(nn.Linear(8, 8), nn.ReLU())
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.outer(self.inner(x)))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = Blocks().eval()
    x = torch.randn(16, 8)
    return m, x, export_model(m, (x,)).module()


def _schemes(model, x, quantizer):
    qm = q.quantize(model, (x,), calibration=[(x,)], quantizer=quantizer)
    return {r.name: r.scheme for r in q.coverage(qm).layers}, qm


def test_json_round_trip_gives_the_same_model(model, tmp_path):
    m, x, _ = model
    plan = QuantPlan(q.QuantConfig.static(observer="histogram", act_dtype=torch.uint8), ("linear",),
                     {"inner.0": q.QuantConfig.dynamic(), "head": None}, info={"why": "test"})
    path = plan.save(tmp_path / "plan.json")
    loaded = QuantPlan.load(path)
    assert loaded == plan
    a, qa = _schemes(m, x, plan.to_quantizer())
    b, qb = _schemes(m, x, loaded.to_quantizer())
    assert a == b == {"inner.0": "dynamic/per-channel", "inner.2": "static/per-channel",
                      "outer.0": "static/per-channel", "head": None}
    with torch.no_grad():
        assert torch.equal(qa(x), qb(x))


def test_module_types_become_names_with_the_same_precedence(model):
    """set_module_name outranks set_module_type at any depth; the plan keeps that without types."""
    m, x, gm = model
    quantizer = (q.Int8Quantizer().set_global(q.QuantConfig.static())
                 .set_module_type(nn.Linear, q.QuantConfig.dynamic())
                 .set_module_name("inner", None))
    plan = QuantPlan.from_quantizer(quantizer, gm)
    assert plan.modules == {"outer.0": q.QuantConfig.dynamic(), "head": q.QuantConfig.dynamic(), "inner": None}
    assert _schemes(m, x, plan.to_quantizer())[0] == _schemes(m, x, quantizer)[0]


def test_annotator_subset_is_kept(model):
    m, x, gm = model
    quantizer = q.Int8Quantizer(annotators=(annotate_linear,)).set_global(q.QuantConfig.static())
    plan = QuantPlan.from_quantizer(quantizer, gm)
    assert plan.annotators == ("linear",)
    assert [a.name for a in plan.to_quantizer().registry] == ["linear"]


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d.update(format="something-else"), "not a pt2e-int8 plan"),
    (lambda d: d.update(version=99), "version"),
    (lambda d: d["global"].update(mode="int4"), "mode='int4'"),
    (lambda d: d["global"].update(colour="red"), "unknown QuantConfig field"),
    (lambda d: d["global"].update(act_dtype="float16"), "act_dtype"),
    (lambda d: d.update(annotators=["linear", "os.system"]), "unknown annotator"),
    (lambda d: d.update(modules={"": None}), "module paths"),
], ids=["format", "version", "mode", "field", "dtype", "annotator", "empty-name"])
def test_bad_plan_files_name_the_problem(tmp_path, edit, message):
    doc = QuantPlan(q.QuantConfig.static()).to_dict()
    edit(doc)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(q.ConfigError, match=message):
        QuantPlan.load(path)


def test_unreadable_plan_files_are_input_errors(tmp_path):
    with pytest.raises(q.InputFileError, match="no such plan file"):
        QuantPlan.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_bytes(b"\x80\x81 not json")
    with pytest.raises(q.InputFileError, match="not a JSON plan"):
        QuantPlan.load(tmp_path / "bad.json")
