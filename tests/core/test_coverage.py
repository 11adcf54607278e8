"""coverage(): rows read from the converted graph, reasons from the annotators."""

import json

import torch
import torch.nn.functional as F
from torch import nn

import pt2e_int8 as q


class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj, self.conv, self.out = nn.Linear(8, 8), nn.Conv1d(2, 2, 1), nn.Linear(8, 2)

    def forward(self, x):
        h = self.proj(x)
        att = F.scaled_dot_product_attention(h[:, None], h[:, None], h[:, None])[:, 0]
        return self.out(self.conv(att.reshape(-1, 2, 4)).reshape(-1, 8))


def test_rows_schemes_and_reasons():
    torch.manual_seed(0)
    x = torch.randn(6, 8)
    quantizer = q.Int8Quantizer().set_global(q.QuantConfig.static()).set_module_name("out", None)
    rep = q.coverage(q.quantize(Mixed().eval(), (x,), calibration=[(x,)], quantizer=quantizer))
    rows = {r.name: r for r in rep.layers}
    assert set(rows) >= {"proj", "conv", "out"}
    assert rows["proj"].quantized and rows["proj"].scheme == "static/per-channel" and rows["proj"].op == "linear"
    assert rows["conv"].quantized and rows["conv"].op == "conv"
    assert not rows["out"].quantized and "set_module_name('out')" in rows["out"].reason
    sdpa = [r for r in rep.layers if r.op == "attention"]
    # A plain PyTorch model gets a plain-PyTorch hint, not the Hugging Face one.
    assert sdpa and not sdpa[0].quantized and "no int8 batch-matmul" in sdpa[0].reason
    assert "attn_implementation" not in sdpa[0].reason

    table = str(rep)
    assert "proj" in table and "static/per-channel" in table and f"2/{len(rep.layers)} layers in int8" in table
    data = json.loads(rep.to_json())
    assert {"name", "op", "node", "quantized", "scheme", "reason"} <= set(data["layers"][0])
    assert data["summary"] == {"layers": len(rep.layers), "quantized": 2}


def test_unobserved_layers_are_not_reported_as_quantized():
    x = torch.randn(4, 8)
    pm = q.prepare_qat(nn.Sequential(nn.Linear(8, 4)), (x,))
    rep = q.coverage(q.convert(pm))  # never run: no fake-quant saw data
    assert not rep.layers[0].quantized
    assert "no calibration data reached it" in rep.layers[0].reason


def test_float_model_has_every_layer_float():
    from pt2e_int8.capture import export_model

    gm = export_model(nn.Sequential(nn.Linear(4, 4)), (torch.randn(2, 4),)).module()
    rep = q.coverage(gm)
    assert len(rep.layers) == 1 and not rep.layers[0].quantized


def test_reasons_survive_export_save_and_load():
    import io

    torch.manual_seed(0)
    x = torch.randn(4, 8)
    quantizer = q.Int8Quantizer().set_global(q.QuantConfig.static()).set_module_name("2", None)
    qm = q.quantize(nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)).eval(), (x,),
                    calibration=[(x,)], quantizer=quantizer)
    buf = io.BytesIO()
    torch.export.save(torch.export.export(qm, (x,)), buf)
    buf.seek(0)
    rows = {r.name: r for r in q.coverage(torch.export.load(buf).module()).layers}
    assert rows["0"].scheme == "static/per-channel"
    assert rows["2"].reason == "kept float by set_module_name('2')"


def test_multihead_attention_rows_are_named_by_their_weights():
    """nn.MultiheadAttention reads in_proj_weight and out_proj.weight itself (out_proj's forward never runs):
    the rows are still named after them, so every parametric module is listed by name."""

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(16, 2, batch_first=True)

        def forward(self, x):
            return self.attn(x, x, x, need_weights=False)[0]

    torch.manual_seed(0)
    x = torch.randn(2, 5, 16)
    rows = {r.name: r for r in q.coverage(q.quantize(Block().eval(), (x,), calibration=[(x,)])).layers}
    assert {"attn.in_proj", "attn.out_proj", "attn"} <= set(rows), list(rows)
    assert rows["attn.in_proj"].quantized and rows["attn.out_proj"].quantized
    assert rows["attn"].op == "attention" and "by design" in rows["attn"].reason
