"""Pre-annotation transforms: DecomposeRecurrentPass is exact in float, fires / must not fire, and its
linears are quantized and listed by coverage as coming from the recurrent layer."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import pt2e_int8 as q
from pt2e_int8.transforms import PRE_ANNOTATION_TRANSFORMS
from pt2e_int8.transforms.decompose_recurrent import RECURRENT_OPS, DecomposeRecurrentPass

aten = torch.ops.aten


class Recurrent(nn.Module):
    """Returns the whole output and the final state(s), so every result of the op is checked."""

    def __init__(self, rnn: nn.Module, given_state: bool = False) -> None:
        super().__init__()
        self.rnn, self.given_state = rnn, given_state

    def forward(self, x: torch.Tensor):
        if not self.given_state:
            out, state = self.rnn(x)
        else:
            batch = x.shape[0] if self.rnn.batch_first else x.shape[1]
            layers = self.rnn.num_layers * (2 if self.rnn.bidirectional else 1)
            hidden = getattr(self.rnn, "proj_size", 0) or self.rnn.hidden_size
            h0 = torch.tanh(x.mean()) * torch.ones(layers, batch, hidden)  # depends on the input
            state0 = (h0, torch.ones(layers, batch, self.rnn.hidden_size) * 0.5) if isinstance(self.rnn, nn.LSTM) else h0
            out, state = self.rnn(x, state0)
        return (out, *state) if isinstance(state, tuple) else (out, state)


# (id, module, linears after the pass with a zero initial state, layers x directions): an input
# projection per layer and direction, a hidden projection per step after the first (from a zero
# state, step 0 needs none; a given state needs one more per layer and direction), and with
# proj_size the LSTM output projection of every step.
CASES = [
    ("lstm", lambda: nn.LSTM(8, 16, batch_first=True), 5, 1),
    ("lstm-2layer-bidirectional", lambda: nn.LSTM(8, 16, num_layers=2, bidirectional=True), 20, 4),
    ("lstm-proj", lambda: nn.LSTM(8, 16, proj_size=6, batch_first=True), 10, 1),
    ("lstm-nobias", lambda: nn.LSTM(8, 16, bias=False, batch_first=True), 5, 1),
    ("gru", lambda: nn.GRU(8, 16, batch_first=True), 5, 1),
    ("gru-2layer-bidirectional", lambda: nn.GRU(8, 16, num_layers=2, bidirectional=True, batch_first=True), 20, 4),
    ("rnn-tanh", lambda: nn.RNN(8, 16, batch_first=True), 5, 1),
    ("rnn-relu-2layer", lambda: nn.RNN(8, 16, nonlinearity="relu", num_layers=2), 10, 2),
]
STEPS = 5


def _x(rnn: nn.Module, batch: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (batch, STEPS, 8) if rnn.batch_first else (STEPS, batch, 8)
    return torch.randn(shape, generator=g)


def _export(model: Recurrent) -> torch.fx.GraphModule:
    dims = {0 if model.rnn.batch_first else 1: torch.export.Dim("batch")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.export.export(model, (_x(model.rnn, 3),), dynamic_shapes=(dims,), strict=False).module()


def _count(gm, targets) -> int:
    return sum(1 for n in gm.graph.nodes if n.op == "call_function" and n.target in targets)


@pytest.mark.parametrize("given_state", [False, True], ids=["zero-state", "given-state"])
@pytest.mark.parametrize(("build", "linears", "chains"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decompose_recurrent_fires_and_is_exact_in_float(build, linears, chains, given_state):
    torch.manual_seed(0)
    model = Recurrent(build(), given_state).eval()
    gm = _export(model)
    assert _count(gm, RECURRENT_OPS) == 1
    result = DecomposeRecurrentPass()(gm)
    assert result.modified
    gm = result.graph_module
    gm.graph.lint()
    gm.recompile()
    assert _count(gm, RECURRENT_OPS) == 0
    assert _count(gm, {aten.linear.default}) == linears + (chains if given_state else 0)
    for batch in (1, 4):  # the batch stays dynamic
        x = _x(model.rnn, batch, seed=batch)
        with torch.no_grad():
            want, got = model(x), gm(x)
        for w, g in zip(want, got, strict=True):
            assert w.shape == g.shape
            err = (w - g).abs().max().item()
            assert err <= 1e-6, f"batch {batch}: max abs error {err:.2e} against the fused op"


class ComputedWeights(nn.Module):
    """A GRU called functionally with a weight computed at run time (not a constant parameter)."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(8, 16, batch_first=True)
        self.scale = nn.Parameter(torch.tensor(0.5))

    def forward(self, x):
        w_ih, w_hh, b_ih, b_hh = self.rnn.weight_ih_l0, self.rnn.weight_hh_l0, self.rnn.bias_ih_l0, self.rnn.bias_hh_l0
        h0 = torch.zeros(1, x.shape[0], 16)
        out, _ = torch.gru(x, h0, [w_ih * self.scale, w_hh, b_ih, b_hh], True, 1, 0.0, False, False, True)
        return out


def test_decompose_recurrent_leaves_computed_weights_alone():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = torch.export.export(ComputedWeights().eval(), (torch.randn(3, STEPS, 8),), strict=False).module()
    before = [n.format_node() for n in gm.graph.nodes]
    result = DecomposeRecurrentPass()(gm)
    assert not result.modified
    assert [n.format_node() for n in result.graph_module.graph.nodes] == before
    assert _count(gm, RECURRENT_OPS) == 1


def test_decompose_recurrent_is_a_default_transform():
    assert DecomposeRecurrentPass in PRE_ANNOTATION_TRANSFORMS


class Classifier(nn.Module):
    def __init__(self, cell: str) -> None:
        super().__init__()
        self.rnn = getattr(nn, cell)(8, 32, batch_first=True)
        self.head = nn.Linear(32, 4)

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])


@pytest.mark.parametrize("scheme", ["static", "dynamic"])
@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_recurrent_layers_are_quantized_and_listed(cell, scheme):
    torch.manual_seed(0)
    model = Classifier(cell).eval()
    x = torch.randn(16, STEPS, 8)
    cfg = q.QuantConfig.static() if scheme == "static" else q.QuantConfig.dynamic()
    qm = q.quantize(model, (x[:4],), calibration=[(x,)], quantizer=q.Int8Quantizer().set_global(cfg))
    rows = q.coverage(qm).layers
    rnn = [r for r in rows if r.name.startswith("rnn")]
    # one row per weight: the input projection, and the hidden projection of every step after the first
    assert sorted(r.name for r in rnn) == ["rnn.weight_hh_l0", "rnn.weight_ih_l0"], [r.name for r in rows]
    assert all(r.quantized and r.scheme == f"{scheme}/per-channel" for r in rnn), rnn
    assert all(r.op == "linear" and any(f"from {cell} rnn" in n for n in r.notes) for r in rnn), rnn
    hidden = next(r for r in rnn if any("hidden projection" in n for n in r.notes))
    assert len(hidden.nodes) == STEPS - 1
    assert f"from {cell} rnn" in str(q.coverage(qm))
    with torch.no_grad():
        db = q.sqnr(model(x), qm(x))
    assert db >= 25, f"{cell} {scheme}: SQNR {db:.1f} dB against float"


def test_recurrent_op_left_fused_says_why():
    x = torch.randn(4, STEPS, 8)
    qm = q.quantize(ComputedWeights().eval(), (x,), calibration=[(x,)])
    (row,) = [r for r in q.coverage(qm).layers if r.op == "recurrent"]
    assert not row.quantized and row.name == "gru"  # called functionally from the root module
    assert "computed at run time" in row.reason and "float" in row.reason, row.reason
