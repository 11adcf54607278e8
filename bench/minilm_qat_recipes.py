"""QAT-by-distillation recipes for fully static MiniLM, one recipe per run: held-out cosine to float.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/minilm_qat_recipes.py --ptq
    HF_HUB_OFFLINE=1 .venv/bin/python bench/minilm_qat_recipes.py --observer minmax --freeze 0 \\
        --epochs 3 --n 64 --lr 1e-5 --hidden layer_norm --text mixed --train-seq 48

all-MiniLM-L6-v2, seq 128, every linear (and the attention matmuls) static int8 with outlier handling
(`QuantConfig.static(smooth=True)` / `QuantConfig.qat(smooth=True)`), calibrated on the 16
CALIBRATION_SENTENCES, judged on the 16 HELD_OUT_SENTENCES (mean cosine of the sentence embeddings to
float; never trained or calibrated on). Each run appends one row to bench/issue11/qat_recipes.jsonl and
rewrites bench/issue11/QAT_RECIPES.md from all rows.

Training text (`--text`, all made here): `default` = `distillation_sentences(n)`; `mixed` = the same
sources shuffled; `packed` = `n` full rows of Python-reference sentences run together (no padding, so
every position carries a real token). `--train-seq` below 128 exports the student with a dynamic
sequence length and trains on shorter rows (4x cheaper at 32); the held-out check stays at seq 128.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.export import Dim  # noqa: E402

import pt2e_int8 as q  # noqa: E402
from pt2e_int8.app.device import describe_device, summary_line  # noqa: E402
from pt2e_int8.app.minilm import (  # noqa: E402
    CALIBRATION_SENTENCES,
    HELD_OUT_SENTENCES,
    distillation_sentences,
    load_minilm,
    tokenize,
)
from pt2e_int8.app.text import generated_sentences, pack_tokens, python_doc_sentences  # noqa: E402
from pt2e_int8.atomic import write_text_atomic  # noqa: E402

SEQ = 128
OUT = ROOT / "bench" / "issue11"


def training_batches(tok, text: str, n: int, seq: int, batch: int) -> list[tuple]:
    if text == "packed":
        docs = [s for _, s in python_doc_sentences()]
        ids, mask = pack_tokens(tok, docs, seq, n)
        return [(ids[i:i + batch], mask[i:i + batch]) for i in range(0, n, batch)]
    if text == "default":
        sentences = distillation_sentences(n)
    else:  # mixed: the same two sources, shuffled so every batch holds both
        docs = [s for _, s in python_doc_sentences()]
        sentences = generated_sentences(n - n // 2, seed=1) + docs[:: max(1, len(docs) // (n // 2))][: n // 2]
        random.Random(0).shuffle(sentences)
    return [tokenize(tok, sentences[i:i + batch], seq) for i in range(0, len(sentences), batch)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ptq", action="store_true", help="post-training quantization only (the baseline)")
    ap.add_argument("--insert", action="store_true", help="smooth_insert=True")
    ap.add_argument("--observer", default="moving_average", help="QuantConfig observer (PTQ: minmax is static's)")
    ap.add_argument("--text", default="default", choices=("default", "mixed", "packed"))
    ap.add_argument("--n", type=int, default=128, help="training sentences (packed: rows)")
    ap.add_argument("--train-seq", type=int, default=SEQ)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--loss", default="cosine")
    ap.add_argument("--hidden", default=None)
    ap.add_argument("--hidden-weight", type=float, default=1.0)
    ap.add_argument("--freeze", type=int, default=-1, help="freeze observers after this step; -1: for the last "
                    "epoch, 0: before training (ranges stay the calibrated ones)")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    tok, model = load_minilm()
    calibration = [tokenize(tok, CALIBRATION_SENTENCES[i:i + 4], SEQ) for i in range(0, 16, 4)]
    held = tokenize(tok, HELD_OUT_SENTENCES, SEQ)
    with torch.no_grad():
        reference = model(*held)

    def cosine(m) -> float:
        with torch.no_grad():
            return round(F.cosine_similarity(m(*held), reference, dim=-1).mean().item(), 5)

    row: dict = {"args": {k: v for k, v in vars(args).items()}}
    t0 = time.perf_counter()
    if args.ptq:
        cfg = q.QuantConfig.static(smooth=True, smooth_insert=args.insert, observer=args.observer)
        qm = q.quantize(model, calibration[0], calibration=calibration, quantizer=q.Int8Quantizer().set_global(cfg),
                        progress=False)
    else:
        train = training_batches(tok, args.text, args.n, args.train_seq, args.batch)
        dynamic = {}
        if args.train_seq != SEQ:
            b, s = Dim("batch", min=1, max=64), Dim("seq", min=8, max=SEQ)
            dynamic = {"dynamic_shapes": {"input_ids": {0: b, 1: s}, "attention_mask": {0: b, 1: s}}}
        cfg = q.QuantConfig.qat(smooth=True, smooth_insert=args.insert, observer=args.observer)
        pm = q.prepare_qat(copy.deepcopy(model), calibration[0], quantizer=q.Int8Quantizer().set_global(cfg),
                           calibration=calibration, **dynamic)
        q.calibrate(pm, calibration, progress=False)
        row["start_fake_quant"] = cosine(q.freeze_observers(q.move_to_eval(copy.deepcopy(pm))))
        freeze = len(train) * (args.epochs - 1) if args.freeze == -1 else args.freeze
        if freeze == 0:
            q.freeze_observers(pm)
        result = q.distill(pm, model, train, epochs=args.epochs, lr=args.lr, loss=args.loss, hidden=args.hidden,
                           hidden_weight=args.hidden_weight, freeze_observers_after=freeze or None)
        row["distill"] = str(result)
        qm = q.convert(pm)
    row["seconds"] = round(time.perf_counter() - t0, 1)
    row["held_out_cosine"] = cosine(qm)
    row["cpu"] = summary_line(describe_device())
    print(json.dumps(row))
    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / "qat_recipes.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    render()


def render() -> None:
    rows = [json.loads(line) for line in (OUT / "qat_recipes.jsonl").read_text().splitlines() if line.strip()]
    lines = ["## QAT by distillation on fully static MiniLM: recipes", "",
             "`bench/minilm_qat_recipes.py` (one run per row; arguments as given). all-MiniLM-L6-v2, seq 128, every "
             "linear static int8 with outlier handling, 16 held-out sentences; mean cosine of the converted "
             "PyTorch graph to float.", "", f"CPU: {rows[-1]['cpu']} (shared, loaded: seconds are not comparable "
             "between rows)", "",
             "| arguments | start (fake-quant) | held-out cosine | distill | s |", "|---|---:|---:|---|---:|"]
    default = vars(argparse.Namespace(ptq=False, insert=False, observer="moving_average", text="default", n=128,
                                      train_seq=SEQ, batch=8, epochs=3, lr=2e-5, loss="cosine", hidden=None,
                                      hidden_weight=1.0, freeze=-1))
    for r in rows:
        given = " ".join(f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}")
                         for k, v in r["args"].items() if v != default.get(k) and v is not False)
        lines.append(f"| `{given or '(defaults)'}` | {r.get('start_fake_quant', '—')} | {r['held_out_cosine']} | "
                     f"{r.get('distill', 'PTQ')} | {r['seconds']} |")
    write_text_atomic(OUT / "QAT_RECIPES.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
