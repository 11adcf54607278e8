"""Outlier handling before annotation: output rescaling and SmoothQuant, each fires / must not fire,
float outputs unchanged, int8 error lower, the user's model untouched, and the notes coverage shows."""

import collections

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pt2e_int8 as q
from pt2e_int8.calibration_stats import collect_activation_stats
from pt2e_int8.capture import export_model
from pt2e_int8.errors import CalibrationError, ConfigError
from pt2e_int8.qdq import QDQ_OPS
from pt2e_int8.transforms.graph_edit import constant
from pt2e_int8.workflow import smooth_graph

aten = torch.ops.aten
STATIC = q.QuantConfig.static()
SMOOTH = q.QuantConfig.static(smooth=True)


class PostNormBlock(nn.Module):
    """BERT's FFN output: linear → residual add → LayerNorm. `outlier` makes output channel 3 huge;
    `dropout` puts BERT's dropout after the linear (an identity that eval-mode export keeps)."""

    def __init__(self, outlier: bool = True, d: int = 32, dropout: bool = False):
        super().__init__()
        self.fc, self.norm = nn.Linear(d, d), nn.LayerNorm(d)
        self.drop = nn.Dropout(0.1) if dropout else nn.Identity()
        if outlier:
            with torch.no_grad():
                self.fc.bias[3] = 200.0

    def forward(self, x):
        return self.norm(x + self.drop(self.fc(x)))


class LinearChain(nn.Module):
    """The outlier output feeds another linear (an int8 consumer): rescaling would requantize.
    `via` puts what passes int8 on between them: "dropout" (data movement) or "add" (a residual
    add whose sum feeds the linear, so the annotator quantizes it)."""

    def __init__(self, d: int = 32, via: str = ""):
        super().__init__()
        self.fc, self.out, self.via = nn.Linear(d, d), nn.Linear(d, d), via
        self.drop = nn.Dropout(0.1)
        with torch.no_grad():
            self.fc.bias[3] = 200.0

    def forward(self, x):
        h = self.fc(x)
        if self.via == "dropout":
            h = self.drop(h)
        elif self.via == "add":
            h = x + h
        return self.out(h)


class PreNormBlock(nn.Module):
    """A pre-LN transformer's input side: LayerNorm whose affine makes channels 2 and 5 huge, read only by
    two linears (q and k); `residual=True` also adds the LayerNorm output to the result (post-LN style)."""

    def __init__(self, residual: bool = False, gelu: bool = False, d: int = 32):
        super().__init__()
        self.norm, self.q, self.k = nn.LayerNorm(d), nn.Linear(d, d), nn.Linear(d, d)
        self.residual, self.gelu = residual, gelu
        with torch.no_grad():
            self.norm.weight[2], self.norm.weight[5] = 60.0, -40.0

    def forward(self, x):
        h = self.norm(x)
        if self.gelu:
            h = F.gelu(h)
        out = self.q(h) + self.k(h)
        return out + h if self.residual else out


class LinearIntoLinear(nn.Module):
    """linear → linear with no op between: the first one's rows absorb the smoothing."""

    def __init__(self, d: int = 32):
        super().__init__()
        self.a, self.b = nn.Linear(d, d), nn.Linear(d, 16)
        with torch.no_grad():
            self.a.weight[7] *= 80.0

    def forward(self, x):
        return self.b(self.a(x))


class Attention(nn.Module):
    """BERT's self-attention: the output projection reads the heads of P · V merged back, whose
    channels 5 and 20 (from V's rows) are huge. `v_also_read`: V's output is read elsewhere too;
    `heads_swapped`: the merge takes (column, head) order, so context channel c is not V's c."""

    def __init__(self, d: int = 32, heads: int = 4, v_also_read: bool = False, heads_swapped: bool = False):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.heads, self.v_also_read, self.heads_swapped = heads, v_also_read, heads_swapped
        with torch.no_grad():
            self.v.weight[5] *= 60.0
            self.v.weight[20] *= -40.0

    def forward(self, x):
        b, t, d = x.shape
        split = lambda y: y.view(b, t, self.heads, d // self.heads).transpose(1, 2)  # noqa: E731
        v = self.v(x)
        p = torch.softmax(split(self.q(x)) @ split(self.k(x)).transpose(-1, -2), dim=-1)
        ctx = (p @ split(v)).transpose(1, 2)
        if self.heads_swapped:
            ctx = ctx.transpose(-1, -2)
        out = self.o(ctx.reshape(b, t, d))
        return out + v if self.v_also_read else out


def _tokens(n: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(4, 8, 32, generator=g),) for _ in range(n)]


def _data(d: int = 32, n: int = 4, batch: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, d, generator=g),) for _ in range(n)]


def _counts(gm) -> collections.Counter:
    return collections.Counter(n.target for n in gm.graph.nodes if n.op == "call_function")


def _smoothed(model, cfg=SMOOTH, calibration=None):
    """(float graph before, float graph after smooth_graph, names of the transforms that fired)."""
    calibration = calibration or _data()
    before = export_model(model.eval(), calibration[0]).module()
    after = export_model(model.eval(), calibration[0]).module()
    fired = smooth_graph(after, q.Int8Quantizer().set_global(cfg), calibration)
    return before, after, fired


def _max_rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / a.abs().max()).item()


def _sqnr(model, cfg, calibration, held_out) -> float:
    qm = q.quantize(model, calibration[0], calibration=calibration, quantizer=q.Int8Quantizer().set_global(cfg))
    with torch.no_grad():
        return q.sqnr(model(*held_out), qm(*held_out))


# -- RescaleOutputChannelsPass ------------------------------------------------------------------
@pytest.mark.parametrize("dropout", [False, True], ids=["plain", "behind-dropout"])
def test_rescale_fires_on_outlier_output_into_residual_norm(dropout):
    torch.manual_seed(0)
    before, after, fired = _smoothed(PostNormBlock(dropout=dropout))
    assert fired == ["RescaleOutputChannelsPass"]
    assert _counts(after)[aten.mul.Tensor] == _counts(before)[aten.mul.Tensor] + 1
    (mul,) = [n for n in after.graph.nodes if n.target == aten.mul.Tensor]
    factor = getattr(after, mul.args[1].target)
    assert factor[3] > 1 and (factor[torch.arange(32) != 3] == 1).all(), factor
    x = _data(seed=1)[0]
    with torch.no_grad():
        assert _max_rel_diff(before(*x), after(*x)) < 1e-6  # powers of two: exact up to float rounding


@pytest.mark.parametrize("dropout", [False, True], ids=["plain", "behind-dropout"])
def test_rescale_lowers_int8_error_and_keeps_the_multiply_float(dropout):
    # behind-dropout is BERT's (and all-MiniLM-L6-v2's) layout: eval-mode export keeps the dropout,
    # an int8 data-movement op since main's XNNPACK op set, and the pass once stopped firing there
    torch.manual_seed(0)
    model, cal, held = PostNormBlock(dropout=dropout).eval(), _data(), _data(seed=1)[0]
    plain, smooth = _sqnr(model, STATIC, cal, held), _sqnr(model, SMOOTH, cal, held)
    assert smooth > plain + 6, f"rescaled {smooth:.1f} dB vs plain {plain:.1f} dB"
    qm = q.quantize(model, cal[0], calibration=cal, quantizer=q.Int8Quantizer().set_global(SMOOTH))
    (mul,) = [n for n in qm.graph.nodes if n.target == aten.mul.Tensor]
    assert mul.args[0].target in QDQ_OPS and not any(u.target in QDQ_OPS for u in mul.users)
    (row,) = q.coverage(qm).layers
    assert row.quantized and any("output rescaled: 1 channel" in note for note in row.notes), row


@pytest.mark.parametrize(
    ("model", "cfg"),
    [(PostNormBlock(outlier=False), SMOOTH), (LinearChain(), SMOOTH), (LinearChain(via="dropout"), SMOOTH),
     (LinearChain(via="add"), SMOOTH), (PostNormBlock(), STATIC), (PostNormBlock(), q.QuantConfig.dynamic())],
    ids=["no-outlier", "int8-consumer", "int8-consumer-behind-dropout", "int8-add", "smooth-off", "dynamic"],
)
def test_rescale_must_not_fire(model, cfg):
    torch.manual_seed(0)
    _, after, fired = _smoothed(model, cfg if cfg.mode == "static" else STATIC)
    assert "RescaleOutputChannelsPass" not in fired
    assert _counts(after)[aten.mul.Tensor] == 0


def test_rescale_respects_a_float_scope():
    torch.manual_seed(0)
    model, cal = PostNormBlock(), _data()
    gm = export_model(model.eval(), cal[0]).module()
    fired = smooth_graph(gm, q.Int8Quantizer().set_global(SMOOTH).set_module_name("fc", None), cal)
    assert fired == []


# -- SmoothActivationsPass ----------------------------------------------------------------------
@pytest.mark.parametrize("model_cls", [PreNormBlock, LinearIntoLinear], ids=["layernorm", "linear"])
def test_smoothing_fires_where_the_producer_absorbs_it(model_cls):
    torch.manual_seed(0)
    model = model_cls()
    before, after, fired = _smoothed(model)
    assert "SmoothActivationsPass" in fired
    assert _counts(after) == _counts(before)  # folded: no op added
    x = _data(seed=1)[0]
    with torch.no_grad():
        assert _max_rel_diff(before(*x), after(*x)) < 1e-6
    notes = [n for node in after.graph.nodes for n in (node.meta.get("custom") or {}).get("pt2e_int8_notes", [])]
    assert any(note.startswith("smoothed (SmoothQuant alpha=") for note in notes), notes


def test_smoothing_folds_the_attention_context_into_the_value_projection():
    torch.manual_seed(0)
    before, after, fired = _smoothed(Attention(), calibration=_tokens())
    assert "SmoothActivationsPass" in fired
    assert _counts(after) == _counts(before)  # folded into V's rows: no op added
    x = _tokens(seed=1)[0]
    with torch.no_grad():
        assert _max_rel_diff(before(*x), after(*x)) < 1e-6
    linears = {n.args[1].target: n for n in after.graph.nodes if n.target == aten.linear.default}
    notes = (linears["o.weight"].meta.get("custom") or {}).get("pt2e_int8_notes", [])
    assert any(f"1/s folded into {linears['v.weight'].name}" in note for note in notes), notes
    changed = [not torch.equal(a, b) for a, b in zip(_linear_weights(before), _linear_weights(after), strict=True)]
    assert changed == [True, False, False, True], changed  # v's rows took 1/s, o's columns s


@pytest.mark.parametrize("variant", ["v_also_read", "heads_swapped"])
def test_attention_context_fold_must_not_fire(variant):
    torch.manual_seed(0)
    before, after, fired = _smoothed(Attention(**{variant: True}), calibration=_tokens())
    assert "SmoothActivationsPass" not in fired
    assert _counts(after) == _counts(before)
    for a, b in zip(_linear_weights(before), _linear_weights(after), strict=True):
        assert torch.equal(a, b)


def _linear_weights(gm) -> list[torch.Tensor]:
    return [constant(gm, n.args[1]) for n in gm.graph.nodes if n.target == aten.linear.default]


@pytest.mark.parametrize("model_cls", [PreNormBlock, LinearIntoLinear], ids=["layernorm", "linear"])
def test_smoothing_lowers_int8_error(model_cls):
    torch.manual_seed(0)
    model, cal, held = model_cls().eval(), _data(), _data(seed=1)[0]
    plain, smooth = _sqnr(model, STATIC, cal, held), _sqnr(model, SMOOTH, cal, held)
    assert smooth > plain + 3, f"smoothed {smooth:.1f} dB vs plain {plain:.1f} dB"


@pytest.mark.parametrize(
    ("model", "cfg"),
    [(PreNormBlock(residual=True), SMOOTH), (PreNormBlock(gelu=True), SMOOTH), (PreNormBlock(), STATIC)],
    ids=["norm-output-also-residual", "gelu-between", "smooth-off"],
)
def test_smoothing_must_not_fire(model, cfg):
    torch.manual_seed(0)
    before, after, fired = _smoothed(model, cfg)
    assert "SmoothActivationsPass" not in fired
    norm_w = [n for n in after.graph.nodes if n.target == aten.layer_norm.default][0].args[2]
    assert torch.equal(getattr(after, norm_w.target.split(".")[0]).weight, model.norm.weight)


def test_fixed_alpha_is_used():
    torch.manual_seed(0)
    _, after, _ = _smoothed(PreNormBlock(), q.QuantConfig.static(smooth=True, smooth_alpha=0.5))
    notes = [n for node in after.graph.nodes for n in (node.meta.get("custom") or {}).get("pt2e_int8_notes", [])]
    assert any("alpha=0.50" in note for note in notes), notes


# -- the flow -----------------------------------------------------------------------------------
def test_quantize_leaves_the_user_model_unchanged():
    torch.manual_seed(0)
    model = PreNormBlock()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    cal = _data()
    q.quantize(model, cal[0], calibration=iter(cal), quantizer=q.Int8Quantizer().set_global(SMOOTH))
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_statistics_cover_linear_inputs_and_outputs():
    torch.manual_seed(0)
    model, cal = PreNormBlock().eval(), _data(n=3)
    gm = export_model(model, cal[0]).module()
    stats = collect_activation_stats(gm, cal, max_rows=40)
    norm = next(n for n in gm.graph.nodes if n.target == aten.layer_norm.default)
    st = stats.of(norm)
    with torch.no_grad():
        h = torch.cat([model.norm(x) for (x,) in cal])
    assert torch.allclose(st.max, h.amax(0)) and torch.allclose(st.min, h.amin(0))
    assert st.samples.shape == (39, 32) and st.rows_seen == 48  # 13 rows from each of 3 batches
    assert stats.batches == 3


@pytest.mark.parametrize(
    ("fields", "message"),
    [({"mode": "dynamic", "smooth": True}, "smooth=True needs mode='static'"),
     ({"smooth": True, "smooth_alpha": 1.5}, "smooth_alpha=1.5")],
    ids=["dynamic", "alpha"],
)
def test_config_rejects(fields, message):
    with pytest.raises(ConfigError, match=message):
        q.QuantConfig(**fields)


def test_qat_with_smoothing_needs_calibration():
    with pytest.raises(CalibrationError, match="calibration="):
        q.prepare_qat(PreNormBlock(), _data()[0], quantizer=q.Int8Quantizer().set_global(q.QuantConfig.qat(smooth=True)))


def test_qat_with_smoothing_trains_and_converts():
    torch.manual_seed(0)
    model, cal = PreNormBlock(), _data()
    pm = q.prepare_qat(model, cal[0], quantizer=q.Int8Quantizer().set_global(q.QuantConfig.qat(smooth=True)),
                       calibration=cal)
    notes = [n for node in pm.graph.nodes for n in (node.meta.get("custom") or {}).get("pt2e_int8", {}).get("notes", [])]
    assert any(note.startswith("smoothed") for note in notes), notes
    opt = torch.optim.SGD(pm.parameters(), lr=1e-3)
    for (x,) in cal:
        loss = pm(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    qm = q.convert(pm)
    assert len(q.coverage(qm).quantized) == 2
