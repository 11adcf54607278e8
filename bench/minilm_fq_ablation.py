"""Which activation fake-quantizer costs static MiniLM its cosine: each one alone, the rest off.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/minilm_fq_ablation.py

QAT-prepared all-MiniLM-L6-v2 (seq 128, `QuantConfig.qat(smooth=True, observer="minmax")`, `--insert`: with
`smooth_insert=True`), calibrated on
the 16 calibration sentences, observers frozen. Prints the held-out cosine with every fake-quantizer on,
with every activation one off (int8 weights only), and 1 - cosine with one activation fake-quantizer
on at a time (top 25: the node it reads, its first consumers, its scale and zero point). Writes nothing.
"""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torchao.quantization.pt2e.fake_quantize import FakeQuantizeBase  # noqa: E402

import pt2e_int8 as q  # noqa: E402
from pt2e_int8.app.minilm import CALIBRATION_SENTENCES, HELD_OUT_SENTENCES, load_minilm, tokenize  # noqa: E402


def main() -> None:
    torch.set_num_threads(min(2, torch.get_num_threads()))
    tok, model = load_minilm()
    cal = [tokenize(tok, CALIBRATION_SENTENCES[i:i + 4], 128) for i in range(0, 16, 4)]
    held = tokenize(tok, HELD_OUT_SENTENCES, 128)
    with torch.no_grad():
        ref = model(*held)
    cfg = q.QuantConfig.qat(smooth=True, observer="minmax", smooth_insert="--insert" in sys.argv)
    pm = q.prepare_qat(copy.deepcopy(model), cal[0], quantizer=q.Int8Quantizer().set_global(cfg), calibration=cal)
    q.calibrate(pm, cal, progress=False)
    q.freeze_observers(q.move_to_eval(pm))

    def cosine() -> float:
        with torch.no_grad():
            return F.cosine_similarity(pm(*held), ref, dim=-1).mean().item()

    fqs = {n: m for n, m in pm.named_children()
           if isinstance(m, FakeQuantizeBase) and m.qscheme == torch.per_tensor_affine}
    reads = {node.target: f"{node.args[0].name} -> {[u.name for u in node.users][:2]}" for node in pm.graph.nodes
             if node.op == "call_module" and node.target in fqs}
    print(f"all on: {cosine():.5f} ({len(fqs)} activation fake-quantizers)")
    for m in fqs.values():
        m.disable_fake_quant()
    print(f"activations float, weights int8: {cosine():.5f}")
    rows = []
    for name, m in fqs.items():
        m.enable_fake_quant()
        rows.append((1 - cosine(), name, reads.get(name), *m.calculate_qparams()))
        m.disable_fake_quant()
    rows.sort(key=lambda r: r[0], reverse=True)
    for loss, name, where, scale, zp in rows[:25]:
        print(f"{loss:.5f} {name} {where} scale={scale.item():.4g} zp={zp.item()}")
    print(f"sum over single fake-quantizers of 1 - cosine: {sum(r[0] for r in rows):.4f}")


if __name__ == "__main__":
    main()
