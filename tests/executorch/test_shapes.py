"""export_pte's shape choice: static shapes by default; with a max_batch, a dynamic batch unless it
costs XNNPACK coverage or delegate calls, then static shapes, said in the result; delegate calls and
the ops outside XNNPACK with the partitioner's reasons; recurrent layers run at every batch."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import pt2e_int8 as q
from backends.executorch import export_pte
from backends.executorch.runtime import load_pte
from pt2e_int8.errors import ExampleInputsError
from tests.executorch._helpers import pte_delegates


class CeilPool(nn.Module):
    """squeezenet's pattern: max-pool with ceil_mode, which XNNPACK refuses under a dynamic batch."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3)
        self.pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv1(x)))
        return self.head(torch.relu(self.conv2(x)).mean((2, 3), keepdim=True).flatten(1))


class Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(16, 32), nn.Linear(32, 4)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def _quantized(model: nn.Module, shape: tuple[int, ...]):
    torch.manual_seed(0)
    model = model.eval()
    calibration = [(torch.randn(4, *shape),) for _ in range(3)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model, q.quantize(model, (torch.randn(1, *shape),), calibration=calibration)


@pytest.fixture(scope="module")
def ceil_pool():
    return _quantized(CeilPool(), (3, 15, 15))


def test_ceil_mode_pool_falls_back_to_static_shapes(ceil_pool, tmp_path):
    _, qm = ceil_pool
    x = torch.randn(1, 3, 15, 15)
    with pytest.warns(UserWarning, match="ceil mode is not supported for dynamic shapes"):
        res = export_pte(qm, (x,), tmp_path / "ceil.pte", max_batch=64)
    assert res.shapes == "static batch 1"
    assert res.delegate_calls == 1 and res.outside_delegate == []
    assert len(res.notes) == 1 and "static shapes give 1 delegate call" in res.notes[0], res.notes
    assert set(res.placement.values()) == {"int8"}, res.detail
    out = load_pte(res.path).run([x])[0]
    assert q.sqnr(qm(x), out) >= 30
    with pytest.raises(ExampleInputsError, match="dynamic batch"):  # the error says why batch 2 fails
        load_pte(res.path).run([torch.randn(2, 3, 15, 15)])


def test_forced_dynamic_batch_lists_the_ops_outside_xnnpack(ceil_pool, tmp_path):
    _, qm = ceil_pool
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = export_pte(qm, (torch.randn(1, 3, 15, 15),), tmp_path / "ceil-dyn.pte", dynamic_shapes="batch")
    assert res.shapes == "dynamic batch 1..64" and res.notes == []
    pools = [o for o in res.outside_delegate if "max_pool2d" in o["op"]]
    assert pools and all("ceil mode is not supported for dynamic shapes" in o["reason"] for o in pools), \
        res.outside_delegate
    assert res.delegate_calls == len(pte_delegates(res.path)) > 1
    program = load_pte(res.path)
    for batch in (1, 3):
        x = torch.randn(batch, 3, 15, 15)
        assert q.sqnr(qm(x), program.run([x])[0]) >= 30


def test_default_is_the_examples_static_batch(tmp_path):
    """XNNPACK re-plans a dynamic-shape runtime on every call (1.5-5% on CNNs, bench/arch.md)."""
    _, qm = _quantized(Mlp(), (16,))
    res = export_pte(qm, (torch.randn(3, 16),), tmp_path / "mlp-default.pte")
    assert res.shapes == "static batch 3" and res.notes == []
    with pytest.raises(ExampleInputsError, match="dynamic batch"):  # the error says how to get one
        load_pte(res.path).run([torch.randn(2, 16)])


def test_clean_model_keeps_the_dynamic_batch_it_asks_for(tmp_path):
    _, qm = _quantized(Mlp(), (16,))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = export_pte(qm, (torch.randn(1, 16),), tmp_path / "mlp.pte", max_batch=64)
    assert not [w for w in caught if "export_pte" in str(w.message)]  # no fallback warning
    assert res.shapes == "dynamic batch 1..64"
    assert res.delegate_calls == 1 and res.outside_delegate == [] and res.notes == []
    program = load_pte(res.path)
    for batch in (1, 8):
        x = torch.randn(batch, 16)
        assert q.sqnr(qm(x), program.run([x])[0]) >= 30


def test_static_shapes_on_request(tmp_path):
    _, qm = _quantized(Mlp(), (16,))
    res = export_pte(qm, (torch.randn(2, 16),), tmp_path / "mlp-static.pte", dynamic_shapes=None)
    assert res.shapes == "static batch 2" and res.notes == []


def test_unknown_shape_choice_is_a_user_error(tmp_path):
    from pt2e_int8.errors import UserInputError

    with pytest.raises(UserInputError, match="dynamic_shapes='dynamic'"):
        export_pte(Mlp().eval(), (torch.randn(1, 16),), tmp_path / "x.pte", dynamic_shapes="dynamic")


class GruClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(16, 64, batch_first=True)
        self.head = nn.Linear(64, 4)

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])


@pytest.mark.parametrize("kind", ["float", "int8"])
def test_gru_runs_at_every_batch(kind, tmp_path):
    """Was: 'Attempted to resize a static tensor. Expected shape (1, 64, 64), but received (1, 1, 64)'
    at any batch below max_batch: to_edge's GRU decomposition fixed the batch of the initial state."""
    torch.manual_seed(0)
    model = GruClassifier().eval()
    x = torch.randn(8, 10, 16)
    graph = model if kind == "float" else q.quantize(model, (x,), calibration=[(x,)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = export_pte(graph, (x,), tmp_path / f"gru-{kind}.pte", dynamic_shapes="batch")
    assert res.shapes == "dynamic batch 1..64"
    program = load_pte(res.path)
    for batch in (1, 8):
        xb = torch.randn(batch, 10, 16)
        with torch.no_grad():
            ref = graph(xb)
        out = program.run([xb])[0]
        assert out.shape == ref.shape
        assert q.sqnr(ref, out) >= (60 if kind == "float" else 30), f"{kind} batch {batch}"
    if kind == "int8":
        assert {k for k, v in res.placement.items() if v == "int8"} >= {"head"}
        assert all(v == "int8" for k, v in res.placement.items() if k.startswith("rnn")), res.detail
