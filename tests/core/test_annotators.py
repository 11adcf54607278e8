"""Per op family, over schemes: exact q/dq counts by op, and SQNR against float."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pt2e_int8 as q
from pt2e_int8.decision import decision_of
from tests.core._helpers import op_counts

qd = torch.ops.quantized_decomposed
Q, DQ = qd.quantize_per_tensor.default, qd.dequantize_per_tensor.default
DQ_CH = qd.dequantize_per_channel.default
CHOOSE, Q_T, DQ_T = qd.choose_qparams.tensor, qd.quantize_per_tensor.tensor, qd.dequantize_per_tensor.tensor

STATIC, STATIC_PT = q.QuantConfig.static(), q.QuantConfig.static(per_channel=False)
DYNAMIC, DYNAMIC_PT = q.QuantConfig.dynamic(), q.QuantConfig.dynamic(per_channel=False)
WEIGHT_ONLY = q.QuantConfig.weight_only()


class LinearRelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 8)

    def forward(self, x):
        return F.relu(self.fc(x))


class ConvRelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)

    def forward(self, x):
        return F.relu(self.conv(x))


class Conv1dNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(4, 8, 3)

    def forward(self, x):
        return self.conv(x)


class Attention(nn.Module):
    """Eager attention: the two activation × activation matmuls."""

    def forward(self, q_, k, v):
        return torch.matmul(torch.softmax(torch.matmul(q_, k.transpose(-1, -2)), -1), v)


class AddMulRelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 4)

    def forward(self, a, b):
        return self.fc(F.relu(a + b) * b)


class SharedQparams(nn.Module):
    """linear → reshape → permute → max-pool → flatten → cat → linear: one int8 region."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(16, 32), nn.Linear(16, 4)

    def forward(self, x):
        h = self.fc1(x).reshape(-1, 2, 4, 4).permute(0, 1, 3, 2)
        h = torch.flatten(F.max_pool2d(h, 2), 1)
        return self.fc2(torch.cat([h, h], dim=1))


def _inputs(shapes):
    g = torch.Generator().manual_seed(0)
    return tuple(torch.randn(*s, generator=g) for s in shapes)


# id: (model, input shapes, config, expected q/dq counts, min SQNR dB). Biases stay float
# (QuantConfig.quantize_bias=False): the backend quantizes them, so no bias dequantize here.
CASES = {
    "linear-relu/static": (LinearRelu, [(32, 16)], STATIC, {Q: 2, DQ: 2, DQ_CH: 1}, 30),
    "linear-relu/static-per-tensor": (LinearRelu, [(32, 16)], STATIC_PT, {Q: 2, DQ: 3}, 30),
    "linear-relu/dynamic": (LinearRelu, [(32, 16)], DYNAMIC, {CHOOSE: 1, Q_T: 1, DQ_T: 1, DQ_CH: 1}, 30),
    "linear-relu/dynamic-per-tensor": (LinearRelu, [(32, 16)], DYNAMIC_PT, {CHOOSE: 1, Q_T: 1, DQ_T: 1, DQ: 1}, 30),
    "linear-relu/weight-only": (LinearRelu, [(32, 16)], WEIGHT_ONLY, {DQ_CH: 1}, 35),
    "conv2d-relu/static": (ConvRelu, [(4, 3, 10, 10)], STATIC, {Q: 2, DQ: 2, DQ_CH: 1}, 30),
    "conv2d-relu/static-per-tensor": (ConvRelu, [(4, 3, 10, 10)], STATIC_PT, {Q: 2, DQ: 3}, 30),
    "conv2d-relu/dynamic": (ConvRelu, [(4, 3, 10, 10)], DYNAMIC, {CHOOSE: 1, Q_T: 1, DQ_T: 1, DQ_CH: 1}, 30),
    "conv2d-relu/weight-only": (ConvRelu, [(4, 3, 10, 10)], WEIGHT_ONLY, {DQ_CH: 1}, 35),
    "conv1d/static": (Conv1dNet, [(4, 4, 12)], STATIC, {Q: 2, DQ: 2, DQ_CH: 1}, 30),
    # q_, k^T, v, softmax output, and both matmul outputs
    "matmul/static": (Attention, [(2, 4, 8, 16)] * 3, STATIC, {Q: 6, DQ: 6}, 25),
    "matmul/dynamic-left-float": (Attention, [(2, 4, 8, 16)] * 3, DYNAMIC, {}, 200),
    "matmul/weight-only-left-float": (Attention, [(2, 4, 8, 16)] * 3, WEIGHT_ONLY, {}, 200),
    "add-mul-relu/static": (AddMulRelu, [(16, 8), (16, 8)], STATIC, {Q: 5, DQ: 6, DQ_CH: 1}, 25),
    # one q/dq after every data-movement op, all with fc1's scale (see the test below)
    "shared-qparams/static": (SharedQparams, [(16, 16)], STATIC, {Q: 8, DQ: 8, DQ_CH: 2}, 25),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_family(case):
    model_cls, shapes, cfg, expected, min_sqnr = case
    torch.manual_seed(0)
    model = model_cls().eval()
    x = _inputs(shapes)
    qm = q.quantize(model, x, calibration=[x], quantizer=q.Int8Quantizer().set_global(cfg))
    counts = dict(op_counts(qm))
    if expected:
        assert counts == expected, f"q/dq counts {counts}"
    with torch.no_grad():
        db = q.sqnr(model(*x), qm(*x))
    assert db > min_sqnr, f"SQNR {db:.1f} dB <= {min_sqnr} dB"


def test_shared_qparams_keep_one_int8_region():
    """Data movement between two linears shares the producer's qparams: no requantization."""
    torch.manual_seed(0)
    model = SharedQparams().eval()
    x = _inputs([(16, 16)])
    qm = q.quantize(model, x, calibration=[x])
    scales = {n.args[1] for n in qm.graph.nodes if n.target == Q}
    fc1_out_scale = next(
        n.args[1] for n in qm.graph.nodes
        if n.target == Q and n.args[0].target == torch.ops.aten.linear.default and n.args[0].name == "linear"
    )
    shared = [n for n in qm.graph.nodes if n.op == "call_function" and n.target in (
        torch.ops.aten.reshape.default, torch.ops.aten.permute.default, torch.ops.aten.max_pool2d.default,
        torch.ops.aten.flatten.using_ints)]
    assert shared, "expected data-movement ops in the graph"
    for n in shared:
        for user_q in (u for u in n.users if u.target == Q):
            assert user_q.args[1] == fc1_out_scale, f"{n.name} requantized with another scale"
    assert len(scales) == 3, f"expected input, fc1 and fc2 scales only, got {scales}"


def test_embedding_weight_only_by_module_type():
    class Emb(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.fc = nn.Embedding(100, 16), nn.Linear(16, 4)

        def forward(self, ids):
            return self.fc(self.emb(ids))

    model = Emb().eval()
    ids = torch.randint(0, 100, (8, 5))
    quantizer = q.Int8Quantizer().set_global(q.QuantConfig.static()).set_module_type(
        nn.Embedding, q.QuantConfig.weight_only())
    qm = q.quantize(model, (ids,), calibration=[(ids,)], quantizer=quantizer)
    emb = next(n for n in qm.graph.nodes if n.target == torch.ops.aten.embedding.default)
    assert emb.args[0].target == DQ_CH and emb.args[0].args[3] == 0  # per-row table
    assert emb.args[1].op == "placeholder"  # indices untouched
    with torch.no_grad():
        assert q.sqnr(model(ids), qm(ids)) > 30


def test_embedding_under_static_config_says_how():
    class Emb(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 4)

        def forward(self, ids):
            return self.emb(ids)

    ids = torch.randint(0, 10, (2, 3))
    qm = q.quantize(Emb().eval(), (ids,), calibration=[(ids,)])
    emb = next(n for n in qm.graph.nodes if n.target == torch.ops.aten.embedding.default)
    assert "QuantConfig.weight_only()" in decision_of(emb).reason


class MaskedScores(nn.Module):
    """Hugging Face-style additive mask built from an integer mask input."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x, mask):
        scores = self.fc(x)
        positions = torch.cumsum(mask, dim=-1) * mask  # integer arithmetic
        additive = (1.0 - mask[:, None, :].to(scores.dtype)) * torch.finfo(scores.dtype).min
        return torch.softmax(scores @ scores.transpose(-1, -2) + additive, -1), positions


def test_integer_and_mask_paths_are_left_as_exported():
    model = MaskedScores().eval()
    x, mask = torch.randn(2, 8, 8), torch.ones(2, 8, dtype=torch.long)
    mask[:, 6:] = 0
    qm = q.quantize(model, (x, mask), calibration=[(x, mask)])
    # Every node computed from the integer mask: no q/dq in or out, same ops as exported.
    mask_node = next(n for n in qm.graph.nodes if n.name == "mask")
    add = next(n for n in qm.graph.nodes if n.target == torch.ops.aten.add.Tensor)
    frontier, mask_path = [mask_node], []
    while frontier:
        n = frontier.pop()
        if n is add or n in mask_path or n.op == "output":
            continue
        mask_path.append(n)
        frontier.extend(n.users)
    assert len(mask_path) >= 6
    for n in mask_path:
        assert n.target not in (Q, DQ), f"{n.name} on the mask path is a q/dq node"
        assert not any(u.target in (Q, DQ) for u in n.users), f"{n.name} output gets quantized"
    assert "mask arithmetic" in decision_of(add).reason
    with torch.no_grad():
        (ref, ref_pos), (out, out_pos) = model(x, mask), qm(x, mask)
    assert torch.equal(ref_pos, out_pos)
    assert q.sqnr(ref, out) > 20
